// vswitch against the wire, the Linux bridge and Open vSwitch (userspace
// datapath, TSO off and on), in one run, on the same kind of guests.
//
//   ./bench/run.sh switch [--quick] [--soak] [--no-write] [--no-profile]
//                         [--reps N] [--seconds N] [--only id,id,...] [--soak-seconds N]
//                         [--workers N [--worker-reads on|off] [--worker-ports KIND,...]] [--queues N] [--uro on|off]
//                         (vswitch: switch.workers, workerReads, workerPorts; queues: on synthetic ports; uro: on vNICs)
//
// Builds every switch first, then repeats the scenarios interleaved (each
// switch once per repetition), then a CPU profile of the daemon per profiled
// scenario, then writes docs/benchmarks.md (between <!-- switch:begin/end -->)
// and docs/benchmarks-switch.svg. Everything it makes is named with a per-run
// prefix and removed at the end, on failure and on Ctrl-C.
//
// Row ids for --only: wire bridge ovs ovs-tso vs-vm vs-uplink-hw vs-uplink-sw vs-legacy vs-ipsec

import { cpus, loadavg, release } from 'node:os';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  cleanupSync, cpuSeconds, installCleanupHandlers, leftovers, setPrefix, sleep, spawnIn, trackDir,
} from './lib/proc.js';
import {
  blast, iperfServer, iperfTcp, iperfUdp, pingRtt, reachable, rxCounters, stopServer, type Mark,
} from './lib/measure.js';
import {
  Bridge, Ovs, ROW_ORDER, VswitchA, VswitchB, Wire, distRoot, tsoState, type Row, type RowId, type Scenario, type Subject,
} from './lib/subjects.js';
import {
  SCENARIOS, markdown, svg, terminalReport, type Machine, type ProfileResult, type Report, type RowResult, type Sample, type SoakResult,
} from './lib/report.js';
import { summarizeFile } from './lib/cpuprofile.js';
import type { ProbeSnapshot } from './gc-probe.js';

// --- options -----------------------------------------------------------------------------

const argv = process.argv.slice(2);
const has = (f: string) => argv.includes(f);
const val = (f: string): string | undefined => {
  const i = argv.indexOf(f);
  return i >= 0 ? argv[i + 1] : undefined;
};
const quick = has('--quick');
const REPS = Number(val('--reps') ?? (quick ? 1 : 3));
const SECONDS = Number(val('--seconds') ?? (quick ? 2 : 5));
const PINGS = quick ? 100 : 300;
const PROFILE_SECONDS = quick ? 3 : 8;
const SOAK_SECONDS = Number(val('--soak-seconds') ?? 60);
const only = val('--only')?.split(',') as RowId[] | undefined;
const write = !has('--no-write');
const root = resolve(distRoot, '..');
const BLAST = join(distRoot, 'bench/udp-blast.js');

if (process.getuid?.() !== 0) {
  console.error('bench switch: needs root (network namespaces, TAPs, Open vSwitch)');
  process.exit(2);
}
for (const tool of ['iperf3', 'ping', 'ethtool', 'ss']) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
    console.error(`bench switch: ${tool} is missing (bench/run.sh installs it)`);
    process.exit(2);
  }
}
const haveOvs = spawnSync('sh', ['-c', 'command -v ovs-vswitchd && command -v ovsdb-server']).status === 0;

// --- setup ---------------------------------------------------------------------------------

const t0 = Date.now();
const prefix = `bs${Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, '0')}`;
setPrefix(prefix);
installCleanupHandlers();

function version(cmd: string, args: string[], re: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  const m = re.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`);
  return m === null ? `${cmd}: not found` : m[0];
}

const cpuModel = (() => {
  try {
    const m = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return m?.[1]?.trim() ?? cpus()[0]?.model ?? 'unknown CPU';
  } catch {
    return cpus()[0]?.model ?? 'unknown CPU';
  }
})();
const load = () => loadavg().map((l) => l.toFixed(2)).join(' / ');

const machine: Machine = {
  cpu: cpuModel, cores: cpus().length, kernel: release(), node: process.version,
  ovs: haveOvs ? version('ovs-vswitchd', ['--version'], /Open vSwitch\) [\d.]+/).replace(') ', ' ') : 'Open vSwitch not installed',
  iperf: version('iperf3', ['--version'], /iperf [\d.]+/), date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'), loadStart: load(), loadEnd: '',
};

const failures: string[] = [];
const fail = (what: string, e: unknown) => {
  const msg = `${what}: ${e instanceof Error ? e.message : String(e)}`;
  failures.push(msg);
  console.error(`  ! ${msg}`);
};

// vswitch's own knobs, the same for every vswitch daemon of the run (recorded with the command).
const tuning = {
  ...(val('--workers') !== undefined ? { settings: { workers: Number(val('--workers')), ...(val('--worker-reads') !== undefined ? { workerReads: val('--worker-reads') !== 'off' } : {}), ...(val('--worker-ports') !== undefined ? { workerPorts: val('--worker-ports')!.split(',') } : {}) } } : {}),
  ...(val('--queues') !== undefined ? { queues: Number(val('--queues')) } : {}),
  ...(val('--uro') !== undefined ? { uro: val('--uro') !== 'off' } : {}),
};
const vsA = new VswitchA(prefix, 4, { probe: true, ...tuning });
const vsB = new VswitchB(prefix, 5, { probe: true, ...tuning });
const ovsOff = new Ovs(prefix, 2, false);
const ovsOn = new Ovs(prefix, 3, true);
const subjects: Subject[] = [new Wire(prefix, 0), new Bridge(prefix, 1), ...(haveOvs ? [ovsOff, ovsOn] : []), vsA, vsB];
const subjectRows: Record<string, RowId[]> = {
  wire: ['wire'], bridge: ['bridge'], ovs: ['ovs'], 'ovs-tso': ['ovs-tso'], 'vswitch-a': ['vs-vm', 'vs-uplink-sw', 'vs-legacy'], 'vswitch-b': ['vs-uplink-hw', 'vs-ipsec'],
};
if (!haveOvs) failures.push('Open vSwitch is not installed (apt-get install openvswitch-switch): its rows are missing');

const rows: Row[] = [];
const results = new Map<RowId, RowResult>();
const started: Subject[] = [];

console.log(`bench switch: run ${prefix}, ${REPS} repetition(s) × ${SECONDS} s${quick ? ' (quick)' : ''}, ${machine.cores}× ${machine.cpu}, load ${machine.loadStart}`);
for (const s of subjects) {
  if (only !== undefined && !subjectRows[s.name]!.some((r) => only.includes(r))) continue;
  process.stdout.write(`  starting ${s.name} ... `);
  try {
    started.push(s);
    const rs = (await s.start()).filter((r) => only === undefined || only.includes(r.id));
    rows.push(...rs);
    console.log('ok');
  } catch (e) {
    console.log('failed');
    fail(`${s.name} did not start`, e);
    for (const id of subjectRows[s.name]!) {
      if (only !== undefined && !only.includes(id)) continue;
      results.set(id, { id, label: id, kind: id.startsWith('vs') ? 'vswitch' : 'reference', notes: [], guestTso: '?', failed: (e as Error).message, samples: {}, errors: {} });
    }
  }
}
rows.sort((a, b) => ROW_ORDER.indexOf(a.id) - ROW_ORDER.indexOf(b.id));

for (const r of rows) {
  const res: RowResult = { id: r.id, label: r.label, kind: r.kind, notes: r.notes, guestTso: await tsoState(r.srcNs, r.srcDev), samples: {}, errors: {} };
  results.set(r.id, res);
  const oneWay = r.scenarios.length > 0 && r.scenarios.every((s) => s.startsWith('esp'));
  if (r.scenarios.length > 0 && !oneWay && !(await reachable(r.srcNs, r.dstAddr))) {
    res.failed = `${r.dstAddr} not reachable from ${r.srcNs}`;
    fail(r.label, res.failed);
    r.scenarios = [];
  }
}

// --- one test ------------------------------------------------------------------------------

function pathOf(before: Record<string, any>, after: Record<string, any>, dst: string): string {
  const d = (k: string) => (after[dst]?.offload?.[k] ?? 0) - (before[dst]?.offload?.[k] ?? 0);
  const hw = d('hardware'), pass = d('passThrough'), sw = d('software'), segs = d('segments');
  const m = Math.max(hw, pass, sw);
  if (m === 0) return 'none';
  const share = (n: number) => `${Math.round((100 * n) / (hw + pass + sw))} %`;
  if (m === pass) return `pass-through ${share(pass)}`;
  if (m === hw) return `hardware ${share(hw)}`;
  return `software ${share(sw)}${segs > 0 ? `, ${segs} segments` : ''}`;
}

/** How many of the datagrams sent to `dst` went coalesced (URO), and how many per super-frame. */
function coalescedOf(before: Record<string, any>, after: Record<string, any>, dst: string): string {
  // Only vNICs take coalesced datagrams (URO): nothing to say for a legacy NIC or an uplink.
  const kind = after[dst]?.kind as string | undefined;
  if (kind === 'legacy' || kind === 'external') return '–';
  const c = (s: Record<string, any>, k: 'datagrams' | 'frames') => (s[dst]?.offload?.coalesced?.[k] as number | undefined) ?? 0;
  const datagrams = c(after, 'datagrams') - c(before, 'datagrams');
  const frames = c(after, 'frames') - c(before, 'frames');
  const tx = ((after[dst]?.txPackets as number | undefined) ?? 0) - ((before[dst]?.txPackets as number | undefined) ?? 0);
  const total = tx - frames + datagrams;
  if (total <= 0 || datagrams === 0) return 'URO: none coalesced';
  return `URO: ${Math.round((100 * datagrams) / total)} % of datagrams coalesced, ${(datagrams / frames).toFixed(1)} per super-frame`;
}

function dropsOf(before: Record<string, any>, after: Record<string, any>): string {
  const out: string[] = [];
  for (const [port, a] of Object.entries(after)) {
    for (const dir of ['rxDrops', 'txDrops'] as const) {
      for (const [reason, n] of Object.entries((a[dir] ?? {}) as Record<string, number>)) {
        const dn = n - ((before[port]?.[dir]?.[reason] as number | undefined) ?? 0);
        if (dn > 0) out.push(`${port} ${dir === 'rxDrops' ? 'rx' : 'tx'} ${reason} ${dn}`);
      }
    }
  }
  return out.join(', ');
}

async function measure(r: Row, s: Scenario, seconds = SECONDS): Promise<Sample> {
  const d = r.daemon;
  const snapBefore: ProbeSnapshot | null = d ? await d.snapshot() : null;
  const statsBefore = d ? await d.stats() : null;
  const cpu: { c0: ReturnType<typeof cpuSeconds>; c1: ReturnType<typeof cpuSeconds>; w0: number; w1: number } = { c0: null, c1: null, w0: 0, w1: 0 };
  const sample: Sample = { value: NaN };
  const mark: Mark = (phase) => {
    const c = r.pid !== null ? cpuSeconds(r.pid) : null;
    const us = Number(process.hrtime.bigint() / 1000n);
    if (phase === 'start') { cpu.c0 = c; cpu.w0 = performance.now(); sample.windowUs = [us, us]; } else { cpu.c1 = c; cpu.w1 = performance.now(); sample.windowUs![1] = us; }
  };
  switch (s) {
    case 'tcp1':
    case 'tcp4': {
      const t = await iperfTcp(r.srcNs, r.dstNs, r.dstAddr, seconds, s === 'tcp1' ? 1 : 4, mark);
      sample.value = t.bps;
      sample.retransmits = t.retransmits;
      break;
    }
    case 'udp64': {
      const u = await iperfUdp(r.srcNs, r.dstNs, r.dstAddr, seconds, 22, mark);
      sample.value = u.pps;
      sample.sentPps = u.sentPps;
      sample.lossPct = u.lossPct;
      break;
    }
    case 'rtt': {
      const p = await pingRtt(r.srcNs, r.dstAddr, PINGS, 0.01, mark);
      sample.value = p.medianUs;
      sample.p99 = p.p99Us;
      sample.lossPct = p.lossPct;
      break;
    }
    case 'esp64': case 'esp1400': case 'plain64': case 'plain1400': {
      const len = s.endsWith('1400') ? 1400 : 22;
      const rx0 = await rxCounters(r.dstNs, r.dstDev);
      const esp0 = s.startsWith('esp') ? await vsB.espPackets() : 0;
      const b = await blast(process.execPath, BLAST, r.srcNs, r.srcDev, r.dstAddr, len, seconds, mark);
      await sleep(200); // let the last frames through
      const rx1 = await rxCounters(r.dstNs, r.dstDev);
      const pk = rx1.packets - rx0.packets;
      sample.value = len === 22 ? pk / b.seconds : (pk * len * 8) / b.seconds;
      sample.sentPps = b.sent / b.seconds;
      sample.lossPct = b.sent > 0 ? Math.max(0, 100 * (1 - pk / b.sent)) : 0;
      if (s.startsWith('esp') && (await vsB.espPackets()) - esp0 < pk * 0.9) throw new Error('the far NIC got packets the switch did not encrypt');
      break;
    }
  }
  const { c0, c1, w0, w1 } = cpu;
  if (c0 !== null && c1 !== null && w1 > w0) {
    const secs = (w1 - w0) / 1000;
    sample.cpuPct = ((c1.user + c1.sys - c0.user - c0.sys) / secs) * 100;
    sample.sysPct = ((c1.sys - c0.sys) / secs) * 100;
  }
  if (d && statsBefore !== null) {
    const statsAfter = await d.stats();
    if (r.path !== undefined && (s === 'tcp1' || s === 'tcp4')) sample.path = pathOf(statsBefore, statsAfter, r.path.dst);
    if (r.path !== undefined && s === 'udp64') sample.path = coalescedOf(statsBefore, statsAfter, r.path.dst);
    sample.drops = dropsOf(statsBefore, statsAfter);
  }
  const snapAfter = d ? await d.snapshot() : null;
  if (snapBefore !== null && snapAfter !== null) {
    sample.gcs = snapAfter.gcCount - snapBefore.gcCount;
    sample.gcPauseMs = snapAfter.gcPauseMs - snapBefore.gcPauseMs;
    sample.gcMaxPauseMs = snapAfter.gcMaxPauseMs;
    sample.heapDelta = snapAfter.heapAfterGc - snapBefore.heapAfterGc;
    heapTrack(d!.name, snapAfter);
  }
  return sample;
}

/**
 * vswitch A's heap after a full GC, after its first test (warm: code compiled,
 * tables filled) and after its last — the run-long heap check without --soak.
 */
const heapFirstLast = new Map<string, { first: ProbeSnapshot; last: ProbeSnapshot }>();
function heapTrack(name: string, after: ProbeSnapshot): void {
  const h = heapFirstLast.get(name);
  if (h === undefined) heapFirstLast.set(name, { first: after, last: after });
  else h.last = after;
}

function show(r: Row, s: Scenario, x: Sample): string {
  const m = SCENARIOS[s];
  const v = `${(x.value / m.scale).toFixed(m.digits)} ${m.unit}`;
  const bits = [v];
  if (x.p99 !== undefined) bits.push(`p99 ${x.p99.toFixed(0)} µs`);
  if (x.retransmits !== undefined) bits.push(`retr ${x.retransmits}`);
  if (x.lossPct !== undefined && s !== 'rtt') bits.push(`loss ${x.lossPct.toFixed(1)} %`);
  if (x.cpuPct !== undefined && x.cpuPct !== null) bits.push(`cpu ${x.cpuPct.toFixed(0)} % (sys ${(x.sysPct ?? 0).toFixed(0)})`);
  if (x.gcs !== undefined) bits.push(`gc ${x.gcs}`);
  if (x.path !== undefined) bits.push(x.path);
  if (x.drops) bits.push(`drops: ${x.drops}`);
  return `  ${r.id.padEnd(13)} ${m.title.padEnd(26)} ${bits.join(', ')}`;
}

// --- the matrix ----------------------------------------------------------------------------

const tests = rows.reduce((n, r) => n + r.scenarios.length, 0);
console.log(`  ${rows.length} rows, ${tests} tests per repetition`);
for (let rep = 1; rep <= REPS; rep++) {
  console.log(`repetition ${rep}/${REPS} (load ${load()})`);
  for (const r of rows) {
    for (const s of r.scenarios) {
      const res = results.get(r.id)!;
      try {
        const x = await measure(r, s);
        (res.samples[s] ??= []).push(x);
        console.log(show(r, s, x));
      } catch (e) {
        (res.errors[s] ??= []).push((e as Error).message);
        fail(`${r.id} ${s} (repetition ${rep})`, e);
        if (r.daemon !== undefined && !r.daemon.running) {
          fail(`${r.id}`, `vswitch ${r.daemon.name} is gone:\n${r.daemon.logTail()}`);
          r.scenarios = [];
        }
      }
    }
  }
}

// --- soak ----------------------------------------------------------------------------------

async function soak(): Promise<SoakResult | null> {
  const d = vsA.daemon;
  if (d === null || !d.running) return null;
  const S = SOAK_SECONDS;
  console.log(`soak: ${S} s of load through vswitch A (heap after a full GC every 10 s)`);
  const flows = [
    'TCP vm1→vm2 (pass-through)', 'TCP vm1→legacy (software segmentation)', 'UDP 64 B uplink→vm2 (iperf3 -b 10M: ~57 kpps offered)',
  ];
  // The UDP comes in from the uplink, so that it shares no TAP queue with the TCP flows' data or ACKs.
  const servers = [await iperfServer(vsA.ns('vm2'), 5201), await iperfServer(vsA.ns('leg'), 5202), await iperfServer(vsA.ns('vm2'), 5203)];
  const series: SoakResult['heapSeries'] = [];
  const first = await d.snapshot();
  if (first === null) return null;
  series.push({ t: 0, heapAfterGc: first.heapAfterGc, rss: first.rss });
  const c0 = cpuSeconds(d.pid!);
  const w0 = Date.now();
  const clients = [
    spawnIn(vsA.ns('vm1'), ['iperf3', '-c', vsA.addr('vm2'), '-p', '5201', '-t', String(S), '-J']),
    spawnIn(vsA.ns('vm1'), ['iperf3', '-c', vsA.addr('leg'), '-p', '5202', '-t', String(S), '-J']),
    spawnIn(vsA.ns('phys'), ['iperf3', '-c', vsA.addr('vm2'), '-p', '5203', '-u', '-l', '22', '-b', '10M', '-t', String(S), '-J']),
  ];
  const outs = clients.map((c) => {
    let o = '';
    c.stdout!.on('data', (b: Buffer) => { o += b.toString(); });
    return () => o;
  });
  const done = Promise.all(clients.map((c) => new Promise<void>((r) => c.once('exit', () => r()))));
  let last = first;
  /** The first sample under load: counts start there, as the heap growth does (see below). */
  let base = first;
  let maxPause = 0;
  for (let t = 10; t <= S; t += 10) {
    await sleep(w0 + t * 1000 - Date.now());
    const s = await d.snapshot();
    if (s === null) break;
    last = s;
    if (t === 10) base = s;
    else maxPause = Math.max(maxPause, s.gcMaxPauseMs);
    series.push({ t: (s.t - w0) / 1000, heapAfterGc: s.heapAfterGc, rss: s.rss });
    const byThread = Object.entries(s.gcByThread).map(([id, n]) => `${id}: ${n - (first.gcByThread[Number(id)] ?? 0)}`).join(', ');
    console.log(`  t=${t}s heap after GC ${(s.heapAfterGc / 1048576).toFixed(2)} MiB, rss ${(s.rss / 1048576).toFixed(1)} MiB, GCs since t=0 ${s.gcCount - first.gcCount} (by thread ${byThread})`);
  }
  await done;
  const c1 = cpuSeconds(d.pid!);
  for (const s of servers) stopServer(s);
  const throughput = outs.map((o, i) => {
    try {
      const j = JSON.parse(o()) as { end: { sum_received: { bits_per_second: number; packets?: number; lost_packets?: number; seconds: number } } };
      const rx = j.end.sum_received;
      return i === 2 ? `${(((rx.packets ?? 0) - (rx.lost_packets ?? 0)) / rx.seconds / 1e3).toFixed(0)} kpps` : `${(rx.bits_per_second / 1e9).toFixed(2)} Gbit/s`;
    } catch {
      return 'n/a';
    }
  });
  const mid = series[Math.min(1, series.length - 1)]!;
  return {
    seconds: S, flows, throughput: flows.map((f, i) => `${f.split(' (')[0]} ${throughput[i]}`),
    // From t = 10 s too: the forced collection of the first snapshot sets off a few of V8's own in
    // every thread, idle ones as well (the same count in the main thread as in the data-plane thread).
    gcCount: last.gcCount - base.gcCount, minor: last.minor - base.minor, major: last.major - base.major,
    gcPauseMs: last.gcPauseMs - base.gcPauseMs, gcMaxPauseMs: maxPause,
    heapSeries: series,
    // From the first sample under load (t = 10 s), so that warm-up (JIT, pools filling) does not count as growth.
    growth: series[series.length - 1]!.heapAfterGc - mid.heapAfterGc,
    rssGrowth: series[series.length - 1]!.rss - mid.rss,
    cpuPct: c0 !== null && c1 !== null ? ((c1.user + c1.sys - c0.user - c0.sys) / ((Date.now() - w0) / 1000)) * 100 : null,
  };
}

let soakResult: SoakResult | null = null;
if (has('--soak')) {
  try {
    soakResult = await soak();
  } catch (e) {
    fail('soak', e);
  }
}

// --- stop the switches -----------------------------------------------------------------------

for (const s of started.reverse()) {
  try {
    await s.stop();
  } catch (e) {
    fail(`stopping ${s.name}`, e);
  }
}

// --- CPU profiles ----------------------------------------------------------------------------

interface ProfileSpec { scenario: string; dst: 'vm2' | 'leg'; scen: Scenario }
const PROFILES: ProfileSpec[] = [
  { scenario: 'VM→VM, TCP ×1 (pass-through)', dst: 'vm2', scen: 'tcp1' },
  { scenario: 'VM→legacy, TCP ×1 (software segmentation)', dst: 'leg', scen: 'tcp1' },
  { scenario: 'VM→VM, UDP 64 B', dst: 'vm2', scen: 'udp64' },
];

async function profile(spec: ProfileSpec, i: number): Promise<ProfileResult> {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-prof-`));
  trackDir(dir);
  const sw = `${prefix}p${i}`;
  const v = new VswitchA(prefix, 6 + i, { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${dir}`], ...tuning }, sw);
  try {
    const rs = await v.start();
    const row = rs.find((r) => r.dstNs === v.ns(spec.dst))!;
    if (!(await reachable(row.srcNs, row.dstAddr))) throw new Error(`${row.dstAddr} not reachable`);
    const x = await measure({ ...row, daemon: undefined }, spec.scen, PROFILE_SECONDS);
    const m = SCENARIOS[spec.scen];
    await v.stop();
    const file = v.daemon!.profileIn(dir);
    if (file === null) throw new Error('the daemon wrote no .cpuprofile');
    // Only the load: not start-up (module loading, namespaces) nor shutdown.
    const w = x.windowUs!;
    const summary = summarizeFile(file, 15, [w[0] + 300_000, w[1] - 100_000]);
    console.log(`  profile ${spec.scenario}: ${(x.value / m.scale).toFixed(m.digits)} ${m.unit}; top: ${summary.top.slice(0, 3).map((f) => `${f.name} ${f.selfPct.toFixed(0)} %`).join(', ')}`);
    return { scenario: spec.scenario, throughput: `${(x.value / m.scale).toFixed(m.digits)} ${m.unit} while profiled (${PROFILE_SECONDS} s${x.cpuPct != null ? `, switch CPU ${x.cpuPct.toFixed(0)} %` : ''})`, summary };
  } catch (e) {
    fail(`profile ${spec.scenario}`, e);
    await v.stop().catch(() => undefined);
    return { scenario: spec.scenario, throughput: '', summary: null, error: (e as Error).message };
  }
}

const profiles: ProfileResult[] = [];
if (!has('--no-profile') && (only === undefined || only.some((o) => o.startsWith('vs')))) {
  console.log('CPU profiles of the daemon:');
  for (const [i, p] of PROFILES.entries()) profiles.push(await profile(p, i));
}

// --- report --------------------------------------------------------------------------------

machine.loadEnd = load();
const heapA = heapFirstLast.get(`${prefix}a`);
const report: Report = {
  command: `./bench/run.sh switch${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`,
  machine, quick, reps: REPS, seconds: SECONDS, pings: PINGS, minutes: (Date.now() - t0) / 60_000,
  rows: ROW_ORDER.map((id) => results.get(id)).filter((r): r is RowResult => r !== undefined),
  soak: soakResult,
  heapAcrossRun: heapA === undefined ? null : { delta: heapA.last.heapAfterGc - heapA.first.heapAfterGc, minutes: (heapA.last.t - heapA.first.t) / 60_000 },
  profiles,
  ovsCommands: ovsOn.commands.length > 0 ? ovsOn.commands : ovsOff.commands,
  vswitchSettings: Object.keys(tuning).length === 0 ? 'the configuration defaults (one I/O worker writing the legacy and external ports, no `queues:`, `uro` on: UDP datagrams coalesced for guests that take USO super-frames)'
    : [tuning.settings !== undefined ? `\`switch: {workers: ${tuning.settings.workers}${tuning.settings.workerReads !== undefined ? `, workerReads: ${tuning.settings.workerReads}` : ''}${tuning.settings.workerPorts !== undefined ? `, workerPorts: [${(tuning.settings.workerPorts as string[]).join(', ')}]` : ''}}\`` : '', tuning.queues !== undefined ? `\`queues: ${tuning.queues}\` on the synthetic ports` : '', tuning.uro !== undefined ? `\`uro: ${tuning.uro}\` on the vNICs` : ''].filter((x) => x).join(', '),
  failures,
};

console.log(terminalReport(report));

if (write) {
  const docs = join(root, 'docs');
  const file = join(docs, 'benchmarks.md');
  const svgName = 'benchmarks-switch.svg';
  writeFileSync(join(docs, svgName), svg(report));
  let doc = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n\nEvery number here was produced by the command next to it, on the machine described, in one run.\n';
  const section = markdown(report, svgName);
  const re = /<!-- switch:begin -->[\s\S]*<!-- switch:end -->/;
  doc = re.test(doc) ? doc.replace(re, () => section) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, doc);
  console.log(`wrote ${file} and docs/${svgName}`);
}

cleanupSync();
const left = leftovers();
if (left.length > 0) console.error(`left on the machine: ${left.join(', ')}`);
console.log(`done in ${((Date.now() - t0) / 60_000).toFixed(1)} min`);
process.exit(0);
