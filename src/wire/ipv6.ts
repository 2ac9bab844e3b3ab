// IPv6 fixed header (RFC 8200 §3) and the extension headers a switch walks
// to reach the upper-layer header (§4): hop-by-hop options, routing,
// fragment, destination options (and AH, whose length it only needs to skip).
//
//  0       4               12      16              24              31
// +-------+---------------+-------+-------------------------------+
// |Version| Traffic Class |           Flow Label                  |
// +-------+---------------+-------+---------------+---------------+
// |         Payload Length        |  Next Header  |   Hop Limit   |
// +-------------------------------+---------------+---------------+
// |                   Source Address (16 bytes)                   |   8..24
// |                Destination Address (16 bytes)                 |  24..40
// +---------------------------------------------------------------+
//
// Extension headers share a first word: Next Header, then a length. Options
// headers and routing count the length in 8-byte units not including the
// first 8; the fragment header is always 8 bytes; AH counts 4-byte units
// minus 2 (RFC 4302 §2.2).
//
//  options (hop-by-hop 0, destination 60)      routing (43)
// +-------+-------+-----------------------+   +-------+-------+-------+-------+
// | Next  |HdrExt | TLV options ...       |   | Next  |HdrExt | Type  |SegLeft|
// | Hdr   | Len   | (Pad1, PadN, others)  |   | Hdr   | Len   |       |       |
// +-------+-------+-----------------------+   +-------+-------+-------+-------+
//                                             | type-specific data ...        |
//  fragment (44)
// +-------+-------+-------------------+-+-+   A TLV option is one byte of
// | Next  |  Res  | Fragment Offset   |R|M|   type, one of data length and
// | Hdr   |       | (8-byte units)    |s| |   the data; Pad1 (type 0) is the
// +-------+-------+-------------------+-+-+   single byte 0.
// |         Identification (32)           |
// +---------------------------------------+

import type { WireError } from './error.js';
import { get16, get32, set16, set32 } from './bytes.js';
import { IpProtocol } from './ipv4.js';
import { fits, HeaderView } from './view.js';

export const IPV6_HEADER_LEN = 40;
export const IPV6_FRAGMENT_HEADER_LEN = 8;
/**
 * More extension headers than this is not a packet anyone meant to send
 * (Linux's flow dissector stops at the same depth); the walker answers
 * 'unsupported' rather than walking an attacker's chain.
 */
export const MAX_IPV6_EXT_HEADERS = 8;

/** Option types of hop-by-hop / destination options headers (RFC 8200 §4.2, RFC 2675, RFC 2711). */
export const Ipv6OptionType = {
  Pad1: 0,
  PadN: 1,
  Jumbo: 0xc2,
  RouterAlert: 5,
} as const;

/**
 * Checks hop-by-hop / destination option TLVs in [off, end): Pad1 is one
 * byte; every other option has a length byte and data that fit. Option
 * semantics (including what to do with unknown types) are the endpoint's.
 */
export function checkIpv6Options(b: Uint8Array, off: number, end: number): WireError | null {
  let o = off;
  while (o < end) {
    if (b[o] === Ipv6OptionType.Pad1) { o++; continue; }
    if (o + 2 > end) return 'bad-option';
    const l = b[o + 1]!;
    if (o + 2 + l > end) return 'bad-option';
    o += 2 + l;
  }
  return null;
}

/**
 * Absolute offset of the first option of `type` in the TLVs at [off, end),
 * or -1. Stops at the first malformed option, so it is safe on unchecked bytes.
 */
export function findIpv6Option(b: Uint8Array, off: number, end: number, type: number): number {
  let o = off;
  while (o < end) {
    const t = b[o]!;
    if (t === Ipv6OptionType.Pad1) {
      if (type === Ipv6OptionType.Pad1) return o;
      o++;
      continue;
    }
    if (o + 2 > end) return -1;
    const next = o + 2 + b[o + 1]!;
    if (next > end) return -1;
    if (t === type) return o;
    o = next;
  }
  return -1;
}

/** Next-header values the walker treats as IPv6 extension headers. */
export function isIpv6ExtHeader(nextHeader: number): boolean {
  return nextHeader === IpProtocol.HOPOPT || nextHeader === IpProtocol.IPv6Route ||
    nextHeader === IpProtocol.IPv6Frag || nextHeader === IpProtocol.IPv6Opts ||
    nextHeader === IpProtocol.AH;
}

/**
 * Why a payload length of zero after a hop-by-hop header is rejected: with a
 * Jumbo Payload option it is a jumbogram (RFC 2675), which we do not handle;
 * without one the announced hop-by-hop header cannot fit in zero bytes.
 */
function zeroPayloadReason(buf: Uint8Array, hbhOff: number, end: number): WireError {
  if (end - hbhOff < 8) return 'bad-length';
  const hbhEnd = Math.min(end, hbhOff + (buf[hbhOff + 1]! + 1) * 8);
  return findIpv6Option(buf, hbhOff + 2, hbhEnd, Ipv6OptionType.Jumbo) >= 0 ? 'unsupported' : 'bad-length';
}

export class Ipv6View extends HeaderView {
  /** Bytes available from `off`; bytes after 40 + payload length are link padding. */
  declare len: number;

  /**
   * Bind to `len` bytes at `off`. Valid when the version is 6 and the
   * payload length fits in `len`. Extension headers are not looked at here
   * (see Ipv6ExtWalker), except to recognise a jumbogram.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < IPV6_HEADER_LEN) return 'truncated';
    if (buf[off]! >>> 4 !== 6) return 'bad-version';
    const plen = get16(buf, off + 4);
    if (plen === 0 && buf[off + 6] === IpProtocol.HOPOPT) {
      return zeroPayloadReason(buf, off + IPV6_HEADER_LEN, off + len);
    }
    if (IPV6_HEADER_LEN + plen > len) return 'truncated';
    return this.bind(buf, off, len);
  }

  get version(): number { return this.buf[this.off]! >>> 4; }
  get trafficClass(): number {
    return ((this.buf[this.off]! & 0x0f) << 4) | (this.buf[this.off + 1]! >>> 4);
  }
  set trafficClass(tc: number) {
    this.buf[this.off] = 0x60 | ((tc >>> 4) & 0x0f);
    this.buf[this.off + 1] = ((tc & 0x0f) << 4) | (this.buf[this.off + 1]! & 0x0f);
  }
  get dscp(): number { return this.trafficClass >>> 2; }
  set dscp(v: number) { this.trafficClass = ((v & 0x3f) << 2) | (this.trafficClass & 3); }
  get ecn(): number { return this.trafficClass & 3; }
  set ecn(v: number) { this.trafficClass = (this.trafficClass & 0xfc) | (v & 3); }
  get flowLabel(): number {
    return ((this.buf[this.off + 1]! & 0x0f) << 16) | get16(this.buf, this.off + 2);
  }
  set flowLabel(fl: number) {
    this.buf[this.off + 1] = (this.buf[this.off + 1]! & 0xf0) | ((fl >>> 16) & 0x0f);
    set16(this.buf, this.off + 2, fl & 0xffff);
  }
  /** Payload Length field: extension headers and upper-layer data. */
  get payloadLen(): number { return get16(this.buf, this.off + 4); }
  set payloadLen(v: number) { set16(this.buf, this.off + 4, v); }
  get nextHeader(): number { return this.buf[this.off + 6]!; }
  set nextHeader(v: number) { this.buf[this.off + 6] = v; }
  get hopLimit(): number { return this.buf[this.off + 7]!; }
  set hopLimit(v: number) { this.buf[this.off + 7] = v; }
  /** Absolute offsets of the 16-byte addresses in `buf` (for pseudo-header sums, copies, printing). */
  get srcOff(): number { return this.off + 8; }
  get dstOff(): number { return this.off + 24; }
  get dstIsMulticast(): boolean { return this.buf[this.off + 24] === 0xff; }
  get headerLen(): number { return IPV6_HEADER_LEN; }
  get payloadOff(): number { return this.off + IPV6_HEADER_LEN; }
  /** End of the IPv6 packet per its payload length (absolute). */
  get end(): number { return this.off + IPV6_HEADER_LEN + this.payloadLen; }

  /** Copy 16 bytes from `a` at `from` into the source address. */
  setSrc(a: Uint8Array, from = 0): void {
    for (let i = 0; i < 16; i++) this.buf[this.off + 8 + i] = a[from + i]!;
  }

  setDst(a: Uint8Array, from = 0): void {
    for (let i = 0; i < 16; i++) this.buf[this.off + 24 + i] = a[from + i]!;
  }
}

export interface Ipv6Repr {
  dscp: number;
  ecn: number;
  /** 20 bits. */
  flowLabel: number;
  /** Extension headers + upper-layer bytes. */
  payloadLen: number;
  nextHeader: number;
  hopLimit: number;
  /** 16 bytes each. */
  src: Uint8Array;
  dst: Uint8Array;
}

export function parseIpv6(v: Ipv6View): Ipv6Repr {
  return {
    dscp: v.dscp,
    ecn: v.ecn,
    flowLabel: v.flowLabel,
    payloadLen: v.payloadLen,
    nextHeader: v.nextHeader,
    hopLimit: v.hopLimit,
    src: v.buf.slice(v.srcOff, v.srcOff + 16),
    dst: v.buf.slice(v.dstOff, v.dstOff + 16),
  };
}

export function ipv6ReprLen(_r: Ipv6Repr): number {
  return IPV6_HEADER_LEN;
}

/** Writes the fixed header at `off`; returns 40. */
export function emitIpv6(r: Ipv6Repr, buf: Uint8Array, off: number): number {
  const tc = ((r.dscp & 0x3f) << 2) | (r.ecn & 3);
  set32(buf, off, (0x6 << 28 | tc << 20 | (r.flowLabel & 0xfffff)) >>> 0);
  set16(buf, off + 4, r.payloadLen);
  buf[off + 6] = r.nextHeader;
  buf[off + 7] = r.hopLimit;
  buf.set(r.src.subarray(0, 16), off + 8);
  buf.set(r.dst.subarray(0, 16), off + 24);
  return IPV6_HEADER_LEN;
}

// --- hop-by-hop and destination options -----------------------------------

/** Hop-by-hop options (next header 0) or destination options (60). */
export class Ipv6OptionsView extends HeaderView {
  /** Bytes available from `off` (to the end of the IPv6 payload). */
  declare len: number;

  /** Valid when the header fits in `len` and its options are well-formed TLVs. */
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < 8) return 'truncated';
    const hl = (buf[off + 1]! + 1) * 8;
    if (hl > len) return 'truncated';
    const e = checkIpv6Options(buf, off + 2, off + hl);
    if (e !== null) return e;
    return this.bind(buf, off, len);
  }

  get nextHeader(): number { return this.buf[this.off]!; }
  set nextHeader(v: number) { this.buf[this.off] = v; }
  get headerLen(): number { return (this.buf[this.off + 1]! + 1) * 8; }
  get optionsOff(): number { return this.off + 2; }
  get optionsLen(): number { return this.headerLen - 2; }
  get payloadOff(): number { return this.off + this.headerLen; }
  get payloadLen(): number { return this.len - this.headerLen; }
  /** Router Alert present (RFC 2711): MLD and RSVP ask routers to look inside. */
  get hasRouterAlert(): boolean { return this.findOption(Ipv6OptionType.RouterAlert) >= 0; }

  /** Absolute offset of the first option of `type` (its type byte), or -1. */
  findOption(type: number): number {
    return findIpv6Option(this.buf, this.off + 2, this.off + this.headerLen, type);
  }
}

export interface Ipv6Option {
  type: number;
  /** At most 255 bytes. */
  data: Uint8Array;
}

export interface Ipv6OptionsRepr {
  nextHeader: number;
  /**
   * Options other than padding, in order. Parsing drops Pad1/PadN wherever
   * they are; emitting packs the options back to back and pads the end, so
   * an option's alignment requirement (RFC 8200 §4.2 "xn+y") is kept only
   * when the options before it happen to provide it.
   */
  options: Ipv6Option[];
}

export function parseIpv6Options(v: Ipv6OptionsView): Ipv6OptionsRepr {
  const options: Ipv6Option[] = [];
  const b = v.buf;
  const end = v.off + v.headerLen;
  let o = v.off + 2;
  while (o < end) {
    const type = b[o]!;
    if (type === Ipv6OptionType.Pad1) { o++; continue; }
    const l = b[o + 1]!;
    if (type !== Ipv6OptionType.PadN) options.push({ type, data: b.slice(o + 2, o + 2 + l) });
    o += 2 + l;
  }
  return { nextHeader: v.nextHeader, options };
}

export function ipv6OptionsReprLen(r: Ipv6OptionsRepr): number {
  let n = 2;
  for (const opt of r.options) n += 2 + opt.data.length;
  return (n + 7) & ~7;
}

/** Writes the header at `off`, padded to a multiple of 8 with Pad1/PadN; returns its length. */
export function emitIpv6Options(r: Ipv6OptionsRepr, buf: Uint8Array, off: number): number {
  const hl = ipv6OptionsReprLen(r);
  if (hl > 2048) throw new RangeError(`IPv6 options header of ${hl} bytes exceeds 2048`);
  buf[off] = r.nextHeader;
  buf[off + 1] = hl / 8 - 1;
  let o = off + 2;
  for (const opt of r.options) {
    if (opt.data.length > 255) throw new RangeError(`IPv6 option of ${opt.data.length} bytes exceeds 255`);
    buf[o] = opt.type;
    buf[o + 1] = opt.data.length;
    buf.set(opt.data, o + 2);
    o += 2 + opt.data.length;
  }
  const pad = off + hl - o;
  if (pad === 1) {
    buf[o] = Ipv6OptionType.Pad1;
  } else if (pad >= 2) {
    buf[o] = Ipv6OptionType.PadN;
    buf[o + 1] = pad - 2;
    buf.fill(0, o + 2, off + hl);
  }
  return hl;
}

// --- routing ---------------------------------------------------------------

export class Ipv6RoutingView extends HeaderView {

  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < 8) return 'truncated';
    if ((buf[off + 1]! + 1) * 8 > len) return 'truncated';
    return this.bind(buf, off, len);
  }

  get nextHeader(): number { return this.buf[this.off]!; }
  set nextHeader(v: number) { this.buf[this.off] = v; }
  get headerLen(): number { return (this.buf[this.off + 1]! + 1) * 8; }
  get routingType(): number { return this.buf[this.off + 2]!; }
  get segmentsLeft(): number { return this.buf[this.off + 3]!; }
  set segmentsLeft(v: number) { this.buf[this.off + 3] = v; }
  /** Type-specific data: everything after the first four bytes. */
  get dataOff(): number { return this.off + 4; }
  get dataLen(): number { return this.headerLen - 4; }
  get payloadOff(): number { return this.off + this.headerLen; }
  get payloadLen(): number { return this.len - this.headerLen; }
}

export interface Ipv6RoutingRepr {
  nextHeader: number;
  routingType: number;
  segmentsLeft: number;
  /** Type-specific data; `emitIpv6Routing` zero-pads it so 4 + length is a multiple of 8. */
  data: Uint8Array;
}

export function parseIpv6Routing(v: Ipv6RoutingView): Ipv6RoutingRepr {
  return {
    nextHeader: v.nextHeader,
    routingType: v.routingType,
    segmentsLeft: v.segmentsLeft,
    data: v.buf.slice(v.dataOff, v.dataOff + v.dataLen),
  };
}

export function ipv6RoutingReprLen(r: Ipv6RoutingRepr): number {
  return (4 + r.data.length + 7) & ~7;
}

export function emitIpv6Routing(r: Ipv6RoutingRepr, buf: Uint8Array, off: number): number {
  const hl = ipv6RoutingReprLen(r);
  if (hl > 2048) throw new RangeError(`IPv6 routing header of ${hl} bytes exceeds 2048`);
  buf[off] = r.nextHeader;
  buf[off + 1] = hl / 8 - 1;
  buf[off + 2] = r.routingType;
  buf[off + 3] = r.segmentsLeft;
  buf.set(r.data, off + 4);
  buf.fill(0, off + 4 + r.data.length, off + hl);
  return hl;
}

// --- fragment --------------------------------------------------------------

export class Ipv6FragmentView extends HeaderView {

  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < IPV6_FRAGMENT_HEADER_LEN) return 'truncated';
    return this.bind(buf, off, len);
  }

  get nextHeader(): number { return this.buf[this.off]!; }
  set nextHeader(v: number) { this.buf[this.off] = v; }
  get headerLen(): number { return IPV6_FRAGMENT_HEADER_LEN; }
  /** Offset of this fragment's data in the original packet, in bytes. */
  get fragOffset(): number { return get16(this.buf, this.off + 2) & 0xfff8; }
  get moreFragments(): boolean { return (this.buf[this.off + 3]! & 1) !== 0; }
  get ident(): number { return get32(this.buf, this.off + 4); }
  set ident(v: number) { set32(this.buf, this.off + 4, v); }
  /** A fragment other than the first: the upper-layer header is not in it. */
  get isLaterFragment(): boolean { return this.fragOffset !== 0; }
  /** Offset 0 and no more fragments: a whole packet in a fragment header (RFC 6946). */
  get isAtomic(): boolean { return this.fragOffset === 0 && !this.moreFragments; }
  get payloadOff(): number { return this.off + IPV6_FRAGMENT_HEADER_LEN; }
  get payloadLen(): number { return this.len - IPV6_FRAGMENT_HEADER_LEN; }
}

export interface Ipv6FragmentRepr {
  nextHeader: number;
  /** Bytes; a multiple of 8 below 65536. */
  fragOffset: number;
  moreFragments: boolean;
  ident: number;
}

export function parseIpv6Fragment(v: Ipv6FragmentView): Ipv6FragmentRepr {
  return { nextHeader: v.nextHeader, fragOffset: v.fragOffset, moreFragments: v.moreFragments, ident: v.ident };
}

export function ipv6FragmentReprLen(_r: Ipv6FragmentRepr): number {
  return IPV6_FRAGMENT_HEADER_LEN;
}

export function emitIpv6Fragment(r: Ipv6FragmentRepr, buf: Uint8Array, off: number): number {
  buf[off] = r.nextHeader;
  buf[off + 1] = 0;
  set16(buf, off + 2, (r.fragOffset & 0xfff8) | (r.moreFragments ? 1 : 0));
  set32(buf, off + 4, r.ident);
  return IPV6_FRAGMENT_HEADER_LEN;
}

// --- walking the chain -------------------------------------------------------

/**
 * Walks the extension headers of one IPv6 packet to its upper-layer header.
 * One walker is reused for every packet: `walk` overwrites all its fields
 * and allocates nothing. After a successful walk every extension header it
 * crossed fits in the packet and option headers hold well-formed TLVs, so
 * the per-header views' `wrap` succeeds on them.
 */
export class Ipv6ExtWalker {
  /** Upper-layer protocol (the last Next Header value); -1 until a walk succeeds. */
  protocol = -1;
  /** Absolute offset of the upper-layer header (for a later fragment: of the fragment data). */
  upperOff = 0;
  /** Absolute end of the IPv6 payload. */
  end = 0;
  /** Absolute offset of the Next Header byte holding `protocol` (fixed header or last extension header). */
  protocolFieldOff = 0;
  /** Extension headers crossed. */
  extCount = 0;
  /** Absolute offset of the (first) fragment header, or -1. */
  fragmentOff = -1;
  /** A fragment other than the first: the walk stopped after the fragment header. */
  isLaterFragment = false;

  get hasFragment(): boolean { return this.fragmentOff >= 0; }
  /** Upper-layer packet length, as the pseudo-header wants it (RFC 8200 §8.1). */
  get upperLen(): number { return this.end - this.upperOff; }

  walk(ip: Ipv6View): WireError | null {
    return this.walkFrom(ip.buf, ip.payloadOff, ip.end, ip.nextHeader, ip.off + 6);
  }

  /**
   * Walk from the first header after the fixed header at `off`, whose type is
   * `nextHeader` (read from the byte at `nextHeaderOff`), to `end`.
   */
  walkFrom(buf: Uint8Array, off: number, end: number, nextHeader: number, nextHeaderOff: number): WireError | null {
    this.protocol = -1;
    this.extCount = 0;
    this.fragmentOff = -1;
    this.isLaterFragment = false;
    if (off < 0 || off > end || end > buf.length) return 'bad-length';
    let nh = nextHeader;
    let field = nextHeaderOff;
    let o = off;
    let count = 0;
    while (isIpv6ExtHeader(nh)) {
      // RFC 8200 §4.3: hop-by-hop options only directly after the fixed header.
      if (nh === IpProtocol.HOPOPT && count !== 0) return 'bad-type';
      if (count === MAX_IPV6_EXT_HEADERS) return 'unsupported';
      if (end - o < 8) return 'truncated';
      let hl: number;
      let later = false;
      if (nh === IpProtocol.IPv6Frag) {
        hl = IPV6_FRAGMENT_HEADER_LEN;
        if (this.fragmentOff < 0) this.fragmentOff = o;
        later = (get16(buf, o + 2) & 0xfff8) !== 0;
      } else if (nh === IpProtocol.AH) {
        hl = (buf[o + 1]! + 2) * 4;
        if (hl > end - o) return 'truncated';
      } else {
        hl = (buf[o + 1]! + 1) * 8;
        if (hl > end - o) return 'truncated';
        if (nh !== IpProtocol.IPv6Route) {
          const e = checkIpv6Options(buf, o + 2, o + hl);
          if (e !== null) return e;
        }
      }
      count++;
      field = o;
      nh = buf[o]!;
      o += hl;
      // What follows a later fragment's header is the middle of someone
      // else's bytes, not headers.
      if (later) { this.isLaterFragment = true; break; }
    }
    this.protocol = nh;
    this.upperOff = o;
    this.end = end;
    this.protocolFieldOff = field;
    this.extCount = count;
    return null;
  }
}
