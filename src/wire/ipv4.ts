// IPv4 header (RFC 791), options included.
//
//  0       4       8              16      19                      31
// +-------+-------+---------------+-------------------------------+
// |Version|  IHL  | DSCP    |ECN  |          Total Length         |
// +-------+-------+---------------+-----+-------------------------+
// |         Identification        |Flags|     Fragment Offset     |
// +---------------+---------------+-----+-------------------------+
// |      TTL      |   Protocol    |        Header Checksum        |
// +---------------+---------------+-------------------------------+
// |                       Source Address                          |
// |                    Destination Address                        |
// |                    Options (IHL > 5)                          |
// +---------------------------------------------------------------+

import type { WireError } from './error.js';
import { get16, get32, set16, set32 } from './bytes.js';
import { checksum, sum } from './checksum.js';
import { fits, HeaderView } from './view.js';

export const IPV4_MIN_HEADER_LEN = 20;

export const IpProtocol = {
  HOPOPT: 0,
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  IPv6Route: 43,
  IPv6Frag: 44,
  ESP: 50,
  AH: 51,
  ICMPv6: 58,
  IPv6NoNxt: 59,
  IPv6Opts: 60,
} as const;

export const Ipv4Flag = { DF: 0x4000, MF: 0x2000 } as const;

/** Option kinds (RFC 791 §3.1). */
export const Ipv4Option = { EOL: 0, NOP: 1 } as const;

/**
 * Checks the option area [off, end) for a well-formed sequence: EOL ends it,
 * NOP is one byte, every other option has a length byte ≥ 2 that fits.
 */
export function checkIpv4Options(b: Uint8Array, off: number, end: number): WireError | null {
  let o = off;
  while (o < end) {
    const kind = b[o]!;
    if (kind === Ipv4Option.EOL) return null;
    if (kind === Ipv4Option.NOP) { o++; continue; }
    if (o + 1 >= end) return 'bad-option';
    const l = b[o + 1]!;
    if (l < 2 || o + l > end) return 'bad-option';
    o += l;
  }
  return null;
}

export class Ipv4View extends HeaderView {

  /**
   * Bind to `len` bytes at `off`. Valid when version is 4, IHL ≥ 5, the
   * header and options fit, the options are well formed and the total length
   * covers the header and fits in `len` (bytes after it are link padding).
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < IPV4_MIN_HEADER_LEN) return 'truncated';
    const vihl = buf[off]!;
    if (vihl >>> 4 !== 4) return 'bad-version';
    const hl = (vihl & 0x0f) * 4;
    if (hl < IPV4_MIN_HEADER_LEN) return 'bad-header-length';
    if (hl > len) return 'truncated';
    const total = get16(buf, off + 2);
    if (total < hl) return 'bad-length';
    if (total > len) return 'truncated';
    const e = checkIpv4Options(buf, off + IPV4_MIN_HEADER_LEN, off + hl);
    if (e !== null) return e;
    return this.bind(buf, off, len);
  }

  get version(): number { return this.buf[this.off]! >>> 4; }
  get headerLen(): number { return (this.buf[this.off]! & 0x0f) * 4; }
  get dscp(): number { return this.buf[this.off + 1]! >>> 2; }
  set dscp(v: number) { this.buf[this.off + 1] = ((v & 0x3f) << 2) | (this.buf[this.off + 1]! & 3); }
  get ecn(): number { return this.buf[this.off + 1]! & 3; }
  set ecn(v: number) { this.buf[this.off + 1] = (this.buf[this.off + 1]! & 0xfc) | (v & 3); }
  get totalLen(): number { return get16(this.buf, this.off + 2); }
  set totalLen(v: number) { set16(this.buf, this.off + 2, v); }
  get ident(): number { return get16(this.buf, this.off + 4); }
  set ident(v: number) { set16(this.buf, this.off + 4, v); }
  get dontFragment(): boolean { return (get16(this.buf, this.off + 6) & Ipv4Flag.DF) !== 0; }
  get moreFragments(): boolean { return (get16(this.buf, this.off + 6) & Ipv4Flag.MF) !== 0; }
  /** Fragment offset in bytes. */
  get fragOffset(): number { return (get16(this.buf, this.off + 6) & 0x1fff) * 8; }
  /** Flags and fragment offset as the raw 16-bit field. */
  get flagsFrag(): number { return get16(this.buf, this.off + 6); }
  set flagsFrag(v: number) { set16(this.buf, this.off + 6, v); }
  /** True for any fragment (first, middle or last). */
  get isFragment(): boolean { return (get16(this.buf, this.off + 6) & 0x3fff) !== 0; }
  get ttl(): number { return this.buf[this.off + 8]!; }
  set ttl(v: number) { this.buf[this.off + 8] = v; }
  get protocol(): number { return this.buf[this.off + 9]!; }
  set protocol(v: number) { this.buf[this.off + 9] = v; }
  get checksum(): number { return get16(this.buf, this.off + 10); }
  set checksum(v: number) { set16(this.buf, this.off + 10, v); }
  get src(): number { return get32(this.buf, this.off + 12); }
  set src(a: number) { set32(this.buf, this.off + 12, a); }
  get dst(): number { return get32(this.buf, this.off + 16); }
  set dst(a: number) { set32(this.buf, this.off + 16, a); }
  /** Absolute offsets of the addresses in `buf` (for pseudo-header sums). */
  get srcOff(): number { return this.off + 12; }
  get dstOff(): number { return this.off + 16; }
  get optionsOff(): number { return this.off + IPV4_MIN_HEADER_LEN; }
  get optionsLen(): number { return this.headerLen - IPV4_MIN_HEADER_LEN; }
  get payloadOff(): number { return this.off + this.headerLen; }
  /** Payload length per the total-length field (link padding excluded). */
  get payloadLen(): number { return this.totalLen - this.headerLen; }

  /** True when the header checksum is correct. */
  verifyChecksum(): boolean {
    return sum(this.buf, this.off, this.headerLen) === 0xffff;
  }

  fillChecksum(): void {
    set16(this.buf, this.off + 10, 0);
    set16(this.buf, this.off + 10, checksum(this.buf, this.off, this.headerLen));
  }
}

export interface Ipv4Repr {
  dscp: number;
  ecn: number;
  ident: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** Bytes; a multiple of 8. */
  fragOffset: number;
  ttl: number;
  protocol: number;
  src: number;
  dst: number;
  /** Raw option bytes, padded by `emitIpv4` to a multiple of 4 with EOL. */
  options: Uint8Array;
  /** Payload length; total length = header + this. */
  payloadLen: number;
}

export function parseIpv4(v: Ipv4View): Ipv4Repr {
  return {
    dscp: v.dscp,
    ecn: v.ecn,
    ident: v.ident,
    dontFragment: v.dontFragment,
    moreFragments: v.moreFragments,
    fragOffset: v.fragOffset,
    ttl: v.ttl,
    protocol: v.protocol,
    src: v.src,
    dst: v.dst,
    options: v.buf.slice(v.optionsOff, v.optionsOff + v.optionsLen),
    payloadLen: v.payloadLen,
  };
}

export function ipv4ReprHeaderLen(r: Ipv4Repr): number {
  return IPV4_MIN_HEADER_LEN + ((r.options.length + 3) & ~3);
}

/**
 * Writes the header (checksum filled) at `off`; returns its length. More
 * than 40 bytes of options do not fit in IHL: a caller bug, which throws
 * (unchecked, IHL would spill into the version nibble: a "version 5" header).
 */
export function emitIpv4(r: Ipv4Repr, buf: Uint8Array, off: number): number {
  const hl = ipv4ReprHeaderLen(r);
  if (hl > 60) throw new RangeError(`IPv4 options need ${hl - IPV4_MIN_HEADER_LEN} bytes, at most 40 fit`);
  buf[off] = 0x40 | (hl >>> 2);
  buf[off + 1] = ((r.dscp & 0x3f) << 2) | (r.ecn & 3);
  set16(buf, off + 2, hl + r.payloadLen);
  set16(buf, off + 4, r.ident);
  set16(buf, off + 6,
    (r.dontFragment ? Ipv4Flag.DF : 0) | (r.moreFragments ? Ipv4Flag.MF : 0) | ((r.fragOffset >>> 3) & 0x1fff));
  buf[off + 8] = r.ttl;
  buf[off + 9] = r.protocol;
  set16(buf, off + 10, 0);
  set32(buf, off + 12, r.src);
  set32(buf, off + 16, r.dst);
  buf.set(r.options, off + IPV4_MIN_HEADER_LEN);
  buf.fill(Ipv4Option.EOL, off + IPV4_MIN_HEADER_LEN + r.options.length, off + hl);
  set16(buf, off + 10, checksum(buf, off, hl));
  return hl;
}
