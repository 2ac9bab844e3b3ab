// UDP header (RFC 768).
//
//  0               2               4               6               8
// +---------------+---------------+---------------+---------------+
// |  Source Port  |   Dest Port   |    Length     |   Checksum    |
// +---------------+---------------+---------------+---------------+
// |                          data ...
//
// Length counts header and data. The checksum covers the pseudo-header, the
// header and the data (exactly Length bytes). Over IPv4 a zero checksum
// means "not computed"; a computed zero is therefore sent as 0xffff (the
// same value in one's complement). Over IPv6 the checksum is mandatory
// (RFC 8200 §8.1).

import type { WireError } from './error.js';
import { get16, set16 } from './bytes.js';
import { checksum, pseudoHeaderSumV4, pseudoHeaderSumV6, sum } from './checksum.js';
import { IpProtocol, type Ipv4View } from './ipv4.js';
import { fits, HeaderView } from './view.js';

export const UDP_HEADER_LEN = 8;

export class UdpView extends HeaderView {
  /** Bytes available from `off` (the IP payload); the datagram itself is `length` bytes. */
  declare len: number;

  /** Valid when the Length field covers the header and fits in `len`. */
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < UDP_HEADER_LEN) return 'truncated';
    const l = get16(buf, off + 4);
    if (l < UDP_HEADER_LEN) return 'bad-length';
    if (l > len) return 'truncated';
    return this.bind(buf, off, len);
  }

  get srcPort(): number { return get16(this.buf, this.off); }
  set srcPort(p: number) { set16(this.buf, this.off, p); }
  get dstPort(): number { return get16(this.buf, this.off + 2); }
  set dstPort(p: number) { set16(this.buf, this.off + 2, p); }
  /** Length field: header + data. */
  get length(): number { return get16(this.buf, this.off + 4); }
  set length(v: number) { set16(this.buf, this.off + 4, v); }
  get checksum(): number { return get16(this.buf, this.off + 6); }
  set checksum(v: number) { set16(this.buf, this.off + 6, v); }
  /** Absolute offset of the checksum field (for partial-checksum offload metadata). */
  get checksumOff(): number { return this.off + 6; }
  /** False when the sender left the checksum out (zero; only legal over IPv4). */
  get hasChecksum(): boolean { return this.checksum !== 0; }
  get headerLen(): number { return UDP_HEADER_LEN; }
  get payloadOff(): number { return this.off + UDP_HEADER_LEN; }
  get payloadLen(): number { return this.length - UDP_HEADER_LEN; }

  /**
   * True when the sum over the datagram and the pseudo-header (`pseudoSum`,
   * computed for `length`) checks out. Says nothing about a zero field:
   * callers decide what "no checksum" means for their IP version.
   */
  verifyChecksum(pseudoSum: number): boolean {
    // The Length field may have changed since wrap (setter, or someone
    // else's write): a length that no longer fits is simply wrong.
    const l = this.length;
    if (l < UDP_HEADER_LEN || l > this.len) return false;
    return sum(this.buf, this.off, l, pseudoSum) === 0xffff;
  }

  /**
   * Computes and stores the checksum; a result of 0 is stored as 0xffff.
   * Sums Length bytes, never more than `len` (a Length set beyond the bytes
   * is the caller's bug; the sum then stops at the view's end).
   */
  fillChecksum(pseudoSum: number): void {
    set16(this.buf, this.off + 6, 0);
    const c = checksum(this.buf, this.off, Math.min(this.length, this.len), pseudoSum);
    set16(this.buf, this.off + 6, c === 0 ? 0xffff : c);
  }

  /** IPv4: true when the checksum is absent (zero) or correct. */
  verifyChecksumV4(ip: Ipv4View): boolean {
    if (this.checksum === 0) return true;
    return this.verifyChecksum(pseudoHeaderSumV4(ip.buf, ip.srcOff, ip.dstOff, IpProtocol.UDP, this.length));
  }

  fillChecksumV4(ip: Ipv4View): void {
    this.fillChecksum(pseudoHeaderSumV4(ip.buf, ip.srcOff, ip.dstOff, IpProtocol.UDP, this.length));
  }

  /** IPv6: true only when present and correct (a zero field is an error, RFC 8200 §8.1). */
  verifyChecksumV6(addrBuf: Uint8Array, srcOff: number, dstOff: number): boolean {
    if (this.checksum === 0) return false;
    return this.verifyChecksum(pseudoHeaderSumV6(addrBuf, srcOff, dstOff, IpProtocol.UDP, this.length));
  }

  fillChecksumV6(addrBuf: Uint8Array, srcOff: number, dstOff: number): void {
    this.fillChecksum(pseudoHeaderSumV6(addrBuf, srcOff, dstOff, IpProtocol.UDP, this.length));
  }
}

export interface UdpRepr {
  srcPort: number;
  dstPort: number;
  /** Data bytes; Length = 8 + this. */
  payloadLen: number;
}

export function parseUdp(v: UdpView): UdpRepr {
  return { srcPort: v.srcPort, dstPort: v.dstPort, payloadLen: v.payloadLen };
}

export function udpReprLen(_r: UdpRepr): number {
  return UDP_HEADER_LEN;
}

/** Writes the header at `off` with a zero checksum (fill it once the payload is in place); returns 8. */
export function emitUdp(r: UdpRepr, buf: Uint8Array, off: number): number {
  set16(buf, off, r.srcPort);
  set16(buf, off + 2, r.dstPort);
  set16(buf, off + 4, UDP_HEADER_LEN + r.payloadLen);
  set16(buf, off + 6, 0);
  return UDP_HEADER_LEN;
}
