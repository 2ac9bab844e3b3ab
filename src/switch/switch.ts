// The switch: ports, the capability map and advertisement, and the packet
// pipeline (DESIGN.md §2):
//
//   receive(batch) → validate → ingress policy → forwarding → egress policy
//                  → per-destination offload resolution → delivery in batches
//
// Ownership: `receive` takes the packets of the batch. Each destination that
// gets a packet holds a reference until its backend has sent it; variants
// made for some destinations (segments, a checksummed copy) are made once per
// packet and shared by every destination that needs the same one.

import { UdpCoalescer } from '../offload/coalesce.js';
import { Batch } from '../packet/batch.js';
import type { BufferPool } from '../packet/pool.js';
import type { Packet } from '../packet/packet.js';
import { GsoType, RxCsum } from '../packet/meta.js';
import { TCP_CSUM_OFFSET, UDP_CSUM_OFFSET } from '../packet/vnet.js';
import { get16, getMac, set16 } from '../wire/bytes.js';
import { copyBytes } from '../wire/checksum.js';
import { FrameLayout, L3, parseFrame, type L3Kind, type ParseFrameOptions } from '../wire/frame.js';
import { EtherType } from '../wire/ethernet.js';
import { IpProtocol } from '../wire/ipv4.js';
import {
  cloneCapabilities, capabilitiesEqual, ipsecUnion, normalizeCapabilities, noOffloads, vnicOffloads,
  checksumNone, segmentationNone, ipsecNone, type OffloadCapabilities,
} from '../offload/capabilities.js';
import { completeChecksum, fillIpv4HeaderChecksum } from '../offload/checksum.js';
import { segment, segmentCount, type SegmentError } from '../offload/segment.js';
import { Drop, DROP_REASONS, type DropReason } from './counters.js';
import { Emitter } from './events.js';
import { LearnResult, MacTable } from './mac-table.js';
import { aclAllows, aclMatch, checkPortSecurity } from './policy.js';
import { Port, type PortBackend, type PortConfig } from './port.js';
import { NeighborTable } from './neighbors.js';
import { IpsecManager } from './ipsec.js';
import { espMaxOverhead, matchesSelector, type Aead } from '../offload/ipsec/esp.js';
import { OFFLOAD_MODE_NAMES, OffloadMode, Resolution, resolveOffload } from './resolve.js';

export interface SwitchOptions {
  pool: BufferPool;
  macTableSize?: number;
  macAgingMs?: number;
  /** Packets per output batch (default 64). */
  batchSize?: number;
  /** Wall clock in milliseconds (MAC aging, budgets). */
  now?: () => number;
  /** CPU-time clock in nanoseconds, for charging software offload work (tests; see fillClockNs). */
  clockNs?: () => number;
  /**
   * The same clock written into out[0] rather than returned: a returned double
   * is a heap number per reading, and the switch reads it around every software
   * offload. The daemon passes the native shim's CLOCK_MONOTONIC reader.
   */
  fillClockNs?: (out: Float64Array) => void;
}

export interface SwitchEvents extends Record<string, unknown> {
  'mac-move': { mac: number; vlan: number; from: string; to: string };
  'advertise': { port: string; caps: OffloadCapabilities };
  'capabilities': { port: string; caps: OffloadCapabilities };
  'port-added': { port: string };
  'port-removed': { port: string };
  'port-state': { port: string; up: boolean };
}

export interface TraceDestination {
  port: string;
  kind: string;
  egress: 'allow' | 'deny';
  offload: (typeof OFFLOAD_MODE_NAMES)[number];
  why: string;
  /** Segments the switch would produce (software segmentation). */
  segments?: number;
  partialChecksum?: boolean;
  /** 802.1Q TCI inserted on the way out, if any. */
  vlanTag?: number;
  drop?: DropReason;
}

export interface TraceResult {
  inPort: string;
  stages: { stage: string; verdict: string; detail?: string }[];
  destinations: TraceDestination[];
  outcome: 'forwarded' | DropReason | 'pending';
}

const TPID_8021Q = EtherType.VLAN;

/** Everything made for one packet on its way to several destinations. */
class Variants {
  /** Segments with full checksums / with partial checksums. */
  readonly full: Batch;
  readonly partial: Batch;
  fullDone = false;
  partialDone = false;
  fullError: SegmentError | null = null;
  partialError: SegmentError | null = null;
  /** The packet with its checksum completed (a copy, or the packet itself when exclusive). */
  completed: Packet | null = null;
  completedTried = false;
  constructor(segmentCapacity: number) {
    this.full = new Batch(segmentCapacity);
    this.partial = new Batch(segmentCapacity);
  }
  reset(): void {
    this.full.releaseAll();
    this.partial.releaseAll();
    this.fullDone = this.partialDone = false;
    this.fullError = this.partialError = null;
    if (this.completed !== null) this.completed.release();
    this.completed = null;
    this.completedTried = false;
  }
}

const PARTIAL = { partialChecksum: true };
const FULL = { partialChecksum: false };

/** The segment batch bounds how many segments one super-frame may produce. */
const MAX_SEGMENTS = 512;
/** Parse options for a super-frame (made once: an options object per packet would be garbage). */
const SUPER_FRAME: ParseFrameOptions = { zeroLengthMeansFrame: true };

export class Switch {
  readonly pool: BufferPool;
  readonly macs: MacTable;
  readonly events = new Emitter<SwitchEvents>();
  readonly ports: (Port | undefined)[] = [];
  private readonly byName = new Map<string, Port>();
  private readonly batchSize: number;
  private readonly now: () => number;
  /** The test clock, if any (read on every batch; without one, tick() keeps learning's clock). */
  private readonly fakeNow: (() => number) | null;
  /** Writes the nanosecond clock into out[0] (replaceable by tests). */
  fillClockNs: (out: Float64Array) => void;
  private readonly t0 = new Float64Array(1);
  private readonly t1 = new Float64Array(1);
  /** The clock for budget refills, in ns. */
  private readonly tRefill = new Float64Array(1);

  // Scratch, reused for every packet.
  private readonly lay = new FrameLayout();
  /** For packets made from the current one (segments, copies) while `lay` still describes it. */
  private readonly lay2 = new FrameLayout();
  private dests = new Int32Array(64);
  private readonly res = new Resolution();
  private readonly variants = new Variants(MAX_SEGMENTS);
  /** URO for vNICs that take USO super-frames, over each port's output batch. */
  private readonly coalescer: UdpCoalescer;
  private touched = new Int32Array(64);
  private touchedCount = 0;
  private touchedFlag = new Uint8Array(64);
  private tr: TraceResult | null = null;
  /** IP → MAC bindings seen (learned while IPsec offload is on). */
  readonly neighbors = new NeighborTable();
  /** IPsec task offload, once enabled with an AEAD implementation. */
  ipsec: IpsecManager | null = null;

  constructor(opts: SwitchOptions) {
    this.pool = opts.pool;
    this.macs = new MacTable(opts.macTableSize ?? 16384, opts.macAgingMs ?? 300_000);
    this.batchSize = opts.batchSize ?? 64;
    this.coalescer = new UdpCoalescer(this.batchSize, this.pool);
    this.now = opts.now ?? (() => Date.now());
    this.fakeNow = opts.now ?? null;
    this.macs.clock[0] = this.now();
    const clockNs = opts.clockNs;
    this.fillClockNs = opts.fillClockNs ?? (clockNs !== undefined ? (o) => { o[0] = clockNs(); } : (o) => { o[0] = Math.round(performance.now() * 1e6); });
  }

  /**
   * Turn on IPsec task offload with `aead` as the ESP engine's cipher. SAs are
   * re-checked (and uploaded to their VMs when their path no longer works)
   * on every change of MAC location, neighbour, port state or uplink capability.
   */
  enableIpsec(aead: Aead): IpsecManager {
    if (this.ipsec !== null) return this.ipsec;
    const m = new IpsecManager({
      ports: () => this.listPorts(), portAt: (i) => this.ports[i], macs: this.macs, neighbors: this.neighbors, aead, fillClockNs: (o) => this.fillClockNs(o),
    });
    this.ipsec = m;
    const recheck = (why: string) => () => queueMicrotask(() => m.revalidate(why));
    this.events.on('mac-move', recheck('MAC moved'));
    this.events.on('capabilities', recheck('uplink capabilities changed'));
    this.events.on('port-removed', recheck('port removed'));
    this.events.on('port-state', recheck('port state changed'));
    this.neighbors.onChange = (c) => { if (c.previous >= 0) queueMicrotask(() => m.revalidate(`neighbour ${c.ip} changed`)); };
    return m;
  }

  // --- ports -------------------------------------------------------------

  addPort(cfg: PortConfig, backend: PortBackend): Port {
    if (this.byName.has(cfg.name)) throw new Error(`port ${cfg.name} exists already`);
    let index = this.ports.indexOf(undefined);
    if (index < 0) index = this.ports.length;
    const port = new Port(index, cfg, backend, this.batchSize);
    port.lastRefill = this.now();
    this.ports[index] = port;
    this.byName.set(port.name, port);
    this.ensureScratch();
    for (const mac of cfg.staticMacs ?? []) {
      const v = port.vlan;
      const vlans = v.mode === 'access' ? [v.vlan] : v.allowed === 'all' ? [v.native ?? 1] : [...v.allowed, ...(v.native !== undefined ? [v.native] : [])];
      for (const vlan of vlans) this.macs.addStatic(vlan, mac, index);
    }
    this.events.emit('port-added', { port: port.name });
    this.readvertise();
    return port;
  }

  removePort(name: string): void {
    const port = this.port(name);
    this.macs.flushPort(port.index, true);
    for (const p of port.backlog) p.release();
    port.counters.pending = 0;
    port.backlog.length = 0;
    port.backlogVlan.length = 0;
    this.ports[port.index] = undefined;
    this.byName.delete(name);
    try {
      port.backend.close?.();
    } catch {
      // a failing backend must not stop the removal
    }
    this.events.emit('port-removed', { port: name });
    this.readvertise();
  }

  port(name: string): Port {
    const p = this.byName.get(name);
    if (p === undefined) throw new Error(`no port ${name}`);
    return p;
  }

  findPort(name: string): Port | undefined {
    return this.byName.get(name);
  }

  listPorts(): Port[] {
    return this.ports.filter((p): p is Port => p !== undefined);
  }

  setPortUp(name: string, up: boolean): void {
    const port = this.port(name);
    if (port.up === up) return;
    port.up = up;
    if (!up) this.macs.flushPort(port.index);
    this.events.emit('port-state', { port: name, up });
    this.readvertise();
  }

  private ensureScratch(): void {
    const n = this.ports.length;
    if (this.dests.length < n) this.dests = new Int32Array(n * 2);
    if (this.touched.length < n) {
      this.touched = new Int32Array(n * 2);
      const f = new Uint8Array(n * 2);
      f.set(this.touchedFlag);
      this.touchedFlag = f;
    }
  }

  // --- capabilities and advertisement ------------------------------------

  /** An external port's NIC changed what it can do (e.g. `ethtool -K tso off`). */
  updateCapabilities(name: string, caps: OffloadCapabilities): void {
    const port = this.port(name);
    const n = normalizeCapabilities(caps);
    if (capabilitiesEqual(n, port.deviceCaps)) return;
    port.deviceCaps = n;
    this.events.emit('capabilities', { port: name, caps: cloneCapabilities(n) });
    this.readvertise();
  }

  /**
   * What the switch offers a port's guest: host and synthetic vNICs always get
   * send checksum, LSO and USO (done in software where the path cannot) and
   * receive checksum; IPsec only while some external port that is up can do
   * it; legacy and external ports get nothing. Per-port overrides switch
   * parts off.
   */
  advertisementFor(port: Port): OffloadCapabilities {
    if (!port.isVnic) return noOffloads();
    const c = vnicOffloads();
    const o = port.overrides;
    if (o.checksum === false) {
      // No send checksum offload takes segmentation with it (it needs checksums).
      c.txChecksum = checksumNone();
      c.lso = segmentationNone();
      c.uso = segmentationNone();
    }
    if (o.lso === false) c.lso = segmentationNone();
    if (o.uso === false) c.uso = segmentationNone();
    if (o.ipsec !== false) {
      c.ipsec = ipsecUnion(this.listPorts().filter((p) => p.kind === 'external' && p.up).map((p) => p.deviceCaps.ipsec));
    } else {
      c.ipsec = ipsecNone();
    }
    return normalizeCapabilities(c);
  }

  /** Recompute every port's advertisement and notify those that changed. */
  readvertise(): void {
    for (const port of this.listPorts()) {
      const caps = this.advertisementFor(port);
      if (capabilitiesEqual(caps, port.advertised)) continue;
      port.advertised = caps;
      try {
        port.backend.advertise?.(cloneCapabilities(caps), port);
      } catch {
        // one port's failure to take an advertisement must not affect the others
      }
      this.events.emit('advertise', { port: port.name, caps: cloneCapabilities(caps) });
    }
  }

  // --- the data path -------------------------------------------------------

  /**
   * A backend dropped a frame before the switch saw it (e.g. its
   * virtio_net_hdr did not decode): counted as received and dropped.
   */
  countReceiveDrop(port: Port, len: number, reason: DropReason, detail?: string): void {
    const c = port.counters;
    c.rxPackets++;
    c.rxBytes += len;
    c.rxDrops[Drop[reason]]!++;
    if (detail !== undefined) c.vnetErrors.set(detail, (c.vnetErrors.get(detail) ?? 0) + 1);
  }

  /** Process every packet of `batch`, received on `port`; takes ownership of them and clears the batch. */
  receive(port: Port, batch: Batch): void {
    const c = port.counters;
    // Learning's clock: tick() sets it (every 100 ms in the daemon) — reading
    // the time here would make a heap number per batch (Date.now() and
    // performance.now() both box their result). A test clock is read exactly.
    const fake = this.fakeNow;
    if (fake !== null) this.macs.clock[0] = fake();
    for (let i = 0; i < batch.count; i++) {
      const p = batch.packets[i]!;
      c.rxPackets++;
      c.rxBytes += p.len;
      p.inPort = port.index;
      if (port.capture !== null) this.captureSafely(port, p, 'rx', -1);
      this.process(p, port);
    }
    batch.clear();
    this.flush();
  }

  private dropIn(port: Port, p: Packet, reason: number): void {
    if (this.tr !== null) {
      this.tr.outcome = DROP_REASONS[reason]!;
    } else {
      port.counters.rxDrops[reason]!++;
    }
    p.release();
  }

  private stage(stage: string, verdict: string, detail?: string): void {
    const s: { stage: string; verdict: string; detail?: string } = { stage, verdict };
    if (detail !== undefined) s.detail = detail;
    this.tr!.stages.push(s);
  }

  private process(p: Packet, inPort: Port): void {
    if (!inPort.up) return this.dropIn(inPort, p, Drop['port-down']);
    const vlan = this.ingress(p, inPort);
    if (vlan < 0) return;
    this.forward(p, inPort, vlan, false);
  }

  /** Validate and apply ingress policy. Returns the packet's VLAN, or -1 when it was dropped. */
  private ingress(p: Packet, inPort: Port): number {
    const tr = this.tr;
    const m = p.meta;
    const buf = p.buf;
    if (p.len < 14) { this.dropIn(inPort, p, Drop.malformed); return -1; }
    if (inPort.kind === 'legacy' && m.needsOffload) {
      if (tr !== null) this.stage('validate', 'drop', 'offload metadata on a legacy port');
      this.dropIn(inPort, p, Drop['legacy-offload']);
      return -1;
    }
    // A guest's word that a checksum is fine is never taken.
    if (inPort.kind !== 'external') m.rxCsum = RxCsum.UNKNOWN;

    // VLAN: classify by the outer 802.1Q tag (in band or out of band), then strip it.
    let vid = -1;
    let pcp = 0;
    if (m.vlanPresent) {
      vid = m.vlanTci & 0x0fff;
      pcp = m.vlanTci >>> 13;
      m.vlanPresent = false;
      m.vlanTci = 0;
    } else if (p.len >= 18 && get16(buf, p.off + 12) === TPID_8021Q) {
      const tci = get16(buf, p.off + 14);
      vid = tci & 0x0fff;
      pcp = tci >>> 13;
      this.stripTag(p);
    }
    const vlan = inPort.classify(vid);
    if (vlan < 0) {
      if (tr !== null) this.stage('ingress', 'drop', `VLAN ${vid < 0 ? 'untagged' : vid} not admitted`);
      this.dropIn(inPort, p, Drop['vlan-not-allowed']);
      return -1;
    }
    // Inside the switch frames are untagged; the classification travels in the
    // metadata (priority kept for the way out), the tag is not "present".
    m.vlanTci = (pcp << 13) | vlan;

    const lay = this.lay;
    const gso = m.gsoType !== GsoType.NONE;
    const err = parseFrame(buf, p.off, p.len, lay, gso ? SUPER_FRAME : undefined);
    // Cut-short ESP from the network where SAs are offloaded: tampering, not traffic.
    if (err === 'truncated' && inPort.kind === 'external' && this.ipsec !== null && this.ipsec.hasInbound && this.claimsEsp(buf, lay)) {
      if (tr !== null) this.stage('ipsec', 'drop', 'truncated ESP');
      this.dropIn(inPort, p, Drop['ipsec-malformed']);
      return -1;
    }
    if (m.needsOffload) {
      const reason = this.validateOffload(p, err);
      if (reason >= 0) {
        if (tr !== null) this.stage('validate', 'drop', DROP_REASONS[reason]);
        this.dropIn(inPort, p, reason);
        return -1;
      }
    }
    const l3Len = p.len - 14 - 4 * lay.tagCount;
    if (!m.isGso && l3Len > inPort.mtu) {
      if (tr !== null) this.stage('validate', 'drop', `${l3Len} B above MTU ${inPort.mtu} without segmentation metadata`);
      this.dropIn(inPort, p, Drop.oversize);
      return -1;
    }
    if (tr !== null) this.stage('validate', 'ok', m.needsOffload ? this.describeMeta(p) : 'no offload requested');

    // IPsec offload, inbound: ESP for an SA a VM offloaded is decrypted here, at the uplink.
    const ipsec = this.ipsec;
    if (ipsec !== null && inPort.kind === 'external' && lay.l4Proto === IpProtocol.ESP && ipsec.hasInbound) {
      const rec = ipsec.inboundFor(buf, lay);
      if (rec !== undefined) {
        if (tr !== null) {
          this.stage('ipsec', 'decrypt', `ESP SPI 0x${rec.sa.spi.toString(16)} of ${rec.port.name}`);
        } else {
          const owner = rec.port;
          if (owner.budget?.action === 'drop') {
            this.refill(owner);
            if (owner.tokens <= 0) { this.dropIn(inPort, p, Drop['offload-budget']); return -1; }
          }
          const e = ipsec.decrypt(p, rec, lay);
          if (e !== null) {
            this.dropIn(inPort, p, e === 'auth-failed' ? Drop['ipsec-auth-failed'] : e === 'replay' || e === 'too-old' ? Drop['ipsec-replay'] : Drop['ipsec-malformed']);
            return -1;
          }
          if (parseFrame(buf, p.off, p.len, lay) !== null) { this.dropIn(inPort, p, Drop['ipsec-malformed']); return -1; }
          // A peer holding a valid SA may only send what the SA covers.
          if (!matchesSelector(rec.esp, lay, buf)) { this.dropIn(inPort, p, Drop['ipsec-selector']); return -1; }
          m.saHandle = rec.id;
          m.ipsecDecrypted = true;
        }
      }
    }

    const sec = checkPortSecurity(inPort.security, buf, lay);
    if (sec !== 'ok') {
      if (tr !== null) this.stage('ingress', 'drop', sec);
      this.dropIn(inPort, p, Drop[sec]);
      return -1;
    }
    if (!aclAllows(inPort.aclIn, buf, lay, vlan)) {
      if (tr !== null) this.stage('ingress', 'drop', `ACL in: ${this.aclWhy(inPort.aclIn!, buf, vlan)}`);
      this.dropIn(inPort, p, Drop['acl-in']);
      return -1;
    }
    if (tr !== null) this.stage('ingress', 'allow', `VLAN ${vlan}${inPort.aclIn ? `; ACL in: ${this.aclWhy(inPort.aclIn, buf, vlan)}` : ''}`);
    if (ipsec !== null) {
      if (tr === null) this.neighbors.learn(buf, lay);
      // IPsec offload, outbound: plaintext of an offloaded SA is tagged with it for the uplink's engine.
      if (ipsec.hasOutbound(inPort.index) && !m.ipsecDecrypted) {
        const rec = ipsec.matchOutbound(inPort.index, buf, lay);
        if (rec !== null) {
          if (rec.state !== 'offloaded') {
            const uploading = rec.state === 'uploading';
            if (tr !== null) this.stage('ipsec', 'drop', `SA 0x${rec.sa.spi.toString(16)} ${uploading ? 'is being uploaded' : 'is the VM\'s own now'}: plaintext held back`);
            else rec.droppedWhileUploading++;
            this.dropIn(inPort, p, uploading ? Drop['ipsec-uploading'] : Drop['ipsec-no-sa']);
            return -1;
          }
          m.saHandle = rec.id;
          if (tr !== null) this.stage('ipsec', 'encrypt', `SA 0x${rec.sa.spi.toString(16)} (${rec.sa.mode}, ${rec.sa.algorithm}) at ${rec.uplink.name}`);
        }
      }
    }
    return vlan;
  }

  private claimsEsp(buf: Uint8Array, lay: FrameLayout): boolean {
    const at = lay.l3Off;
    if (lay.etherType === EtherType.IPv4 && at + 10 <= lay.off + lay.len) return buf[at + 9] === IpProtocol.ESP;
    if (lay.etherType === EtherType.IPv6 && at + 7 <= lay.off + lay.len) return buf[at + 6] === IpProtocol.ESP;
    return false;
  }

  private aclWhy(acl: NonNullable<Port['aclIn']>, buf: Uint8Array, vlan: number): string {
    const i = aclMatch(acl, buf, this.lay, vlan);
    return i >= 0 ? `rule ${i} (${acl.rules[i]!.action})` : `default (${acl.defaultAction})`;
  }

  private describeMeta(p: Packet): string {
    const m = p.meta;
    const parts: string[] = [];
    if (m.isGso) parts.push(`${['none', 'TSOv4', '', 'UFO', 'TSOv6', 'USO'][m.gsoType]} gso_size ${m.gsoSize}`);
    if (m.needsCsum) parts.push(`partial checksum at ${m.csumStart}+${m.csumOffset}`);
    return parts.join(', ');
  }

  /** Remove the outer 802.1Q tag in place; offsets in the metadata follow the frame. */
  private stripTag(p: Packet): void {
    copyBytes(p.buf, p.off + 4, p.off, 12);
    p.pull(4);
    const m = p.meta;
    if (m.needsCsum) m.csumStart -= 4;
    if (m.hdrLen >= 4) m.hdrLen -= 4;
  }

  /**
   * Check a guest's offload request against the headers actually there, and
   * fix up what NDIS senders legitimately leave out. Returns a drop reason or -1.
   */
  private validateOffload(p: Packet, parseError: string | null): number {
    const m = p.meta;
    const lay = this.lay;
    if (parseError !== null || lay.l3 === L3.NONE || lay.laterFragment) return Drop['offload-bad-headers'];
    const l4 = lay.l4Proto;
    if (m.needsCsum) {
      if (m.csumStart !== lay.l4Off - p.off) return Drop['csum-start-mismatch'];
      const want = l4 === IpProtocol.TCP ? TCP_CSUM_OFFSET : l4 === IpProtocol.UDP ? UDP_CSUM_OFFSET
        : l4 === IpProtocol.ICMP || l4 === IpProtocol.ICMPv6 ? 2 : -1;
      if (m.csumOffset !== want) return Drop['csum-offset-mismatch'];
      if (p.off + m.csumStart + m.csumOffset + 2 > lay.ipEnd) return Drop['csum-start-mismatch'];
    }
    if (m.gsoType !== GsoType.NONE) {
      if (m.gsoType === GsoType.UDP) return Drop['gso-unsupported'];
      const l3: L3Kind = lay.l3;
      const ok = m.gsoType === GsoType.TCPV4 ? l3 === L3.IPV4 && l4 === IpProtocol.TCP
        : m.gsoType === GsoType.TCPV6 ? l3 === L3.IPV6 && l4 === IpProtocol.TCP
          : l4 === IpProtocol.UDP;
      if (!ok || lay.isFragment || lay.l4HeaderLen === 0) return Drop['gso-proto-mismatch'];
      if (m.gsoSize <= 0) return Drop['gso-bad-size'];
      // NDIS large send: IP length fields left zero (and so the IPv4 header checksum); fill them in.
      if (lay.lengthFromFrame) {
        if (l3 === L3.IPV4) set16(p.buf, lay.l3Off + 2, lay.ipEnd - lay.l3Off);
        else set16(p.buf, lay.l3Off + 4, lay.ipEnd - lay.l3Off - 40);
        if (l4 === IpProtocol.UDP) set16(p.buf, lay.l4Off + 4, lay.ipEnd - lay.l4Off);
      }
      if (l3 === L3.IPV4 && (lay.lengthFromFrame || get16(p.buf, lay.l3Off + 10) === 0 || m.ipv4HeaderCsum)) {
        fillIpv4HeaderChecksum(p.buf, lay.l3Off, lay.l3HeaderLen);
        m.ipv4HeaderCsum = false;
      }
      m.hdrLen = lay.payloadOff - p.off;
      // A "super-frame" that fits in one segment is a plain packet (the kernel drops
      // GSO skbs with len <= gso_size).
      if (lay.ipEnd - lay.payloadOff <= m.gsoSize) m.clearGso();
      else if (segmentCount(lay.ipEnd - lay.payloadOff, m.gsoSize) > MAX_SEGMENTS) return Drop['gso-bad-size'];
    }
    if (m.ipv4HeaderCsum && lay.l3 === L3.IPV4) {
      fillIpv4HeaderChecksum(p.buf, lay.l3Off, lay.l3HeaderLen);
      m.ipv4HeaderCsum = false;
    }
    return -1;
  }

  /** Forwarding, egress and delivery of a validated packet of `vlan`. */
  private forward(p: Packet, inPort: Port, vlan: number, fromBacklog: boolean): void {
    const tr = this.tr;
    const buf = p.buf;
    const lay = this.lay;
    if (fromBacklog) parseFrame(buf, p.off, p.len, lay, p.meta.isGso ? SUPER_FRAME : undefined);
    // MACs stay in the frame: the table reads them there, so no 48-bit number
    // (a boxed heap number to V8) is made per packet.
    const dstOff = p.off;
    const srcOff = p.off + 6;

    // Learning.
    if ((buf[srcOff]! & 1) === 0 && !fromBacklog) {
      const known = this.macs.lookupAt(vlan, buf, srcOff);
      if (known !== inPort.index && inPort.maxMacs !== Infinity && this.macs.learnedOn(inPort.index) >= inPort.maxMacs) {
        if (tr !== null) this.stage('forward', 'drop', `port has learned its maximum of ${inPort.maxMacs} MACs`);
        return this.dropIn(inPort, p, Drop['mac-limit']);
      }
      if (tr === null) {
        const r = this.macs.learnAt(vlan, buf, srcOff, inPort.index);
        if (r === LearnResult.STATIC_CONFLICT) return this.dropIn(inPort, p, Drop['static-mac-conflict']);
        if (r === LearnResult.MOVED) {
          const from = this.ports[this.macs.movedFrom]?.name ?? `#${this.macs.movedFrom}`;
          this.events.emit('mac-move', { mac: getMac(buf, srcOff), vlan, from, to: inPort.name });
        }
      } else if (known >= 0 && known !== inPort.index && this.macs.isStaticAt(vlan, buf, srcOff)) {
        this.stage('forward', 'drop', 'source MAC is pinned to another port');
        return this.dropIn(inPort, p, Drop['static-mac-conflict']);
      }
    }

    // Destinations.
    let n = 0;
    const dests = this.dests;
    let how: string;
    if ((buf[dstOff]! & 1) === 1) {
      n = this.floodSet(inPort, vlan);
      how = getMac(buf, dstOff) === 0xffffffffffff ? 'broadcast: flooded in VLAN' : 'multicast: flooded in VLAN';
    } else {
      const at = this.macs.lookupAt(vlan, buf, dstOff);
      if (at < 0) {
        n = this.floodSet(inPort, vlan);
        how = 'unknown unicast: flooded in VLAN';
      } else if (at === inPort.index) {
        if (tr !== null) this.stage('forward', 'drop', 'destination MAC is behind the ingress port');
        return this.dropIn(inPort, p, Drop['no-destination']);
      } else {
        const out = this.ports[at];
        if (out === undefined || !out.up) {
          if (tr !== null) this.stage('forward', 'drop', 'destination port is down');
          return this.dropIn(inPort, p, Drop['port-down']);
        }
        dests[n++] = at;
        how = 'known unicast';
      }
    }
    if (n === 0) {
      if (tr !== null) this.stage('forward', 'drop', 'no other port in the VLAN');
      return this.dropIn(inPort, p, Drop['no-destination']);
    }
    if (tr !== null) {
      const names: string[] = [];
      for (let i = 0; i < n; i++) names.push(this.ports[dests[i]!]!.name);
      this.stage('forward', 'ok', `${how} ${vlan} → ${names.join(', ')}`);
    }

    // Throttled sender with software work pending: park the packet until its budget refills.
    if (!fromBacklog && tr === null && inPort.budget?.action === 'throttle' && p.meta.needsOffload) {
      this.refill(inPort);
      if (inPort.tokens <= 0 && this.needsSoftware(p, n)) {
        this.park(inPort, p, vlan);
        return;
      }
    }

    // Egress, per destination.
    const v = this.variants;
    const exclusive = n === 1;
    let delivered = 0;
    for (let i = 0; i < n; i++) {
      const out = this.ports[dests[i]!]!;
      if (this.deliverTo(p, inPort, out, vlan, exclusive)) delivered++;
    }
    v.reset();
    if (tr !== null) {
      tr.outcome = delivered > 0 ? 'forwarded' : 'egress-dropped';
    } else if (delivered > 0) {
      inPort.counters.forwarded++;
    } else {
      inPort.counters.rxDrops[Drop['egress-dropped']]!++;
    }
    p.release();
  }

  private floodSet(inPort: Port, vlan: number): number {
    let n = 0;
    const ports = this.ports;
    for (let i = 0; i < ports.length; i++) {
      const q = ports[i];
      if (q === undefined || q === inPort || !q.up || !q.carries(vlan)) continue;
      this.dests[n++] = i;
    }
    return n;
  }

  private needsSoftware(p: Packet, n: number): boolean {
    for (let i = 0; i < n; i++) {
      resolveOffload(p.meta, this.lay, p.len, this.ports[this.dests[i]!]!, this.res);
      if (this.res.mode === OffloadMode.SOFTWARE) return true;
    }
    return false;
  }

  /** Egress policy, offload resolution and enqueueing for one destination. True if delivered. */
  private deliverTo(p: Packet, inPort: Port, out: Port, vlan: number, exclusive: boolean): boolean {
    const tr = this.tr;
    const lay = this.lay;
    const oc = out.counters;
    const td: TraceDestination | null = tr === null ? null
      : { port: out.name, kind: out.kind, egress: 'allow', offload: 'none', why: '' };
    if (td !== null) tr!.destinations.push(td);
    if (!aclAllows(out.aclOut, p.buf, lay, vlan)) {
      if (td !== null) { td.egress = 'deny'; td.drop = 'acl-out'; td.why = `ACL out: ${this.aclWhy(out.aclOut!, p.buf, vlan)}`; }
      else oc.txDrops[Drop['acl-out']]!++;
      return false;
    }
    const tci = out.egressTci(vlan, p.meta.vlanTci >>> 13);
    if (p.meta.saHandle >= 0 && this.ipsec !== null) {
      const rec = this.ipsec.record(p.meta.saHandle);
      if (rec !== undefined && rec.sa.direction === 'out') {
        if (out !== rec.uplink) {
          // Never in the clear anywhere else: drop, and let the SA go back to its VM.
          if (td !== null) { td.offload = 'drop'; td.drop = 'ipsec-no-sa'; td.why = `plaintext of SA 0x${rec.sa.spi.toString(16)} may only leave encrypted through ${rec.uplink.name}`; return false; }
          oc.txDrops[Drop['ipsec-no-sa']]!++;
          // Switched (not flooded) somewhere else — the peer moved or the VM's route did: the SA goes back.
          if (exclusive) {
            const ipsec = this.ipsec;
            queueMicrotask(() => ipsec.destinationChanged(rec));
          }
          return false;
        }
        if (td !== null) {
          td.offload = 'software';
          td.why = `ESP ${rec.sa.mode} ${rec.sa.algorithm} by the uplink's engine`;
          if (p.meta.isGso) td.segments = segmentCount(lay.ipEnd - lay.payloadOff, p.meta.gsoSize);
          return true;
        }
        return this.encryptTo(p, inPort, out, tci, rec, exclusive);
      }
    }
    const res = this.res;
    resolveOffload(p.meta, lay, p.len, out, res);
    if (td !== null) {
      td.offload = OFFLOAD_MODE_NAMES[res.mode];
      td.why = res.why;
      if (tci >= 0) td.vlanTag = tci;
      if (res.mode === OffloadMode.DROP) td.drop = DROP_REASONS[res.drop];
      if (res.mode === OffloadMode.SOFTWARE) {
        td.partialChecksum = res.partial;
        if (res.segment) td.segments = segmentCount(lay.ipEnd - lay.payloadOff, p.meta.gsoSize);
      }
      return res.mode !== OffloadMode.DROP;
    }
    switch (res.mode) {
      case OffloadMode.DROP:
        oc.txDrops[res.drop]!++;
        return false;
      case OffloadMode.NONE:
        this.enqueue(out, p, tci);
        return true;
      case OffloadMode.HARDWARE:
        oc.txHardware++;
        this.enqueue(out, p, tci);
        return true;
      case OffloadMode.PASS_THROUGH:
        oc.txPassThrough++;
        this.enqueue(out, p, tci);
        return true;
      default:
        return this.software(p, inPort, out, tci, res.segment, res.partial, exclusive);
    }
  }

  /** Software offload for one destination, sharing work already done for others. */
  private software(p: Packet, inPort: Port, out: Port, tci: number, seg: boolean, partial: boolean, exclusive: boolean): boolean {
    const v = this.variants;
    const oc = out.counters;
    const charge = inPort.counters;
    if (inPort.budget !== undefined && inPort.budget.action === 'drop') {
      this.refill(inPort);
      if (inPort.tokens <= 0) {
        oc.txDrops[Drop['offload-budget']]!++;
        return false;
      }
    }
    if (seg) {
      const b = partial ? v.partial : v.full;
      const done = partial ? v.partialDone : v.fullDone;
      if (!done) {
        this.fillClockNs(this.t0);
        const e = segment(p, b, partial ? PARTIAL : FULL, this.lay);
        this.fillClockNs(this.t1);
        if (partial) { v.partialDone = true; v.partialError = e; } else { v.fullDone = true; v.fullError = e; }
        this.charge(inPort, p.len);
        if (e === null) { charge.swSegments += b.count; if (!partial) charge.swChecksums += b.count; }
      }
      const e = partial ? v.partialError : v.fullError;
      if (e !== null) {
        oc.txDrops[e === 'pool-exhausted' || e === 'batch-full' ? Drop['pool-exhausted'] : Drop['offload-failed']]!++;
        return false;
      }
      oc.txSoftware++;
      oc.txSegments += b.count;
      for (let i = 0; i < b.count; i++) this.enqueue(out, b.packets[i]!, tci);
      return true;
    }
    // Checksum only.
    if (!v.completedTried) {
      v.completedTried = true;
      this.fillClockNs(this.t0);
      let c: Packet | null = p;
      if (!exclusive) {
        c = this.pool.take(p.len);
        if (c !== null) {
          c.setLength(p.len);
          if (c.buf === p.buf) copyBytes(c.buf, c.off, p.off, p.len);
          else c.buf.set(p.buf.subarray(p.off, p.off + p.len), c.off);
          c.meta.copyFrom(p.meta);
        }
      } else {
        p.retain();
      }
      if (c !== null) {
        if (completeChecksum(c, c.off + (this.lay.ipEnd - p.off)) === null) {
          c.meta.rxCsum = RxCsum.VERIFIED;
          v.completed = c;
        } else {
          c.release();
        }
      }
      this.fillClockNs(this.t1);
      this.charge(inPort, p.len);
      if (v.completed !== null) charge.swChecksums++;
    }
    if (v.completed === null) {
      oc.txDrops[Drop['pool-exhausted']]!++;
      return false;
    }
    oc.txSoftware++;
    this.enqueue(out, v.completed, tci);
    return true;
  }

  /**
   * ESP at the uplink for an offloaded SA: segments first (the engine
   * encrypts MTU-sized packets; checksums are computed before encryption,
   * since nothing after it can), then each packet encrypted.
   */
  private encryptTo(p: Packet, inPort: Port, out: Port, tci: number, rec: NonNullable<ReturnType<IpsecManager['record']>>, exclusive: boolean): boolean {
    const ipsec = this.ipsec!;
    const oc = out.counters;
    if (inPort.budget !== undefined && inPort.budget.action === 'drop') {
      this.refill(inPort);
      if (inPort.tokens <= 0) {
        oc.txDrops[Drop['offload-budget']]!++;
        return false;
      }
    }
    const v = this.variants;
    const m = p.meta;
    const lay = this.lay;
    // ESP makes every packet longer: what the guest sized for the MTU must be
    // cut smaller first. TCP can be re-segmented at any size; a datagram cannot.
    const overhead = espMaxOverhead(rec.esp);
    const ipLen = lay.ipEnd - lay.l3Off;
    const tcp = lay.l4Proto === IpProtocol.TCP && lay.l4HeaderLen > 0;
    const fit = out.mtu - overhead - (lay.payloadOff - lay.l3Off);
    let mss = 0;
    if (tcp && (m.isGso ? m.gsoSize > fit : ipLen + overhead > out.mtu)) {
      if (fit < 64) {
        oc.txDrops[Drop['mtu-exceeded']]!++;
        return false;
      }
      mss = fit;
    } else if (!tcp && (m.isGso ? m.gsoSize + overhead + (lay.payloadOff - lay.l3Off) > out.mtu : ipLen + overhead > out.mtu)) {
      oc.txDrops[Drop['mtu-exceeded']]!++;
      return false;
    }
    let sent = 0;
    if (m.isGso || mss > 0) {
      if (!v.fullDone) {
        const gso = m.gsoType;
        const size = m.gsoSize;
        if (mss > 0) {
          m.gsoType = lay.l3 === L3.IPV6 ? GsoType.TCPV6 : GsoType.TCPV4;
          m.gsoSize = mss;
        }
        this.fillClockNs(this.t0);
        v.fullError = segment(p, v.full, FULL, lay);
        v.fullDone = true;
        m.gsoType = gso;
        m.gsoSize = size;
        this.fillClockNs(this.t1);
        this.charge(inPort, p.len);
      }
      if (v.fullError !== null) {
        oc.txDrops[Drop['offload-failed']]!++;
        return false;
      }
      const slay = this.lay2;
      for (let i = 0; i < v.full.count; i++) {
        const s = v.full.packets[i]!;
        if (parseFrame(s.buf, s.off, s.len, slay) !== null || ipsec.encrypt(s, rec, slay) !== null) {
          oc.txDrops[Drop['offload-failed']]!++;
          continue;
        }
        s.meta.needsCsum = false;
        this.enqueue(out, s, tci);
        sent++;
      }
      oc.txSoftware++;
      oc.txSegments += sent;
      return sent > 0;
    }
    // One packet: encrypted in place when it is ours alone, else on a private copy.
    // (The engine finishes a partial checksum before it seals.)
    let c: Packet = p;
    if (!exclusive || p.shared) {
      const copy = this.pool.take(p.len + 64);
      if (copy === null) {
        oc.txDrops[Drop['pool-exhausted']]!++;
        return false;
      }
      copy.setLength(p.len);
      copyBytes(copy.buf, copy.off, p.off, p.len);
      copy.meta.copyFrom(p.meta);
      c = copy;
    }
    const clay = c === p ? lay : this.lay2;
    let e: string | null = c === p ? null : parseFrame(c.buf, c.off, c.len, clay);
    if (e === null) e = ipsec.encrypt(c, rec, clay);
    if (e !== null) {
      if (c !== p) c.release();
      // Transport mode protects whole datagrams only (RFC 4303 §3.3): fragments are refused, not sent.
      oc.txDrops[lay.isFragment ? Drop['ipsec-fragment'] : Drop['offload-failed']]!++;
      return false;
    }
    oc.txSoftware++;
    this.enqueue(out, c, tci);
    if (c !== p) c.release();
    return true;
  }

  /** Charge `port` for the work timed between t0 and t1 (read here, so no double crosses a call). */
  private charge(port: Port, bytes: number): void {
    const ns = this.t1[0]! - this.t0[0]!;
    const c = port.counters;
    c.swPackets++;
    c.swBytes += bytes;
    c.swCpuNs += ns;
    if (port.budget !== undefined) port.tokens -= ns;
  }

  /**
   * Tokens for the time since the last refill. Runs per budgeted packet, so it
   * reads the clock into an array: Date.now() boxed a heap number per packet.
   */
  private refill(port: Port): void {
    const b = port.budget!;
    const t = this.tRefill;
    const fake = this.fakeNow;
    if (fake !== null) t[0] = fake() * 1e6;
    else this.fillClockNs(t);
    const dtNs = t[0]! - port.lastRefill;
    if (dtNs > 0) {
      port.tokens = Math.min(port.burstNs, port.tokens + dtNs * (b.cpuNsPerSec / 1e9));
      port.lastRefill = t[0]!;
    }
  }

  private park(port: Port, p: Packet, vlan: number): void {
    const limit = port.budget!.backlog ?? 256;
    if (port.backlog.length >= limit) {
      port.counters.rxDrops[Drop['backlog-full']]!++;
      p.release();
      return;
    }
    port.backlog.push(p);
    port.backlogVlan.push(vlan);
    port.counters.pending++;
    port.counters.throttled++;
  }

  private enqueue(out: Port, p: Packet, tci: number): void {
    p.retain();
    // A legacy port gets plain frames: its backend never sees offload metadata.
    out.out.push(p, tci);
    if (this.touchedFlag[out.index] === 0) {
      this.touchedFlag[out.index] = 1;
      this.touched[this.touchedCount++] = out.index;
    }
    if (out.out.full) this.flushPort(out);
  }

  private flushPort(port: Port): void {
    const q = port.out;
    let n = q.count;
    if (n === 0) return;
    if (n > 1 && port.isVnic) {
      const co = this.coalescer;
      n = co.run(q.batch.packets, q.tci, n, port.acceptsCoalescedUdp(false), port.acceptsCoalescedUdp(true));
      q.batch.count = n;
      port.counters.txCoalesced += co.datagrams;
      port.counters.txCoalescedFrames += co.frames;
    }
    let sent = 0;
    try {
      sent = port.backend.transmit(q, port);
    } catch {
      sent = 0;
    }
    if (sent > n) sent = n;
    const c = port.counters;
    for (let i = 0; i < n; i++) {
      const p = q.batch.packets[i]!;
      if (i < sent) {
        c.txPackets++;
        c.txBytes += p.len + (q.tci[i]! >= 0 ? 4 : 0);
        if (port.capture !== null) this.captureSafely(port, p, 'tx', q.tci[i]!);
      }
    }
    if (sent < n) c.txDrops[Drop['tx-error']]! += n - sent;
    q.batch.releaseAll();
  }

  private captureSafely(port: Port, p: Packet, dir: 'rx' | 'tx', tci: number): void {
    try {
      port.capture!(p, port, dir, tci);
    } catch {
      port.capture = null; // a broken capture stops; the port keeps switching
    }
  }

  /** Send everything queued. */
  flush(): void {
    for (let i = 0; i < this.touchedCount; i++) {
      const idx = this.touched[i]!;
      this.touchedFlag[idx] = 0;
      const port = this.ports[idx];
      if (port !== undefined) this.flushPort(port);
    }
    this.touchedCount = 0;
  }

  // --- time ---------------------------------------------------------------------

  /**
   * Periodic work: advance the clock MAC learning stamps entries with, age
   * the MAC table and let throttled ports' backlogs go as their budgets
   * refill. Call every few milliseconds (the daemon does, every 100 ms).
   */
  tick(): void {
    const now = this.now();
    this.macs.clock[0] = now;
    this.macs.age(now);
    for (const port of this.listPorts()) {
      if (port.backlog.length === 0) continue;
      this.refill(port);
      let k = 0;
      while (k < port.backlog.length && port.tokens > 0) {
        const p = port.backlog[k]!;
        const vlan = port.backlogVlan[k]!;
        k++;
        port.counters.pending--;
        this.forward(p, port, vlan, true);
      }
      port.backlog.splice(0, k);
      port.backlogVlan.splice(0, k);
    }
    this.flush();
  }

  // --- trace ----------------------------------------------------------------------

  /**
   * What would happen to `frame` (with offload metadata `meta` applied by the
   * caller via `prepare`) arriving on `inPort`: each stage's decision and, per
   * destination, why it gets hardware, pass-through or software offload.
   * Changes nothing: no learning, no counters, no delivery.
   */
  trace(inPortName: string, frame: Uint8Array, prepare?: (p: Packet) => void): TraceResult {
    const inPort = this.port(inPortName);
    const p = this.pool.take(frame.length);
    if (p === null) throw new Error('no buffer for the trace');
    p.write(frame);
    prepare?.(p);
    const tr: TraceResult = { inPort: inPortName, stages: [], destinations: [], outcome: 'forwarded' };
    this.tr = tr;
    try {
      if (!inPort.up) this.dropIn(inPort, p, Drop['port-down']);
      else {
        const vlan = this.ingress(p, inPort);
        if (vlan >= 0) this.forward(p, inPort, vlan, false);
      }
    } finally {
      this.tr = null;
      this.variants.reset();
    }
    return tr;
  }
}
