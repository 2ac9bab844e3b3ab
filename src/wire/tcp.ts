// TCP header (RFC 9293 §3.1) with options.
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-------------------------------+-------------------------------+
// |          Source Port          |       Destination Port        |
// +-------------------------------+-------------------------------+
// |                        Sequence Number                        |
// +---------------------------------------------------------------+
// |                    Acknowledgment Number                      |
// +-------+-----+-+-+-+-+-+-+-+-+-+-------------------------------+
// | Data  |Rsrvd|A|C|E|U|A|P|R|S|F|                               |
// |Offset |     |E|W|C|R|C|S|S|Y|I|            Window             |
// |       |     | |R|E|G|K|H|T|N|N|                               |
// +-------+-----+-+-+-+-+-+-+-+-+-+-------------------------------+
// |           Checksum            |         Urgent Pointer        |
// +-------------------------------+-------------------------------+
// |                    Options (data offset > 5)                  |
// +---------------------------------------------------------------+
//
// AE (Accurate ECN, RFC 9768; formerly NS, RFC 3540) is the lowest bit of
// byte 12. The view's `len` is the TCP segment length, which only the IP
// layer knows (IPv4 total length − IHL, or the IPv6 upper-layer length): the
// checksum covers exactly `len` bytes.

import type { WireError } from './error.js';
import { get16, get32, set16, set32 } from './bytes.js';
import { checksum, pseudoHeaderSumV4, pseudoHeaderSumV6, sum } from './checksum.js';
import { IpProtocol, type Ipv4View } from './ipv4.js';
import { fits, HeaderView } from './view.js';

export const TCP_MIN_HEADER_LEN = 20;
export const TCP_MAX_HEADER_LEN = 60;

/** Flag bits as `TcpView.flags` returns them (AE above the classic byte). */
export const TcpFlag = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
  AE: 0x100,
  /** The same bit under its RFC 3540 name. */
  NS: 0x100,
} as const;

/** Option kinds (IANA "TCP Option Kind Numbers"). */
export const TcpOptionKind = {
  EOL: 0,
  NOP: 1,
  MSS: 2,
  WindowScale: 3,
  SackPermitted: 4,
  Sack: 5,
  Timestamps: 8,
} as const;

/**
 * Checks the option area [off, end): EOL ends it, NOP is one byte, every
 * other option has a length ≥ 2 that fits, and the kinds we know have their
 * defined length. Unknown kinds pass (they are the endpoints' business).
 */
export function checkTcpOptions(b: Uint8Array, off: number, end: number): WireError | null {
  let o = off;
  while (o < end) {
    const kind = b[o]!;
    if (kind === TcpOptionKind.EOL) return null;
    if (kind === TcpOptionKind.NOP) { o++; continue; }
    if (o + 2 > end) return 'bad-option';
    const l = b[o + 1]!;
    if (l < 2 || o + l > end) return 'bad-option';
    switch (kind) {
      case TcpOptionKind.MSS: if (l !== 4) return 'bad-option'; break;
      case TcpOptionKind.WindowScale: if (l !== 3) return 'bad-option'; break;
      case TcpOptionKind.SackPermitted: if (l !== 2) return 'bad-option'; break;
      // RFC 2018 §3: 8n + 2 with at least one block.
      case TcpOptionKind.Sack: if (l < 10 || (l - 2) % 8 !== 0) return 'bad-option'; break;
      case TcpOptionKind.Timestamps: if (l !== 10) return 'bad-option'; break;
      default: break;
    }
    o += l;
  }
  return null;
}

/**
 * Absolute offset of the first option of `kind` in [off, end), or -1.
 * Expects options already checked by `checkTcpOptions`.
 */
function findTcpOption(b: Uint8Array, off: number, end: number, kind: number): number {
  let o = off;
  while (o < end) {
    const k = b[o]!;
    if (k === TcpOptionKind.EOL) return -1;
    if (k === TcpOptionKind.NOP) { o++; continue; }
    if (k === kind) return o;
    o += b[o + 1]!;
  }
  return -1;
}

export class TcpView extends HeaderView {
  /** TCP segment length: header, options and data. */
  declare len: number;

  /**
   * Bind to the `len`-byte segment at `off`. Valid when the data offset is at
   * least 5 words, the header fits in `len` and the options are well formed.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < TCP_MIN_HEADER_LEN) return 'truncated';
    const hl = (buf[off + 12]! >>> 4) * 4;
    if (hl < TCP_MIN_HEADER_LEN) return 'bad-header-length';
    if (hl > len) return 'truncated';
    const e = checkTcpOptions(buf, off + TCP_MIN_HEADER_LEN, off + hl);
    if (e !== null) return e;
    return this.bind(buf, off, len);
  }

  get srcPort(): number { return get16(this.buf, this.off); }
  set srcPort(p: number) { set16(this.buf, this.off, p); }
  get dstPort(): number { return get16(this.buf, this.off + 2); }
  set dstPort(p: number) { set16(this.buf, this.off + 2, p); }
  get seq(): number { return get32(this.buf, this.off + 4); }
  set seq(v: number) { set32(this.buf, this.off + 4, v); }
  get ack(): number { return get32(this.buf, this.off + 8); }
  set ack(v: number) { set32(this.buf, this.off + 8, v); }
  /** Header length in bytes (data offset × 4). */
  get headerLen(): number { return (this.buf[this.off + 12]! >>> 4) * 4; }
  /** The nine flag bits, TcpFlag values OR-ed. */
  get flags(): number { return ((this.buf[this.off + 12]! & 1) << 8) | this.buf[this.off + 13]!; }
  set flags(f: number) {
    this.buf[this.off + 12] = (this.buf[this.off + 12]! & 0xfe) | ((f >>> 8) & 1);
    this.buf[this.off + 13] = f;
  }
  get window(): number { return get16(this.buf, this.off + 14); }
  set window(v: number) { set16(this.buf, this.off + 14, v); }
  get checksum(): number { return get16(this.buf, this.off + 16); }
  set checksum(v: number) { set16(this.buf, this.off + 16, v); }
  /** Absolute offset of the checksum field (for partial-checksum offload metadata). */
  get checksumOff(): number { return this.off + 16; }
  get urgent(): number { return get16(this.buf, this.off + 18); }
  set urgent(v: number) { set16(this.buf, this.off + 18, v); }
  get optionsOff(): number { return this.off + TCP_MIN_HEADER_LEN; }
  get optionsLen(): number { return this.headerLen - TCP_MIN_HEADER_LEN; }
  get payloadOff(): number { return this.off + this.headerLen; }
  get payloadLen(): number { return this.len - this.headerLen; }

  /** Absolute offset of the first option of `kind` (its kind byte), or -1. */
  findOption(kind: number): number {
    return findTcpOption(this.buf, this.off + TCP_MIN_HEADER_LEN, this.off + this.headerLen, kind);
  }

  /** MSS option value, or -1 when absent. */
  get mss(): number {
    const o = this.findOption(TcpOptionKind.MSS);
    return o < 0 ? -1 : get16(this.buf, o + 2);
  }

  /** Window scale shift, or -1 when absent. */
  get windowScale(): number {
    const o = this.findOption(TcpOptionKind.WindowScale);
    return o < 0 ? -1 : this.buf[o + 2]!;
  }

  /**
   * True when the checksum is right, given the partial sum of the
   * pseudo-header for this segment's addresses and protocol and `len`.
   */
  verifyChecksum(pseudoSum: number): boolean {
    return sum(this.buf, this.off, this.len, pseudoSum) === 0xffff;
  }

  fillChecksum(pseudoSum: number): void {
    set16(this.buf, this.off + 16, 0);
    set16(this.buf, this.off + 16, checksum(this.buf, this.off, this.len, pseudoSum));
  }

  /** Checksum check with the IPv4 pseudo-header of `ip` (addresses read from `ip.buf`). */
  verifyChecksumV4(ip: Ipv4View): boolean {
    return this.verifyChecksum(pseudoHeaderSumV4(ip.buf, ip.srcOff, ip.dstOff, IpProtocol.TCP, this.len));
  }

  fillChecksumV4(ip: Ipv4View): void {
    this.fillChecksum(pseudoHeaderSumV4(ip.buf, ip.srcOff, ip.dstOff, IpProtocol.TCP, this.len));
  }

  /** Checksum check with the IPv6 pseudo-header; addresses are 16 bytes at `srcOff`/`dstOff` of `addrBuf`. */
  verifyChecksumV6(addrBuf: Uint8Array, srcOff: number, dstOff: number): boolean {
    return this.verifyChecksum(pseudoHeaderSumV6(addrBuf, srcOff, dstOff, IpProtocol.TCP, this.len));
  }

  fillChecksumV6(addrBuf: Uint8Array, srcOff: number, dstOff: number): void {
    this.fillChecksum(pseudoHeaderSumV6(addrBuf, srcOff, dstOff, IpProtocol.TCP, this.len));
  }
}

export interface SackBlock {
  left: number;
  right: number;
}

export type TcpOption =
  | { kind: 'nop' }
  | { kind: 'mss'; value: number }
  | { kind: 'window-scale'; shift: number }
  | { kind: 'sack-permitted' }
  | { kind: 'sack'; blocks: SackBlock[] }
  | { kind: 'timestamps'; tsVal: number; tsEcr: number }
  /** Any other kind, data as on the wire (length byte = 2 + data.length). */
  | { kind: 'unknown'; type: number; data: Uint8Array };

export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  /** TcpFlag bits, AE included. */
  flags: number;
  window: number;
  urgent: number;
  /**
   * Options in wire order. NOPs are kept (senders use them for alignment,
   * and keeping them makes emit∘parse byte-exact); EOL is not an option
   * here: parsing stops at it and emitting pads with EOL (zero) bytes.
   */
  options: TcpOption[];
}

function parseOptions(b: Uint8Array, off: number, end: number): TcpOption[] {
  const out: TcpOption[] = [];
  let o = off;
  while (o < end) {
    const kind = b[o]!;
    if (kind === TcpOptionKind.EOL) break;
    if (kind === TcpOptionKind.NOP) { out.push({ kind: 'nop' }); o++; continue; }
    const l = b[o + 1]!;
    switch (kind) {
      case TcpOptionKind.MSS: out.push({ kind: 'mss', value: get16(b, o + 2) }); break;
      case TcpOptionKind.WindowScale: out.push({ kind: 'window-scale', shift: b[o + 2]! }); break;
      case TcpOptionKind.SackPermitted: out.push({ kind: 'sack-permitted' }); break;
      case TcpOptionKind.Sack: {
        const blocks: SackBlock[] = [];
        for (let p = o + 2; p < o + l; p += 8) blocks.push({ left: get32(b, p), right: get32(b, p + 4) });
        out.push({ kind: 'sack', blocks });
        break;
      }
      case TcpOptionKind.Timestamps:
        out.push({ kind: 'timestamps', tsVal: get32(b, o + 2), tsEcr: get32(b, o + 6) });
        break;
      default: out.push({ kind: 'unknown', type: kind, data: b.slice(o + 2, o + l) }); break;
    }
    o += l;
  }
  return out;
}

export function parseTcp(v: TcpView): TcpRepr {
  return {
    srcPort: v.srcPort,
    dstPort: v.dstPort,
    seq: v.seq,
    ack: v.ack,
    flags: v.flags,
    window: v.window,
    urgent: v.urgent,
    options: parseOptions(v.buf, v.optionsOff, v.off + v.headerLen),
  };
}

function optionLen(opt: TcpOption): number {
  switch (opt.kind) {
    case 'nop': return 1;
    case 'mss': return 4;
    case 'window-scale': return 3;
    case 'sack-permitted': return 2;
    case 'sack': return 2 + 8 * opt.blocks.length;
    case 'timestamps': return 10;
    case 'unknown': return 2 + opt.data.length;
  }
}

/** Option bytes before padding. */
export function tcpOptionsLen(options: readonly TcpOption[]): number {
  let n = 0;
  for (const opt of options) n += optionLen(opt);
  return n;
}

export function tcpReprHeaderLen(r: TcpRepr): number {
  return TCP_MIN_HEADER_LEN + ((tcpOptionsLen(r.options) + 3) & ~3);
}

/**
 * Writes the header at `off` with a zero checksum (fill it once the payload
 * is in place); returns the header length. More than 40 bytes of options
 * cannot be expressed in a TCP header: that is a bug in the caller and throws.
 */
export function emitTcp(r: TcpRepr, buf: Uint8Array, off: number): number {
  const hl = tcpReprHeaderLen(r);
  if (hl > TCP_MAX_HEADER_LEN) throw new RangeError(`TCP options need ${hl - TCP_MIN_HEADER_LEN} bytes, at most 40 fit`);
  set16(buf, off, r.srcPort);
  set16(buf, off + 2, r.dstPort);
  set32(buf, off + 4, r.seq);
  set32(buf, off + 8, r.ack);
  buf[off + 12] = ((hl >>> 2) << 4) | ((r.flags >>> 8) & 1);
  buf[off + 13] = r.flags;
  set16(buf, off + 14, r.window);
  set16(buf, off + 16, 0);
  set16(buf, off + 18, r.urgent);
  let o = off + TCP_MIN_HEADER_LEN;
  for (const opt of r.options) {
    switch (opt.kind) {
      case 'nop': buf[o] = TcpOptionKind.NOP; break;
      case 'mss': buf[o] = TcpOptionKind.MSS; buf[o + 1] = 4; set16(buf, o + 2, opt.value); break;
      case 'window-scale': buf[o] = TcpOptionKind.WindowScale; buf[o + 1] = 3; buf[o + 2] = opt.shift; break;
      case 'sack-permitted': buf[o] = TcpOptionKind.SackPermitted; buf[o + 1] = 2; break;
      case 'sack':
        buf[o] = TcpOptionKind.Sack;
        buf[o + 1] = 2 + 8 * opt.blocks.length;
        for (let i = 0; i < opt.blocks.length; i++) {
          set32(buf, o + 2 + 8 * i, opt.blocks[i]!.left);
          set32(buf, o + 6 + 8 * i, opt.blocks[i]!.right);
        }
        break;
      case 'timestamps':
        buf[o] = TcpOptionKind.Timestamps; buf[o + 1] = 10;
        set32(buf, o + 2, opt.tsVal);
        set32(buf, o + 6, opt.tsEcr);
        break;
      case 'unknown':
        buf[o] = opt.type; buf[o + 1] = 2 + opt.data.length;
        buf.set(opt.data, o + 2);
        break;
    }
    o += optionLen(opt);
  }
  // EOL, then zeros (RFC 9293 §3.1: padding after the end-of-list is zero).
  buf.fill(TcpOptionKind.EOL, o, off + hl);
  return hl;
}
