// The demo without root: the same data centre (demo-topology.ts), the same
// switch core, on the in-memory backend. Nothing reaches a kernel: each VM
// hands the switch generated TCP super-frames with the metadata a Linux guest
// puts in its virtio-net header, and the demo shows what the switch decided
// for each destination, the counters, and the work charged to the sender.
// The only rates it prints are what it measured here: the switch processing
// frames in this process, with no I/O.

import { performance } from 'node:perf_hooks';
import { BufferPool } from '../packet/pool.js';
import { GsoType, RxCsum } from '../packet/meta.js';
import type { Packet } from '../packet/packet.js';
import { Switch } from '../switch/switch.js';
import type { OutputQueue, Port } from '../switch/port.js';
import { MemoryBackend, inject } from '../io/memory.js';
import {
  checksumAll, noOffloads, normalizeCapabilities, segmentationAll, type OffloadCapabilities,
} from '../offload/capabilities.js';
import { verifyChecksums } from '../offload/checksum.js';
import { describeCapabilities } from '../offload/translate/index.js';
import { buildFrame } from '../wire/builder.js';
import { macToString } from '../wire/bytes.js';
import { FrameLayout, parseFrame } from '../wire/frame.js';
import { formatCaps, formatPorts, type StatsSnapshot } from './format.js';
import { gbits, sleep, type Ui } from './demo-ui.js';
import {
  FLIP_FLOW, NODES, delta, ethtoolLine, flowLabel, node, pathText, tookPath, type DemoNode, type Path, type PathDelta,
} from './demo-topology.js';

export interface MemoryOptions {
  quick: boolean;
}

const MAC = (n: DemoNode) => 0x021900000000 + node(n).num;
const IP4 = (n: DemoNode) => `198.19.0.${node(n).num}`;
const IP6 = (n: DemoNode) => `2001:db8:19::${node(n).num}`;

/** A Linux guest on a TAP with a virtio-net header takes super-frames and partial checksums on receive. */
function guestCaps(): OffloadCapabilities {
  const c = noOffloads();
  c.rxPartialChecksum = true;
  c.rsc = { v4: true, v6: true };
  c.uro = { v4: true, v6: true };
  return normalizeCapabilities(c);
}

/** An uplink NIC: checksum offload both ways, TSO when `tso`. */
function nicCaps(tso: boolean): OffloadCapabilities {
  const c = noOffloads();
  c.txChecksum = checksumAll();
  c.rxChecksum = checksumAll();
  if (tso) c.lso = segmentationAll();
  return normalizeCapabilities(c);
}

/** The in-memory endpoint, counting everything but keeping only a sample of frames to check. */
class Endpoint extends MemoryBackend {
  /** Frames to record (the rest are counted by the switch and forgotten). */
  keep = Infinity;
  override transmit(q: OutputQueue, port: Port): number {
    if (this.sent.length < this.keep) return super.transmit(q, port);
    return q.count;
  }
}

const PAYLOAD = 64000;
const MSS = 1448;

/** The metadata a Linux guest's virtio-net header carries with a TSO super-frame. */
function tsoMeta(l4Off: number, csumOffset: number, hdrLen: number, v6: boolean) {
  return (p: Packet) => {
    const m = p.meta;
    m.gsoType = v6 ? GsoType.TCPV6 : GsoType.TCPV4;
    m.gsoSize = MSS;
    m.hdrLen = hdrLen;
    m.needsCsum = true;
    m.csumStart = l4Off;
    m.csumOffset = csumOffset;
  };
}

function snap(p: Port): StatsSnapshot {
  return { name: p.name, kind: p.kind, ...p.counters.snapshot() } as unknown as StatsSnapshot;
}

export async function runMemory(ui: Ui, opts: MemoryOptions): Promise<void> {
  const flowMs = opts.quick ? 250 : 1000;

  // 1. The data centre, in memory.
  ui.section('The same small data centre, on the in-memory backend');
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 8192 }, { bufferSize: 65536 + 1024, count: 256 }] });
  const sw = new Switch({ pool });
  const be = {} as Record<DemoNode, Endpoint>;
  const port = {} as Record<DemoNode, Port>;
  for (const n of NODES) {
    be[n.name] = new Endpoint(n.kind === 'external' ? nicCaps(true) : n.kind === 'legacy' ? noOffloads() : guestCaps());
    port[n.name] = sw.addPort({ name: n.name, kind: n.kind, mac: MAC(n.name) }, be[n.name]);
    ui.say(ui.dim(`   ${n.name.padEnd(7)} ${n.what.replace(/ \(.*\)$/, '')}; MAC ${macToString(MAC(n.name))}, ${IP4(n.name)}, ${IP6(n.name)}`));
  }
  // Everybody says hello once (a broadcast), so the switch learns where each MAC is.
  for (const n of NODES) {
    inject(sw, port[n.name], [buildFrame({
      srcMac: MAC(n.name), dstMac: 0xffffffffffff,
      ip: { version: 4, src: IP4(n.name), dst: '198.19.0.255' }, l4: { kind: 'udp', sport: 9, dport: 9 }, payload: 18,
    }).frame]);
  }
  for (const n of NODES) be[n.name].take();
  const summary = () => sw.listPorts().map((p) => ({
    name: p.name, kind: p.kind, device: '(memory)', up: p.up, mtu: p.mtu, vlan: p.vlan, namespace: null,
    passThrough: p.isVnic ? p.passThrough : null, macsLearned: sw.macs.learnedOn(p.index),
  }));
  ui.say(ui.dim('   what `vswitch show` would say:'));
  ui.say(formatPorts(summary()).replace(/\n$/, '').split('\n').map((l) => `   ${l}`).join('\n'));
  ui.check(sw.listPorts().every((p) => sw.macs.learnedOn(p.index) === 1), `all ${NODES.length} ports up, each MAC learned on its port`);

  // 2. Reachability: a small frame from every node to every other reaches exactly that node.
  ui.section('Everyone reaches everyone (a unicast frame from each node to each other node)');
  let right = 0;
  let total = 0;
  for (const a of NODES) {
    for (const b of NODES) {
      if (a === b) continue;
      total++;
      for (const v6 of [false, true]) {
        inject(sw, port[a.name], [buildFrame({
          srcMac: MAC(a.name), dstMac: MAC(b.name),
          ip: v6 ? { version: 6, src: IP6(a.name), dst: IP6(b.name) } : { version: 4, src: IP4(a.name), dst: IP4(b.name) },
          l4: { kind: 'icmp', type: v6 ? 128 : 8 }, payload: 56,
        }).frame]);
      }
      const got = NODES.map((n) => be[n.name].take().length);
      if (got.every((k, i) => (NODES[i] === b ? k === 2 : k === 0))) right++;
    }
  }
  ui.check(right === total, `${right} of ${total} pairs: the IPv4 and the IPv6 frame reached exactly their destination`);

  // 3. Capabilities.
  ui.section('The capability map: what the uplink can do, what each vNIC was advertised');
  const capsView = () => sw.listPorts().map((p) => ({
    name: p.name, kind: p.kind, device: p.deviceCaps, advertised: p.advertised,
    tunFlags: p.isVnic ? describeCapabilities(p.advertised).linux.tunFlags : null,
  }));
  ui.say(ui.dim('   what `vswitch caps` would say:'));
  ui.say(formatCaps(capsView()).replace(/\n$/, '').split('\n').map((l) => `   ${l}`).join('\n'));
  ui.say(ui.dim('   and what a Linux guest\'s ethtool -k would show for it (the translation the TAP backend uses):'));
  for (const n of ['vm1', 'vm2', 'host', 'legacy'] as const) {
    ui.say(`     ${n.padEnd(7)} ${ethtoolLine(describeCapabilities(port[n].advertised).linux.ethtool)}`);
  }
  const vnicsGetAll = (['vm1', 'vm2', 'host'] as const).every((n) => port[n].advertised.lso.v4 && port[n].advertised.lso.v6 && port[n].advertised.txChecksum.tcp4);
  ui.check(vnicsGetAll, 'every vNIC is advertised checksum and LSO (done in software where the path cannot)');
  ui.check(!port.legacy.advertised.lso.v4 && !port.legacy.advertised.txChecksum.tcp4, 'the legacy NIC is advertised nothing');

  // 4. Super-frames from each VM to each destination.
  ui.section(`Traffic: TCP super-frames (64 KB, MSS ${MSS}) from each VM to each destination, ${flowMs / 1000} s each`);
  ui.say(ui.dim('   rate: what the switch processed in memory in this process (no I/O); path: the destination port\'s counters'));
  const expectFor = (to: DemoNode): [Path, string] =>
    to === 'legacy' ? ['software segmentation', 'an emulated NIC takes only MTU frames with finished checksums']
      : to === 'uplink' ? ['hardware', 'the uplink does TSO itself']
        : ['pass-through', `${to}'s guest takes super-frames whole`];
  for (const from of ['vm1', 'vm2'] as const) {
    for (const to of NODES.map((n) => n.name).filter((n) => n !== from)) {
      const [expect, why] = expectFor(to);
      const r = await superFrames(ui, sw, port, be, from, to, flowMs);
      ui.settle(`   ${flowLabel(from, to)} ${gbits(r.bitsPerSecond).padStart(12)}  ${pathText(r.d, from)}`);
      ui.check(tookPath(r.d, expect) && r.problem === '', `${from} → ${to}: ${expect}, as it should: ${why}; ${r.verified}`,
        r.problem !== '' ? r.problem : `hardware ${r.d.hardware}, pass-through ${r.d.passThrough}, software ${r.d.software}`);
    }
  }

  // 5. The uplink loses TSO.
  const { from, to } = FLIP_FLOW;
  ui.section(`The uplink loses TSO and gets it back (Switch.updateCapabilities, as the NIC watch does), ${from} → ${to}`);
  const phase = async (label: string, expect: Path) => {
    const r = await superFrames(ui, sw, port, be, from, to, flowMs, label);
    ui.settle(`   ${label.padEnd(15)} ${gbits(r.bitsPerSecond).padStart(12)}  ${pathText(r.d, from)}`);
    return tookPath(r.d, expect) && r.problem === '' ? '' : `${r.problem} (hardware ${r.d.hardware}, software ${r.d.software})`;
  };
  const on1 = await phase('TSO on', 'hardware');
  ui.check(on1 === '', 'TSO on: super-frames handed to the NIC (hardware)', on1);
  sw.updateCapabilities(to, nicCaps(false));
  ui.say(`   ${ui.dim('→')} uplink TSO off: capability map says LSO ${port[to].deviceCaps.lso.v4 ? 'on' : 'off'}; ${from} is still advertised LSO: ${port[from].advertised.lso.v4 ? 'yes' : 'no'}`);
  ui.check(!port[to].deviceCaps.lso.v4 && port[from].advertised.lso.v4, 'the map follows the NIC; the guests\' offloads do not change');
  const off = await phase('TSO off', 'software segmentation');
  ui.check(off === '', 'TSO off: the switch segments in software, checksums left to the NIC (it still does those)', off);
  sw.updateCapabilities(to, nicCaps(true));
  ui.say(`   ${ui.dim('→')} uplink TSO on again: capability map says LSO ${port[to].deviceCaps.lso.v4 ? 'on' : 'off'}`);
  const on2 = await phase('TSO on again', 'hardware');
  ui.check(on2 === '', 'TSO on again: back to hardware', on2);

  // 6. Invariants.
  ui.section('Accounting');
  const unbalanced = sw.listPorts().filter((p) => !p.counters.balanced).map((p) => p.name);
  ui.check(unbalanced.length === 0, 'every port: received = forwarded + dropped (by reason) + pending', unbalanced.join(', '));
  for (const p of sw.listPorts()) p.backend.close?.();
  ui.check(pool.inUse === 0, `every buffer back in the pool (${pool.capacity} buffers, ${pool.inUse} in use)`);
}

interface SuperFrameRun {
  d: PathDelta;
  bitsPerSecond: number;
  /** What the sample of delivered frames showed. */
  verified: string;
  problem: string;
}

/** Send super-frames from `from` to `to` for `ms`, refreshing a live line; check a sample of what arrived. */
async function superFrames(ui: Ui, sw: Switch, port: Record<DemoNode, Port>, be: Record<DemoNode, Endpoint>,
  from: DemoNode, to: DemoNode, ms: number, label = flowLabel(from, to).trimEnd()): Promise<SuperFrameRun> {
  const built = buildFrame({
    srcMac: MAC(from), dstMac: MAC(to),
    ip: { version: 4, src: IP4(from), dst: IP4(to), ident: 1 },
    l4: { kind: 'tcp', sport: 40000, dport: 5201, seq: 1, flags: 0x18 },
    payload: PAYLOAD, checksum: 'partial',
  });
  const prepare = tsoMeta(built.l4Off, built.csumOffset, built.payloadOff, false);
  const frames = Array.from({ length: 8 }, () => built.frame);
  const dest = be[to];
  dest.take();
  dest.keep = 16;
  const b0 = snap(port[to]);
  const s0 = snap(port[from]);
  const t0 = performance.now();
  let sent = 0;
  let lastDraw = t0;
  while (performance.now() - t0 < ms) {
    inject(sw, port[from], frames, prepare);
    sent += frames.length;
    const now = performance.now();
    if (now - lastDraw > 50) {
      const d = delta(b0, snap(port[to]), s0, snap(port[from]), (now - t0) / 1000);
      ui.live(`   ${label.padEnd(15)} ${gbits((sent * PAYLOAD * 8) / d.seconds).padStart(12)}  ${pathText(d, from)}`);
      lastDraw = now;
      await sleep(0); // let the terminal show it
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const d = delta(b0, snap(port[to]), s0, snap(port[from]), seconds);
  const sample = dest.take();
  dest.keep = Infinity;

  // What arrived must be valid for the port it arrived on.
  let problem = '';
  let verified = '';
  const lay = new FrameLayout();
  const whole = sample.filter((f) => f.frame.length === built.frame.length && f.meta.gsoType === GsoType.TCPV4 && f.meta.gsoSize === MSS);
  const segs = sample.filter((f) => f.frame.length <= 1514 && f.meta.gsoType === GsoType.NONE);
  if (sample.length === 0) problem = 'nothing arrived';
  else if (d.passThrough > 0 || d.hardware > 0) {
    if (whole.length !== sample.length) problem = `${sample.length - whole.length} of ${sample.length} frames were not the super-frame with its metadata`;
    verified = `${sample.length} checked frames arrived whole with gso_size ${MSS}`;
  } else if (segs.length !== sample.length) {
    problem = `${sample.length - segs.length} of ${sample.length} frames were above the MTU or kept GSO metadata`;
  } else if (to === 'legacy') {
    const good = segs.filter((f) => parseFrame(f.frame, 0, f.frame.length, lay) === null &&
      verifyChecksums(f.frame, lay) === RxCsum.VERIFIED && f.meta.rxCsum === RxCsum.VERIFIED && !f.meta.needsCsum);
    if (good.length !== segs.length) problem = `${segs.length - good.length} segments without a valid, verified checksum`;
    verified = `${segs.length} checked segments ≤ 1514 B, checksums valid and marked verified`;
  } else {
    const partial = segs.filter((f) => f.meta.needsCsum);
    if (partial.length !== segs.length) problem = 'segments for a checksum-offloading NIC should leave it the checksums';
    verified = `${segs.length} checked segments ≤ 1514 B, checksums for the NIC to finish`;
  }
  return { d, bitsPerSecond: (sent * PAYLOAD * 8) / seconds, verified, problem };
}
