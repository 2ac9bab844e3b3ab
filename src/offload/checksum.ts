// Software checksum offload: finishing partial checksums a sender left for
// the "hardware" (Linux skb_checksum_help), the IPv4 header checksum, and
// verifying received checksums so a receiver can be told they are good.

import { addSums, finish, pseudoHeaderSumV4, pseudoHeaderSumV6, sum } from '../wire/checksum.js';
import { get16, set16 } from '../wire/bytes.js';
import { FrameLayout, L3 } from '../wire/frame.js';
import { IpProtocol } from '../wire/ipv4.js';
import { RxCsum } from '../packet/meta.js';
import { UDP_CSUM_OFFSET } from '../packet/vnet.js';
import type { Packet } from '../packet/packet.js';

export type ChecksumError =
  | 'csum-out-of-range';   // csum_start/csum_offset outside the frame

/**
 * Finish a partial checksum in place: one's-complement sum from
 * `start` to `end` (the checksum field, pre-loaded with the pseudo-header
 * sum, included), complemented into the field at `start + offset`. All
 * offsets absolute.
 *
 * A result of zero stays zero — the value RFC 1071 computes, and the one
 * tools expect (RFC 1624 §3: a computed checksum is never 0xffff unless all
 * the data is zero; Wireshark calls 0xffff bad) — except in a UDP checksum
 * field (offset 6), where zero means "no checksum" and 0xffff is sent
 * instead (RFC 768). Linux's skb_checksum_help() writes 0xffff for every
 * protocol (CSUM_MANGLED_0); receivers accept both.
 */
export function completeChecksumAt(buf: Uint8Array, start: number, offset: number, end: number): ChecksumError | null {
  if (start < 0 || offset < 0 || start + offset + 2 > end || end > buf.length) return 'csum-out-of-range';
  const c = finish(sum(buf, start, end - start));
  set16(buf, start + offset, c === 0 && offset === UDP_CSUM_OFFSET ? 0xffff : c);
  return null;
}

/**
 * Finish the partial checksum `pkt.meta` asks for and clear the request.
 * `end` defaults to the frame end; pass the IP packet's end to leave link
 * padding out of the sum.
 */
export function completeChecksum(pkt: Packet, end = pkt.off + pkt.len): ChecksumError | null {
  const m = pkt.meta;
  if (!m.needsCsum) return null;
  const e = completeChecksumAt(pkt.buf, pkt.off + m.csumStart, m.csumOffset, Math.min(end, pkt.off + pkt.len));
  if (e !== null) return e;
  m.needsCsum = false;
  m.csumStart = 0;
  m.csumOffset = 0;
  return null;
}

/** Compute the IPv4 header checksum of the header at `l3Off` (`hl` bytes) in place. */
export function fillIpv4HeaderChecksum(buf: Uint8Array, l3Off: number, hl: number): void {
  set16(buf, l3Off + 10, 0);
  set16(buf, l3Off + 10, finish(sum(buf, l3Off, hl)));
}

/** Partial sum of the pseudo-header for the L4 segment of `layout` with the given L4 length. */
export function pseudoHeaderSum(buf: Uint8Array, layout: FrameLayout, proto: number, l4Len: number): number {
  if (layout.l3 === L3.IPV4) {
    return pseudoHeaderSumV4(buf, layout.l3Off + 12, layout.l3Off + 16, proto, l4Len);
  }
  return pseudoHeaderSumV6(buf, layout.l3Off + 8, layout.l3Off + 24, proto, l4Len);
}

/**
 * Verify every checksum a receiver would: the IPv4 header checksum, and the
 * TCP / UDP / ICMPv4 / ICMPv6 checksum over IPv4 or IPv6. VERIFIED only when
 * the transport checksum was checked and is right (that is what virtio
 * DATA_VALID / CHECKSUM_UNNECESSARY promise); FAILED when any checked sum is
 * wrong; UNKNOWN when there was nothing we could check (other protocols,
 * fragments, no IP).
 */
export function verifyChecksums(buf: Uint8Array, layout: FrameLayout): RxCsum {
  if (layout.l3 === L3.NONE) return RxCsum.UNKNOWN;
  if (layout.l3 === L3.IPV4 && sum(buf, layout.l3Off, layout.l3HeaderLen) !== 0xffff) return RxCsum.FAILED;
  if (layout.isFragment) return RxCsum.UNKNOWN;
  const l4 = layout.l4Off;
  const l4Len = layout.ipEnd - l4;
  const proto = layout.l4Proto;
  let s: number;
  switch (proto) {
    case IpProtocol.TCP:
      if (layout.l4HeaderLen === 0) return RxCsum.UNKNOWN;
      s = pseudoHeaderSum(buf, layout, proto, l4Len);
      break;
    case IpProtocol.UDP:
      if (layout.l4HeaderLen === 0) return RxCsum.UNKNOWN;
      if (get16(buf, l4 + 6) === 0) {
        // IPv4: zero means the sender sent none (RFC 768); IPv6 forbids it (RFC 8200 §8.1).
        return layout.l3 === L3.IPV4 ? RxCsum.VERIFIED : RxCsum.FAILED;
      }
      s = pseudoHeaderSum(buf, layout, proto, l4Len);
      break;
    case IpProtocol.ICMP:
      if (layout.l3 !== L3.IPV4 || layout.l4HeaderLen === 0) return RxCsum.UNKNOWN;
      s = 0;
      break;
    case IpProtocol.ICMPv6:
      if (layout.l3 !== L3.IPV6 || layout.l4HeaderLen === 0) return RxCsum.UNKNOWN;
      s = pseudoHeaderSum(buf, layout, proto, l4Len);
      break;
    default:
      return RxCsum.UNKNOWN;
  }
  return addSums(s, sum(buf, l4, l4Len)) === 0xffff ? RxCsum.VERIFIED : RxCsum.FAILED;
}
