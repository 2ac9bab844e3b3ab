// ICMP for IPv4 (RFC 792), with the Fragmentation Needed MTU of RFC 1191.
//
//  0               1               2                               4
// +---------------+---------------+-------------------------------+
// |     Type      |     Code      |           Checksum            |
// +---------------+---------------+-------------------------------+
// |   rest of header: echo identifier + sequence number,          |
// |   next-hop MTU (type 3 code 4), gateway (type 5), pointer (12) |
// +---------------------------------------------------------------+
// |   data: echo payload, or the start of the offending datagram  |
//
// The checksum covers the whole ICMP message (no pseudo-header), so the
// view's `len` must be the message length (the IPv4 payload length).

import type { WireError } from './error.js';
import { get16, set16, set32 } from './bytes.js';
import { checksum, sum } from './checksum.js';
import { fits, IcmpHeaderView } from './view.js';

export const ICMPV4_HEADER_LEN = 8;

export const Icmpv4Type = {
  EchoReply: 0,
  DestUnreachable: 3,
  /** Deprecated (RFC 6633), still an error message in form. */
  SourceQuench: 4,
  Redirect: 5,
  EchoRequest: 8,
  TimeExceeded: 11,
  ParameterProblem: 12,
  Timestamp: 13,
  TimestampReply: 14,
} as const;

/** Destination Unreachable codes (RFC 792, RFC 1191). */
export const Icmpv4Unreachable = {
  Net: 0,
  Host: 1,
  Protocol: 2,
  Port: 3,
  FragmentationNeeded: 4,
  SourceRouteFailed: 5,
} as const;

export class Icmpv4View extends IcmpHeaderView {
  /** ICMP message length: header and data. */
  declare len: number;

  /** Valid when the 8-byte header fits. The body's meaning depends on type and is not checked. */
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < ICMPV4_HEADER_LEN) return 'truncated';
    return this.bind(buf, off, len);
  }

  /** Next-hop MTU of a Fragmentation Needed message (RFC 1191 §4). */
  get nextHopMtu(): number { return get16(this.buf, this.off + 6); }
  set nextHopMtu(v: number) { set16(this.buf, this.off + 6, v); }
  get isEcho(): boolean {
    const t = this.type;
    return t === Icmpv4Type.EchoRequest || t === Icmpv4Type.EchoReply;
  }
  /** Error messages carry the offending datagram's header as their data (RFC 1122 §3.2.2). */
  get isError(): boolean {
    const t = this.type;
    return t === Icmpv4Type.DestUnreachable || t === Icmpv4Type.Redirect ||
      t === Icmpv4Type.TimeExceeded || t === Icmpv4Type.ParameterProblem || t === Icmpv4Type.SourceQuench;
  }
  get headerLen(): number { return ICMPV4_HEADER_LEN; }
  get payloadOff(): number { return this.off + ICMPV4_HEADER_LEN; }
  get payloadLen(): number { return this.len - ICMPV4_HEADER_LEN; }

  verifyChecksum(): boolean {
    return sum(this.buf, this.off, this.len) === 0xffff;
  }

  fillChecksum(): void {
    set16(this.buf, this.off + 2, 0);
    set16(this.buf, this.off + 2, checksum(this.buf, this.off, this.len));
  }
}

export type Icmpv4Repr =
  | { kind: 'echo-request'; identifier: number; sequence: number }
  | { kind: 'echo-reply'; identifier: number; sequence: number }
  /** Any other message: type, code and the raw rest-of-header word. */
  | { kind: 'other'; type: number; code: number; rest: number };

export function parseIcmpv4(v: Icmpv4View): Icmpv4Repr {
  if (v.code === 0 && v.type === Icmpv4Type.EchoRequest) {
    return { kind: 'echo-request', identifier: v.identifier, sequence: v.sequence };
  }
  if (v.code === 0 && v.type === Icmpv4Type.EchoReply) {
    return { kind: 'echo-reply', identifier: v.identifier, sequence: v.sequence };
  }
  return { kind: 'other', type: v.type, code: v.code, rest: v.restOfHeader };
}

export function icmpv4ReprLen(_r: Icmpv4Repr): number {
  return ICMPV4_HEADER_LEN;
}

/**
 * Writes the 8-byte header at `off` and the checksum over it and the
 * `payloadLen` data bytes the caller has already put at `off + 8`; returns 8.
 */
export function emitIcmpv4(r: Icmpv4Repr, buf: Uint8Array, off: number, payloadLen = 0): number {
  switch (r.kind) {
    case 'echo-request':
    case 'echo-reply':
      buf[off] = r.kind === 'echo-request' ? Icmpv4Type.EchoRequest : Icmpv4Type.EchoReply;
      buf[off + 1] = 0;
      set16(buf, off + 4, r.identifier);
      set16(buf, off + 6, r.sequence);
      break;
    case 'other':
      buf[off] = r.type;
      buf[off + 1] = r.code;
      set32(buf, off + 4, r.rest);
      break;
  }
  set16(buf, off + 2, 0);
  set16(buf, off + 2, checksum(buf, off, ICMPV4_HEADER_LEN + payloadLen));
  return ICMPV4_HEADER_LEN;
}
