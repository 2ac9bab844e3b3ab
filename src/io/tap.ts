// TAP endpoints: the guest side of a vNIC is a Linux netdev whose other end
// is this process. A synthetic or host vNIC uses IFF_VNET_HDR, so every frame
// carries a virtio_net_hdr both ways and the switch's advertisement is the
// TAP's TUNSETOFFLOAD flags (the guest sees it in `ethtool -k`); a legacy NIC
// is a TAP without the header: plain frames, never offloads.

import type { BufferPool } from '../packet/pool.js';
import { VNET_HDR_MRG_LEN } from '../packet/vnet.js';
import { noOffloads, type OffloadCapabilities } from '../offload/capabilities.js';
import { toTunOffloadFlags } from '../offload/translate/linux.js';
import type { Port } from '../switch/port.js';
import { FdBackend } from './fd-backend.js';
import { IoMode, native, TapFlag } from './native/index.js';

export interface TapOptions {
  /** Device name (≤ 15 characters). */
  ifname: string;
  /** Synthetic/host vNIC: true (virtio_net_hdr, offloads); legacy NIC: false. */
  vnetHdr: boolean;
  pool: BufferPool;
  /** Frames per read batch. */
  batch?: number;
}

/** What a Linux guest accepts on its TAP: any virtio_net_hdr (super-frames, partial checksums). */
export function tapGuestCapabilities(): OffloadCapabilities {
  const c = noOffloads();
  c.rxPartialChecksum = true;
  c.rsc = { v4: true, v6: true };
  return c;
}

export class TapBackend extends FdBackend {
  capabilities: OffloadCapabilities;
  readonly ifname: string;
  readonly vnetHdr: boolean;
  /** TUN_F_* flags last applied (what the guest was offered). */
  tunFlags = 0;

  private constructor(fd: number, ifname: string, o: TapOptions) {
    super({
      fd, mode: IoMode.FD, vnetHdr: o.vnetHdr ? VNET_HDR_MRG_LEN : 0, source: 'guest', pool: o.pool,
      // A legacy guest's frames are MTU-sized; reads are sized for the largest anyway,
      // so an oversized frame is seen whole and dropped by the switch, never cut.
      maxFrame: 65550, ...(o.batch !== undefined ? { batch: o.batch } : {}), dataValidOut: true,
    });
    this.ifname = ifname;
    this.vnetHdr = o.vnetHdr;
    this.capabilities = o.vnetHdr ? tapGuestCapabilities() : noOffloads();
  }

  /** Create (or attach to) the TAP device `ifname`. */
  static open(o: TapOptions): TapBackend {
    const shim = native();
    const [fd, name] = shim.tapOpen(o.ifname, o.vnetHdr ? TapFlag.VNET_HDR : 0, o.vnetHdr ? VNET_HDR_MRG_LEN : 0);
    try {
      const b = new TapBackend(fd, name, o);
      if (o.vnetHdr) shim.tapSetOffload(fd, 0);
      return b;
    } catch (e) {
      shim.close(fd);
      throw e;
    }
  }

  /** The switch's offer to this vNIC becomes the TAP's offload flags. */
  advertise(caps: OffloadCapabilities, _port: Port): void {
    if (!this.vnetHdr) return;
    const flags = toTunOffloadFlags(caps);
    this.shim.tapSetOffload(this.fd, flags);
    this.tunFlags = flags;
  }
}
