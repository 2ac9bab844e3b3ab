// struct virtio_net_hdr (virtio 1.2 §5.1.6; Linux include/uapi/linux/virtio_net.h),
// the per-frame offload header on TAP devices with IFF_VNET_HDR and on
// packet sockets with PACKET_VNET_HDR.
//
//  0       1          2         4          6            8             10          12
// +-------+----------+---------+----------+------------+-------------+-----------+
// | flags | gso_type | hdr_len | gso_size | csum_start | csum_offset | num_bufs  |
// +-------+----------+---------+----------+------------+-------------+-----------+
//                     (all 16-bit fields little-endian)   12-byte form only ^
//
// Decoding applies the checks Linux applies in virtio_net_hdr_to_skb() (and
// tun_get_user()) before it believes a guest's header, so a frame vswitch
// accepts is one the kernel would accept too; every refusal has a reason.

import { OffloadMeta, GsoType, RxCsum } from './meta.js';
import { FrameLayout, L3, parseFrame, TCP_MIN_HEADER_LEN, UDP_HEADER_LEN, IPV6_HEADER_LEN } from '../wire/frame.js';
import { IPV4_MIN_HEADER_LEN, IpProtocol } from '../wire/ipv4.js';

export const VNET_HDR_LEN = 10;
/** With num_buffers (virtio_net_hdr_mrg_rxbuf / v1); what vswitch sets on TAPs and packet sockets. */
export const VNET_HDR_MRG_LEN = 12;

export const VnetFlag = {
  NEEDS_CSUM: 1,
  DATA_VALID: 2,
  RSC_INFO: 4,
} as const;

export const VnetGso = {
  NONE: 0,
  TCPV4: 1,
  UDP: 3,
  TCPV6: 4,
  UDP_L4: 5,
  ECN: 0x80,
} as const;

/** Offset of the checksum field in the TCP / UDP header. */
export const TCP_CSUM_OFFSET = 16;
export const UDP_CSUM_OFFSET = 6;
/** Linux UDP_MAX_SEGMENTS (include/linux/udp.h, 128 since 6.11). */
export const UDP_MAX_SEGMENTS = 128;
/** Linux GSO_BY_FRAGS: a gso_size value reserved for the kernel's own use. */
const GSO_BY_FRAGS = 0xffff;

export type VnetError =
  | 'vnet-truncated'           // fewer bytes than the header
  | 'vnet-bad-gso-type'        // unknown gso_type, or ECN on a non-TCP type
  | 'vnet-bad-gso-size'        // gso_size 0 (or the reserved 0xffff) on a GSO frame
  | 'vnet-csum-out-of-range'   // csum_start/offset (+ L4 header) past the frame
  | 'vnet-csum-before-l3'      // csum_start inside the L2/L3 minimum (kernel nh_min_len)
  | 'vnet-bad-csum-offset'     // TCP GSO with csum_offset ≠ 16, USO with ≠ 6
  | 'vnet-gso-needs-csum'      // USO without NEEDS_CSUM
  | 'vnet-gso-proto-mismatch'  // gso_type disagrees with the frame's L3/L4 headers
  | 'vnet-too-many-segments'   // USO payload over UDP_MAX_SEGMENTS × gso_size
  | 'vnet-hdr-len';            // hdr_len beyond the frame

/** Who wrote the header: a guest (untrusted) or the host kernel (a packet socket's receive side). */
export type VnetSource = 'guest' | 'kernel';

const scratch = new FrameLayout();

function gsoTypeFromVirtio(t: number): GsoType | null {
  switch (t) {
    case VnetGso.TCPV4: return GsoType.TCPV4;
    case VnetGso.TCPV6: return GsoType.TCPV6;
    case VnetGso.UDP: return GsoType.UDP;
    case VnetGso.UDP_L4: return GsoType.UDP_L4;
    default: return null;
  }
}

function rd16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

function wr16(b: Uint8Array, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
}

/**
 * Decode the header at `hbuf[hoff..hoff+hdrSize)` for the frame at
 * `fbuf[foff..foff+flen)` into `meta` (reset first). On error `meta` is left
 * reset and the reason returned; the frame should be dropped and counted.
 *
 * DATA_VALID and RSC_INFO are believed only from the kernel; from a guest
 * they say nothing about the frame and are ignored.
 */
export function decodeVnetHeader(
  hbuf: Uint8Array, hoff: number, hdrSize: number,
  fbuf: Uint8Array, foff: number, flen: number,
  meta: OffloadMeta, source: VnetSource,
): VnetError | null {
  meta.reset();
  if (hoff < 0 || hoff + hdrSize > hbuf.length || (hdrSize !== VNET_HDR_LEN && hdrSize !== VNET_HDR_MRG_LEN)) {
    return 'vnet-truncated';
  }
  const flags = hbuf[hoff]!;
  const rawGso = hbuf[hoff + 1]!;
  let hdrLen = rd16(hbuf, hoff + 2);
  const gsoSize = rd16(hbuf, hoff + 4);
  const csumStart = rd16(hbuf, hoff + 6);
  const csumOffset = rd16(hbuf, hoff + 8);

  // gso_type: kernel switch on (gso_type & ~ECN); anything else is -EINVAL,
  // including ECN with GSO_NONE. ECN on UDP is refused (the kernel refuses it for UDP_L4).
  let gso: GsoType = GsoType.NONE;
  const ecn = (rawGso & VnetGso.ECN) !== 0;
  let thlen = 0;
  let l4Proto = -1;
  if (rawGso !== VnetGso.NONE) {
    const t = gsoTypeFromVirtio(rawGso & ~VnetGso.ECN);
    if (t === null) return 'vnet-bad-gso-type';
    if (ecn && t !== GsoType.TCPV4 && t !== GsoType.TCPV6) return 'vnet-bad-gso-type';
    if (gsoSize === 0 || gsoSize === GSO_BY_FRAGS) return 'vnet-bad-gso-size';
    gso = t;
    const tcp = t === GsoType.TCPV4 || t === GsoType.TCPV6;
    thlen = tcp ? TCP_MIN_HEADER_LEN : UDP_HEADER_LEN;
    l4Proto = tcp ? IpProtocol.TCP : IpProtocol.UDP;
  }

  const needsCsum = (flags & VnetFlag.NEEDS_CSUM) !== 0;
  let pOff = 0; // end of the minimal transport header, from the frame start
  if (needsCsum) {
    // pskb_may_pull(start + max(thlen, off + 2)) and skb_partial_csum_set().
    const needed = csumStart + Math.max(thlen, csumOffset + 2);
    if (needed > flen || csumStart + csumOffset + 2 > flen) return 'vnet-csum-out-of-range';
    const nhMin = gso === GsoType.TCPV6 ? IPV6_HEADER_LEN : IPV4_MIN_HEADER_LEN;
    if (csumStart < nhMin) return 'vnet-csum-before-l3';
    pOff = csumStart + thlen;
    if (pOff > flen) return 'vnet-csum-out-of-range';
  } else if (gso !== GsoType.NONE) {
    // No NEEDS_CSUM: the kernel dissects the frame to find the transport header.
    if (gso === GsoType.UDP_L4) return 'vnet-gso-needs-csum';
    const e = parseFrame(fbuf, foff, flen, scratch);
    if (e !== null || scratch.l3 === L3.NONE || scratch.laterFragment) return 'vnet-gso-proto-mismatch';
    if (gso === GsoType.TCPV4 && scratch.l3 !== L3.IPV4) return 'vnet-gso-proto-mismatch';
    if (gso === GsoType.TCPV6 && scratch.l3 !== L3.IPV6) return 'vnet-gso-proto-mismatch';
    if (scratch.l4Proto !== l4Proto) return 'vnet-gso-proto-mismatch';
    pOff = scratch.l4Off - foff + thlen;
    if (pOff > flen) return 'vnet-gso-proto-mismatch';
  }

  if (gso !== GsoType.NONE) {
    if (gso === GsoType.UDP_L4) {
      if (csumOffset !== UDP_CSUM_OFFSET) return 'vnet-bad-csum-offset';
      if (flen - pOff > gsoSize * UDP_MAX_SEGMENTS) return 'vnet-too-many-segments';
    } else if ((gso === GsoType.TCPV4 || gso === GsoType.TCPV6) && needsCsum && csumOffset !== TCP_CSUM_OFFSET) {
      return 'vnet-bad-csum-offset';
    }
  }

  // tun_get_user(): hdr_len is raised to cover the checksum field, then must fit.
  if (needsCsum && csumStart + csumOffset + 2 > hdrLen) hdrLen = csumStart + csumOffset + 2;
  if (hdrLen > flen) return 'vnet-hdr-len';

  if (needsCsum) {
    meta.needsCsum = true;
    meta.csumStart = csumStart;
    meta.csumOffset = csumOffset;
  }
  if (gso !== GsoType.NONE) {
    // "Too small packets are not really GSO ones" (UFO's gso_size excludes the UDP header).
    const nhOff = gso === GsoType.UDP ? pOff - thlen : pOff;
    if (flen - nhOff > gsoSize) {
      meta.gsoType = gso;
      meta.gsoSize = gsoSize;
      meta.gsoEcn = ecn;
      meta.hdrLen = hdrLen;
    }
  }
  if (source === 'kernel') {
    if ((flags & VnetFlag.DATA_VALID) !== 0 && !needsCsum) meta.rxCsum = RxCsum.VERIFIED;
    if ((flags & VnetFlag.RSC_INFO) !== 0 && meta.gsoType !== GsoType.NONE && !needsCsum) {
      meta.rscSegments = csumStart;
      meta.rscDupAcks = csumOffset;
    }
  }
  return null;
}

/**
 * Encode `meta` as a header at `buf[off..off+hdrSize)`. NEEDS_CSUM wins over
 * DATA_VALID (a partial checksum is not a verified one), as in
 * virtio_net_hdr_from_skb(). `allowDataValid` is false for receivers that did
 * not negotiate it. `vlanHlen` shifts csum_start when the frame written after
 * the header carries a tag that the metadata's offsets do not count.
 */
export function encodeVnetHeader(
  meta: OffloadMeta, buf: Uint8Array, off: number, hdrSize: number,
  allowDataValid = true, vlanHlen = 0,
): void {
  let flags = 0;
  let gsoType: number = VnetGso.NONE;
  let hdrLen = 0, gsoSize = 0, csumStart = 0, csumOffset = 0;
  if (meta.gsoType !== GsoType.NONE) {
    gsoType = meta.gsoType | (meta.gsoEcn ? VnetGso.ECN : 0);
    gsoSize = meta.gsoSize;
    hdrLen = meta.hdrLen + vlanHlen;
  }
  if (meta.needsCsum) {
    flags = VnetFlag.NEEDS_CSUM;
    csumStart = meta.csumStart + vlanHlen;
    csumOffset = meta.csumOffset;
  } else if (allowDataValid && meta.rxCsum === RxCsum.VERIFIED) {
    flags = VnetFlag.DATA_VALID;
  }
  buf[off] = flags;
  buf[off + 1] = gsoType;
  wr16(buf, off + 2, hdrLen);
  wr16(buf, off + 4, gsoSize);
  wr16(buf, off + 6, csumStart);
  wr16(buf, off + 8, csumOffset);
  if (hdrSize === VNET_HDR_MRG_LEN) wr16(buf, off + 10, 1);
}
