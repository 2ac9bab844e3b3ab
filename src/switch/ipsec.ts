// IPsec task offload (DESIGN.md §1–3): a VM hands an SA to the switch, the
// switch's ESP engine on an IPsec-capable uplink does the work, and the SA
// goes back to the VM ("upload") the moment its destination is no longer
// reached through such an uplink — a peer migrated onto this host, a route
// moved, the uplink lost the capability. From that moment until the VM
// says it encrypts by itself, plaintext of the SA's traffic is dropped and
// counted: an offloaded flow never leaves in the clear.
//
// Validation of an SA request, per port (a VM acts only for itself):
//   - IPsec is advertised to the port, with that algorithm and mode;
//   - the key, salt and addresses are well formed and the SPI is new;
//   - the VM owns the local address (port security, or learned on its port);
//   - the peer is reachable through an external port that is up and can do it;
//   - the port and that uplink are under their SA limits.

import { Emitter } from './events.js';
import type { Port } from './port.js';
import type { NeighborTable } from './neighbors.js';
import type { MacTable } from './mac-table.js';
import { cidrContains, parseCidr } from './policy.js';
import {
  ESP_KEY_BYTES, ESP_SALT_BYTES, type ReplayState, type SaDirection, type SecurityAssociation,
} from '../offload/ipsec/sa.js';
import { EspSa, decapsulate, encapsulate, matchesSelector, type Aead, type EspError } from '../offload/ipsec/esp.js';
import type { Packet } from '../packet/packet.js';
import { L3, type FrameLayout } from '../wire/frame.js';
import { IpProtocol } from '../wire/ipv4.js';
import { get16, ipv4FromString, ipv6FromString, ipv6ToString } from '../wire/bytes.js';

export type SaState = 'offloaded' | 'uploading' | 'uploaded';

export type SaRejection =
  | 'ipsec-not-advertised'       // the switch does not offer IPsec to this port now
  | 'algorithm-unsupported'      // not among the advertised algorithms
  | 'mode-unsupported'           // transport/tunnel not supported by the uplink
  | 'bad-key'                    // key or salt of the wrong length
  | 'bad-address'                // src/dst not IP addresses of one family, or SPI 0
  | 'duplicate-spi'              // an SA with this direction and SPI exists
  | 'source-not-owned'           // the local address is not the VM's
  | 'destination-unknown'        // the switch has not seen the peer (no ARP/ND, no traffic yet)
  | 'destination-not-ipsec-capable' // the peer is behind a port that cannot do IPsec (or is down, or local)
  | 'sa-limit'                   // the port has offloaded its maximum of SAs
  | 'uplink-sa-limit';           // the uplink's engine is full

export interface SaView {
  id: number;
  port: string;
  state: SaState;
  direction: SaDirection;
  spi: number;
  mode: string;
  algorithm: string;
  src: string;
  dst: string;
  uplink: string | null;
  since: string;
  uploadReason?: string;
  counters: { packets: number; bytes: number; cpuNs: number; authFailures: number; replays: number; droppedWhileUploading: number };
}

export interface UploadedSa extends Omit<SecurityAssociation, 'key' | 'salt'> {
  key: string;
  salt: string;
  /** Outbound: next sequence number to use. */
  seq?: number;
  /** Inbound: the replay window as the switch left it. */
  replay?: ReplayState;
}

export interface UploadEvent {
  type: 'upload';
  port: string;
  reason: string;
  sas: UploadedSa[];
}

export interface Rejection {
  port: string;
  direction: SaDirection;
  spi: number;
  reason: SaRejection;
  detail: string;
  at: string;
}

export class SaRecord {
  state: SaState = 'offloaded';
  since = new Date();
  uploadReason: string | undefined;
  cpuNs = 0;
  droppedWhileUploading = 0;
  constructor(
    readonly id: number,
    readonly port: Port,
    readonly sa: SecurityAssociation,
    readonly esp: EspSa,
    public uplink: Port,
    /** The peer's address as the switch looks it up (canonical text). */
    readonly peer: string,
  ) {}

  view(): SaView {
    const v: SaView = {
      id: this.id, port: this.port.name, state: this.state, direction: this.sa.direction, spi: this.sa.spi,
      mode: this.sa.mode, algorithm: this.sa.algorithm, src: this.sa.src, dst: this.sa.dst,
      uplink: this.state === 'offloaded' ? this.uplink.name : null, since: this.since.toISOString(),
      counters: {
        packets: this.esp.packets, bytes: this.esp.bytes, cpuNs: this.cpuNs, authFailures: this.esp.authFailures,
        replays: this.esp.replays, droppedWhileUploading: this.droppedWhileUploading,
      },
    };
    if (this.uploadReason !== undefined) v.uploadReason = this.uploadReason;
    return v;
  }
}

function canonical(ip: string): string | null {
  if (ip.includes(':')) {
    const b = ipv6FromString(ip);
    return b === null ? null : ipv6ToString(b);
  }
  const n = ipv4FromString(ip);
  return n === null ? null : ip.split('.').map(Number).join('.');
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function hex(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += b[i]!.toString(16).padStart(2, '0');
  return s;
}

export interface IpsecDeps {
  ports: () => Port[];
  portAt: (index: number) => Port | undefined;
  macs: MacTable;
  neighbors: NeighborTable;
  aead: Aead;
  /** Writes CLOCK_MONOTONIC-like nanoseconds into out[0] (see SwitchOptions.fillClockNs). */
  fillClockNs: (out: Float64Array) => void;
}

/**
 * A map keyed by SPI, looked up by its two 16-bit halves: an SPI of 2^30 or
 * more is no small integer to V8, and handing one to Map.get would make a heap
 * number for every ESP packet.
 */
export class SpiMap<T> {
  private readonly byHi = new Map<number, Map<number, T>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(spi: number): T | undefined {
    return this.getHalves(spi >>> 16, spi & 0xffff);
  }

  getHalves(hi: number, lo: number): T | undefined {
    const m = this.byHi.get(hi);
    return m === undefined ? undefined : m.get(lo);
  }

  set(spi: number, v: T): void {
    const hi = spi >>> 16;
    let m = this.byHi.get(hi);
    if (m === undefined) this.byHi.set(hi, (m = new Map()));
    if (!m.has(spi & 0xffff)) this.count++;
    m.set(spi & 0xffff, v);
  }

  delete(spi: number): boolean {
    const hi = spi >>> 16;
    const m = this.byHi.get(hi);
    if (m === undefined || !m.delete(spi & 0xffff)) return false;
    this.count--;
    if (m.size === 0) this.byHi.delete(hi);
    return true;
  }
}

export class IpsecManager {
  readonly events = new Emitter<{ upload: UploadEvent }>();
  private readonly records: (SaRecord | undefined)[] = [];
  private readonly t0 = new Float64Array(1);
  private readonly t1 = new Float64Array(1);
  /** Outbound SAs that still match traffic (offloaded or uploading), per ingress port index. */
  private outByPort: SaRecord[][] = [];
  /** Inbound offloaded SAs by SPI. */
  private readonly inBySpi = new SpiMap<SaRecord>();
  private readonly rejections: Rejection[] = [];
  /** Upload events not yet fetched by the port's agent, per port name. */
  private readonly pending = new Map<string, UploadEvent[]>();
  private readonly waiters = new Map<string, (() => void)[]>();

  constructor(private readonly d: IpsecDeps) {}

  // --- control plane ------------------------------------------------------

  private reject(port: Port, sa: SecurityAssociation, reason: SaRejection, detail: string): Rejection {
    const r: Rejection = { port: port.name, direction: sa.direction, spi: sa.spi, reason, detail, at: new Date().toISOString() };
    this.rejections.push(r);
    if (this.rejections.length > 200) this.rejections.shift();
    return r;
  }

  /** Does `port` own `ip`: allowed by its port security, or seen as its source? */
  private owns(port: Port, ip: string): boolean {
    const allowed = port.security?.allowedIps;
    if (allowed !== undefined) {
      const c = parseCidr(ip);
      if (c === null) return false;
      return allowed.some((a) => a.version === c.version && a.prefix <= c.prefix && cidrContains(a, c.bytes, 0));
    }
    const mac = this.d.neighbors.macOf(ip);
    return mac >= 0 && this.portOfMac(port, mac) === port.index;
  }

  private vlanOf(port: Port): number {
    const v = port.vlan;
    return v.mode === 'access' ? v.vlan : v.native ?? 1;
  }

  private portOfMac(port: Port, mac: number): number {
    return this.d.macs.lookup(this.vlanOf(port), mac);
  }

  /** The uplink the peer is behind, or why there is none that can carry this SA. */
  private uplinkFor(port: Port, sa: SecurityAssociation, peer: string): Port | SaRejection {
    const mac = this.d.neighbors.macOf(peer);
    if (mac < 0) return 'destination-unknown';
    const at = this.portOfMac(port, mac);
    if (at < 0) return 'destination-unknown';
    const up = this.d.portAt(at);
    if (up === undefined || up.kind !== 'external' || !up.up) return 'destination-not-ipsec-capable';
    const c = up.deviceCaps.ipsec;
    if (!c.enabled || !c.algorithms.includes(sa.algorithm)) return 'destination-not-ipsec-capable';
    if (sa.mode === 'transport' ? !c.transport : !c.tunnel) return 'mode-unsupported';
    return up;
  }

  private countOn(uplink: Port): number {
    let n = 0;
    for (const r of this.records) if (r !== undefined && r.state === 'offloaded' && r.uplink === uplink) n++;
    return n;
  }

  private countFor(port: Port): number {
    let n = 0;
    for (const r of this.records) if (r !== undefined && r.state !== 'uploaded' && r.port === port) n++;
    return n;
  }

  /** A VM asks to offload an SA. */
  add(port: Port, sa: SecurityAssociation): SaRecord | Rejection {
    const adv = port.advertised.ipsec;
    if (!port.isVnic || !adv.enabled) return this.reject(port, sa, 'ipsec-not-advertised', 'IPsec offload is not advertised to this port (no IPsec-capable uplink is up, or it is switched off for the port)');
    if (!adv.algorithms.includes(sa.algorithm)) return this.reject(port, sa, 'algorithm-unsupported', `${sa.algorithm} is not advertised (${adv.algorithms.join(', ')})`);
    if (sa.mode === 'transport' ? !adv.transport : !adv.tunnel) return this.reject(port, sa, 'mode-unsupported', `${sa.mode} mode is not advertised`);
    if (sa.key.length !== ESP_KEY_BYTES[sa.algorithm] || sa.salt.length !== ESP_SALT_BYTES) {
      return this.reject(port, sa, 'bad-key', `${sa.algorithm} takes a ${ESP_KEY_BYTES[sa.algorithm]}-byte key and a ${ESP_SALT_BYTES}-byte salt`);
    }
    const src = canonical(sa.src);
    const dst = canonical(sa.dst);
    if (src === null || dst === null || src.includes(':') !== dst.includes(':') || !Number.isInteger(sa.spi) || sa.spi <= 0 || sa.spi > 0xffffffff) {
      return this.reject(port, sa, 'bad-address', 'src and dst must be IP addresses of one family and the SPI 1..2^32-1');
    }
    const same = this.records.find((r) => r !== undefined && r.state === 'offloaded' && r.port === port && r.sa.direction === sa.direction &&
      r.sa.spi === sa.spi && r.sa.algorithm === sa.algorithm && r.sa.mode === sa.mode && r.sa.src === sa.src && r.sa.dst === sa.dst &&
      bytesEqual(r.sa.key, sa.key) && bytesEqual(r.sa.salt, sa.salt) && JSON.stringify(r.sa.selector) === JSON.stringify(sa.selector));
    if (same !== undefined) return same; // a restarted agent offloading what it had: already done
    if (this.records.some((r) => r !== undefined && r.state !== 'uploaded' && r.sa.direction === sa.direction && r.sa.spi === sa.spi)) {
      return this.reject(port, sa, 'duplicate-spi', `an ${sa.direction}bound SA with SPI 0x${sa.spi.toString(16)} exists`);
    }
    const local = sa.direction === 'out' ? src : dst;
    const peer = sa.direction === 'out' ? dst : src;
    if (!this.owns(port, local)) return this.reject(port, sa, 'source-not-owned', `${local} is not an address of port ${port.name}`);
    const up = this.uplinkFor(port, sa, peer);
    if (typeof up === 'string') {
      return this.reject(port, sa, up, up === 'destination-unknown'
        ? `${peer} has not been seen on any port (no ARP/ND or traffic yet)`
        : `${peer} is not reached through an IPsec-capable uplink`);
    }
    if (this.countFor(port) >= port.maxSa) return this.reject(port, sa, 'sa-limit', `port ${port.name} may offload ${port.maxSa} SAs`);
    if (this.countOn(up) >= up.deviceCaps.ipsec.maxSa) return this.reject(port, sa, 'uplink-sa-limit', `uplink ${up.name} holds ${up.deviceCaps.ipsec.maxSa} SAs`);

    let esp: EspSa;
    try {
      esp = new EspSa(sa);
    } catch (e) {
      return this.reject(port, sa, 'bad-address', (e as Error).message);
    }
    let id = this.records.indexOf(undefined);
    if (id < 0) id = this.records.length;
    const rec = new SaRecord(id, port, sa, esp, up, peer);
    this.records[id] = rec;
    if (sa.direction === 'out') (this.outByPort[port.index] ??= []).push(rec);
    else this.inBySpi.set(sa.spi, rec);
    return rec;
  }

  remove(port: Port, direction: SaDirection, spi: number): boolean {
    const rec = this.find(port, direction, spi);
    if (rec === undefined) return false;
    this.drop(rec);
    return true;
  }

  private drop(rec: SaRecord): void {
    this.records[rec.id] = undefined;
    this.unmatch(rec);
  }

  private unmatch(rec: SaRecord): void {
    const list = this.outByPort[rec.port.index];
    if (list !== undefined) {
      const i = list.indexOf(rec);
      if (i >= 0) list.splice(i, 1);
    }
    if (this.inBySpi.get(rec.sa.spi) === rec) this.inBySpi.delete(rec.sa.spi);
  }

  find(port: Port, direction: SaDirection, spi: number): SaRecord | undefined {
    return this.records.find((r) => r !== undefined && r.port === port && r.sa.direction === direction && r.sa.spi === spi);
  }

  list(port?: Port): SaView[] {
    return this.records.filter((r): r is SaRecord => r !== undefined && (port === undefined || r.port === port)).map((r) => r.view());
  }

  rejected(port?: Port): Rejection[] {
    return this.rejections.filter((r) => port === undefined || r.port === port.name);
  }

  /** The VM has installed an uploaded SA in its own stack: stop matching its traffic. */
  ackUploaded(port: Port, direction: SaDirection, spi: number): boolean {
    const rec = this.find(port, direction, spi);
    if (rec === undefined || rec.state !== 'uploading') return false;
    rec.state = 'uploaded';
    rec.since = new Date();
    // Inbound ESP is the VM's now; outbound, the SA keeps guarding: plaintext
    // that matches it (something queued before the VM's route changed) is dropped,
    // never forwarded in the clear. Deleting the SA lifts the guard.
    if (this.inBySpi.get(rec.sa.spi) === rec) this.inBySpi.delete(rec.sa.spi);
    return true;
  }

  /** Upload every offloaded SA of `port` that shares a peer with `rec` (both directions go together). */
  private upload(rec: SaRecord, reason: string): void {
    const group = this.records.filter((r): r is SaRecord => r !== undefined && r.port === rec.port && r.state === 'offloaded' && r.peer === rec.peer);
    const sas: UploadedSa[] = [];
    for (const r of group) {
      r.state = 'uploading';
      r.uploadReason = reason;
      r.since = new Date();
      // Inbound ESP now goes to the VM as it is; outbound plaintext is held back until the ack.
      if (this.inBySpi.get(r.sa.spi) === r) this.inBySpi.delete(r.sa.spi);
      const { key, salt, ...rest } = r.sa;
      const u: UploadedSa = { ...rest, key: hex(key), salt: hex(salt) };
      if (r.sa.direction === 'out') u.seq = r.esp.seq;
      else if (r.esp.replay !== null) u.replay = r.esp.replay.state();
      sas.push(u);
    }
    if (sas.length === 0) return;
    const ev: UploadEvent = { type: 'upload', port: rec.port.name, reason, sas };
    const q = this.pending.get(rec.port.name) ?? [];
    q.push(ev);
    this.pending.set(rec.port.name, q);
    for (const w of this.waiters.get(rec.port.name) ?? []) w();
    this.waiters.delete(rec.port.name);
    this.events.emit('upload', ev);
  }

  /**
   * Check every offloaded SA's path again (after a MAC move, a neighbour
   * change, an uplink capability change, a port going down or away) and
   * upload those whose destination is no longer behind an IPsec-capable uplink.
   */
  revalidate(reason: string): void {
    for (const r of this.records) {
      if (r === undefined || r.state !== 'offloaded') continue;
      if (!r.port.up || this.d.portAt(r.port.index) !== r.port) {
        this.drop(r);
        continue;
      }
      const up = this.uplinkFor(r.port, r.sa, r.peer);
      if (up !== r.uplink) this.upload(r, typeof up === 'string' ? `${reason}: ${up}` : `${reason}: peer now behind ${up.name}`);
    }
  }

  /**
   * Upload events for a port's agent (waits up to `waitMs` for one to come).
   * A waiter whose client went away (`gone()` true) leaves the events for the
   * next one; `giveBack` returns events that could not be delivered.
   */
  async nextEvents(port: Port, waitMs: number, gone: () => boolean = () => false): Promise<UploadEvent[]> {
    const take = () => {
      if (gone()) return [];
      const q = this.pending.get(port.name) ?? [];
      this.pending.delete(port.name);
      return q;
    };
    const now = take();
    if (now.length > 0 || waitMs <= 0) return now;
    await new Promise<void>((res) => {
      const list = this.waiters.get(port.name) ?? [];
      const wake = () => { clearTimeout(t); res(); };
      const t = setTimeout(() => {
        const l = this.waiters.get(port.name);
        if (l !== undefined) l.splice(l.indexOf(wake), 1);
        res();
      }, waitMs);
      list.push(wake);
      this.waiters.set(port.name, list);
    });
    return take();
  }

  /** Events a client could not be given (its connection closed): first in line for the next one. */
  giveBack(port: Port, events: UploadEvent[]): void {
    if (events.length === 0) return;
    this.pending.set(port.name, [...events, ...(this.pending.get(port.name) ?? [])]);
    for (const w of this.waiters.get(port.name) ?? []) w();
    this.waiters.delete(port.name);
  }

  // --- data path ------------------------------------------------------------

  /** Whether traffic from this port must be checked against outbound SAs. */
  hasOutbound(portIndex: number): boolean {
    const l = this.outByPort[portIndex];
    return l !== undefined && l.length > 0;
  }

  get hasInbound(): boolean {
    return this.inBySpi.size > 0;
  }

  /** The outbound SA this plaintext packet belongs to, or null. */
  matchOutbound(portIndex: number, buf: Uint8Array, lay: FrameLayout): SaRecord | null {
    const l = this.outByPort[portIndex];
    if (l === undefined) return null;
    // Link-local and multicast IPv6 (neighbour discovery, router solicitations) never go into an SA.
    if (lay.l3 === L3.IPV6) {
      const d0 = buf[lay.l3Off + 24]!;
      if (d0 === 0xff || (d0 === 0xfe && (buf[lay.l3Off + 25]! & 0xc0) === 0x80)) return null;
    }
    // The VM's own ESP (once an SA is uploaded) is already protected, unless a selector asks for ESP itself.
    const esp = lay.l4Proto === IpProtocol.ESP;
    for (let i = 0; i < l.length; i++) {
      const r = l[i]!;
      if (esp && r.esp.selector.protocol !== IpProtocol.ESP) continue;
      if (matchesSelector(r.esp, lay, buf)) return r;
    }
    return null;
  }

  record(id: number): SaRecord | undefined {
    return this.records[id];
  }

  /** Inbound SA for an ESP packet (SPI right after the IP header), or undefined. */
  inboundFor(buf: Uint8Array, lay: FrameLayout): SaRecord | undefined {
    if (lay.l4Off + 8 > lay.ipEnd) return undefined;
    const o = lay.l4Off;
    return this.inBySpi.getHalves(get16(buf, o), get16(buf, o + 2));
  }

  /** Decrypt in place; the time goes to the receiving VM. */
  decrypt(p: Packet, rec: SaRecord, lay: FrameLayout): EspError | null {
    this.d.fillClockNs(this.t0);
    const e = decapsulate(p, rec.esp, this.d.aead, lay);
    this.d.fillClockNs(this.t1);
    this.charge(rec, p.len);
    return e;
  }

  /** Encrypt in place; the time goes to the sending VM. */
  encrypt(p: Packet, rec: SaRecord, lay: FrameLayout): EspError | null {
    this.d.fillClockNs(this.t0);
    const e = encapsulate(p, rec.esp, this.d.aead, lay);
    this.d.fillClockNs(this.t1);
    this.charge(rec, p.len);
    return e;
  }

  /** Charge the SA and its port for the work timed between t0 and t1. */
  private charge(rec: SaRecord, bytes: number): void {
    const ns = this.t1[0]! - this.t0[0]!;
    rec.cpuNs += ns;
    const port = rec.port;
    const c = port.counters;
    c.ipsecPackets++;
    c.ipsecBytes += bytes;
    c.ipsecCpuNs += ns;
    if (port.budget !== undefined) port.tokens -= ns;
  }

  /** A packet of an offloaded SA was about to go somewhere other than its uplink: its path changed. */
  destinationChanged(rec: SaRecord): void {
    if (rec.state === 'offloaded') this.upload(rec, 'destination moved');
  }
}
