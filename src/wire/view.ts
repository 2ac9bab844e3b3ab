// What every header view shares: the bytes it is bound to. A view's `wrap`
// checks that the bytes hold a valid header, then binds to them; after that
// its getters and setters stay inside [off, off + len).

import { EMPTY } from './error.js';
import { get16, get32, set16, set32 } from './bytes.js';

/** Whether `len` bytes at `off` lie inside `buf`. */
export function fits(buf: Uint8Array, off: number, len: number): boolean {
  return off >= 0 && len >= 0 && off + len <= buf.length;
}

export abstract class HeaderView {
  buf: Uint8Array = EMPTY;
  off = 0;
  /** Bytes available from `off` (each view says what they cover). */
  len = 0;

  /** Bind after validation; returns null, the "valid" answer of `wrap`. */
  protected bind(buf: Uint8Array, off: number, len: number): null {
    this.buf = buf;
    this.off = off;
    this.len = len;
    return null;
  }
}

/**
 * The 8-byte header ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) share: type,
 * code, checksum, and four type-specific bytes (echo identifier + sequence).
 */
export abstract class IcmpHeaderView extends HeaderView {
  get type(): number { return this.buf[this.off]!; }
  set type(v: number) { this.buf[this.off] = v; }
  get code(): number { return this.buf[this.off + 1]!; }
  set code(v: number) { this.buf[this.off + 1] = v; }
  get checksum(): number { return get16(this.buf, this.off + 2); }
  set checksum(v: number) { set16(this.buf, this.off + 2, v); }
  /** Absolute offset of the checksum field (for partial-checksum offload metadata). */
  get checksumOff(): number { return this.off + 2; }
  /** Bytes 4..8 as one number, whatever the type makes of them. */
  get restOfHeader(): number { return get32(this.buf, this.off + 4); }
  set restOfHeader(v: number) { set32(this.buf, this.off + 4, v); }
  /** Echo identifier and sequence number. */
  get identifier(): number { return get16(this.buf, this.off + 4); }
  set identifier(v: number) { set16(this.buf, this.off + 4, v); }
  get sequence(): number { return get16(this.buf, this.off + 6); }
  set sequence(v: number) { set16(this.buf, this.off + 6, v); }
}
