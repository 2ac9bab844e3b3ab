// Whole frames from a description: Ethernet (+ tags) / IPv4 or IPv6 (+
// options or extension headers) / TCP, UDP or ICMP / payload, with every
// length and checksum filled in. For tests, the demo, benchmarks and `trace`
// — not the data path (it allocates).

import { ipv4FromString, ipv6FromString, set16, set32 } from './bytes.js';
import { checksum, pseudoHeaderSumV4, pseudoHeaderSumV6 } from './checksum.js';
import { EtherType, emitEthernet, type VlanTag } from './ethernet.js';
import { IpProtocol, emitIpv4 } from './ipv4.js';

export interface TcpSpec {
  kind: 'tcp';
  sport: number;
  dport: number;
  seq?: number;
  ack?: number;
  /** TCP flag bits (FIN 0x01 … CWR 0x80); default ACK|PSH. */
  flags?: number;
  window?: number;
  /** Raw option bytes; padded with EOL to a multiple of 4. */
  options?: Uint8Array;
}

export interface UdpSpec {
  kind: 'udp';
  sport: number;
  dport: number;
}

export interface IcmpSpec {
  /** ICMPv4 over IPv4, ICMPv6 over IPv6. */
  kind: 'icmp';
  type: number;
  code?: number;
  /** Echo identifier and sequence (the "rest of header"). */
  id?: number;
  seq?: number;
}

export interface Ipv4Spec {
  version: 4;
  src: string | number;
  dst: string | number;
  ttl?: number;
  ident?: number;
  dontFragment?: boolean;
  dscp?: number;
  ecn?: number;
  options?: Uint8Array;
}

export interface Ipv6ExtSpec {
  /** Extension header type: 0 hop-by-hop, 43 routing, 60 destination options. */
  type: number;
  /** Bytes after next-header and length; padded to make the header a multiple of 8. */
  data?: Uint8Array;
}

export interface Ipv6Spec {
  version: 6;
  src: string | Uint8Array;
  dst: string | Uint8Array;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
  ext?: readonly Ipv6ExtSpec[];
}

export type ChecksumSpec =
  /** Correct transport checksum. */
  | 'full'
  /** Field holds the pseudo-header sum, as a sender asking for checksum offload leaves it. */
  | 'partial'
  /** Field left zero. */
  | 'zero';

export interface FrameSpec {
  dstMac?: number;
  srcMac?: number;
  vlans?: readonly VlanTag[];
  ip: Ipv4Spec | Ipv6Spec;
  l4: TcpSpec | UdpSpec | IcmpSpec;
  /** Payload bytes, or a length for a deterministic pattern. */
  payload?: Uint8Array | number;
  checksum?: ChecksumSpec;
}

/** Where the pieces of a built frame are (offsets from the frame start). */
export interface BuiltFrame {
  frame: Uint8Array;
  l3Off: number;
  l4Off: number;
  payloadOff: number;
  /** Offset of the transport checksum field from l4Off. */
  csumOffset: number;
}

export const DEFAULT_SRC_MAC = 0x020000000001;
export const DEFAULT_DST_MAC = 0x020000000002;

/** Deterministic payload: byte i is a simple function of i (not periodic at 2^8). */
export function patternPayload(len: number, seed = 0): Uint8Array {
  const p = new Uint8Array(len);
  for (let i = 0; i < len; i++) p[i] = (i * 31 + (i >>> 8) * 7 + seed) & 0xff;
  return p;
}

function v4(a: string | number): number {
  if (typeof a === 'number') return a >>> 0;
  const n = ipv4FromString(a);
  if (n === null) throw new Error(`bad IPv4 address ${a}`);
  return n;
}

function v6(a: string | Uint8Array): Uint8Array {
  if (a instanceof Uint8Array) return a;
  const n = ipv6FromString(a);
  if (n === null) throw new Error(`bad IPv6 address ${a}`);
  return n;
}

function pad4(b: Uint8Array | undefined): Uint8Array {
  const src = b ?? new Uint8Array(0);
  const out = new Uint8Array((src.length + 3) & ~3); // EOL (0) padding
  out.set(src);
  return out;
}

/** Extension header bytes: next header, length in 8-octet units - 1, data, PadN/Pad1 to a multiple of 8. */
function extHeader(next: number, e: Ipv6ExtSpec): Uint8Array {
  const data = e.data ?? new Uint8Array(0);
  const len = Math.max(8, (2 + data.length + 7) & ~7);
  const h = new Uint8Array(len);
  h[0] = next;
  h[1] = len / 8 - 1;
  h.set(data, 2);
  const padStart = 2 + data.length;
  const padLen = len - padStart;
  if (e.type !== IpProtocol.IPv6Route) {
    if (padLen === 1) h[padStart] = 0; // Pad1
    else if (padLen >= 2) { h[padStart] = 1; h[padStart + 1] = padLen - 2; } // PadN
  }
  return h;
}

export function buildFrame(spec: FrameSpec): BuiltFrame {
  const payload = typeof spec.payload === 'number' ? patternPayload(spec.payload)
    : spec.payload ?? new Uint8Array(0);
  const l4 = spec.l4;
  const isV6 = spec.ip.version === 6;
  const proto = l4.kind === 'tcp' ? IpProtocol.TCP : l4.kind === 'udp' ? IpProtocol.UDP
    : isV6 ? IpProtocol.ICMPv6 : IpProtocol.ICMP;
  const tcpOpts = l4.kind === 'tcp' ? pad4(l4.options) : new Uint8Array(0);
  const l4HeaderLen = l4.kind === 'tcp' ? 20 + tcpOpts.length : 8;
  const l4Len = l4HeaderLen + payload.length;
  const tags = spec.vlans ?? [];
  const l2Len = 14 + 4 * tags.length;

  let l3Header: number;
  let exts: Uint8Array[] = [];
  if (spec.ip.version === 4) {
    l3Header = 20 + ((spec.ip.options?.length ?? 0) + 3 & ~3);
  } else {
    const list = spec.ip.ext ?? [];
    exts = list.map((e, i) => extHeader(i + 1 < list.length ? list[i + 1]!.type : proto, e));
    l3Header = 40 + exts.reduce((n, e) => n + e.length, 0);
  }
  const frame = new Uint8Array(l2Len + l3Header + l4Len);
  emitEthernet({
    dst: spec.dstMac ?? DEFAULT_DST_MAC,
    src: spec.srcMac ?? DEFAULT_SRC_MAC,
    tags: [...tags],
    etherType: isV6 ? EtherType.IPv6 : EtherType.IPv4,
  }, frame, 0);

  const l3 = l2Len;
  const l4Off = l3 + l3Header;
  let pseudo: number;
  if (spec.ip.version === 4) {
    const ip = spec.ip;
    emitIpv4({
      dscp: ip.dscp ?? 0, ecn: ip.ecn ?? 0, ident: ip.ident ?? 0, dontFragment: ip.dontFragment ?? true,
      moreFragments: false, fragOffset: 0, ttl: ip.ttl ?? 64, protocol: proto, src: v4(ip.src), dst: v4(ip.dst),
      options: ip.options ?? new Uint8Array(0), payloadLen: l4Len,
    }, frame, l3);
    pseudo = pseudoHeaderSumV4(frame, l3 + 12, l3 + 16, proto, l4Len);
  } else {
    const ip = spec.ip;
    const tc = ip.trafficClass ?? 0;
    set32(frame, l3, (6 << 28) | (tc << 20) | ((ip.flowLabel ?? 0) & 0xfffff));
    set16(frame, l3 + 4, l3Header - 40 + l4Len);
    frame[l3 + 6] = exts.length > 0 ? ip.ext![0]!.type : proto;
    frame[l3 + 7] = ip.hopLimit ?? 64;
    frame.set(v6(ip.src), l3 + 8);
    frame.set(v6(ip.dst), l3 + 24);
    let o = l3 + 40;
    for (const e of exts) { frame.set(e, o); o += e.length; }
    pseudo = pseudoHeaderSumV6(frame, l3 + 8, l3 + 24, proto, l4Len);
  }

  let csumOffset: number;
  if (l4.kind === 'tcp') {
    set16(frame, l4Off, l4.sport);
    set16(frame, l4Off + 2, l4.dport);
    set32(frame, l4Off + 4, l4.seq ?? 1);
    set32(frame, l4Off + 8, l4.ack ?? 1);
    frame[l4Off + 12] = (l4HeaderLen / 4) << 4;
    frame[l4Off + 13] = l4.flags ?? 0x18;
    set16(frame, l4Off + 14, l4.window ?? 0xffff);
    frame.set(tcpOpts, l4Off + 20);
    csumOffset = 16;
  } else if (l4.kind === 'udp') {
    set16(frame, l4Off, l4.sport);
    set16(frame, l4Off + 2, l4.dport);
    set16(frame, l4Off + 4, l4Len);
    csumOffset = 6;
  } else {
    frame[l4Off] = l4.type;
    frame[l4Off + 1] = l4.code ?? 0;
    set16(frame, l4Off + 4, l4.id ?? 0);
    set16(frame, l4Off + 6, l4.seq ?? 0);
    csumOffset = 2;
  }
  const payloadOff = l4Off + l4HeaderLen;
  frame.set(payload, payloadOff);

  // ICMPv4 has no pseudo-header.
  const ph = proto === IpProtocol.ICMP ? 0 : pseudo;
  const mode = spec.checksum ?? 'full';
  if (mode === 'partial') {
    set16(frame, l4Off + csumOffset, ph);
  } else if (mode === 'full') {
    let c = checksum(frame, l4Off, l4Len, ph);
    if (c === 0 && proto === IpProtocol.UDP) c = 0xffff;
    set16(frame, l4Off + csumOffset, c);
  }
  return { frame, l3Off: l3, l4Off, payloadOff, csumOffset };
}
