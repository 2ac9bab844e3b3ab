// A small data centre on the in-memory backend: two VMs on synthetic ports,
// a host vNIC, a legacy VM and an uplink, plus helpers to build frames
// between them and to check the switch's invariants.
import assert from 'node:assert/strict';
import { BufferPool } from '../../src/packet/pool.js';
import { GsoType } from '../../src/packet/meta.js';
import type { Packet } from '../../src/packet/packet.js';
import { Switch, type SwitchOptions } from '../../src/switch/switch.js';
import type { Port, PortConfig } from '../../src/switch/port.js';
import { MemoryBackend, inject } from '../../src/io/memory.js';
import {
  checksumAll, noOffloads, segmentationAll, normalizeCapabilities, type OffloadCapabilities,
} from '../../src/offload/capabilities.js';
import { buildFrame, type FrameSpec } from '../../src/wire/builder.js';

export const MAC = {
  vm1: 0x020000000001, vm2: 0x020000000002, host: 0x020000000003, legacy: 0x020000000004, peer: 0x020000000005,
} as const;
export const IP4 = { vm1: '198.18.0.1', vm2: '198.18.0.2', host: '198.18.0.3', legacy: '198.18.0.4', peer: '198.18.0.5' } as const;
export const IP6 = { vm1: '2001:db8::1', vm2: '2001:db8::2', host: '2001:db8::3', legacy: '2001:db8::4', peer: '2001:db8::5' } as const;
export type Node = keyof typeof MAC;

/** A guest on a TAP-like vNIC: takes everything on receive. */
export function guestCaps(): OffloadCapabilities {
  const c = noOffloads();
  c.rxPartialChecksum = true;
  c.rsc = { v4: true, v6: true };
  c.uro = { v4: true, v6: true };
  return c;
}

/** An uplink NIC with the given offloads on. */
export function nicCaps(o: { csum?: boolean; tso?: boolean; uso?: boolean; ipsec?: boolean } = {}): OffloadCapabilities {
  const c = noOffloads();
  if (o.csum ?? true) { c.txChecksum = checksumAll(); c.rxChecksum = checksumAll(); }
  if (o.tso ?? true) { c.lso = segmentationAll(); c.lso.v4 = c.lso.v6 = true; }
  if (o.uso ?? false) c.uso = segmentationAll();
  if (o.ipsec ?? false) c.ipsec = { enabled: true, algorithms: ['aes-gcm-128', 'aes-gcm-256'], maxSa: 64, transport: true, tunnel: true, v4: true, v6: true };
  return normalizeCapabilities(c);
}

export interface Topology {
  sw: Switch;
  pool: BufferPool;
  ports: Record<Node, Port>;
  be: Record<Node, MemoryBackend>;
  clock: { ms: number; ns: number };
}

export function topology(opts: {
  overrides?: Partial<Record<Node, Partial<PortConfig>>>;
  uplink?: OffloadCapabilities;
  switch?: Partial<SwitchOptions>;
} = {}): Topology {
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 2048 }, { bufferSize: 66560, count: 64 }] });
  const clock = { ms: 1_000_000, ns: 0 };
  const sw = new Switch({ pool, now: () => clock.ms, clockNs: () => clock.ns, ...opts.switch });
  const kinds: Record<Node, PortConfig['kind']> = { vm1: 'synthetic', vm2: 'synthetic', host: 'host', legacy: 'legacy', peer: 'external' };
  const be = {} as Record<Node, MemoryBackend>;
  const ports = {} as Record<Node, Port>;
  for (const n of Object.keys(kinds) as Node[]) {
    const caps = n === 'peer' ? (opts.uplink ?? nicCaps()) : n === 'legacy' ? noOffloads() : guestCaps();
    be[n] = new MemoryBackend(caps);
    ports[n] = sw.addPort({ name: n, kind: kinds[n], mac: MAC[n], ...opts.overrides?.[n] }, be[n]);
  }
  return { sw, pool, ports, be, clock };
}

export function tcpFrame(from: Node, to: Node, payload: number, o: Partial<FrameSpec> & { v6?: boolean; seq?: number; flags?: number } = {}): Uint8Array {
  return buildFrame({
    srcMac: MAC[from], dstMac: MAC[to],
    ip: o.v6 ? { version: 6, src: IP6[from], dst: IP6[to] } : { version: 4, src: IP4[from], dst: IP4[to], ident: 100 },
    l4: { kind: 'tcp', sport: 40000, dport: 5201, seq: o.seq ?? 1, flags: o.flags ?? 0x18 },
    payload, checksum: 'partial', ...o,
  }).frame;
}

export function udpFrame(from: Node, to: Node, payload: number, v6 = false): Uint8Array {
  return buildFrame({
    srcMac: MAC[from], dstMac: MAC[to],
    ip: v6 ? { version: 6, src: IP6[from], dst: IP6[to] } : { version: 4, src: IP4[from], dst: IP4[to] },
    l4: { kind: 'udp', sport: 4000, dport: 5000 }, payload, checksum: 'partial',
  }).frame;
}

/** Metadata a Linux guest puts on a TSO super-frame (per its vnet header). */
export function tso(mss = 1448, v6 = false, l4Off = v6 ? 54 : 34) {
  return (p: Packet) => {
    const m = p.meta;
    m.gsoType = v6 ? GsoType.TCPV6 : GsoType.TCPV4;
    m.gsoSize = mss;
    m.needsCsum = true;
    m.csumStart = l4Off;
    m.csumOffset = 16;
    m.hdrLen = l4Off + 20;
  };
}

export function uso(size = 1400, v6 = false) {
  return (p: Packet) => {
    const m = p.meta;
    m.gsoType = GsoType.UDP_L4;
    m.gsoSize = size;
    m.needsCsum = true;
    m.csumStart = v6 ? 54 : 34;
    m.csumOffset = 6;
  };
}

export function csumOnly(l4Off = 34, offset = 16) {
  return (p: Packet) => {
    p.meta.needsCsum = true;
    p.meta.csumStart = l4Off;
    p.meta.csumOffset = offset;
  };
}

/** Teach the switch where every node is (a broadcast from each). */
export function learnAll(t: Topology): void {
  for (const n of Object.keys(MAC) as Node[]) {
    const arp = buildFrame({ srcMac: MAC[n], dstMac: 0xffffffffffff, ip: { version: 4, src: IP4[n], dst: '198.18.255.255' }, l4: { kind: 'udp', sport: 1, dport: 1 }, payload: 10 }).frame;
    inject(t.sw, t.ports[n], [arp]);
  }
  for (const b of Object.values(t.be)) b.take();
}

/** The invariants that hold after every scenario. */
export function assertBalanced(t: Topology): void {
  for (const port of t.sw.listPorts()) {
    const c = port.counters;
    assert.ok(c.balanced, `${port.name}: received ${c.rxPackets} ≠ forwarded ${c.forwarded} + dropped ${c.rxDropped} + pending ${c.pending} (${JSON.stringify(c.dropsByReason('rx'))})`);
  }
  const pending = t.sw.listPorts().reduce((n, p) => n + p.backlog.length, 0);
  assert.equal(t.pool.inUse, pending, 'every pool buffer is back (except parked packets)');
}
