// Ethernet II (IEEE 802.3 §3.1.1 with EtherType) and the IEEE 802.1Q
// C-tag / 802.1ad S-tag that may follow the source address.
//
//  0                   6                  12      14
// +-------------------+------------------+-------+------------
// | destination MAC   | source MAC       | type  | payload...
// +-------------------+------------------+-------+------------
//
// A tagged frame has one or two 4-byte tags (TPID 0x8100 or 0x88a8, then
// PCP:3 DEI:1 VID:12) between the source address and the EtherType.

import type { WireError } from './error.js';
import { get16, getMac, set16, setMac } from './bytes.js';
import { fits, HeaderView } from './view.js';

export const EtherType = {
  IPv4: 0x0800,
  ARP: 0x0806,
  VLAN: 0x8100,     // 802.1Q customer tag
  QINQ: 0x88a8,     // 802.1ad service tag
  IPv6: 0x86dd,
} as const;

export const ETHERNET_HEADER_LEN = 14;
export const VLAN_TAG_LEN = 4;
/** We walk at most two tags (802.1ad outer + 802.1Q inner), like the kernel's GSO. */
export const MAX_VLAN_TAGS = 2;

export function isVlanTpid(etherType: number): boolean {
  return etherType === EtherType.VLAN || etherType === EtherType.QINQ;
}

/** A view over an Ethernet header, tags included. */
export class EthernetView extends HeaderView {
  /** Bytes available from `off` (the frame length). */
  declare len: number;
  /** Number of VLAN tags (0..2) found by `wrap`. */
  tagCount = 0;

  /**
   * Bind to the `len` bytes of `buf` at `off`. Checks that the untagged
   * header and every tag fit; a third tag is `too-many-tags`.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < ETHERNET_HEADER_LEN) return 'truncated';
    let tags = 0;
    let typeOff = off + 12;
    while (isVlanTpid(get16(buf, typeOff))) {
      if (tags === MAX_VLAN_TAGS) return 'too-many-tags';
      tags++;
      typeOff += VLAN_TAG_LEN;
      if (typeOff + 2 > off + len) return 'truncated';
    }
    this.tagCount = tags;
    return this.bind(buf, off, len);
  }

  get dst(): number { return getMac(this.buf, this.off); }
  set dst(mac: number) { setMac(this.buf, this.off, mac); }
  get src(): number { return getMac(this.buf, this.off + 6); }
  set src(mac: number) { setMac(this.buf, this.off + 6, mac); }

  /** Header length including tags: where the payload starts, relative to `off`. */
  get headerLen(): number { return ETHERNET_HEADER_LEN + this.tagCount * VLAN_TAG_LEN; }
  /** The EtherType after the tags (the payload's protocol). */
  get etherType(): number { return get16(this.buf, this.off + 12 + this.tagCount * VLAN_TAG_LEN); }
  set etherType(t: number) { set16(this.buf, this.off + 12 + this.tagCount * VLAN_TAG_LEN, t); }

  /** TPID of tag `i` (0 = outermost). */
  tagTpid(i: number): number { return get16(this.buf, this.off + 12 + i * VLAN_TAG_LEN); }
  /** TCI of tag `i`: PCP(3) DEI(1) VID(12). */
  tagTci(i: number): number { return get16(this.buf, this.off + 14 + i * VLAN_TAG_LEN); }
  setTagTci(i: number, tci: number): void { set16(this.buf, this.off + 14 + i * VLAN_TAG_LEN, tci); }
  /** VLAN ID of tag `i`. */
  tagVid(i: number): number { return this.tagTci(i) & 0x0fff; }
  tagPcp(i: number): number { return this.tagTci(i) >>> 13; }
  tagDei(i: number): boolean { return (this.tagTci(i) & 0x1000) !== 0; }

  get payloadOff(): number { return this.off + this.headerLen; }
  get payloadLen(): number { return this.len - this.headerLen; }
}

export interface VlanTag {
  tpid: number;  // 0x8100 or 0x88a8
  pcp: number;   // 0..7
  dei: boolean;
  vid: number;   // 0..4095
}

export interface EthernetRepr {
  dst: number;
  src: number;
  /** Outermost first; at most two. */
  tags: VlanTag[];
  etherType: number;
}

export function parseEthernet(v: EthernetView): EthernetRepr {
  const tags: VlanTag[] = [];
  for (let i = 0; i < v.tagCount; i++) {
    tags.push({ tpid: v.tagTpid(i), pcp: v.tagPcp(i), dei: v.tagDei(i), vid: v.tagVid(i) });
  }
  return { dst: v.dst, src: v.src, tags, etherType: v.etherType };
}

export function ethernetReprLen(r: EthernetRepr): number {
  return ETHERNET_HEADER_LEN + r.tags.length * VLAN_TAG_LEN;
}

export function vlanTci(pcp: number, dei: boolean, vid: number): number {
  return ((pcp & 7) << 13) | (dei ? 0x1000 : 0) | (vid & 0x0fff);
}

/** Writes the header at `off`; returns its length. The caller sized `buf`. */
export function emitEthernet(r: EthernetRepr, buf: Uint8Array, off: number): number {
  setMac(buf, off, r.dst);
  setMac(buf, off + 6, r.src);
  let o = off + 12;
  for (const t of r.tags) {
    set16(buf, o, t.tpid);
    set16(buf, o + 2, vlanTci(t.pcp, t.dei, t.vid));
    o += VLAN_TAG_LEN;
  }
  set16(buf, o, r.etherType);
  return o + 2 - off;
}
