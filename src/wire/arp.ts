// ARP (RFC 826) for Ethernet hardware addresses and IPv4 protocol addresses,
// the only combination a switch meets on an Ethernet port.
//
//  0               2               4       5       6               8
// +---------------+---------------+-------+-------+---------------+
// | hardware type | protocol type | hlen  | plen  |   operation   |
// |      (1)      |   (0x0800)    |  (6)  |  (4)  |    (1 / 2)    |
// +---------------+---------------+-------+-------+---------------+
// | sender hardware address (6)   | sender protocol address (4)   |  8..18
// | target hardware address (6)   | target protocol address (4)   | 18..28
// +-------------------------------+-------------------------------+
//
// Field names follow the RFC (ar$sha, ar$spa, ar$tha, ar$tpa).

import type { WireError } from './error.js';
import { get16, get32, getMac, set16, set32, setMac } from './bytes.js';
import { EtherType } from './ethernet.js';
import { fits, HeaderView } from './view.js';

export const ARP_LEN = 28;
export const ARP_HTYPE_ETHERNET = 1;

export const ArpOperation = { Request: 1, Reply: 2 } as const;
export type ArpOperation = (typeof ArpOperation)[keyof typeof ArpOperation];

export class ArpView extends HeaderView {
  /** Bytes available from `off`; anything after the 28 ARP bytes is link padding. */
  declare len: number;

  /**
   * Bind to `len` bytes at `off`. Only Ethernet/IPv4 ARP (htype 1, ptype
   * 0x0800, hlen 6, plen 4) with operation request or reply is accepted;
   * anything else is well formed for some other network, hence 'unsupported'.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < ARP_LEN) return 'truncated';
    if (get16(buf, off) !== ARP_HTYPE_ETHERNET || get16(buf, off + 2) !== EtherType.IPv4 ||
        buf[off + 4] !== 6 || buf[off + 5] !== 4) {
      return 'unsupported';
    }
    const op = get16(buf, off + 6);
    if (op !== ArpOperation.Request && op !== ArpOperation.Reply) return 'unsupported';
    return this.bind(buf, off, len);
  }

  get operation(): ArpOperation { return get16(this.buf, this.off + 6) as ArpOperation; }
  set operation(op: ArpOperation) { set16(this.buf, this.off + 6, op); }
  /** Sender hardware address. */
  get sha(): number { return getMac(this.buf, this.off + 8); }
  set sha(mac: number) { setMac(this.buf, this.off + 8, mac); }
  /** Sender protocol (IPv4) address. */
  get spa(): number { return get32(this.buf, this.off + 14); }
  set spa(a: number) { set32(this.buf, this.off + 14, a); }
  /** Target hardware address (zero, or ignored, in a request). */
  get tha(): number { return getMac(this.buf, this.off + 18); }
  set tha(mac: number) { setMac(this.buf, this.off + 18, mac); }
  /** Target protocol (IPv4) address. */
  get tpa(): number { return get32(this.buf, this.off + 24); }
  set tpa(a: number) { set32(this.buf, this.off + 24, a); }

  /** Gratuitous ARP (RFC 5227 §3): announces the sender's own address. */
  get isGratuitous(): boolean { return this.spa === this.tpa; }

  get headerLen(): number { return ARP_LEN; }
  get payloadOff(): number { return this.off + ARP_LEN; }
  /** Link padding after the ARP body (minimum Ethernet frame size). */
  get payloadLen(): number { return this.len - ARP_LEN; }
}

export interface ArpRepr {
  operation: ArpOperation;
  sha: number;
  spa: number;
  tha: number;
  tpa: number;
}

export function parseArp(v: ArpView): ArpRepr {
  return { operation: v.operation, sha: v.sha, spa: v.spa, tha: v.tha, tpa: v.tpa };
}

export function arpReprLen(_r: ArpRepr): number {
  return ARP_LEN;
}

/** Writes the 28-byte ARP body at `off`; returns its length. */
export function emitArp(r: ArpRepr, buf: Uint8Array, off: number): number {
  set16(buf, off, ARP_HTYPE_ETHERNET);
  set16(buf, off + 2, EtherType.IPv4);
  buf[off + 4] = 6;
  buf[off + 5] = 4;
  set16(buf, off + 6, r.operation);
  setMac(buf, off + 8, r.sha);
  set32(buf, off + 14, r.spa);
  setMac(buf, off + 18, r.tha);
  set32(buf, off + 24, r.tpa);
  return ARP_LEN;
}
