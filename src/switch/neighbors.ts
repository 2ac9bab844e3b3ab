// IP → MAC bindings the switch has seen (ARP senders, IPv6 neighbour
// discovery, and the source addresses of frames), so the control plane can
// say where an IP address is: behind which port, through which MAC. IPsec
// offload uses it to check that an SA's destination is reachable through an
// IPsec-capable uplink, and to notice when it no longer is (a VM migrated
// here, a route moved). Learning on the data path allocates nothing for
// IPv4; IPv6 bindings are learned from neighbour discovery only.

import { get16, get32, getMac, getMacLo, ipv4ToString, ipv6ToString, macFromHiLo } from '../wire/bytes.js';
import { EtherType } from '../wire/ethernet.js';
import { FrameLayout, L3 } from '../wire/frame.js';
import { IpProtocol } from '../wire/ipv4.js';

export interface NeighborChange {
  ip: string;
  mac: number;
  /** The MAC it had before (-1 when new). */
  previous: number;
}

const ND_NS = 135;
const ND_NA = 136;

export class NeighborTable {
  /** IPv4 address (signed 32-bit) → slot in v4Hi/v4Lo: the data path only ever handles small integers. */
  private readonly v4 = new Map<number, number>();
  private v4Hi = new Int32Array(64);
  private v4Lo = new Int32Array(64);
  private readonly v6 = new Map<string, number>();
  /** Called when an address appears or changes MAC (not on refreshes). */
  onChange: ((c: NeighborChange) => void) | null = null;

  /** Learn from a frame received by the switch (parsed into `lay`). */
  learn(buf: Uint8Array, lay: FrameLayout): void {
    if (lay.l3 === L3.IPV4) {
      this.set4(get32(buf, lay.l3Off + 12) | 0, buf, lay.off + 6);
    } else if (lay.etherType === EtherType.ARP && lay.l3Off + 28 <= lay.off + lay.len) {
      // Ethernet/IPv4 ARP: sender hardware address at +8, sender protocol address at +14.
      if (buf[lay.l3Off + 4] === 6 && buf[lay.l3Off + 5] === 4) this.set4(get32(buf, lay.l3Off + 14) | 0, buf, lay.l3Off + 8);
    } else if (lay.l3 === L3.IPV6 && lay.l4Proto === IpProtocol.ICMPv6 && lay.l4HeaderLen > 0) {
      const type = buf[lay.l4Off]!;
      if (type === ND_NS || type === ND_NA) {
        const src = getMac(buf, lay.off + 6);
        // The sender owns its source address (unless unspecified: DAD).
        let zero = true;
        for (let i = 0; i < 16; i++) if (buf[lay.l3Off + 8 + i] !== 0) { zero = false; break; }
        if (!zero) this.set6(ipv6ToString(buf, lay.l3Off + 8), src);
        // An advertisement also names its target.
        if (type === ND_NA && lay.l4Off + 24 <= lay.ipEnd) this.set6(ipv6ToString(buf, lay.l4Off + 8), src);
      }
    }
  }

  /**
   * `key` is the address as a signed 32-bit integer (a small integer to V8,
   * where the unsigned value above 2^31 would be boxed on every lookup); the
   * MAC is compared in place at `buf[macOff..]`, so a refresh — every packet
   * but the first — makes no 48-bit number (a heap number per packet).
   */
  private set4(key: number, buf: Uint8Array, macOff: number): void {
    if (key === 0) return;
    const hi = get16(buf, macOff);
    const lo = getMacLo(buf, macOff);
    let slot = this.v4.get(key);
    if (slot !== undefined && this.v4Hi[slot] === hi && this.v4Lo[slot] === lo) return;
    const previous = slot === undefined ? -1 : this.macAt(slot);
    if (slot === undefined) {
      slot = this.v4.size;
      if (slot === this.v4Hi.length) {
        const h = new Int32Array(slot * 2); h.set(this.v4Hi); this.v4Hi = h;
        const l = new Int32Array(slot * 2); l.set(this.v4Lo); this.v4Lo = l;
      }
      this.v4.set(key, slot);
    }
    this.v4Hi[slot] = hi;
    this.v4Lo[slot] = lo;
    this.onChange?.({ ip: ipv4ToString(key >>> 0), mac: this.macAt(slot), previous });
  }

  private macAt(slot: number): number {
    return macFromHiLo(this.v4Hi[slot]!, this.v4Lo[slot]!);
  }

  private set6(ip: string, mac: number): void {
    const prev = this.v6.get(ip);
    if (prev === mac) return;
    this.v6.set(ip, mac);
    this.onChange?.({ ip, mac, previous: prev ?? -1 });
  }

  /** MAC of `ip` (text form, as parsed by ipv4FromString / canonical IPv6), or -1. */
  macOf(ip: string): number {
    if (ip.includes(':')) return this.v6.get(ip) ?? -1;
    const parts = ip.split('.').map(Number);
    if (parts.length !== 4) return -1;
    const slot = this.v4.get((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!);
    return slot === undefined ? -1 : this.macAt(slot);
  }

  get size(): number {
    return this.v4.size + this.v6.size;
  }

  entries(): { ip: string; mac: number }[] {
    return [
      ...[...this.v4].map(([ip, slot]) => ({ ip: ipv4ToString(ip >>> 0), mac: this.macAt(slot) })),
      ...[...this.v6].map(([ip, mac]) => ({ ip, mac })),
    ];
  }
}
