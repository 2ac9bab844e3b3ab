// The wire layer's public API: header views and builders, checksums, and the
// byte/address helpers they share. Import from here outside src/wire.
//
// Header parsers are named parseX(view) (parseIpv4, parseIpv6, ...); the text
// parsers for addresses are macFromString / ipv4FromString / ipv6FromString.

export {
  get16, set16, get32, set32, getMac, setMac,
  BROADCAST_MAC, isMulticastMac,
  macToString, macFromString, ipv4ToString, ipv4FromString, ipv6ToString, ipv6FromString,
} from './bytes.js';
export * from './error.js';
export * from './checksum.js';
export * from './checksum-simd.js';
export * from './ethernet.js';
export * from './arp.js';
export * from './ipv4.js';
export * from './ipv6.js';
export * from './tcp.js';
export * from './udp.js';
export * from './icmpv4.js';
export * from './icmpv6.js';
export * from './esp.js';
export * from './vxlan.js';
export { FrameLayout, L3, parseFrame, type L3Kind, type ParseFrameOptions } from './frame.js';
export * from './builder.js';
