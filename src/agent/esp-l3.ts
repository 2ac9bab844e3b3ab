// The guest agent's userspace ESP, on IP packets: what the VM's own kernel
// would do with XFRM, for kernels built without ESP. It reuses the switch's
// ESP engine (offload/ipsec/esp.ts), which works on Ethernet frames in pool
// packets, by putting a fake Ethernet header (zero MACs, the EtherType of
// the IP version) in front of each packet in the packet's headroom. Nothing
// is allocated per packet: packets come from a small BufferPool, results are
// left in fields of this object.
//
// Outbound: an IP packet the VM's stack routed into the agent's TUN is
// matched against the outbound SAs' traffic selectors and ESP-protected;
// the ESP part (header to ICV) goes out through a raw IPPROTO_ESP socket,
// whose kernel writes the outer IP header.
//
// Inbound: what a raw ESP socket returned. For IPv4 that is the whole IP
// packet; for IPv6 the kernel keeps the header and hands over the ESP
// header onwards, so the IPv6 header is rebuilt from the SA the SPI names
// (its addresses are the SA's endpoints; hop limit 64, traffic class 0:
// ESP does not protect them anyway). The packet is authenticated, checked
// against the replay window, decrypted, and the inner packet must match the
// SA's selector (RFC 4301 §5.2) before it is handed to the VM's stack.

import { EspSa, decapsulate, encapsulate, matchesSelector, type Aead, type EspError, ESP_ERRORS } from '../offload/ipsec/esp.js';
import type { ReplayState, SaDirection, SecurityAssociation } from '../offload/ipsec/sa.js';
import { ESP_HEADER_BYTES, ESP_IV_BYTES } from '../offload/ipsec/sa.js';
import type { Packet } from '../packet/packet.js';
import { get32, set16, set32 } from '../wire/bytes.js';
import { ETHERNET_HEADER_LEN, EtherType } from '../wire/ethernet.js';
import { FrameLayout, IPV6_HEADER_LEN, parseFrame } from '../wire/frame.js';
import { IpProtocol } from '../wire/ipv4.js';

/** Why the agent dropped a packet (one counter each); ESP engine reasons included. */
export type EspL3Drop =
  | 'not-ip'        // from the TUN: not an IPv4/IPv6 packet, or headers that do not parse
  | 'no-sa'         // from the TUN: no outbound SA's selector matches (routed to the TUN but not protected)
  | 'unknown-spi'   // from the network: ESP for an SPI the agent does not hold
  | 'malformed'     // from the network: not ESP, or headers that do not parse
  | 'selector'      // the decrypted packet is outside its SA's selector
  | EspError;

export const ESP_L3_DROPS: readonly EspL3Drop[] = ['not-ip', 'no-sa', 'unknown-spi', 'malformed', 'selector', ...ESP_ERRORS];

/** Bytes ESP adds at most to an IP packet, per mode and outer family (RFC 4106 GCM: 8 SPI+seq, 8 IV, ≤ 3 pad, 2 trailer, 16 ICV). */
export function espOverhead(mode: 'transport' | 'tunnel', family: 4 | 6): number {
  const esp = ESP_HEADER_BYTES + ESP_IV_BYTES + 3 + 2 + 16;
  return mode === 'transport' ? esp : esp + (family === 4 ? 20 : IPV6_HEADER_LEN);
}

/** Headroom the packets need: Ethernet header, ESP header and IV, an outer IPv6 header (tunnel), rebuilt IPv6 header (inbound). */
export const ESP_L3_HEADROOM = ETHERNET_HEADER_LEN + ESP_HEADER_BYTES + ESP_IV_BYTES + IPV6_HEADER_LEN + 8;

interface Held {
  esp: EspSa;
  /** The peer's address as the raw socket takes it. */
  peer: string;
}

export class EspL3 {
  private readonly lay = new FrameLayout();
  private readonly out: Held[] = [];
  private readonly inBySpi = new Map<number, Held>();
  readonly drops = {} as Record<EspL3Drop, number>;
  /** Packets protected / accepted. */
  sealed = 0;
  opened = 0;

  // Results of the last successful seal(): the ESP packet and where it goes.
  espOff = 0;
  espLen = 0;
  peer = '';
  family: 4 | 6 = 4;
  /** The SA of the last seal() or open(). */
  sa: EspSa | null = null;

  // Result of the last successful open(): the plaintext IP packet.
  l3Off = 0;
  l3Len = 0;

  constructor(private readonly aead: Aead) {
    for (const d of ESP_L3_DROPS) this.drops[d] = 0;
  }

  /** Take an SA (with the switch's replay window for an uploaded inbound one). Throws RangeError on a bad SA. */
  add(sa: SecurityAssociation, replay?: ReplayState): EspSa {
    if (sa.direction === 'in' && this.inBySpi.has(sa.spi)) throw new RangeError(`an inbound SA with SPI 0x${sa.spi.toString(16)} is installed already`);
    if (sa.direction === 'out' && this.out.some((h) => h.esp.spi === sa.spi)) throw new RangeError(`an outbound SA with SPI 0x${sa.spi.toString(16)} is installed already`);
    const esp = new EspSa(replay !== undefined ? { ...sa, replayWindow: replay.size } : sa);
    if (replay !== undefined && esp.replay !== null) esp.restoreReplay(replay);
    const h: Held = { esp, peer: sa.direction === 'out' ? sa.dst : sa.src };
    if (sa.direction === 'out') this.out.push(h);
    else this.inBySpi.set(sa.spi, h);
    return esp;
  }

  remove(direction: SaDirection, spi: number): boolean {
    if (direction === 'in') return this.inBySpi.delete(spi);
    const i = this.out.findIndex((h) => h.esp.spi === spi);
    if (i < 0) return false;
    this.out.splice(i, 1);
    return true;
  }

  get outbound(): readonly EspSa[] {
    return this.out.map((h) => h.esp);
  }

  get inbound(): readonly EspSa[] {
    return [...this.inBySpi.values()].map((h) => h.esp);
  }

  get hasOutbound(): boolean {
    return this.out.length > 0;
  }

  get hasInbound(): boolean {
    return this.inBySpi.size > 0;
  }

  private drop(d: EspL3Drop): EspL3Drop {
    this.drops[d]++;
    return d;
  }

  /** Put the fake Ethernet header in front of the IP packet at p.off. */
  private frame(p: Packet, v6: boolean): void {
    p.push(ETHERNET_HEADER_LEN);
    p.buf.fill(0, p.off, p.off + 12);
    set16(p.buf, p.off + 12, v6 ? EtherType.IPv6 : EtherType.IPv4);
  }

  /**
   * Protect the IP packet in `p` (as read from the TUN, at p.off, with
   * ESP_L3_HEADROOM of headroom and room for the trailer behind it). On
   * success (null) the ESP packet is at [espOff, espOff + espLen) of p.buf,
   * to be sent to `peer` (address family `family`).
   */
  seal(p: Packet): EspL3Drop | null {
    const buf = p.buf;
    const version = p.len > 0 ? buf[p.off]! >>> 4 : 0;
    if (version !== 4 && version !== 6) return this.drop('not-ip');
    this.frame(p, version === 6);
    const lay = this.lay;
    if (parseFrame(buf, p.off, p.len, lay) !== null) return this.drop('not-ip');
    let h: Held | null = null;
    for (let i = 0; i < this.out.length; i++) {
      const c = this.out[i]!;
      // Transport mode keeps the packet's own header: only packets of the SA's family.
      if (c.esp.mode === 'transport' && c.esp.family !== version) continue;
      if (matchesSelector(c.esp, lay, buf)) { h = c; break; }
    }
    if (h === null) return this.drop('no-sa');
    const espOff = (h.esp.mode === 'tunnel' ? lay.l3Off : lay.l4Off) - ESP_HEADER_BYTES - ESP_IV_BYTES;
    const e = encapsulate(p, h.esp, this.aead, lay);
    if (e !== null) return this.drop(e);
    this.espOff = espOff;
    this.espLen = p.off + p.len - espOff;
    this.peer = h.peer;
    this.family = h.esp.family;
    this.sa = h.esp;
    this.sealed++;
    return null;
  }

  /**
   * Verify and decrypt what a raw ESP socket of family `family` returned
   * (at p.off, ESP_L3_HEADROOM of headroom). On success (null) the plaintext
   * IP packet is at [l3Off, l3Off + l3Len) of p.buf.
   */
  open(p: Packet, family: 4 | 6): EspL3Drop | null {
    const buf = p.buf;
    if (family === 6) {
      // The ESP header onwards: rebuild the IPv6 header from the SA.
      if (p.len < 8) return this.drop('truncated');
      const h6 = this.inBySpi.get(get32(buf, p.off));
      if (h6 === undefined) return this.drop('unknown-spi');
      if (h6.esp.family !== 6) return this.drop('malformed');
      const payload = p.len;
      if (payload > 0xffff) return this.drop('malformed');
      p.push(IPV6_HEADER_LEN);
      const o = p.off;
      set32(buf, o, 0x60000000);
      set16(buf, o + 4, payload);
      buf[o + 6] = IpProtocol.ESP;
      buf[o + 7] = 64;
      buf.set(h6.esp.src, o + 8);
      buf.set(h6.esp.dst, o + 24);
    } else if (p.len < 20 || buf[p.off]! >>> 4 !== 4) {
      return this.drop('malformed');
    }
    this.frame(p, family === 6);
    const lay = this.lay;
    const pe = parseFrame(buf, p.off, p.len, lay);
    if (pe !== null) return this.drop(pe === 'truncated' ? 'truncated' : 'malformed');
    if (lay.l4Proto !== IpProtocol.ESP) return this.drop('malformed');
    if (lay.l4Off + 8 > lay.ipEnd) return this.drop('truncated');
    const h = this.inBySpi.get(get32(buf, lay.l4Off));
    if (h === undefined) return this.drop('unknown-spi');
    const e = decapsulate(p, h.esp, this.aead, lay);
    if (e !== null) return this.drop(e);
    if (parseFrame(buf, p.off, p.len, lay) !== null) return this.drop('malformed');
    if (!matchesSelector(h.esp, lay, buf)) return this.drop('selector');
    this.l3Off = p.off + ETHERNET_HEADER_LEN;
    this.l3Len = p.len - ETHERNET_HEADER_LEN;
    this.sa = h.esp;
    this.opened++;
    return null;
  }

  /** Counters per SA and per drop reason (allocates: for reports). */
  stats(): { sealed: number; opened: number; drops: Partial<Record<EspL3Drop, number>>; sas: Record<string, unknown>[] } {
    const drops: Partial<Record<EspL3Drop, number>> = {};
    for (const d of ESP_L3_DROPS) if (this.drops[d] > 0) drops[d] = this.drops[d];
    const sa = (x: EspSa) => ({
      direction: x.direction, spi: x.spi, packets: x.packets, bytes: x.bytes, authFailures: x.authFailures, replays: x.replays,
      ...(x.direction === 'out' ? { nextSeq: x.seq } : { replayTop: x.replay?.top ?? null }),
    });
    return { sealed: this.sealed, opened: this.opened, drops, sas: [...this.outbound.map(sa), ...this.inbound.map(sa)] };
  }
}
