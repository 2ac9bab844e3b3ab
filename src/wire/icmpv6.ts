// ICMPv6 (RFC 4443) and the Neighbor Discovery messages a switch looks into
// (RFC 4861): neighbor solicitation / advertisement, with their options.
//
//  0               1               2                               4
// +---------------+---------------+-------------------------------+
// |     Type      |     Code      |           Checksum            |
// +---------------+---------------+-------------------------------+
// |   echo: identifier + sequence; packet too big: MTU;           |
// |   parameter problem: pointer; NA: R S O flags + reserved      |
// +---------------------------------------------------------------+
// |   NS / NA / redirect: target address (16 bytes)        8..24  |
// +---------------------------------------------------------------+
// |   ND options: type (1), length in 8-byte units (1), data      |
//
// The checksum covers the IPv6 pseudo-header (next header 58) and the whole
// message, so the view's `len` must be the ICMPv6 message length (the
// upper-layer length after any extension headers).

import type { WireError } from './error.js';
import { get32, getMac, set16, set32, setMac } from './bytes.js';
import { checksum, pseudoHeaderSumV6, sum } from './checksum.js';
import { IpProtocol } from './ipv4.js';
import { fits, IcmpHeaderView } from './view.js';

export const ICMPV6_HEADER_LEN = 8;

export const Icmpv6Type = {
  DestUnreachable: 1,
  PacketTooBig: 2,
  TimeExceeded: 3,
  ParameterProblem: 4,
  EchoRequest: 128,
  EchoReply: 129,
  RouterSolicitation: 133,
  RouterAdvertisement: 134,
  NeighborSolicitation: 135,
  NeighborAdvertisement: 136,
  Redirect: 137,
} as const;

/** ND option types (RFC 4861 §4.6). */
export const NdOptionType = {
  SourceLinkAddr: 1,
  TargetLinkAddr: 2,
  PrefixInfo: 3,
  RedirectedHeader: 4,
  Mtu: 5,
} as const;

/** Neighbor Advertisement flag bits in byte 4. */
export const NaFlag = { Router: 0x80, Solicited: 0x40, Override: 0x20 } as const;

/**
 * Length of an ND message's fixed part, where its options start; -1 for
 * types that are not ND messages.
 */
export function ndFixedLen(type: number): number {
  switch (type) {
    case Icmpv6Type.RouterSolicitation: return 8;
    case Icmpv6Type.RouterAdvertisement: return 16;
    case Icmpv6Type.NeighborSolicitation:
    case Icmpv6Type.NeighborAdvertisement: return 24;
    case Icmpv6Type.Redirect: return 40;
    default: return -1;
  }
}

/**
 * Checks ND options in [off, end): each has a length (in 8-byte units) of at
 * least one (RFC 4861 §4.6: zero is invalid, and would loop forever) and fits.
 */
export function checkNdOptions(b: Uint8Array, off: number, end: number): WireError | null {
  let o = off;
  while (o < end) {
    if (o + 2 > end) return 'bad-option';
    const l = b[o + 1]! * 8;
    if (l === 0 || o + l > end) return 'bad-option';
    o += l;
  }
  return null;
}

export class Icmpv6View extends IcmpHeaderView {
  /** ICMPv6 message length: header, body and options. */
  declare len: number;

  /**
   * Valid when the 8-byte header fits and, for ND messages (types 133-137),
   * the fixed part fits and the options are well formed.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < ICMPV6_HEADER_LEN) return 'truncated';
    const fixed = ndFixedLen(buf[off]!);
    if (fixed > 0) {
      if (len < fixed) return 'truncated';
      const e = checkNdOptions(buf, off + fixed, off + len);
      if (e !== null) return e;
    }
    return this.bind(buf, off, len);
  }

  /** Packet Too Big: the MTU of the next hop (RFC 4443 §3.2). */
  get mtu(): number { return get32(this.buf, this.off + 4); }
  set mtu(v: number) { set32(this.buf, this.off + 4, v); }
  /** Error messages have types 0-127 (RFC 4443 §2.1). */
  get isError(): boolean { return this.type < 128; }
  get isEcho(): boolean {
    const t = this.type;
    return t === Icmpv6Type.EchoRequest || t === Icmpv6Type.EchoReply;
  }
  get isNd(): boolean { return ndFixedLen(this.type) > 0; }
  /** Neighbor Advertisement flags (byte 4). */
  get router(): boolean { return (this.buf[this.off + 4]! & NaFlag.Router) !== 0; }
  get solicited(): boolean { return (this.buf[this.off + 4]! & NaFlag.Solicited) !== 0; }
  get override(): boolean { return (this.buf[this.off + 4]! & NaFlag.Override) !== 0; }
  /** Absolute offset of the 16-byte target address of NS, NA and redirect messages. */
  get targetOff(): number { return this.off + 8; }
  /** Absolute offset of the ND options; the end of the message for non-ND types. */
  get ndOptionsOff(): number {
    const fixed = ndFixedLen(this.type);
    return fixed > 0 ? this.off + fixed : this.off + this.len;
  }
  get ndOptionsLen(): number { return this.off + this.len - this.ndOptionsOff; }
  get headerLen(): number { return ICMPV6_HEADER_LEN; }
  get payloadOff(): number { return this.off + ICMPV6_HEADER_LEN; }
  get payloadLen(): number { return this.len - ICMPV6_HEADER_LEN; }

  /**
   * The ND option after the one at `pos` (absolute), or the first one when
   * `pos` is -1; -1 at the end. Allocation-free iteration:
   * `for (let o = v.nextNdOption(-1); o >= 0; o = v.nextNdOption(o))`.
   */
  nextNdOption(pos: number): number {
    const start = this.ndOptionsOff;
    const end = this.off + this.len;
    let next: number;
    if (pos < 0) {
      next = start;
    } else {
      if (pos < start || pos + 2 > end) return -1;
      next = pos + this.buf[pos + 1]! * 8;
      if (next === pos) return -1; // not an option start: stop rather than spin
    }
    return next < end ? next : -1;
  }

  /** Absolute offset of the first ND option of `type`, or -1. */
  findNdOption(type: number): number {
    for (let o = this.nextNdOption(-1); o >= 0; o = this.nextNdOption(o)) {
      if (this.buf[o] === type) return o;
    }
    return -1;
  }

  /** Ethernet address in a Source Link-Layer Address option, or -1. */
  get sourceLinkAddr(): number { return this.linkAddr(NdOptionType.SourceLinkAddr); }
  /** Ethernet address in a Target Link-Layer Address option, or -1. */
  get targetLinkAddr(): number { return this.linkAddr(NdOptionType.TargetLinkAddr); }

  private linkAddr(type: number): number {
    const o = this.findNdOption(type);
    // Length 1 (8 bytes) is the Ethernet form (RFC 2464 §8).
    return o >= 0 && this.buf[o + 1] === 1 ? getMac(this.buf, o + 2) : -1;
  }

  verifyChecksum(pseudoSum: number): boolean {
    return sum(this.buf, this.off, this.len, pseudoSum) === 0xffff;
  }

  fillChecksum(pseudoSum: number): void {
    set16(this.buf, this.off + 2, 0);
    set16(this.buf, this.off + 2, checksum(this.buf, this.off, this.len, pseudoSum));
  }

  /** Checksum check with the IPv6 pseudo-header; addresses are 16 bytes at `srcOff`/`dstOff` of `addrBuf`. */
  verifyChecksumV6(addrBuf: Uint8Array, srcOff: number, dstOff: number): boolean {
    return this.verifyChecksum(pseudoHeaderSumV6(addrBuf, srcOff, dstOff, IpProtocol.ICMPv6, this.len));
  }

  fillChecksumV6(addrBuf: Uint8Array, srcOff: number, dstOff: number): void {
    this.fillChecksum(pseudoHeaderSumV6(addrBuf, srcOff, dstOff, IpProtocol.ICMPv6, this.len));
  }
}

export type NdOption =
  | { kind: 'source-link-addr'; mac: number }
  | { kind: 'target-link-addr'; mac: number }
  | { kind: 'mtu'; mtu: number }
  /** Any other option; emit zero-pads `data` so 2 + its length is a multiple of 8. */
  | { kind: 'unknown'; type: number; data: Uint8Array };

export type Icmpv6Repr =
  | { kind: 'echo-request'; identifier: number; sequence: number }
  | { kind: 'echo-reply'; identifier: number; sequence: number }
  | { kind: 'neighbor-solicit'; target: Uint8Array; options: NdOption[] }
  | {
    kind: 'neighbor-advert'; router: boolean; solicited: boolean; override: boolean;
    target: Uint8Array; options: NdOption[];
  }
  /** Any other message: type, code and the raw rest-of-header word; the body is payload. */
  | { kind: 'other'; type: number; code: number; rest: number };

function parseNdOptions(v: Icmpv6View): NdOption[] {
  const out: NdOption[] = [];
  const b = v.buf;
  for (let o = v.nextNdOption(-1); o >= 0; o = v.nextNdOption(o)) {
    const type = b[o]!;
    const l = b[o + 1]! * 8;
    if (type === NdOptionType.SourceLinkAddr && l === 8) {
      out.push({ kind: 'source-link-addr', mac: getMac(b, o + 2) });
    } else if (type === NdOptionType.TargetLinkAddr && l === 8) {
      out.push({ kind: 'target-link-addr', mac: getMac(b, o + 2) });
    } else if (type === NdOptionType.Mtu && l === 8) {
      out.push({ kind: 'mtu', mtu: get32(b, o + 4) });
    } else {
      out.push({ kind: 'unknown', type, data: b.slice(o + 2, o + l) });
    }
  }
  return out;
}

export function parseIcmpv6(v: Icmpv6View): Icmpv6Repr {
  const type = v.type;
  if (v.code === 0) {
    switch (type) {
      case Icmpv6Type.EchoRequest:
        return { kind: 'echo-request', identifier: v.identifier, sequence: v.sequence };
      case Icmpv6Type.EchoReply:
        return { kind: 'echo-reply', identifier: v.identifier, sequence: v.sequence };
      case Icmpv6Type.NeighborSolicitation:
        return { kind: 'neighbor-solicit', target: v.buf.slice(v.targetOff, v.targetOff + 16), options: parseNdOptions(v) };
      case Icmpv6Type.NeighborAdvertisement:
        return {
          kind: 'neighbor-advert', router: v.router, solicited: v.solicited, override: v.override,
          target: v.buf.slice(v.targetOff, v.targetOff + 16), options: parseNdOptions(v),
        };
      default:
        break;
    }
  }
  return { kind: 'other', type, code: v.code, rest: v.restOfHeader };
}

function ndOptionLen(opt: NdOption): number {
  return opt.kind === 'unknown' ? (2 + opt.data.length + 7) & ~7 : 8;
}

export function icmpv6ReprLen(r: Icmpv6Repr): number {
  if (r.kind !== 'neighbor-solicit' && r.kind !== 'neighbor-advert') return ICMPV6_HEADER_LEN;
  let n = 24;
  for (const opt of r.options) n += ndOptionLen(opt);
  return n;
}

function emitNdOptions(options: NdOption[], buf: Uint8Array, off: number): number {
  let o = off;
  for (const opt of options) {
    const l = ndOptionLen(opt);
    if (l > 255 * 8) throw new RangeError(`ND option of ${l} bytes exceeds ${255 * 8}`);
    buf[o + 1] = l / 8;
    switch (opt.kind) {
      case 'source-link-addr': buf[o] = NdOptionType.SourceLinkAddr; setMac(buf, o + 2, opt.mac); break;
      case 'target-link-addr': buf[o] = NdOptionType.TargetLinkAddr; setMac(buf, o + 2, opt.mac); break;
      case 'mtu': buf[o] = NdOptionType.Mtu; set16(buf, o + 2, 0); set32(buf, o + 4, opt.mtu); break;
      case 'unknown':
        buf[o] = opt.type;
        buf.set(opt.data, o + 2);
        buf.fill(0, o + 2 + opt.data.length, o + l);
        break;
    }
    o += l;
  }
  return o - off;
}

/**
 * Writes the message header (and, for NS/NA, target and options) at `off`
 * with a zero checksum: fill it with `fillChecksumV6` once any payload is in
 * place, since the pseudo-header needs the final length. Returns bytes written.
 */
export function emitIcmpv6(r: Icmpv6Repr, buf: Uint8Array, off: number): number {
  set16(buf, off + 2, 0);
  switch (r.kind) {
    case 'echo-request':
    case 'echo-reply':
      buf[off] = r.kind === 'echo-request' ? Icmpv6Type.EchoRequest : Icmpv6Type.EchoReply;
      buf[off + 1] = 0;
      set16(buf, off + 4, r.identifier);
      set16(buf, off + 6, r.sequence);
      return ICMPV6_HEADER_LEN;
    case 'neighbor-solicit':
    case 'neighbor-advert': {
      const na = r.kind === 'neighbor-advert';
      buf[off] = na ? Icmpv6Type.NeighborAdvertisement : Icmpv6Type.NeighborSolicitation;
      buf[off + 1] = 0;
      set32(buf, off + 4, 0);
      if (na) {
        buf[off + 4] = (r.router ? NaFlag.Router : 0) | (r.solicited ? NaFlag.Solicited : 0) |
          (r.override ? NaFlag.Override : 0);
      }
      buf.set(r.target.subarray(0, 16), off + 8);
      return 24 + emitNdOptions(r.options, buf, off + 24);
    }
    case 'other':
      buf[off] = r.type;
      buf[off + 1] = r.code;
      set32(buf, off + 4, r.rest);
      return ICMPV6_HEADER_LEN;
  }
}
