// The external port: an AF_PACKET socket bound to a NIC (or a veth whose far
// end is "the physical network"), with PACKET_VNET_HDR so super-frames and
// partial checksums cross it with their metadata, PACKET_AUXDATA for the VLAN
// tag the NIC stripped, and the kernel's verdict on received checksums
// (DATA_VALID). The NIC's offloads are read with ethtool on attach and
// watched: `ethtool -K dev tso off` reaches the switch's capability map
// within one watch interval and is re-advertised.

import type { BufferPool } from '../packet/pool.js';
import { VNET_HDR_MRG_LEN } from '../packet/vnet.js';
import { capabilitiesEqual, normalizeCapabilities, type IpsecOffload, type OffloadCapabilities } from '../offload/capabilities.js';
import { capabilitiesFromEthtool, type EthtoolHints } from '../offload/translate/linux.js';
import type { Port } from '../switch/port.js';
import type { Switch } from '../switch/switch.js';
import { FdBackend } from './fd-backend.js';
import { Errno, IoMode, native, PacketFlag } from './native/index.js';

export interface AfPacketOptions {
  ifname: string;
  pool: BufferPool;
  /** Socket buffers (default 32 MiB: the default silently drops super-frames). */
  socketBuffer?: number;
  /** How often to re-read the NIC's features, ms (default 250). */
  watchMs?: number;
  hints?: EthtoolHints;
  batch?: number;
  /**
   * vswitch's own ESP engine acts as this port's IPsec offload (Linux has no
   * NIC to do it for a veth or most NICs): its capability as the port reports it.
   * `enabled` can be switched at run time (setEspEngine) to withdraw it.
   */
  espEngine?: IpsecOffload;
}

export class AfPacketBackend extends FdBackend {
  capabilities: OffloadCapabilities;
  readonly ifname: string;
  private readonly hints: EthtoolHints;
  private espEngine: IpsecOffload | null;
  private watch: ReturnType<typeof setInterval> | null = null;
  private readonly watchMs: number;
  /** Frames the kernel dropped before we could read them (PACKET_STATISTICS). */
  kernelDrops = 0;
  kernelPackets = 0;
  /**
   * The watch, several times a second, allocates nothing: it compares the
   * features' active bits with those of the last full read (names and all),
   * and reads in full only when they differ.
   */
  private readonly seenBits = new Uint32Array(16);
  private readonly bits = new Uint32Array(16);
  /** Features at the last full read; -1: read in full at the next watch. */
  private seenCount = -1;
  private readonly kstats = new Uint32Array(2);

  private constructor(fd: number, o: AfPacketOptions) {
    super({
      fd, mode: IoMode.PACKET, vnetHdr: VNET_HDR_MRG_LEN, source: 'kernel', pool: o.pool, maxFrame: 65550,
      ...(o.batch !== undefined ? { batch: o.batch } : {}), dataValidOut: false,
    });
    this.ifname = o.ifname;
    this.hints = o.hints ?? {};
    this.espEngine = o.espEngine ?? null;
    this.watchMs = o.watchMs ?? 250;
    this.capabilities = this.readCapabilities();
  }

  static open(o: AfPacketOptions): AfPacketBackend {
    const shim = native();
    const fd = shim.packetOpen(o.ifname, VNET_HDR_MRG_LEN, o.socketBuffer ?? 32 << 20, PacketFlag.IGNORE_OUTGOING | PacketFlag.AUXDATA);
    try {
      return new AfPacketBackend(fd, o);
    } catch (e) {
      shim.close(fd);
      throw e;
    }
  }

  /** The NIC's features now, as capabilities. */
  readCapabilities(): OffloadCapabilities {
    this.seenCount = this.shim.ethtoolActive(this.ifname, this.seenBits);
    const features: Record<string, boolean> = {};
    for (const [name, active] of this.shim.ethtoolFeatures(this.ifname)) features[name] = active;
    const caps = capabilitiesFromEthtool(features, this.hints);
    if (this.espEngine !== null && this.espEngine.enabled) caps.ipsec = { ...this.espEngine, algorithms: [...this.espEngine.algorithms] };
    return normalizeCapabilities(caps);
  }

  /** The ESP engine's capability (null: none); takes effect at the next feature watch. */
  setEspEngine(engine: IpsecOffload | null): void {
    this.espEngine = engine;
    this.seenCount = -1;
  }

  get espEngineConfig(): IpsecOffload | null {
    return this.espEngine;
  }

  override attach(sw: Switch, port: Port): void {
    super.attach(sw, port);
    this.watch = setInterval(() => this.refresh(sw, port), this.watchMs);
    this.watch.unref?.();
  }

  private featuresChanged(): boolean {
    const n = this.shim.ethtoolActive(this.ifname, this.bits);
    if (n !== this.seenCount) return true;
    for (let i = 0; i < (n + 31) >> 5; i++) if (this.bits[i] !== this.seenBits[i]) return true;
    return false;
  }

  /** Re-read features (when they changed) and kernel drop counters; report capability changes to the switch. */
  private refresh(sw: Switch, port: Port): void {
    try {
      if (this.featuresChanged()) {
        const caps = this.readCapabilities();
        if (!capabilitiesEqual(caps, this.capabilities)) {
          this.capabilities = caps;
          sw.updateCapabilities(port.name, caps);
        }
      }
      this.shim.packetStats(this.fd, this.kstats);
      this.kernelPackets += this.kstats[0]!;
      this.kernelDrops += this.kstats[1]!;
    } catch {
      // The device is gone (deleted, or its namespace): the socket would never
      // receive again. A device merely set down keeps its index and comes back.
      if (this.shim.ifIndex(this.ifname) === 0) {
        if (this.watch !== null) clearInterval(this.watch);
        this.watch = null;
        this.fatal(Errno.ENODEV);
      }
    }
  }

  override close(): void {
    if (this.watch !== null) clearInterval(this.watch);
    this.watch = null;
    super.close();
  }
}
