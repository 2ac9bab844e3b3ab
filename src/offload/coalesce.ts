// UDP receive coalescing (URO): consecutive datagrams of one flow, on their
// way to a guest that accepts USO super-frames, leave as one super-frame
// that the guest's kernel splits again (Linux's UDP GRO towards a USO
// device; Windows' UDP RSC). One write into the guest instead of dozens:
// the guest's stack runs IP once per super-frame and its socket is woken
// once, which is where a switch spends its time with small datagrams.
//
// What comes out must be exactly what went in once the receiver has split
// it, so a datagram joins only when the kernel's split (__udp_gso_segment,
// inet_gso_segment) gives it back byte for byte:
//
// - same Ethernet header and egress tag, IPv4 without options and not a
//   fragment, or IPv6 with UDP as the first next header; same addresses,
//   ports, TOS/traffic class and flow label, TTL/hop limit and DF;
// - IPv4 identification one more than the previous datagram's (the split
//   numbers segments from the first one's);
// - every datagram the size of the first, only the last may be shorter;
// - checksums: partial (the sender asked for it to be completed) or
//   verified on the way in; never an IPv4 datagram without one (zero), as
//   the split would make one up; the IPv4 header checksum must be right;
// - at most MAX_SEGMENTS datagrams and 64 KiB of IP packet.
//
// The super-frame carries the first datagram's headers with the lengths of
// the whole, its UDP checksum partial (folded pseudo-header sum for the
// whole length), metadata gso UDP_L4 with gso_size = the datagrams' payload
// size. Datagrams of other flows may pass each other (as GRO does); within
// a flow the order is kept, and anything that cannot join ends every open
// run, so nothing overtakes it. Only the work arrays made at construction
// are used; the super-frame is a pool buffer. No buffer: the datagrams go
// as they came.

import { copyBytes, pseudoHeaderSumV4, pseudoHeaderSumV6, sum } from '../wire/checksum.js';
import { get16, set16 } from '../wire/bytes.js';
import { GsoType, NO_SA, RxCsum } from '../packet/meta.js';
import type { Packet } from '../packet/packet.js';
import type { BufferPool } from '../packet/pool.js';
import { fillIpv4HeaderChecksum } from './checksum.js';
import { UDP_CSUM_OFFSET } from '../packet/vnet.js';

/** Most datagrams in one super-frame (Linux's UDP_MAX_SEGMENTS was 64 before 6.x raised it). */
export const MAX_SEGMENTS = 64;
/** Open runs at once (flows interleaved in one batch). */
const OPEN_RUNS = 8;

const ETH = 14;
const V4_HDR = 20;
const V6_HDR = 40;
const UDP_HDR = 8;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const PROTO_UDP = 17;

export class UdpCoalescer {
  /** Super-frames made and datagrams put into them by the last `run`. */
  frames = 0;
  datagrams = 0;

  private readonly runOf: Int32Array;
  private readonly runFirst: Int32Array;
  private readonly runCount: Int32Array;
  private readonly runSize: Int32Array;
  private readonly runPayload: Int32Array;
  private readonly runLastId: Int32Array;
  private readonly runClosed: Uint8Array;
  private readonly runBuilt: Uint8Array;
  private readonly open = new Int32Array(OPEN_RUNS);
  private openCount = 0;
  private runs = 0;

  constructor(capacity: number, private readonly pool: BufferPool) {
    this.runOf = new Int32Array(capacity);
    this.runFirst = new Int32Array(capacity);
    this.runCount = new Int32Array(capacity);
    this.runSize = new Int32Array(capacity);
    this.runPayload = new Int32Array(capacity);
    this.runLastId = new Int32Array(capacity);
    this.runClosed = new Uint8Array(capacity);
    this.runBuilt = new Uint8Array(capacity);
  }

  /**
   * Coalesce `packets[0..n)` (each with its egress TCI in `tci`) in place;
   * returns the new count. Datagrams merged are released; the super-frames
   * are owned by the array as the packets were. `v4`/`v6`: the receiver
   * accepts USO super-frames of that IP version.
   */
  run(packets: Packet[], tci: Int32Array, n: number, v4: boolean, v6: boolean): number {
    this.frames = 0;
    this.datagrams = 0;
    if (n < 2 || (!v4 && !v6)) return n;
    this.runs = 0;
    this.openCount = 0;
    let joined = false;
    for (let i = 0; i < n; i++) {
      const p = packets[i]!;
      const l = eligible(p, v4, v6);
      if (l < 0) {
        this.runOf[i] = -1;
        this.openCount = 0; // nothing overtakes it
        continue;
      }
      if (this.place(packets, tci, i, l)) joined = true;
    }
    if (!joined) return n;
    return this.emit(packets, tci, n);
  }

  /** Put eligible packet `i` (payload `l` bytes) into a run; true if it joined one. */
  private place(packets: Packet[], tci: Int32Array, i: number, l: number): boolean {
    const p = packets[i]!;
    const v6 = get16(p.buf, p.off + 12) === ETHERTYPE_IPV6;
    const id = v6 ? 0 : get16(p.buf, p.off + ETH + 4);
    for (let k = 0; k < this.openCount; k++) {
      const r = this.open[k]!;
      const f = packets[this.runFirst[r]!]!;
      if (!sameFlow(f, p, v6)) continue;
      // Its flow's run: join it, or end it and start afresh.
      if (this.runClosed[r] === 0 && tci[this.runFirst[r]!] === tci[i] && sameHeaders(f, p, v6) &&
          l <= this.runSize[r]! && this.runCount[r]! < MAX_SEGMENTS &&
          (v6 || id === ((this.runLastId[r]! + 1) & 0xffff)) &&
          fits(this.runPayload[r]! + l, v6, this.pool.maxFrameLen)) {
        this.runOf[i] = r;
        this.runCount[r]!++;
        this.runPayload[r]! += l;
        this.runLastId[r] = id;
        if (l < this.runSize[r]!) this.closeRun(k);
        return true;
      }
      this.closeRun(k);
      break;
    }
    const r = this.runs++;
    this.runOf[i] = r;
    this.runFirst[r] = i;
    this.runCount[r] = 1;
    this.runSize[r] = l;
    this.runPayload[r] = l;
    this.runLastId[r] = id;
    this.runClosed[r] = 0;
    this.runBuilt[r] = 0;
    if (this.openCount === OPEN_RUNS) this.closeRun(0);
    this.open[this.openCount++] = r;
    return false;
  }

  /** End the open run in slot `k` (its list stays; nothing more joins it). */
  private closeRun(k: number): void {
    this.runClosed[this.open[k]!] = 1;
    for (let j = k + 1; j < this.openCount; j++) this.open[j - 1] = this.open[j]!;
    this.openCount--;
  }

  private emit(packets: Packet[], tci: Int32Array, n: number): number {
    let w = 0;
    for (let i = 0; i < n; i++) {
      const r = this.runOf[i]!;
      if (r >= 0 && this.runCount[r]! >= 2) {
        if (this.runFirst[r] === i) {
          const s = this.build(packets, n, r);
          if (s !== null) {
            // the members were released into it; their slots are skipped below
            this.runBuilt[r] = 1;
            this.frames++;
            this.datagrams += this.runCount[r]!;
            packets[w] = s;
            tci[w] = tci[i]!;
            w++;
            continue;
          }
        } else if (this.runBuilt[r] === 1) {
          continue;
        }
      }
      packets[w] = packets[i]!;
      tci[w] = tci[i]!;
      w++;
    }
    return w;
  }

  /**
   * The super-frame of run `r`, its members released as their payloads are
   * copied in; or null (members untouched) when no buffer is free.
   */
  private build(packets: Packet[], n: number, r: number): Packet | null {
    const first = this.runFirst[r]!;
    const f = packets[first]!;
    const v6 = get16(f.buf, f.off + 12) === ETHERTYPE_IPV6;
    const l3h = v6 ? V6_HDR : V4_HDR;
    const l4 = ETH + l3h;
    const hdrs = l4 + UDP_HDR;
    const total = hdrs + this.runPayload[r]!;
    const s = this.pool.take(total);
    if (s === null) return null;
    s.len = total;
    const sb = s.buf;
    const so = s.off;
    if (sb === f.buf) copyBytes(sb, so, f.off, hdrs);
    else sb.set(f.buf.subarray(f.off, f.off + hdrs), so);
    let o = so + hdrs;
    for (let j = first; j < n; j++) {
      if (this.runOf[j] !== r) continue;
      const p = packets[j]!;
      const l = get16(p.buf, p.off + l4 + 4) - UDP_HDR;
      if (sb === p.buf) copyBytes(sb, o, p.off + hdrs, l);
      else sb.set(p.buf.subarray(p.off + hdrs, p.off + hdrs + l), o);
      o += l;
      if (j !== first) p.release();
    }
    const l4Len = total - l4;
    if (v6) {
      set16(sb, so + ETH + 4, l4Len);
    } else {
      set16(sb, so + ETH + 2, total - ETH);
      fillIpv4HeaderChecksum(sb, so + ETH, V4_HDR);
    }
    set16(sb, so + l4 + 4, l4Len);
    const ph = v6
      ? pseudoHeaderSumV6(sb, so + ETH + 8, so + ETH + 24, PROTO_UDP, l4Len)
      : pseudoHeaderSumV4(sb, so + ETH + 12, so + ETH + 16, PROTO_UDP, l4Len);
    set16(sb, so + l4 + UDP_CSUM_OFFSET, ph);
    const m = s.meta;
    m.copyFrom(f.meta);
    m.needsCsum = true;
    m.csumStart = l4;
    m.csumOffset = UDP_CSUM_OFFSET;
    m.rxCsum = RxCsum.UNKNOWN;
    m.gsoType = GsoType.UDP_L4;
    m.gsoSize = this.runSize[r]!;
    m.hdrLen = hdrs;
    m.gsoEcn = false;
    s.inPort = f.inPort;
    f.release();
    return s;
  }
}

function fits(payload: number, v6: boolean, maxFrame: number): boolean {
  const ip = (v6 ? 0 : V4_HDR) + UDP_HDR + payload; // IPv4 total length / IPv6 payload length
  return ip <= 0xffff && ETH + (v6 ? V6_HDR : 0) + ip <= maxFrame;
}

/**
 * UDP payload length of `p` if it may be coalesced, else -1: a plain IPv4 or
 * IPv6 UDP datagram filling the frame exactly, no offload asked but the
 * checksum, its checksum partial at the right place or verified.
 */
export function eligible(p: Packet, v4: boolean, v6: boolean): number {
  const m = p.meta;
  if (m.gsoType !== GsoType.NONE || m.ipv4HeaderCsum || m.saHandle !== NO_SA) return -1;
  const b = p.buf;
  const o = p.off;
  const len = p.len;
  if (len < ETH + V4_HDR + UDP_HDR) return -1;
  const et = get16(b, o + 12);
  let l4: number;
  let ipPayload: number;
  if (et === ETHERTYPE_IPV4) {
    if (!v4 || b[o + ETH] !== 0x45 || b[o + ETH + 9] !== PROTO_UDP) return -1;
    if (get16(b, o + ETH + 2) !== len - ETH) return -1;
    if ((get16(b, o + ETH + 6) & 0x3fff) !== 0) return -1; // MF or an offset: a fragment
    if (sum(b, o + ETH, V4_HDR) !== 0xffff) return -1;
    l4 = ETH + V4_HDR;
    ipPayload = len - l4;
  } else if (et === ETHERTYPE_IPV6) {
    if (!v6 || len < ETH + V6_HDR + UDP_HDR || (b[o + ETH]! >>> 4) !== 6 || b[o + ETH + 6] !== PROTO_UDP) return -1;
    l4 = ETH + V6_HDR;
    ipPayload = len - l4;
    if (get16(b, o + ETH + 4) !== ipPayload) return -1;
  } else {
    return -1;
  }
  if (get16(b, o + l4 + 4) !== ipPayload) return -1;
  const payload = ipPayload - UDP_HDR;
  if (payload < 1) return -1;
  if (m.needsCsum) {
    if (m.csumStart !== l4 || m.csumOffset !== UDP_CSUM_OFFSET) return -1;
  } else if (m.rxCsum !== RxCsum.VERIFIED || get16(b, o + l4 + UDP_CSUM_OFFSET) === 0) {
    return -1;
  }
  return payload;
}

/** Same addresses and ports (the flow). */
function sameFlow(a: Packet, b: Packet, v6: boolean): boolean {
  if (get16(b.buf, b.off + 12) !== get16(a.buf, a.off + 12)) return false;
  return v6
    ? equalBytes(a, b, ETH + 8, 32 + 4)      // addresses, then the ports right after
    : equalBytes(a, b, ETH + 12, 8 + 4);
}

/** The rest that the split copies from the first datagram: MACs, TOS/TC, flow label, DF, TTL/hop limit. */
function sameHeaders(a: Packet, b: Packet, v6: boolean): boolean {
  if (!equalBytes(a, b, 0, 12)) return false;
  if (v6) return equalBytes(a, b, ETH, 4) && a.buf[a.off + ETH + 7] === b.buf[b.off + ETH + 7];
  return a.buf[a.off + ETH + 1] === b.buf[b.off + ETH + 1] &&
    a.buf[a.off + ETH + 6] === b.buf[b.off + ETH + 6] &&
    a.buf[a.off + ETH + 8] === b.buf[b.off + ETH + 8];
}

function equalBytes(a: Packet, b: Packet, at: number, len: number): boolean {
  const ab = a.buf;
  const bb = b.buf;
  const ao = a.off + at;
  const bo = b.off + at;
  for (let i = 0; i < len; i++) if (ab[ao + i] !== bb[bo + i]) return false;
  return true;
}
