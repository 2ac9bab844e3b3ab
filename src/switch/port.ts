// Ports: the four kinds of the VMSWITCH model, their configuration, their
// capability sets, counters, output queue and offload budget. A port talks to
// the outside world only through its backend (memory, TAP, AF_PACKET, …),
// so nothing here knows about devices.

import { Batch } from '../packet/batch.js';
import type { Packet } from '../packet/packet.js';
import { noOffloads, type OffloadCapabilities } from '../offload/capabilities.js';
import { PortCounters } from './counters.js';
import type { Acl, PortSecurity } from './policy.js';

export type PortKind = 'legacy' | 'host' | 'synthetic' | 'external';
export const PORT_KINDS: readonly PortKind[] = ['legacy', 'host', 'synthetic', 'external'];

export type VlanConfig =
  /** Frames on the wire are untagged and belong to `vlan` (a priority tag, VID 0, is accepted). */
  | { mode: 'access'; vlan: number }
  /** Frames carry 802.1Q tags of the allowed VLANs; untagged frames belong to `native` (dropped without one). */
  | { mode: 'trunk'; allowed: 'all' | readonly number[]; native?: number };

export const DEFAULT_VLAN = 1;

/** Per-port switches for what the switch advertises to a vNIC (all on by default). */
export interface OffloadOverrides {
  checksum?: boolean;
  lso?: boolean;
  uso?: boolean;
  ipsec?: boolean;
}

export interface OffloadBudget {
  /** Software offload CPU time the port may cause, in nanoseconds per second. */
  cpuNsPerSec: number;
  /** Bucket depth in nanoseconds (default: a tenth of a second's worth). */
  burstNs?: number;
  /** Over budget: drop the work (counted) or park the packets until the budget refills. */
  action: 'drop' | 'throttle';
  /** Throttle backlog length in packets (default 256); beyond it packets are dropped. */
  backlog?: number;
}

export interface PortConfig {
  name: string;
  kind: PortKind;
  /** The port's own MAC (informational; learned MACs are separate). */
  mac?: number;
  /** Largest IP packet on this port (default 1500). */
  mtu?: number;
  vlan?: VlanConfig;
  security?: PortSecurity;
  aclIn?: Acl;
  aclOut?: Acl;
  /**
   * vNICs only: deliver super-frames and partial checksums whole when the
   * guest accepts them (fewer transfers, like Hyper-V's vRSC). Default on.
   */
  passThrough?: boolean;
  /**
   * vNICs only: send consecutive UDP datagrams of a flow as one USO
   * super-frame when the guest accepts them (URO). Needs passThrough. Default on.
   */
  uro?: boolean;
  offloads?: OffloadOverrides;
  budget?: OffloadBudget;
  /** Most MACs the port may have learned at once (default unlimited). */
  maxMacs?: number;
  /** vNICs: most IPsec SAs the guest may offload at once (default 32). */
  maxSa?: number;
  /** MACs pinned to this port in its VLAN(s). */
  staticMacs?: readonly number[];
}

/** Packets on their way out of a port, with the 802.1Q TCI to insert for each (-1: none). */
export class OutputQueue {
  readonly batch: Batch;
  readonly tci: Int32Array;
  constructor(capacity: number) {
    this.batch = new Batch(capacity);
    this.tci = new Int32Array(capacity);
  }
  get count(): number { return this.batch.count; }
  get full(): boolean { return this.batch.full; }
  push(p: Packet, tci: number): void {
    this.tci[this.batch.count] = tci;
    this.batch.push(p);
  }
}

/**
 * What a port's I/O implements. `capabilities` are the endpoint's at attach
 * time: for an external port what the NIC can do; for a vNIC what the guest
 * accepts on receive (rsc, rxPartialChecksum) — a TAP guest accepts
 * everything. Later changes go through Switch.updateCapabilities.
 */
export interface PortBackend {
  readonly capabilities: OffloadCapabilities;
  /**
   * Send every packet of the queue. Synchronous: a backend that keeps a
   * packet past the call must retain() it. Returns how many were sent; the
   * rest are counted as tx errors. The switch releases the packets after.
   */
  transmit(q: OutputQueue, port: Port): number;
  /** The switch changed what it advertises to this vNIC. */
  advertise?(caps: OffloadCapabilities, port: Port): void;
  close?(): void;
}

/** A packet seen at a port: received (before the pipeline) or sent (after the backend took it). */
export type CaptureHook = (p: Packet, port: Port, dir: 'rx' | 'tx', tci: number) => void;

export class Port {
  readonly name: string;
  readonly kind: PortKind;
  mac: number;
  mtu: number;
  vlan: VlanConfig;
  security: PortSecurity | undefined;
  aclIn: Acl | undefined;
  aclOut: Acl | undefined;
  passThrough: boolean;
  uro: boolean;
  overrides: OffloadOverrides;
  budget: OffloadBudget | undefined;
  maxMacs: number;
  maxSa: number;
  up = true;
  /** Capture (pcapng) of what the port receives and sends; null when off. */
  capture: CaptureHook | null = null;
  /** What the switch currently advertises to this port (nothing, for legacy and external ports). */
  advertised: OffloadCapabilities = noOffloads();
  /**
   * The endpoint's capabilities: the NIC's for an external port (kept up to
   * date through Switch.updateCapabilities), what the guest accepts for a vNIC.
   */
  deviceCaps: OffloadCapabilities;
  readonly counters = new PortCounters();
  readonly out: OutputQueue;

  // Offload budget: a token bucket in nanoseconds, and the throttle backlog.
  tokens = 0;
  /** When tokens were last added, on the switch clock in ns. */
  lastRefill = 0;
  readonly backlog: Packet[] = [];
  readonly backlogVlan: number[] = [];

  constructor(readonly index: number, cfg: PortConfig, public backend: PortBackend, batchSize: number) {
    this.name = cfg.name;
    this.kind = cfg.kind;
    this.mac = cfg.mac ?? 0;
    this.mtu = cfg.mtu ?? 1500;
    this.vlan = cfg.vlan ?? { mode: 'access', vlan: DEFAULT_VLAN };
    this.security = cfg.security;
    this.aclIn = cfg.aclIn;
    this.aclOut = cfg.aclOut;
    this.passThrough = cfg.passThrough ?? true;
    this.uro = cfg.uro ?? true;
    this.overrides = cfg.offloads ?? {};
    this.budget = cfg.budget;
    this.maxMacs = cfg.maxMacs ?? Infinity;
    this.maxSa = cfg.maxSa ?? 32;
    this.out = new OutputQueue(batchSize);
    this.deviceCaps = backend.capabilities;
    if (this.budget !== undefined) this.tokens = this.burstNs;
  }

  get isVnic(): boolean {
    return this.kind === 'host' || this.kind === 'synthetic';
  }


  get burstNs(): number {
    const b = this.budget;
    return b === undefined ? Infinity : b.burstNs ?? b.cpuNsPerSec / 10;
  }

  /** Whether the port carries `vlan`. */
  carries(vlan: number): boolean {
    const v = this.vlan;
    if (v.mode === 'access') return v.vlan === vlan;
    if (v.native === vlan) return true;
    return v.allowed === 'all' || v.allowed.includes(vlan);
  }

  /**
   * VLAN of a frame received with 802.1Q VID `vid` (-1: untagged), or -1 when
   * the port does not admit it.
   */
  classify(vid: number): number {
    const v = this.vlan;
    if (v.mode === 'access') return vid <= 0 ? v.vlan : -1;
    if (vid <= 0) return v.native ?? -1;
    return v.allowed === 'all' || v.allowed.includes(vid) ? vid : -1;
  }

  /** TCI to insert when sending a frame of `vlan` out of this port (-1: send untagged). */
  egressTci(vlan: number, pcp: number): number {
    const v = this.vlan;
    if (v.mode === 'access' || v.native === vlan) return -1;
    return ((pcp & 7) << 13) | vlan;
  }

  /** The guest takes super-frames of this IP version whole (pass-through). */
  acceptsLarge(v6: boolean): boolean {
    if (!this.isVnic || !this.passThrough) return false;
    const c = this.deviceCaps;
    return c.rxPartialChecksum && (v6 ? c.rsc.v6 : c.rsc.v4);
  }

  /** The guest takes coalesced UDP (USO super-frames) of this IP version. */
  acceptsCoalescedUdp(v6: boolean): boolean {
    if (!this.isVnic || !this.passThrough || !this.uro) return false;
    const c = this.deviceCaps;
    return c.rxPartialChecksum && (v6 ? c.uro.v6 : c.uro.v4);
  }

  /** The guest takes frames whose checksum is still partial. */
  acceptsPartialChecksum(): boolean {
    return this.isVnic && this.passThrough && this.deviceCaps.rxPartialChecksum;
  }
}
