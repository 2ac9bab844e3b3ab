// ESP with AES-GCM (RFC 4303 + RFC 4106) on packets in place: what an
// "IPsec-capable NIC" does for the switch's external port. Outbound,
// `encapsulate` turns a VM's plaintext frame into an ESP frame (transport or
// tunnel mode); inbound, `decapsulate` verifies and decrypts one back.
//
// Transport mode (the IP header stays, ESP goes after it):
//
//   before  | eth | IP (+ext) | payload |
//   after   | eth | IP' (+ext) | SPI seq | IV | payload pad padlen nh | ICV |
//                                              \_____ encrypted ______/
// Tunnel mode (a new outer header; the whole inner packet is encrypted):
//
//   before  | eth | inner IP packet |
//   after   | eth' | outer IP | SPI seq | IV | inner IP packet pad padlen nh | ICV |
//
// Headers move forward into the headroom and the trailer and ICV go into
// the tailroom; the payload itself never moves. GCM (RFC 4106): nonce =
// salt (4, from the SA) ‖ IV (8, in the packet); AAD = SPI ‖ sequence number
// (no ESN); 16-byte ICV; default padding 1, 2, 3, ... to a 4-byte boundary.
// The IV is the SA's 64-bit packet counter (the sequence number, zero
// extended): unique under the key for the SA's life, since the sequence
// number never repeats or wraps.
//
// The cipher is injected (`Aead`) so this layer imports nothing from Node;
// src/io/aead-node.ts is the node:crypto one. Nothing here allocates per
// packet: nonce and AAD live in the SA.

import { get16, get32, ipv4FromString, ipv6FromString, ipv6ToString, set16, set32 } from '../../wire/bytes.js';
import { copyBytes } from '../../wire/checksum.js';
import { ETHERNET_HEADER_LEN, EtherType } from '../../wire/ethernet.js';
import { EspTrailer, emitEspTrailer, espPadLen, parseEspTrailer, ESP_TRAILER_MIN_LEN } from '../../wire/esp.js';
import { type FrameLayout, L3 } from '../../wire/frame.js';
import { IPV4_MIN_HEADER_LEN, IpProtocol, Ipv4Flag } from '../../wire/ipv4.js';
import { IPV6_HEADER_LEN } from '../../wire/ipv6.js';
import { RxCsum } from '../../packet/meta.js';
import type { Packet } from '../../packet/packet.js';
import { completeChecksum, fillIpv4HeaderChecksum } from '../checksum.js';
import { ReplayWindow } from './replay.js';
import {
  DEFAULT_REPLAY_WINDOW, ESP_HEADER_BYTES, MAX_REPLAY_WINDOW, ESP_ICV_BYTES, ESP_IV_BYTES, ESP_KEY_BYTES, ESP_SALT_BYTES,
  type EspAlgorithm, type IpsecMode, type ReplayState, type SaDirection, type SecurityAssociation,
} from './sa.js';

/** Why a packet could not be encapsulated or decapsulated (one drop counter each). */
export type EspError =
  | 'truncated'        // the ESP packet (or the inner packet in it) is shorter than its headers say
  | 'auth-failed'      // ICV did not verify: forged, corrupted, or the wrong key
  | 'replay'           // sequence number already received (or zero)
  | 'too-old'          // sequence number left of the anti-replay window
  | 'bad-padding'      // decrypted padding not 1, 2, 3, ... or longer than the payload
  | 'bad-next-header'  // tunnel mode payload that is not IPv4/IPv6 (or disagrees with its version); a dummy packet (59)
  | 'no-room'          // not enough headroom or tailroom in the buffer for the ESP headers and trailer
  | 'seq-exhausted'    // the outbound SA has sent sequence number 2^32-1: it must be replaced (no ESN)
  | 'unsupported';     // not for this SA or this engine: wrong direction or SPI, not IP, VLAN tag, GSO super-frame,
                       // transport-mode fragment, shared buffer, result above 64 KiB

export const ESP_ERRORS: readonly EspError[] = [
  'truncated', 'auth-failed', 'replay', 'too-old', 'bad-padding', 'bad-next-header', 'no-room', 'seq-exhausted',
  'unsupported',
];

/**
 * An AEAD cipher (AES-GCM here), in place over `buf[off, off+len)`.
 * `key` is the SA's key (16 or 32 bytes), `nonce` 12 bytes, the tag 16 bytes.
 */
export interface Aead {
  /** Encrypt the region in place and write the tag to `tagOut[tagOff, tagOff+16)`. */
  seal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, buf: Uint8Array, off: number, len: number,
    tagOut: Uint8Array, tagOff: number): void;
  /**
   * Verify the tag over the ciphertext region and, only if it verifies,
   * decrypt the region in place and return true. On false the region must
   * be exactly as it was (ciphertext): no plaintext of an unauthenticated
   * packet is ever written. (decapsulate's callers drop the packet anyway.)
   */
  open(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, buf: Uint8Array, off: number, len: number,
    tag: Uint8Array, tagOff: number): boolean;
}

/** Largest sequence number (32-bit, no ESN); the SA is exhausted once it was sent. */
export const ESP_MAX_SEQ = 0xffffffff;
/** SPI ‖ sequence number ‖ IV in front of the encrypted part. */
const ESP_PREFIX = ESP_HEADER_BYTES + ESP_IV_BYTES;
const IPV4_ECN_CE = 3;
const OUTER_TTL = 64;

/** An address prefix of a traffic selector; family 0 = any address of either family. */
export class AddressPrefix {
  constructor(
    readonly family: 0 | 4 | 6,
    /** The address, 4 or 16 bytes (empty for any). */
    readonly bytes: Uint8Array,
    readonly bits: number,
  ) {}

  static readonly ANY = new AddressPrefix(0, new Uint8Array(0), 0);

  /** "198.18.0.0/15", "2001:db8::1" (a host), "any" / "*". Throws RangeError with `what` on a bad prefix. */
  static parse(text: string, what: string): AddressPrefix {
    const t = text.trim();
    if (t === 'any' || t === '*') return AddressPrefix.ANY;
    const slash = t.indexOf('/');
    const addr = slash < 0 ? t : t.slice(0, slash);
    const v6 = addr.includes(':');
    const bytes = v6 ? ipv6FromString(addr) : v4Bytes(addr);
    if (bytes === null) throw new RangeError(`${what}: '${text}' is not an IPv4 or IPv6 address or prefix`);
    const max = v6 ? 128 : 32;
    let bits = max;
    if (slash >= 0) {
      const b = t.slice(slash + 1);
      bits = /^\d{1,3}$/.test(b) ? Number(b) : -1;
      if (bits < 0 || bits > max) throw new RangeError(`${what}: prefix length in '${text}' is not 0..${max}`);
    }
    return new AddressPrefix(v6 ? 6 : 4, bytes, bits);
  }

  /** Whether the address at `buf[off]` (family `family`) is in the prefix. */
  matches(buf: Uint8Array, off: number, family: 4 | 6): boolean {
    if (this.family === 0) return true;
    if (this.family !== family) return false;
    const a = this.bytes;
    const whole = this.bits >>> 3;
    for (let i = 0; i < whole; i++) if (buf[off + i] !== a[i]) return false;
    const rest = this.bits & 7;
    if (rest === 0) return true;
    const m = (0xff << (8 - rest)) & 0xff;
    return ((buf[off + whole]! ^ a[whole]!) & m) === 0;
  }

  toString(): string {
    if (this.family === 0) return 'any';
    const a = this.family === 4 ? [...this.bytes].join('.') : ipv6ToString(this.bytes);
    return `${a}/${this.bits}`;
  }
}

function v4Bytes(s: string): Uint8Array | null {
  const n = ipv4FromString(s);
  if (n === null) return null;
  const b = new Uint8Array(4);
  set32(b, 0, n);
  return b;
}

/** A TrafficSelector, parsed; -1 for "any". */
export class ParsedSelector {
  constructor(
    readonly src: AddressPrefix,
    readonly dst: AddressPrefix,
    readonly protocol: number,
    readonly srcPort: number,
    readonly dstPort: number,
  ) {}
}

export interface EspSaOptions {
  /**
   * XORed into every IV (8 bytes; default zeros, i.e. IV = sequence number).
   * Any constant keeps IVs unique per key; it exists so published vectors,
   * whose IVs are not counters, can be reproduced exactly.
   */
  ivMask?: Uint8Array;
}

/** Counters of an SA. `bytes` counts protected payload data (inner packet or transport payload). */
export type EspDrops = Record<EspError, number>;

/**
 * One SA as the ESP engine uses it: the SecurityAssociation pre-parsed, with
 * its per-packet state (sequence counter or replay window), scratch buffers
 * and counters. Constructing one validates the SA (RangeError with the reason).
 */
export class EspSa {
  readonly spi: number;
  readonly direction: SaDirection;
  readonly mode: IpsecMode;
  readonly algorithm: EspAlgorithm;
  readonly key: Uint8Array;
  readonly salt: Uint8Array;
  /** Endpoint family: the outer header's in tunnel mode. */
  readonly family: 4 | 6;
  /** Endpoint addresses, 4 or 16 bytes. */
  readonly src: Uint8Array;
  readonly dst: Uint8Array;
  readonly selector: ParsedSelector;
  /** Outbound: next sequence number to send; above ESP_MAX_SEQ when exhausted. */
  seq: number;
  /** Outbound tunnel mode over IPv4: next outer Identification. */
  ipId = 0;
  /** Inbound: anti-replay window (null when disabled or outbound). */
  replay: ReplayWindow | null;
  packets = 0;
  bytes = 0;
  readonly drops: EspDrops;
  /** salt ‖ IV, rewritten per packet. */
  readonly nonce = new Uint8Array(ESP_SALT_BYTES + ESP_IV_BYTES);
  /** SPI ‖ sequence number, rewritten per packet. */
  readonly aad = new Uint8Array(8);
  readonly ivMask: Uint8Array;

  constructor(sa: SecurityAssociation, opts: EspSaOptions = {}) {
    const where = `SA ${typeof sa.spi === 'number' ? '0x' + sa.spi.toString(16) : String(sa.spi)}`;
    if (!Number.isInteger(sa.spi) || sa.spi < 1 || sa.spi > 0xffffffff) {
      throw new RangeError(`${where}: SPI must be 1..0xffffffff (0 is reserved, RFC 4303 §2.1)`);
    }
    if (sa.direction !== 'in' && sa.direction !== 'out') throw new RangeError(`${where}: direction must be 'in' or 'out'`);
    if (sa.mode !== 'transport' && sa.mode !== 'tunnel') throw new RangeError(`${where}: mode must be 'transport' or 'tunnel'`);
    const keyLen = ESP_KEY_BYTES[sa.algorithm];
    if (keyLen === undefined) throw new RangeError(`${where}: algorithm ${String(sa.algorithm)} is not supported`);
    if (!(sa.key instanceof Uint8Array) || sa.key.length !== keyLen) {
      throw new RangeError(`${where}: ${sa.algorithm} needs a ${keyLen}-byte key`);
    }
    if (!(sa.salt instanceof Uint8Array) || sa.salt.length !== ESP_SALT_BYTES) {
      throw new RangeError(`${where}: the GCM salt must be ${ESP_SALT_BYTES} bytes`);
    }
    this.spi = sa.spi;
    this.direction = sa.direction;
    this.mode = sa.mode;
    this.algorithm = sa.algorithm;
    this.key = sa.key.slice();
    this.salt = sa.salt.slice();
    const src = AddressPrefix.parse(sa.src, `${where} src`);
    const dst = AddressPrefix.parse(sa.dst, `${where} dst`);
    if (src.family === 0 || dst.family === 0 || src.bits !== src.bytes.length * 8 || dst.bits !== dst.bytes.length * 8) {
      throw new RangeError(`${where}: src and dst must be addresses, not prefixes`);
    }
    if (src.family !== dst.family) throw new RangeError(`${where}: src and dst are of different address families`);
    this.family = src.family;
    this.src = src.bytes;
    this.dst = dst.bytes;
    this.selector = parseSelector(sa, src, dst, where);

    const seq = sa.seq ?? 1;
    if (!Number.isInteger(seq) || seq < 1 || seq > ESP_MAX_SEQ + 1) {
      throw new RangeError(`${where}: next sequence number ${seq} is not 1..2^32`);
    }
    this.seq = seq;
    const win = sa.replayWindow ?? DEFAULT_REPLAY_WINDOW;
    if (!Number.isInteger(win) || win < 0 || win > MAX_REPLAY_WINDOW) {
      throw new RangeError(`${where}: replay window ${win} is not 0..${MAX_REPLAY_WINDOW}`);
    }
    this.replay = sa.direction === 'in' && win > 0 ? new ReplayWindow(win) : null;

    const mask = opts.ivMask ?? new Uint8Array(ESP_IV_BYTES);
    if (mask.length !== ESP_IV_BYTES) throw new RangeError(`${where}: ivMask must be ${ESP_IV_BYTES} bytes`);
    this.ivMask = mask.slice();
    this.nonce.set(this.salt, 0);
    const drops = {} as EspDrops;
    for (const e of ESP_ERRORS) drops[e] = 0;
    this.drops = drops;
  }

  get authFailures(): number { return this.drops['auth-failed']; }
  get replays(): number { return this.drops['replay'] + this.drops['too-old']; }
  /** Outbound: the SA can send no more packets. */
  get exhausted(): boolean { return this.seq > ESP_MAX_SEQ; }

  /** Inbound: continue from a replay window handed back (e.g. by the VM). */
  restoreReplay(s: ReplayState): void {
    if (this.replay === null) throw new RangeError('SA has no replay window');
    const w = ReplayWindow.fromState(s);
    if (w.size !== this.replay.size) throw new RangeError(`replay state is for a window of ${w.size}, the SA has ${this.replay.size}`);
    this.replay = w;
  }
}

function parseSelector(sa: SecurityAssociation, src: AddressPrefix, dst: AddressPrefix, where: string): ParsedSelector {
  const s = sa.selector ?? {};
  // Without a selector an SA protects its endpoints' own traffic, in either
  // mode: a tunnel for other hosts' packets must say which (a "match
  // anything" default would pull every packet of the VM, neighbour discovery
  // and local traffic included, into the tunnel).
  const sp = s.src !== undefined ? AddressPrefix.parse(s.src, `${where} selector src`) : src;
  const dp = s.dst !== undefined ? AddressPrefix.parse(s.dst, `${where} selector dst`) : dst;
  const int = (v: number | undefined, max: number, name: string): number => {
    if (v === undefined) return -1;
    if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${where}: selector ${name} ${v} is not 0..${max}`);
    return v;
  };
  return new ParsedSelector(sp, dp, int(s.protocol, 255, 'protocol'), int(s.srcPort, 65535, 'srcPort'),
    int(s.dstPort, 65535, 'dstPort'));
}

/** Protocols whose first four bytes are source and destination port. */
function hasPorts(proto: number): boolean {
  return proto === IpProtocol.TCP || proto === IpProtocol.UDP || proto === 132 /* SCTP */ || proto === 136 /* UDP-Lite */;
}

/**
 * Outbound policy check: does this plaintext packet belong to the SA?
 * Addresses, protocol and ports per the SA's selector (for transport mode
 * defaulting to the SA's own src/dst; for tunnel mode to any). A selector
 * with ports never matches a packet whose ports cannot be seen (non-first
 * fragments, other protocols): callers must drop such packets of a protected
 * flow, not send them in the clear. Also usable inbound on a decapsulated
 * packet (RFC 4301 §5.2: the inner packet must match the SA it came through).
 */
export function matchesSelector(sa: EspSa, lay: FrameLayout, buf: Uint8Array): boolean {
  const sel = sa.selector;
  const l3 = lay.l3Off;
  if (lay.l3 === L3.IPV4) {
    if (!sel.src.matches(buf, l3 + 12, 4) || !sel.dst.matches(buf, l3 + 16, 4)) return false;
  } else if (lay.l3 === L3.IPV6) {
    if (!sel.src.matches(buf, l3 + 8, 6) || !sel.dst.matches(buf, l3 + 24, 6)) return false;
  } else {
    return false;
  }
  if (sel.protocol >= 0 && lay.l4Proto !== sel.protocol) return false;
  if (sel.srcPort >= 0 || sel.dstPort >= 0) {
    if (!hasPorts(lay.l4Proto) || lay.laterFragment || lay.l4Off + 4 > lay.ipEnd) return false;
    if (sel.srcPort >= 0 && get16(buf, lay.l4Off) !== sel.srcPort) return false;
    if (sel.dstPort >= 0 && get16(buf, lay.l4Off + 2) !== sel.dstPort) return false;
  }
  return true;
}

/**
 * Offset of the next-header byte that names the protocol at `upperOff`: the
 * IPv6 header's, or that of the last extension header before it. -1 if the
 * chain holds an AH or fragment header (not ours to move ESP around).
 */
function ipv6NextHeaderAt(buf: Uint8Array, l3: number, upperOff: number): number {
  let at = l3 + 6;
  let nh = buf[at]!;
  let o = l3 + IPV6_HEADER_LEN;
  while (o < upperOff) {
    if (nh === IpProtocol.AH || nh === IpProtocol.IPv6Frag) return -1;
    at = o;
    const len = (buf[o + 1]! + 1) * 8;
    nh = buf[o]!;
    o += len;
  }
  return o === upperOff ? at : -1;
}

/** RFC 6040 / Linux INET_ECN_encapsulate: copy ECN to the outer header, but CE becomes ECT(0). */
function encapEcn(inner: number): number {
  return inner === IPV4_ECN_CE ? 2 : inner;
}

/** IP packet length after encapsulation of the packet `lay` describes (for MTU checks); -1 if not IP. */
/** The most ESP can add to an IP packet with this SA (pad at its largest; the outer header in tunnel mode). */
export function espMaxOverhead(sa: EspSa): number {
  const outer = sa.mode === 'tunnel' ? (sa.family === 4 ? IPV4_MIN_HEADER_LEN : IPV6_HEADER_LEN) : 0;
  return outer + ESP_PREFIX + 3 + ESP_TRAILER_MIN_LEN + ESP_ICV_BYTES;
}

export function espEncapsulatedLength(sa: EspSa, lay: FrameLayout): number {
  if (lay.l3 === L3.NONE) return -1;
  if (sa.mode === 'tunnel') {
    const inner = lay.ipEnd - lay.l3Off;
    return (sa.family === 4 ? IPV4_MIN_HEADER_LEN : IPV6_HEADER_LEN) + ESP_PREFIX + inner + espPadLen(inner) +
      ESP_TRAILER_MIN_LEN + ESP_ICV_BYTES;
  }
  const data = lay.ipEnd - lay.l4Off;
  return lay.l4Off - lay.l3Off + ESP_PREFIX + data + espPadLen(data) + ESP_TRAILER_MIN_LEN + ESP_ICV_BYTES;
}

/**
 * ESP-protect the frame in `p` (described by `lay`, parsed from it) with the
 * outbound SA: transport or tunnel mode, per the SA. Completes a pending
 * checksum offload first (the transport checksum ends up encrypted); refuses
 * GSO super-frames (segment first). The sequence number is consumed only on
 * success. On error the frame is unchanged (offsets and bytes, except that
 * a requested checksum may have been filled in) and the SA's drop counter
 * for the reason is incremented. On success `lay` no longer describes the frame.
 */
export function encapsulate(p: Packet, sa: EspSa, aead: Aead, lay: FrameLayout): EspError | null {
  const e = seal(p, sa, aead, lay);
  if (e !== null) sa.drops[e]++;
  return e;
}

function seal(p: Packet, sa: EspSa, aead: Aead, lay: FrameLayout): EspError | null {
  if (sa.direction !== 'out') return 'unsupported';
  if (lay.off !== p.off || lay.len !== p.len || lay.l3 === L3.NONE || lay.tagCount !== 0) return 'unsupported';
  const m = p.meta;
  if (m.isGso || p.shared) return 'unsupported';
  if (sa.seq > ESP_MAX_SEQ) return 'seq-exhausted';
  const buf = p.buf;
  const l3 = lay.l3Off;
  const ipEnd = lay.ipEnd;
  const v4 = lay.l3 === L3.IPV4;
  const tunnel = sa.mode === 'tunnel';
  let dataOff: number;
  let nextHeader: number;
  let grow: number;
  let nhAt = -1;
  if (tunnel) {
    dataOff = l3;
    nextHeader = v4 ? 4 : 41;
    grow = (sa.family === 4 ? IPV4_MIN_HEADER_LEN : IPV6_HEADER_LEN) + ESP_PREFIX;
  } else {
    // RFC 4303 §3.3: transport mode protects whole datagrams, never fragments.
    if (lay.isFragment) return 'unsupported';
    dataOff = lay.l4Off;
    nextHeader = lay.l4Proto;
    grow = ESP_PREFIX;
    if (!v4) {
      nhAt = ipv6NextHeaderAt(buf, l3, dataOff);
      if (nhAt < 0) return 'unsupported';
    }
  }
  const dataLen = ipEnd - dataOff;
  const ptLen = dataLen + espPadLen(dataLen) + ESP_TRAILER_MIN_LEN;
  const end = dataOff + ptLen + ESP_ICV_BYTES;
  if (p.headroom < grow || end > p.base + p.capacity) return 'no-room';
  const espLen = ESP_PREFIX + ptLen + ESP_ICV_BYTES;
  // New IPv4 total length / IPv6 payload length.
  const ipLen = tunnel
    ? (sa.family === 4 ? IPV4_MIN_HEADER_LEN + espLen : espLen)
    : (v4 ? dataOff - l3 + espLen : dataOff - l3 - IPV6_HEADER_LEN + espLen);
  if (ipLen > 0xffff) return 'unsupported';

  // Offloads the sender asked for must be done before the bytes are sealed.
  if (m.needsCsum && completeChecksum(p, ipEnd) !== null) return 'unsupported';
  if (m.ipv4HeaderCsum) {
    if (v4) fillIpv4HeaderChecksum(buf, l3, lay.l3HeaderLen);
    m.ipv4HeaderCsum = false;
  }

  const seq = sa.seq;
  const espOff = dataOff - ESP_PREFIX;
  let newOff: number;
  if (tunnel) {
    const outerLen = grow - ESP_PREFIX;
    const ol3 = espOff - outerLen;
    newOff = ol3 - ETHERNET_HEADER_LEN;
    // MACs first: the new outer headers overwrite the old Ethernet header.
    copyBytes(buf, newOff, p.off, 12);
    let tos: number;
    let df: boolean;
    if (v4) {
      tos = buf[l3 + 1]!;
      df = (get16(buf, l3 + 6) & Ipv4Flag.DF) !== 0;
    } else {
      tos = ((buf[l3]! & 0x0f) << 4) | (buf[l3 + 1]! >>> 4);
      df = true; // IPv6 is never fragmented on the way: neither should its tunnel be
    }
    tos = (tos & 0xfc) | encapEcn(tos & 3);
    if (sa.family === 4) {
      set16(buf, newOff + 12, EtherType.IPv4);
      buf[ol3] = 0x45;
      buf[ol3 + 1] = tos;
      set16(buf, ol3 + 2, ipLen);
      set16(buf, ol3 + 4, sa.ipId);
      sa.ipId = (sa.ipId + 1) & 0xffff;
      set16(buf, ol3 + 6, df ? Ipv4Flag.DF : 0);
      buf[ol3 + 8] = OUTER_TTL;
      buf[ol3 + 9] = IpProtocol.ESP;
      buf.set(sa.src, ol3 + 12);
      buf.set(sa.dst, ol3 + 16);
      fillIpv4HeaderChecksum(buf, ol3, IPV4_MIN_HEADER_LEN);
    } else {
      set16(buf, newOff + 12, EtherType.IPv6);
      set32(buf, ol3, ((6 << 28) | (tos << 20)) >>> 0); // version, traffic class, flow label 0
      set16(buf, ol3 + 4, ipLen);
      buf[ol3 + 6] = IpProtocol.ESP;
      buf[ol3 + 7] = OUTER_TTL;
      buf.set(sa.src, ol3 + 8);
      buf.set(sa.dst, ol3 + 24);
    }
  } else {
    newOff = p.off - ESP_PREFIX;
    copyBytes(buf, newOff, p.off, dataOff - p.off);
    const nl3 = l3 - ESP_PREFIX;
    if (v4) {
      buf[nl3 + 9] = IpProtocol.ESP;
      set16(buf, nl3 + 2, ipLen);
      fillIpv4HeaderChecksum(buf, nl3, lay.l3HeaderLen);
    } else {
      buf[nhAt - ESP_PREFIX] = IpProtocol.ESP;
      set16(buf, nl3 + 4, ipLen);
    }
  }

  // ESP header, IV = (counter XOR mask), nonce and AAD.
  const nonce = sa.nonce;
  const aad = sa.aad;
  const mask = sa.ivMask;
  set32(buf, espOff, sa.spi);
  set32(buf, espOff + 4, seq);
  set32(aad, 0, sa.spi);
  set32(aad, 4, seq);
  set32(nonce, 4, 0);
  set32(nonce, 8, seq);
  for (let i = 0; i < ESP_IV_BYTES; i++) {
    const b = nonce[4 + i]! ^ mask[i]!;
    nonce[4 + i] = b;
    buf[espOff + ESP_HEADER_BYTES + i] = b;
  }
  emitEspTrailer(buf, dataOff, dataLen, nextHeader, 4);
  aead.seal(sa.key, nonce, aad, buf, dataOff, ptLen, buf, dataOff + ptLen);

  sa.seq = seq + 1;
  p.off = newOff;
  p.len = end - newOff;
  m.needsCsum = false;
  sa.packets++;
  sa.bytes += dataLen;
  return null;
}

const trailer = new EspTrailer();

/**
 * Verify and decrypt the ESP frame in `p` (described by `lay`) with the
 * inbound SA whose SPI it carries: anti-replay check, ICV, in-place
 * decryption, trailer check, then transport mode restores the IP header
 * (protocol / next header, lengths, IPv4 checksum) and tunnel mode makes the
 * inner packet the frame (same MACs, EtherType of the inner version). The
 * window moves once the ICV verified. The result's checksums are not
 * verified (rxCsum UNKNOWN); callers should check the inner packet against
 * the SA's selector (`matchesSelector`).
 *
 * On error the packet must be dropped. Until the ICV verified nothing is
 * changed; after it ('bad-padding', 'bad-next-header', 'truncated' for the
 * inner packet) the encrypted region holds the decrypted bytes, offsets unchanged.
 */
export function decapsulate(p: Packet, sa: EspSa, aead: Aead, lay: FrameLayout): EspError | null {
  const e = open(p, sa, aead, lay);
  if (e !== null) sa.drops[e]++;
  return e;
}

function open(p: Packet, sa: EspSa, aead: Aead, lay: FrameLayout): EspError | null {
  if (sa.direction !== 'in') return 'unsupported';
  if (lay.off !== p.off || lay.len !== p.len || lay.l3 === L3.NONE || lay.tagCount !== 0) return 'unsupported';
  if (lay.l4Proto !== IpProtocol.ESP) return 'unsupported';
  // Fragments are reassembled before ESP processing (RFC 4303 §3.4.1).
  if (lay.isFragment || p.shared) return 'unsupported';
  const buf = p.buf;
  const l3 = lay.l3Off;
  const v4 = lay.l3 === L3.IPV4;
  const espOff = lay.l4Off;
  const espLen = lay.ipEnd - espOff;
  if (espLen < ESP_PREFIX + ESP_TRAILER_MIN_LEN + ESP_ICV_BYTES) return 'truncated';
  // By halves: an SPI of 2^31 or more read whole is a heap number wherever get32 is not inlined.
  if (get16(buf, espOff) !== sa.spi >>> 16 || get16(buf, espOff + 2) !== (sa.spi & 0xffff)) return 'unsupported';
  let nhAt = -1;
  if (!v4 && sa.mode === 'transport') {
    nhAt = ipv6NextHeaderAt(buf, l3, espOff);
    if (nhAt < 0) return 'unsupported';
  }
  const seq = get32(buf, espOff + 4);
  const replay = sa.replay;
  if (replay !== null) {
    const v = replay.check(seq);
    if (v === 'too-old') return 'too-old';
    if (v !== 'ok') return 'replay';
  }

  const nonce = sa.nonce;
  const aad = sa.aad;
  for (let i = 0; i < 8; i++) {
    aad[i] = buf[espOff + i]!;
    nonce[4 + i] = buf[espOff + ESP_HEADER_BYTES + i]!;
  }
  const ctOff = espOff + ESP_PREFIX;
  const ctLen = espLen - ESP_PREFIX - ESP_ICV_BYTES;
  if (!aead.open(sa.key, nonce, aad, buf, ctOff, ctLen, buf, ctOff + ctLen)) return 'auth-failed';
  // Authentic: this sequence number is used up, whatever the payload holds.
  if (replay !== null) replay.update(seq);

  const te = parseEspTrailer(buf, ctOff, ctLen, trailer);
  if (te !== null) return te === 'truncated' ? 'truncated' : 'bad-padding';
  const nh = trailer.nextHeader;
  const dataLen = trailer.dataLen;
  if (nh === IpProtocol.IPv6NoNxt) return 'bad-next-header'; // dummy packet (§2.6): discard

  if (sa.mode === 'tunnel') {
    let innerLen: number;
    let innerV4: boolean;
    if (nh === 4) {
      if (dataLen < IPV4_MIN_HEADER_LEN) return 'truncated';
      if (buf[ctOff]! >>> 4 !== 4) return 'bad-next-header';
      const hl = (buf[ctOff]! & 0x0f) * 4;
      innerLen = get16(buf, ctOff + 2);
      if (hl < IPV4_MIN_HEADER_LEN || innerLen < hl) return 'truncated';
      innerV4 = true;
    } else if (nh === 41) {
      if (dataLen < IPV6_HEADER_LEN) return 'truncated';
      if (buf[ctOff]! >>> 4 !== 6) return 'bad-next-header';
      innerLen = IPV6_HEADER_LEN + get16(buf, ctOff + 4);
      innerV4 = false;
    } else {
      return 'bad-next-header';
    }
    // Bytes after the inner packet are TFC padding (§2.7): dropped.
    if (innerLen > dataLen) return 'truncated';
    // RFC 6040 decapsulation: congestion marked on the outer header reaches
    // an ECN-capable inner packet.
    const outerEcn = v4 ? buf[l3 + 1]! & 3 : (buf[l3 + 1]! >>> 4) & 3;
    if (outerEcn === IPV4_ECN_CE) {
      if (innerV4) {
        if ((buf[ctOff + 1]! & 3) !== 0 && (buf[ctOff + 1]! & 3) !== IPV4_ECN_CE) {
          buf[ctOff + 1] = buf[ctOff + 1]! | IPV4_ECN_CE;
          fillIpv4HeaderChecksum(buf, ctOff, (buf[ctOff]! & 0x0f) * 4);
        }
      } else {
        const ecn = (buf[ctOff + 1]! >>> 4) & 3;
        if (ecn !== 0) buf[ctOff + 1] = buf[ctOff + 1]! | (IPV4_ECN_CE << 4);
      }
    }
    const newOff = ctOff - ETHERNET_HEADER_LEN;
    copyBytes(buf, newOff, p.off, 12);
    set16(buf, newOff + 12, innerV4 ? EtherType.IPv4 : EtherType.IPv6);
    p.off = newOff;
    p.len = ETHERNET_HEADER_LEN + innerLen;
  } else {
    const hdrs = espOff - p.off;
    copyBytes(buf, p.off + ESP_PREFIX, p.off, hdrs);
    const nl3 = l3 + ESP_PREFIX;
    if (v4) {
      buf[nl3 + 9] = nh;
      set16(buf, nl3 + 2, espOff - l3 + dataLen);
      fillIpv4HeaderChecksum(buf, nl3, lay.l3HeaderLen);
    } else {
      buf[nhAt + ESP_PREFIX] = nh;
      set16(buf, nl3 + 4, espOff - l3 - IPV6_HEADER_LEN + dataLen);
    }
    p.off += ESP_PREFIX;
    p.len = hdrs + dataLen;
  }
  p.meta.rxCsum = RxCsum.UNKNOWN;
  sa.packets++;
  sa.bytes += dataLen;
  return null;
}
