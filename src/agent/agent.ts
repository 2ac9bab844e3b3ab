// `vswitch guest-agent`: the VM's side of IPsec task offload.
//
// Given the SAs the VM's key exchange agreed on, the agent reads what the
// switch advertises to its port and, if IPsec offload is offered, hands each
// SA to the switch (whose ESP engine on the uplink then does the work). An
// SA the switch refuses is installed in the VM instead — and with it the
// other SAs of the same peer, so one peer's traffic is never half offloaded.
// Then it waits for upload events: when the switch gives SAs back (the peer
// moved onto this host, the uplink lost IPsec), it installs them in the VM
// continuing from the switch's sequence number and replay window, and acks
// each, after which the switch stops holding the VM's plaintext back.
//
// "Installed in the VM" means the guest kernel's XFRM when it has ESP, else
// the agent's own userspace ESP (TUN + raw socket). With --local-only the
// switch is never asked: the VM does its own IPsec (a peer host, say).
//
// On stop it removes what it put in place: its SAs in the switch, its XFRM
// states and policies, its TUN and routes.

import type { Aead } from '../offload/ipsec/esp.js';
import type { ReplayState, SecurityAssociation } from '../offload/ipsec/sa.js';
import { GuestClient, type GuestAdvertisement, type GuestUploadEvent, type OffloadResult } from './guest-client.js';
import { canonicalIp, localOf, parseSa, peerOf } from './sa-file.js';
import { espOverhead } from './esp-l3.js';
import { hostPrefix, linkInfo, runCommand, deviceFor, routeTo, type Runner } from './system.js';
import { probeXfrm, XfrmIpsec, type LocalIpsec } from './xfrm.js';
import { UserspaceIpsec } from './userspace.js';
import { arpRequestFrame, sendFrame } from './neighbour.js';
import { nodeAead } from '../io/aead-node.js';
import { nativeAeadIfAvailable } from '../io/aead-native.js';

export type LocalMode = 'auto' | 'xfrm' | 'userspace';
export type How = 'xfrm' | 'userspace';

export type AgentEvent =
  | { event: 'started'; device: string; mode: 'offload' | 'local-only'; sas: number }
  | { event: 'advertisement'; port: string; ipsec: GuestAdvertisement['ipsec'] }
  | { event: 'local-stack'; how: How; why: string }
  | { event: 'offloaded'; direction: string; spi: number; uplink: string | null }
  | { event: 'rejected'; direction: string; spi: number; reason: string; detail: string }
  | { event: 'installed-locally'; direction: string; spi: number; how: How; why: string }
  | { event: 'uploaded'; direction: string; spi: number; how: How; reason: string; seq?: number; replayTop?: number }
  | { event: 'ready'; offloaded: number; local: number }
  | { event: 'notice'; message: string; [k: string]: unknown }
  | { event: 'error'; message: string; direction?: string; spi?: number }
  | { event: 'stopped'; removedFromSwitch: number; stats: Record<string, unknown> | null };

export interface AgentOptions {
  sas: SecurityAssociation[];
  /** The guest API socket and token (not needed with localOnly). */
  socket?: string;
  token?: string;
  /** The VM's NIC; default: the device the route to the first SA's peer uses. */
  device?: string;
  localOnly?: boolean;
  local?: LocalMode;
  /** TUN device name for the userspace path. */
  tunName?: string;
  emit: (e: AgentEvent) => void;
  run?: Runner;
  aead?: Aead;
  /** Long-poll wait per events request (ms). */
  pollMs?: number;
  /** Ask the network for a peer the switch does not know yet (ARP) and try once more. */
  resolvePeers?: boolean;
  /** For tests: a guest API client, and how local IPsec is made. */
  client?: GuestClient;
  makeLocal?: (how: How) => LocalIpsec;
  probe?: () => { ok: boolean; why: string };
  /** For tests: how to ask for a peer (default: an ARP request on the device). */
  resolvePeer?: (peer: string, local: string) => void;
}

type SaState = 'offloaded' | 'local' | 'failed';

interface Held {
  sa: SecurityAssociation;
  state: SaState;
  /** The switch has a record of it (offloaded, or uploaded and acked). */
  inSwitch: boolean;
}

const key = (direction: string, spi: number) => `${direction}/${spi}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An upload event's SA as the agent installs it: the SA with its next sequence number, and the replay window. */
export function uploadedSa(u: Record<string, unknown>): { sa: SecurityAssociation; replay?: ReplayState } {
  const { replay, seq, ...rest } = u;
  const sa = parseSa(rest, `uploaded SA`);
  if (seq !== undefined) {
    if (typeof seq !== 'number' || !Number.isInteger(seq) || seq < 1 || seq > 0x100000000) throw new RangeError(`uploaded SA: seq ${String(seq)} is not a sequence number`);
    sa.seq = seq;
  }
  if (replay === undefined || replay === null) return { sa };
  const r = replay as ReplayState;
  if (typeof r.top !== 'number' || typeof r.size !== 'number' || typeof r.bitmap !== 'string') throw new RangeError('uploaded SA: replay must be {top, bitmap, size}');
  return { sa, replay: { top: r.top, size: r.size, bitmap: r.bitmap } };
}

export class Agent {
  private readonly held = new Map<string, Held>();
  private readonly run: Runner;
  private client: GuestClient | null = null;
  private localStack: LocalIpsec | null = null;
  private device = '';
  private stopping = false;
  private loop: Promise<void> | null = null;
  /** Routes the agent added to lower the path MTU to an offloaded peer, by SPI of the outbound SA. */
  private readonly mtuRoutes = new Map<number, { family: 4 | 6; prefix: string; dev: string }>();

  constructor(private readonly o: AgentOptions) {
    this.run = o.run ?? runCommand;
    for (const sa of o.sas) this.held.set(key(sa.direction, sa.spi), { sa, state: 'failed', inSwitch: false });
  }

  private emit(e: AgentEvent): void {
    this.o.emit(e);
  }

  /** The VM's own IPsec, made the first time an SA needs it. */
  private local(): LocalIpsec {
    if (this.localStack !== null) return this.localStack;
    let how: How;
    let why: string;
    const mode = this.o.local ?? 'auto';
    if (mode === 'auto') {
      const p = (this.o.probe ?? (() => probeXfrm(this.run)))();
      how = p.ok ? 'xfrm' : 'userspace';
      why = p.ok ? p.why : `the kernel cannot do ESP here (${p.why}): userspace ESP`;
    } else {
      how = mode;
      why = `--local ${mode}`;
    }
    this.localStack = this.o.makeLocal !== undefined ? this.o.makeLocal(how) : this.makeLocal(how);
    this.emit({ event: 'local-stack', how, why });
    return this.localStack;
  }

  private makeLocal(how: How): LocalIpsec {
    if (how === 'xfrm') return new XfrmIpsec(this.run);
    const nic = linkInfo(this.run, this.device);
    if (nic === null) throw new Error(`device ${this.device} does not exist`);
    // Room for the ESP of every SA this agent may have to do itself.
    const overhead = Math.max(...this.allSas().map((s) => espOverhead(s.mode, s.src.includes(':') ? 6 : 4)));
    return new UserspaceIpsec({
      device: this.device, tunName: this.o.tunName ?? 'vsesp0', tunMtu: nic.mtu - overhead, nicMtu: nic.mtu,
      // The switch's AES-GCM: the native shim's (a context per key), node:crypto where it is not built.
      aead: this.o.aead ?? nativeAeadIfAvailable() ?? nodeAead, run: this.run,
      notice: (message, fields) => this.emit({ event: 'notice', message, ...fields }),
    });
  }

  private allSas(): SecurityAssociation[] {
    return [...this.held.values()].map((h) => h.sa);
  }

  private installLocally(h: Held, why: string, replay?: ReplayState): boolean {
    try {
      const l = this.local();
      l.install(h.sa, replay);
      h.state = 'local';
      this.emit({ event: 'installed-locally', direction: h.sa.direction, spi: h.sa.spi, how: l.how, why });
      return true;
    } catch (e) {
      h.state = 'failed';
      this.emit({ event: 'error', message: `cannot install ${h.sa.direction} SA 0x${h.sa.spi.toString(16)} locally: ${(e as Error).message}`, direction: h.sa.direction, spi: h.sa.spi });
      return false;
    }
  }

  async start(): Promise<void> {
    const first = this.o.sas[0]!;
    this.device = this.o.device ?? deviceFor(this.run, peerOf(first)) ?? '';
    if (this.device === '') throw new Error(`no --device given and no route to ${peerOf(first)} to take it from`);
    this.emit({ event: 'started', device: this.device, mode: this.o.localOnly ? 'local-only' : 'offload', sas: this.o.sas.length });
    if (this.o.localOnly) {
      for (const h of this.orderedForInstall([...this.held.values()])) this.installLocally(h, 'local-only');
      this.emit({ event: 'ready', offloaded: 0, local: this.count('local') });
      return;
    }
    if (this.o.socket === undefined || this.o.token === undefined) throw new Error('the guest API socket and token are needed (or --local-only)');
    this.client = this.o.client ?? new GuestClient(this.o.socket, this.o.token);
    let adv: GuestAdvertisement | null = null;
    try {
      adv = await this.client.advertisement();
      this.emit({ event: 'advertisement', port: adv.port, ipsec: adv.ipsec });
    } catch (e) {
      this.emit({ event: 'error', message: `guest API: ${(e as Error).message}; doing IPsec in the VM` });
    }
    if (adv === null || !adv.ipsec.enabled) {
      const why = adv === null ? 'guest API unreachable' : 'IPsec offload not advertised';
      for (const h of this.orderedForInstall([...this.held.values()])) this.installLocally(h, why);
    } else {
      for (const group of this.byPeer()) await this.offloadGroup(group);
    }
    this.emit({ event: 'ready', offloaded: this.count('offloaded'), local: this.count('local') });
    if (this.count('offloaded') > 0 || adv !== null) this.loop = this.listen();
  }

  private count(s: SaState): number {
    return [...this.held.values()].filter((h) => h.state === s).length;
  }

  /** Inbound before outbound: the VM can take the peer's ESP before it sends its own. */
  private orderedForInstall(hs: Held[]): Held[] {
    return [...hs].sort((a, b) => (a.sa.direction === b.sa.direction ? 0 : a.sa.direction === 'in' ? -1 : 1));
  }

  private byPeer(): Held[][] {
    const groups = new Map<string, Held[]>();
    for (const h of this.held.values()) {
      const p = canonicalIp(peerOf(h.sa)) ?? peerOf(h.sa);
      const g = groups.get(p) ?? [];
      g.push(h);
      groups.set(p, g);
    }
    return [...groups.values()];
  }

  private async offloadOne(h: Held): Promise<OffloadResult> {
    const c = this.client!;
    let r = await c.offload(h.sa);
    if (!r.ok && r.reason === 'destination-unknown' && this.o.resolvePeers !== false && !h.sa.src.includes(':')) {
      try {
        (this.o.resolvePeer ?? ((peer, local) => this.arp(peer, local)))(peerOf(h.sa), localOf(h.sa));
        await sleep(300);
        r = await c.offload(h.sa);
      } catch (e) {
        this.emit({ event: 'notice', message: `could not ask the network for ${peerOf(h.sa)}: ${(e as Error).message}` });
      }
    }
    return r;
  }

  private arp(peer: string, local: string): void {
    const nic = linkInfo(this.run, this.device);
    if (nic === null) throw new Error(`device ${this.device} does not exist`);
    if (!sendFrame(this.device, arpRequestFrame(nic.mac, local, peer))) throw new Error(`could not send on ${this.device}`);
  }

  /** Offload a peer's SAs together; if the switch refuses one, the VM does them all. */
  private async offloadGroup(group: Held[]): Promise<void> {
    const results: { h: Held; r: OffloadResult }[] = [];
    for (const h of group) {
      try {
        results.push({ h, r: await this.offloadOne(h) });
      } catch (e) {
        results.push({ h, r: { ok: false, status: 0, reason: 'api-error', detail: (e as Error).message } });
      }
    }
    const refused = results.filter((x) => !x.r.ok);
    if (refused.length === 0) {
      for (const { h, r } of results) {
        h.state = 'offloaded';
        h.inSwitch = true;
        const v = (r as { view: Record<string, unknown> }).view;
        this.emit({ event: 'offloaded', direction: h.sa.direction, spi: h.sa.spi, uplink: (v['uplink'] as string | null) ?? null });
        if (h.sa.direction === 'out') this.lowerPathMtu(h.sa);
      }
      return;
    }
    for (const { h, r } of refused) {
      const f = r as Extract<OffloadResult, { ok: false }>;
      this.emit({ event: 'rejected', direction: h.sa.direction, spi: h.sa.spi, reason: f.reason, detail: f.detail });
    }
    // Take back what was accepted: one peer's traffic is protected in one place.
    for (const { h, r } of results) {
      if (!r.ok) continue;
      try {
        await this.client!.remove(h.sa.direction, h.sa.spi);
      } catch (e) {
        this.emit({ event: 'error', message: `could not take ${h.sa.direction} SA 0x${h.sa.spi.toString(16)} back from the switch: ${(e as Error).message}`, direction: h.sa.direction, spi: h.sa.spi });
        h.inSwitch = true;
      }
    }
    const reasons = [...new Set(refused.map((x) => (x.r as { reason: string }).reason))].join(', ');
    for (const { h, r } of this.orderedForInstall(results.map((x) => x.h)).map((h) => results.find((x) => x.h === h)!)) {
      this.installLocally(h, r.ok ? `the switch refused the peer's other SA (${reasons})` : `rejected: ${(r as { reason: string }).reason}`);
    }
  }

  /**
   * The switch adds ESP to the VM's packets on the way out, so a packet
   * that fills the NIC's MTU would not fit the uplink once encrypted: as a
   * stack that offloads IPsec does, the VM sends the peer smaller packets
   * (a host route with the MTU minus the ESP overhead; TCP's MSS follows).
   */
  private lowerPathMtu(sa: SecurityAssociation): void {
    const target = sa.selector?.dst ?? sa.dst;
    if (target === 'any' || target === '*') {
      this.emit({ event: 'notice', message: `SA 0x${sa.spi.toString(16)} protects any destination: path MTU left as it is` });
      return;
    }
    const family = target.includes(':') ? 6 : 4;
    const nic = linkInfo(this.run, this.device);
    const route = routeTo(this.run, target.split('/')[0]!);
    if (nic === null || route === null) return;
    const mtu = Math.max(family === 6 ? 1280 : 576, nic.mtu - espOverhead(sa.mode, sa.src.includes(':') ? 6 : 4));
    const prefix = hostPrefix(target);
    const r = this.run(['ip', `-${family}`, 'route', 'replace', prefix, ...(route.gateway !== undefined ? ['via', route.gateway] : []), 'dev', route.dev, 'mtu', String(mtu)]);
    if (!r.ok) {
      this.emit({ event: 'notice', message: `could not lower the path MTU to ${prefix}: ${r.stderr.trim()}` });
      return;
    }
    this.mtuRoutes.set(sa.spi, { family, prefix, dev: route.dev });
    this.emit({ event: 'notice', message: `path MTU to ${prefix} set to ${mtu} (room for the ESP the switch adds)`, mtu });
  }

  private restorePathMtu(spi: number): void {
    const m = this.mtuRoutes.get(spi);
    if (m === undefined) return;
    this.mtuRoutes.delete(spi);
    this.run(['ip', `-${m.family}`, 'route', 'del', m.prefix, 'dev', m.dev]);
  }

  /** Long-poll the guest API for upload events until stopped. */
  private async listen(): Promise<void> {
    const c = this.client!;
    while (!this.stopping) {
      let evs: GuestUploadEvent[];
      try {
        evs = await c.events(this.o.pollMs ?? 25_000);
      } catch (e) {
        if (this.stopping) return;
        this.emit({ event: 'error', message: `waiting for upload events: ${(e as Error).message}` });
        await sleep(1000);
        continue;
      }
      for (const ev of evs) {
        if (this.stopping) return;
        await this.onUpload(ev);
      }
    }
  }

  /** The switch hands SAs back: install each in the VM where the switch left off, then ack it. */
  async onUpload(ev: GuestUploadEvent): Promise<void> {
    const items: { sa: SecurityAssociation; replay?: ReplayState }[] = [];
    for (const u of ev.sas) {
      try {
        items.push(uploadedSa(u));
      } catch (e) {
        this.emit({ event: 'error', message: `upload event (${ev.reason}) has an SA the agent cannot take: ${(e as Error).message}` });
      }
    }
    items.sort((a, b) => (a.sa.direction === b.sa.direction ? 0 : a.sa.direction === 'in' ? -1 : 1));
    const installed: { sa: SecurityAssociation; replay?: ReplayState; how: How }[] = [];
    for (const it of items) {
      const k = key(it.sa.direction, it.sa.spi);
      const h = this.held.get(k) ?? { sa: it.sa, state: 'failed' as SaState, inSwitch: true };
      this.held.set(k, h);
      if (h.state === 'local') {
        // Already the VM's (an event repeated after a lost ack): just ack again.
        installed.push({ ...it, how: this.localStack!.how });
        continue;
      }
      h.sa = it.sa;
      try {
        const l = this.local();
        // The VM now adds the ESP itself (and knows its size): the lowered path MTU goes.
        if (it.sa.direction === 'out') this.restorePathMtu(it.sa.spi);
        l.install(it.sa, it.replay);
        h.state = 'local';
        installed.push({ ...it, how: l.how });
      } catch (e) {
        h.state = 'failed';
        // No ack: the switch keeps holding the plaintext back rather than let it out.
        this.emit({ event: 'error', message: `cannot install uploaded ${it.sa.direction} SA 0x${it.sa.spi.toString(16)}: ${(e as Error).message}`, direction: it.sa.direction, spi: it.sa.spi });
      }
    }
    for (const it of installed) {
      try {
        await this.client!.ackUploaded(it.sa.direction, it.sa.spi);
        const e: AgentEvent = { event: 'uploaded', direction: it.sa.direction, spi: it.sa.spi, how: it.how, reason: ev.reason };
        if (it.sa.direction === 'out' && it.sa.seq !== undefined) e.seq = it.sa.seq;
        if (it.replay !== undefined) e.replayTop = it.replay.top;
        this.emit(e);
      } catch (err) {
        this.emit({ event: 'error', message: `ack of uploaded ${it.sa.direction} SA 0x${it.sa.spi.toString(16)}: ${(err as Error).message}`, direction: it.sa.direction, spi: it.sa.spi });
      }
    }
  }

  /** Counters of the local stack (null until one was needed). */
  stats(): Record<string, unknown> | null {
    return this.localStack?.stats() ?? null;
  }

  /** Remove everything the agent put in place: SAs in the switch, local SAs, TUN, routes. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    let removed = 0;
    const c = this.client;
    if (c !== null) {
      c.close();
      await this.loop?.catch(() => {});
      c.reopen();
      for (const h of this.held.values()) {
        if (!h.inSwitch && h.state !== 'offloaded') continue;
        try {
          if (await c.remove(h.sa.direction, h.sa.spi)) removed++;
        } catch (e) {
          this.emit({ event: 'error', message: `removing ${h.sa.direction} SA 0x${h.sa.spi.toString(16)} from the switch: ${(e as Error).message}` });
        }
      }
      c.close();
    }
    for (const spi of [...this.mtuRoutes.keys()]) this.restorePathMtu(spi);
    const stats = this.stats();
    try {
      this.localStack?.close();
    } catch (e) {
      this.emit({ event: 'error', message: `removing local IPsec: ${(e as Error).message}` });
    }
    this.emit({ event: 'stopped', removedFromSwitch: removed, stats });
  }
}
