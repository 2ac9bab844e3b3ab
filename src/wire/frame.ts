// One pass over a frame's headers, L2 to L4, into a reusable layout record.
// This is what the data path needs to act on a packet (where the IP header,
// the transport header and the payload are; which protocol) without building
// a view per layer. Validation is the same as the views' `wrap` for every
// layer it crosses; the reasons are the same WireError values.

import { type WireError } from './error.js';
import { get16 } from './bytes.js';
import { ETHERNET_HEADER_LEN, EtherType, MAX_VLAN_TAGS, VLAN_TAG_LEN, isVlanTpid } from './ethernet.js';
import { IPV4_MIN_HEADER_LEN, IpProtocol, checkIpv4Options } from './ipv4.js';
import { IPV6_HEADER_LEN, MAX_IPV6_EXT_HEADERS, checkIpv6Options, isIpv6ExtHeader } from './ipv6.js';
import { TCP_MIN_HEADER_LEN } from './tcp.js';
import { UDP_HEADER_LEN } from './udp.js';
import { fits } from './view.js';

export { IPV6_HEADER_LEN, TCP_MIN_HEADER_LEN, UDP_HEADER_LEN };

export const L3 = { NONE: 0, IPV4: 4, IPV6: 6 } as const;
export type L3Kind = (typeof L3)[keyof typeof L3];

/** Where each layer of a frame is. Offsets are absolute indexes into the buffer. */
export class FrameLayout {
  /** Frame start and length as given to `parseFrame`. */
  off = 0;
  len = 0;
  tagCount = 0;
  /** TCI of the outermost / innermost tag (0 if none). */
  outerTci = 0;
  innerTci = 0;
  /** EtherType after the tags. */
  etherType = 0;
  l3 = L3.NONE as L3Kind;
  l3Off = 0;
  /** IPv4 header with options; IPv6 fixed header plus extension headers. */
  l3HeaderLen = 0;
  /** End of the IP packet per its length field; bytes from here to off+len are link padding. */
  ipEnd = 0;
  /** Upper-layer protocol (after IPv6 extension headers); -1 when there is no IP layer. */
  l4Proto = -1;
  l4Off = 0;
  /** TCP header with options, UDP 8, ICMP 8; 0 when not parsed (other protocols, non-first fragments). */
  l4HeaderLen = 0;
  /** IPv4 MF/offset or an IPv6 fragment header present. */
  isFragment = false;
  /** A fragment other than the first: no transport header in it. */
  laterFragment = false;
  ipv6ExtCount = 0;
  /** IP length field was zero and the frame end was used instead (lenient mode only). */
  lengthFromFrame = false;

  get l2Len(): number { return this.l3Off - this.off; }
  get payloadOff(): number { return this.l4Off + this.l4HeaderLen; }
  /** L4 length per the IP header: transport header + payload. */
  get l4Len(): number { return this.ipEnd - this.l4Off; }
  /** Everything up to the end of the transport header. */
  get headersLen(): number { return this.payloadOff - this.off; }
}

export interface ParseFrameOptions {
  /**
   * Accept an IPv4 total length or IPv6 payload length of zero as "to the end
   * of the frame". Windows NDIS large-send frames carry them that way; they
   * are only meaningful for a packet that asks for segmentation.
   */
  zeroLengthMeansFrame?: boolean;
}

/**
 * Parse `len` bytes at `off` into `out`. Stops quietly (no error) at an
 * EtherType that is not IP, at an upper-layer protocol other than TCP/UDP/
 * ICMP/ICMPv6, and at a later fragment: those frames are valid, we just know
 * less about them. Errors are for headers that claim what the bytes do not hold.
 */
export function parseFrame(
  buf: Uint8Array, off: number, len: number, out: FrameLayout, opts?: ParseFrameOptions,
): WireError | null {
  out.off = off;
  out.len = len;
  out.tagCount = 0;
  out.outerTci = 0;
  out.innerTci = 0;
  out.l3 = L3.NONE;
  out.l3HeaderLen = 0;
  out.l4Proto = -1;
  out.l4HeaderLen = 0;
  out.isFragment = false;
  out.laterFragment = false;
  out.ipv6ExtCount = 0;
  out.lengthFromFrame = false;
  if (!fits(buf, off, len)) return 'bad-length';
  const end = off + len;
  out.ipEnd = end;
  out.l3Off = end;
  out.l4Off = end;
  if (len < ETHERNET_HEADER_LEN) return 'truncated';

  // L2: up to two tags.
  let t = off + 12;
  let type = get16(buf, t);
  while (isVlanTpid(type)) {
    if (out.tagCount === MAX_VLAN_TAGS) return 'too-many-tags';
    if (t + VLAN_TAG_LEN + 2 > end) return 'truncated';
    const tci = get16(buf, t + 2);
    if (out.tagCount === 0) out.outerTci = tci;
    out.innerTci = tci;
    out.tagCount++;
    t += VLAN_TAG_LEN;
    type = get16(buf, t);
  }
  out.etherType = type;
  const l3 = t + 2;
  out.l3Off = l3;
  out.l4Off = end;
  const lenient = opts?.zeroLengthMeansFrame === true;

  let proto: number;
  let l4: number;
  if (type === EtherType.IPv4) {
    if (end - l3 < IPV4_MIN_HEADER_LEN) return 'truncated';
    const vihl = buf[l3]!;
    if (vihl >>> 4 !== 4) return 'bad-version';
    const hl = (vihl & 0x0f) * 4;
    if (hl < IPV4_MIN_HEADER_LEN) return 'bad-header-length';
    if (l3 + hl > end) return 'truncated';
    let total = get16(buf, l3 + 2);
    if (total === 0 && lenient) {
      total = end - l3;
      out.lengthFromFrame = true;
    }
    if (total < hl) return 'bad-length';
    if (l3 + total > end) return 'truncated';
    const optErr = checkIpv4Options(buf, l3 + IPV4_MIN_HEADER_LEN, l3 + hl);
    if (optErr !== null) return optErr;
    out.l3 = L3.IPV4;
    out.l3HeaderLen = hl;
    out.ipEnd = l3 + total;
    const ff = get16(buf, l3 + 6);
    out.isFragment = (ff & 0x3fff) !== 0;
    out.laterFragment = (ff & 0x1fff) !== 0;
    proto = buf[l3 + 9]!;
    l4 = l3 + hl;
  } else if (type === EtherType.IPv6) {
    if (end - l3 < IPV6_HEADER_LEN) return 'truncated';
    if (buf[l3]! >>> 4 !== 6) return 'bad-version';
    let plen = get16(buf, l3 + 4);
    if (plen === 0 && lenient) {
      plen = end - l3 - IPV6_HEADER_LEN;
      out.lengthFromFrame = true;
    } else if (plen === 0 && buf[l3 + 6] === IpProtocol.HOPOPT) {
      return 'unsupported'; // jumbogram (RFC 2675)
    }
    if (l3 + IPV6_HEADER_LEN + plen > end) return 'truncated';
    const ipEnd = l3 + IPV6_HEADER_LEN + plen;
    out.l3 = L3.IPV6;
    out.ipEnd = ipEnd;
    let nh = buf[l3 + 6]!;
    let o = l3 + IPV6_HEADER_LEN;
    while (isIpv6ExtHeader(nh)) {
      if (out.ipv6ExtCount === MAX_IPV6_EXT_HEADERS) return 'unsupported';
      if (o + 8 > ipEnd) return 'truncated';
      let hlen: number;
      if (nh === IpProtocol.IPv6Frag) {
        hlen = 8;
        const fo = get16(buf, o + 2);
        out.isFragment = true;
        if ((fo & 0xfff8) !== 0) out.laterFragment = true;
      } else {
        hlen = (buf[o + 1]! + 1) * 8;
        if (o + hlen > ipEnd) return 'truncated';
        if (nh !== IpProtocol.IPv6Route) {
          const e = checkIpv6Options(buf, o + 2, o + hlen);
          if (e !== null) return e;
        }
      }
      out.ipv6ExtCount++;
      nh = buf[o]!;
      o += hlen;
    }
    out.l3HeaderLen = o - l3;
    proto = nh;
    l4 = o;
  } else {
    return null;
  }

  out.l4Proto = proto;
  out.l4Off = l4;
  if (out.laterFragment) return null;
  const ipEnd = out.ipEnd;
  switch (proto) {
    case IpProtocol.TCP: {
      if (ipEnd - l4 < TCP_MIN_HEADER_LEN) return 'truncated';
      const doff = (buf[l4 + 12]! >>> 4) * 4;
      if (doff < TCP_MIN_HEADER_LEN) return 'bad-header-length';
      if (l4 + doff > ipEnd) return 'truncated';
      out.l4HeaderLen = doff;
      break;
    }
    case IpProtocol.UDP: {
      if (ipEnd - l4 < UDP_HEADER_LEN) return 'truncated';
      // A fragment's UDP length covers the whole datagram, not this piece.
      if (!out.isFragment) {
        const ulen = get16(buf, l4 + 4);
        if (ulen < UDP_HEADER_LEN) return 'bad-length';
        if (ulen !== ipEnd - l4 && !out.lengthFromFrame) return 'bad-length';
      }
      out.l4HeaderLen = UDP_HEADER_LEN;
      break;
    }
    case IpProtocol.ICMP:
    case IpProtocol.ICMPv6:
      if (ipEnd - l4 < 8) return 'truncated';
      out.l4HeaderLen = 8;
      break;
    default:
      break;
  }
  return null;
}
