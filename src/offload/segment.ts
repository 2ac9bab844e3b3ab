// Software segmentation: TCP (TSO/LSO, v4 and v6) and UDP (USO, UDP_L4),
// with the Linux kernel's GSO semantics, so that what leaves vswitch is
// byte-for-byte what the kernel's own software GSO would have sent
// (checked against captured kernel output in test/vectors/kernel-gso.json):
//
// - every segment carries a copy of all headers (VLAN tags, IPv4 options,
//   IPv6 extension headers, TCP options);
// - IPv4: total length per segment, identification incremented by one per
//   segment from the super-frame's (wrapping at 16 bits), header checksum
//   recomputed; IPv6: payload length per segment;
// - TCP: sequence number advanced by gso_size per segment, CWR kept only on
//   the first segment, FIN and PSH only on the last (tcp_gso_segment());
// - UDP: length per datagram (__udp_gso_segment());
// - transport checksums complete, or — for a receiver that finishes them —
//   left partial: the field holds the folded pseudo-header sum for the
//   segment's length and the segment's metadata asks for the checksum.
//
// Segments go into buffers taken from the source packet's pool; nothing is
// allocated per packet.

import { addSums, copyBytes, copySum, finish, sum } from '../wire/checksum.js';
import { get16, get32, set16, set32 } from '../wire/bytes.js';
import { FrameLayout, L3, parseFrame } from '../wire/frame.js';
import { IpProtocol } from '../wire/ipv4.js';
import { GsoType, RxCsum } from '../packet/meta.js';
import type { Packet } from '../packet/packet.js';
import type { Batch } from '../packet/batch.js';
import { fillIpv4HeaderChecksum, pseudoHeaderSum } from './checksum.js';
import { TCP_CSUM_OFFSET, UDP_CSUM_OFFSET } from '../packet/vnet.js';

export type SegmentError =
  | 'gso-bad-headers'      // the headers do not parse (truncated, bad lengths, ...)
  | 'gso-proto-mismatch'   // gso type disagrees with L3/L4 (e.g. TCPV4 on an IPv6 frame)
  | 'gso-fragment'         // an IP fragment cannot be segmented
  | 'gso-bad-size'         // gso_size 0, or segments that would not fit a buffer
  | 'gso-unsupported'      // UFO (IP fragmentation of one datagram) is not done in software
  | 'pool-exhausted'       // not enough free buffers for every segment
  | 'batch-full';          // the output batch cannot take every segment

const TCP_FLAG_FIN = 0x01;
const TCP_FLAG_PSH = 0x08;
const TCP_FLAG_CWR = 0x80;

export interface SegmentOptions {
  /**
   * Leave each segment's L4 checksum partial (pseudo-header sum in the
   * field, metadata NEEDS_CSUM) for a receiver that finishes checksums itself.
   */
  partialChecksum?: boolean;
}

const scratch = new FrameLayout();
const DEFAULTS: SegmentOptions = {};

/**
 * Split the super-frame `pkt` (its metadata names the GSO type and size)
 * into segments appended to `out`. All or nothing: on error no segment is
 * left in `out` and every buffer taken is given back. The source packet is
 * not consumed. Pass `layout` if the frame was already parsed (with
 * zeroLengthMeansFrame, as NDIS senders leave IP lengths zero).
 */
export function segment(
  pkt: Packet, out: Batch, opts: SegmentOptions = DEFAULTS, layout?: FrameLayout,
): SegmentError | null {
  const m = pkt.meta;
  const buf = pkt.buf;
  let lay = layout;
  if (lay === undefined) {
    lay = scratch;
    if (parseFrame(buf, pkt.off, pkt.len, lay, { zeroLengthMeansFrame: true }) !== null) return 'gso-bad-headers';
  }
  const gso = m.gsoType;
  const mss = m.gsoSize;
  if (mss <= 0) return 'gso-bad-size';
  let isTcp: boolean;
  switch (gso) {
    case GsoType.TCPV4:
      if (lay.l3 !== L3.IPV4) return 'gso-proto-mismatch';
      isTcp = true;
      break;
    case GsoType.TCPV6:
      if (lay.l3 !== L3.IPV6) return 'gso-proto-mismatch';
      isTcp = true;
      break;
    case GsoType.UDP_L4:
      if (lay.l3 === L3.NONE) return 'gso-proto-mismatch';
      isTcp = false;
      break;
    case GsoType.UDP:
      return 'gso-unsupported';
    default:
      return 'gso-proto-mismatch';
  }
  if (lay.l4Proto !== (isTcp ? IpProtocol.TCP : IpProtocol.UDP)) return 'gso-proto-mismatch';
  if (lay.isFragment) return 'gso-fragment';
  if (lay.l4HeaderLen === 0) return 'gso-bad-headers';

  const l2Len = lay.l3Off - pkt.off;
  const l4Rel = lay.l4Off - pkt.off;          // L4 header offset within a segment
  const hdrs = lay.payloadOff - pkt.off;       // all headers
  const payloadLen = lay.ipEnd - lay.payloadOff;
  const nseg = payloadLen <= mss ? 1 : Math.ceil(payloadLen / mss);
  if (out.capacity - out.count < nseg) return 'batch-full';
  if (hdrs + Math.min(mss, payloadLen) > pkt.pool.maxFrameLen) return 'gso-bad-size';

  const partial = opts.partialChecksum === true;
  const proto = isTcp ? IpProtocol.TCP : IpProtocol.UDP;
  const csumOff = isTcp ? TCP_CSUM_OFFSET : UDP_CSUM_OFFSET;
  const v4 = lay.l3 === L3.IPV4;
  const l3Rel = l2Len;
  const l3hl = lay.l3HeaderLen;
  const ident0 = v4 ? get16(buf, lay.l3Off + 4) : 0;
  const seq0 = isTcp ? get32(buf, lay.l4Off + 4) : 0;
  const flags0 = isTcp ? buf[lay.l4Off + 13]! : 0;
  const first = out.count;

  for (let i = 0; i < nseg; i++) {
    const pOff = i * mss;
    const plen = Math.min(mss, payloadLen - pOff);
    const segLen = hdrs + plen;
    const seg = pkt.pool.take(segLen);
    if (seg === null) {
      for (let k = first; k < out.count; k++) out.get(k).release();
      out.truncate(first);
      return 'pool-exhausted';
    }
    const sb = seg.buf;
    const so = seg.off;
    seg.len = segLen;
    // Headers, then this segment's payload; the payload's sum comes with
    // the copy when the checksum will be completed here.
    const payloadSrc = lay.payloadOff + pOff;
    let payloadSum = 0;
    if (sb === buf) {
      copyBytes(sb, so, pkt.off, hdrs);
      if (partial) copyBytes(sb, so + hdrs, payloadSrc, plen);
      else payloadSum = copySum(sb, so + hdrs, payloadSrc, plen);
    } else {
      sb.set(buf.subarray(pkt.off, pkt.off + hdrs), so);
      sb.set(buf.subarray(payloadSrc, payloadSrc + plen), so + hdrs);
      if (!partial) payloadSum = sum(sb, so + hdrs, plen);
    }
    const l3 = so + l3Rel;
    const l4 = so + l4Rel;
    const l4Len = segLen - l4Rel;
    if (v4) {
      set16(sb, l3 + 2, segLen - l2Len);
      set16(sb, l3 + 4, (ident0 + i) & 0xffff);
      fillIpv4HeaderChecksum(sb, l3, l3hl);
    } else {
      set16(sb, l3 + 4, segLen - l2Len - 40);
    }
    if (isTcp) {
      set32(sb, l4 + 4, (seq0 + pOff) >>> 0);
      let f = flags0;
      if (i > 0) f &= ~TCP_FLAG_CWR;
      if (i < nseg - 1) f &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
      sb[l4 + 13] = f;
    } else {
      set16(sb, l4 + 4, l4Len);
    }
    // The pseudo-header for this segment's length; same addresses as the source.
    const ph = pseudoHeaderSum(buf, lay, proto, l4Len);
    const sm = seg.meta;
    sm.vlanPresent = m.vlanPresent;
    sm.vlanTci = m.vlanTci;
    sm.saHandle = m.saHandle;
    if (partial) {
      set16(sb, l4 + csumOff, ph);
      sm.needsCsum = true;
      sm.csumStart = l4Rel;
      sm.csumOffset = csumOff;
    } else {
      set16(sb, l4 + csumOff, 0);
      let c = finish(addSums(addSums(ph, payloadSum), sum(sb, l4, hdrs - l4Rel)));
      if (c === 0 && !isTcp) c = 0xffff; // UDP: zero would mean "no checksum"
      set16(sb, l4 + csumOff, c);
      sm.rxCsum = RxCsum.VERIFIED;
    }
    out.push(seg);
  }
  return null;
}

/** Number of segments `segment` would produce for this many payload bytes. */
export function segmentCount(payloadLen: number, mss: number): number {
  return payloadLen <= mss ? 1 : Math.ceil(payloadLen / mss);
}
