// TAP endpoints: the guest side of a vNIC is a Linux netdev whose other end
// is this process. A synthetic or host vNIC uses IFF_VNET_HDR, so every frame
// carries a virtio_net_hdr both ways and the switch's advertisement is the
// TAP's TUNSETOFFLOAD flags (the guest sees it in `ethtool -k`); a legacy NIC
// is a TAP without the header: plain frames, never offloads.

import { release } from 'node:os';
import type { BufferPool } from '../packet/pool.js';
import { VNET_HDR_MRG_LEN } from '../packet/vnet.js';
import { noOffloads, type OffloadCapabilities } from '../offload/capabilities.js';
import { toTunOffloadFlags } from '../offload/translate/linux.js';
import { OutputQueue, type Port } from '../switch/port.js';
import type { Switch } from '../switch/switch.js';
import { flowHash } from './flow-hash.js';
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
  /**
   * Queues (IFF_MULTI_QUEUE, VMQ-like): the guest's stack spreads its flows
   * over them, each is read and written on its own, and frames to the guest
   * are spread by flow hash so one flow stays on one queue. Default 1.
   */
  queues?: number;
}

/** A further queue of a multi-queue TAP (the first queue is the TapBackend itself). */
class TapQueue extends FdBackend {
  capabilities: OffloadCapabilities;
  constructor(fd: number, o: TapOptions, caps: OffloadCapabilities) {
    super({
      fd, mode: IoMode.FD, vnetHdr: o.vnetHdr ? VNET_HDR_MRG_LEN : 0, source: 'guest', pool: o.pool,
      maxFrame: 65550, ...(o.batch !== undefined ? { batch: o.batch } : {}), dataValidOut: true,
    });
    this.capabilities = caps;
  }
}

/**
 * What a Linux guest accepts on its TAP: any virtio_net_hdr (super-frames,
 * partial checksums); USO super-frames (UDP_L4) from Linux 6.2 on, the
 * release that taught tun and virtio_net_hdr_to_skb about them.
 */
export function tapGuestCapabilities(kernel = release()): OffloadCapabilities {
  const c = noOffloads();
  c.rxPartialChecksum = true;
  c.rsc = { v4: true, v6: true };
  const uso = kernelAtLeast(kernel, 6, 2);
  c.uro = { v4: uso, v6: uso };
  return c;
}

/** Whether a `uname -r` release string is at least major.minor. */
export function kernelAtLeast(rel: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  if (m === null) return false;
  const a = Number(m[1]);
  return a > major || (a === major && Number(m[2]) >= minor);
}

export class TapBackend extends FdBackend {
  capabilities: OffloadCapabilities;
  readonly ifname: string;
  readonly vnetHdr: boolean;
  /** TUN_F_* flags last applied (what the guest was offered). */
  tunFlags = 0;
  /** Queues beyond the first (multi-queue TAP). */
  private readonly extra: TapQueue[] = [];
  /** Per-queue output, reused: the switch's output split by flow hash. */
  private readonly split: OutputQueue[] = [];

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
    const queues = o.queues ?? 1;
    if (!(queues >= 1 && queues <= 16)) throw new RangeError(`a TAP takes 1..16 queues, not ${queues}`);
    const flags = (o.vnetHdr ? TapFlag.VNET_HDR : 0) | (queues > 1 ? TapFlag.MULTI_QUEUE : 0);
    const [fd, name] = shim.tapOpen(o.ifname, flags, o.vnetHdr ? VNET_HDR_MRG_LEN : 0);
    let b: TapBackend | null = null;
    try {
      b = new TapBackend(fd, name, o);
      if (o.vnetHdr) shim.tapSetOffload(fd, 0);
      for (let i = 1; i < queues; i++) {
        // Opening the same name again with IFF_MULTI_QUEUE attaches one more queue.
        const [qfd] = shim.tapOpen(name, flags, o.vnetHdr ? VNET_HDR_MRG_LEN : 0);
        b.extra.push(new TapQueue(qfd, o, b.capabilities));
      }
      for (let i = 0; i < queues; i++) b.split.push(new OutputQueue(256));
      return b;
    } catch (e) {
      if (b !== null) b.close();
      else shim.close(fd);
      throw e;
    }
  }

  get queueCount(): number {
    return 1 + this.extra.length;
  }

  /** Every queue's backend (the first is this one), e.g. to give each its own transmit worker. */
  queueBackends(): FdBackend[] {
    return [this, ...this.extra];
  }

  override attach(sw: Switch, port: Port): void {
    super.attach(sw, port);
    for (const q of this.extra) q.attach(sw, port);
  }

  override transmit(q: OutputQueue, port: Port): number {
    if (this.extra.length === 0) return super.transmit(q, port);
    // Spread over the queues by flow hash; one flow always takes the same queue.
    const n = this.split.length;
    for (const s of this.split) s.batch.clear();
    for (let i = 0; i < q.count; i++) {
      const p = q.batch.packets[i]!;
      this.split[flowHash(p.buf, p.off, p.len) % n]!.push(p, q.tci[i]!);
    }
    let sent = super.transmit(this.split[0]!, port);
    for (let k = 1; k < n; k++) sent += this.extra[k - 1]!.transmit(this.split[k]!, port);
    for (const s of this.split) s.batch.clear();
    return sent;
  }

  override close(): void {
    for (const q of this.extra) q.close();
    super.close();
  }

  /** The switch's offer to this vNIC becomes the TAP's offload flags. */
  advertise(caps: OffloadCapabilities, _port: Port): void {
    if (!this.vnetHdr) return;
    const flags = toTunOffloadFlags(caps);
    this.shim.tapSetOffload(this.fd, flags);
    this.tunFlags = flags;
  }
}
