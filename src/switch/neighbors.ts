// IP → MAC bindings the switch has seen (ARP senders, IPv6 neighbour
// discovery, and the source addresses of frames), so the control plane can
// say where an IP address is: behind which port, through which MAC. IPsec
// offload uses it to check that an SA's destination is reachable through an
// IPsec-capable uplink, and to notice when it no longer is (a VM migrated
// here, a route moved). Learning on the data path allocates nothing for
// IPv4; IPv6 bindings are learned from neighbour discovery only.

import { get32, getMac, ipv4ToString, ipv6ToString } from '../wire/bytes.js';
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
  private readonly v4 = new Map<number, number>();
  private readonly v6 = new Map<string, number>();
  /** Called when an address appears or changes MAC (not on refreshes). */
  onChange: ((c: NeighborChange) => void) | null = null;

  /** Learn from a frame received by the switch (parsed into `lay`). */
  learn(buf: Uint8Array, lay: FrameLayout): void {
    const src = getMac(buf, lay.off + 6);
    if (lay.l3 === L3.IPV4) {
      this.set4(get32(buf, lay.l3Off + 12), src);
    } else if (lay.etherType === EtherType.ARP && lay.l3Off + 28 <= lay.off + lay.len) {
      // Ethernet/IPv4 ARP: sender hardware address at +8, sender protocol address at +14.
      if (buf[lay.l3Off + 4] === 6 && buf[lay.l3Off + 5] === 4) this.set4(get32(buf, lay.l3Off + 14), getMac(buf, lay.l3Off + 8));
    } else if (lay.l3 === L3.IPV6 && lay.l4Proto === IpProtocol.ICMPv6 && lay.l4HeaderLen > 0) {
      const type = buf[lay.l4Off]!;
      if (type === ND_NS || type === ND_NA) {
        // The sender owns its source address (unless unspecified: DAD).
        let zero = true;
        for (let i = 0; i < 16; i++) if (buf[lay.l3Off + 8 + i] !== 0) { zero = false; break; }
        if (!zero) this.set6(ipv6ToString(buf, lay.l3Off + 8), src);
        // An advertisement also names its target.
        if (type === ND_NA && lay.l4Off + 24 <= lay.ipEnd) this.set6(ipv6ToString(buf, lay.l4Off + 8), src);
      }
    }
  }

  private set4(ip: number, mac: number): void {
    if (ip === 0) return;
    // Keyed by the address as a signed 32-bit integer: a small integer to V8,
    // where the unsigned value above 2^31 would be boxed on every lookup.
    const key = ip | 0;
    const prev = this.v4.get(key);
    if (prev === mac) return;
    this.v4.set(key, mac);
    this.onChange?.({ ip: ipv4ToString(ip >>> 0), mac, previous: prev ?? -1 });
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
    return this.v4.get((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) ?? -1;
  }

  get size(): number {
    return this.v4.size + this.v6.size;
  }

  entries(): { ip: string; mac: number }[] {
    return [
      ...[...this.v4].map(([ip, mac]) => ({ ip: ipv4ToString(ip >>> 0), mac })),
      ...[...this.v6].map(([ip, mac]) => ({ ip, mac })),
    ];
  }
}
