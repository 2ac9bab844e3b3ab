// VXLAN (RFC 7348 §5): an 8-byte header in UDP (destination port 4789),
// followed by the inner Ethernet frame.
//
//  0               1                                               4
// +-+-+-+-+-+-+-+-+-----------------------------------------------+
// |R|R|R|R|I|R|R|R|                  Reserved                     |
// +-+-+-+-+-+-+-+-+-----------------------------------------------+
// |        VXLAN Network Identifier (VNI)         |   Reserved    |
// +-----------------------------------------------+---------------+
//
// The I flag says the VNI is valid and must be set; reserved bits are
// ignored on receipt and sent as zero.

import type { WireError } from './error.js';
import { get32, set32 } from './bytes.js';
import { fits, HeaderView } from './view.js';

export const VXLAN_HEADER_LEN = 8;
/** IANA-assigned destination port. */
export const VXLAN_PORT = 4789;
export const VXLAN_FLAG_I = 0x08;
export const VXLAN_MAX_VNI = 0xffffff;

export class VxlanView extends HeaderView {
  /** Bytes from `off`: header and inner frame (the UDP payload). */
  declare len: number;

  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < VXLAN_HEADER_LEN) return 'truncated';
    if ((buf[off]! & VXLAN_FLAG_I) === 0) return 'bad-type';
    return this.bind(buf, off, len);
  }

  get flags(): number { return this.buf[this.off]!; }
  get vni(): number { return get32(this.buf, this.off + 4) >>> 8; }
  /** Sets the VNI, keeping the reserved low byte. */
  set vni(v: number) {
    set32(this.buf, this.off + 4, (((v & VXLAN_MAX_VNI) << 8) | this.buf[this.off + 7]!) >>> 0);
  }
  get headerLen(): number { return VXLAN_HEADER_LEN; }
  /** Absolute offset of the inner Ethernet frame. */
  get payloadOff(): number { return this.off + VXLAN_HEADER_LEN; }
  get payloadLen(): number { return this.len - VXLAN_HEADER_LEN; }
}

export interface VxlanRepr {
  /** 24 bits. */
  vni: number;
}

export function parseVxlan(v: VxlanView): VxlanRepr {
  return { vni: v.vni };
}

export function vxlanReprLen(_r: VxlanRepr): number {
  return VXLAN_HEADER_LEN;
}

export function emitVxlan(r: VxlanRepr, buf: Uint8Array, off: number): number {
  set32(buf, off, VXLAN_FLAG_I << 24);
  set32(buf, off + 4, ((r.vni & VXLAN_MAX_VNI) << 8) >>> 0);
  return VXLAN_HEADER_LEN;
}
