// The switch benchmark's results: terminal table, the docs/benchmarks.md
// section, and the ratio chart (SVG written by hand, no plotting library).

import type { RowId, Scenario } from './subjects.js';
import { spread, type Spread } from './measure.js';
import type { ProfileSummary } from './cpuprofile.js';

export interface Sample {
  value: number;
  p99?: number;
  retransmits?: number;
  lossPct?: number;
  sentPps?: number;
  cpuPct?: number | null;
  /** The kernel's part of cpuPct (system time: the syscalls, and what runs inside them). */
  sysPct?: number;
  gcs?: number;
  gcPauseMs?: number;
  gcMaxPauseMs?: number;
  heapDelta?: number;
  path?: string;
  drops?: string;
  /** When the load ran, µs of CLOCK_MONOTONIC (process.hrtime). */
  windowUs?: [number, number];
}

export interface RowResult {
  id: RowId;
  label: string;
  kind: 'reference' | 'vswitch';
  notes: string[];
  guestTso: string;
  failed?: string;
  samples: Partial<Record<Scenario, Sample[]>>;
  errors: Partial<Record<Scenario, string[]>>;
}

export interface SoakResult {
  seconds: number;
  flows: string[];
  throughput: string[];
  gcCount: number;
  minor: number;
  major: number;
  gcPauseMs: number;
  gcMaxPauseMs: number;
  heapSeries: { t: number; heapAfterGc: number; rss: number }[];
  growth: number;
  rssGrowth: number;
  cpuPct: number | null;
}

export interface ProfileResult {
  scenario: string;
  throughput: string;
  summary: ProfileSummary | null;
  error?: string;
}

export interface Machine {
  cpu: string;
  cores: number;
  kernel: string;
  node: string;
  ovs: string;
  iperf: string;
  date: string;
  loadStart: string;
  loadEnd: string;
}

export interface Report {
  command: string;
  machine: Machine;
  quick: boolean;
  reps: number;
  seconds: number;
  pings: number;
  minutes: number;
  rows: RowResult[];
  soak: SoakResult | null;
  heapAcrossRun: { delta: number; minutes: number } | null;
  profiles: ProfileResult[];
  ovsCommands: string[];
  /** vswitch's settings in this run, as given on the command line ("defaults" when none). */
  vswitchSettings: string;
  failures: string[];
}

export const SCENARIOS: Record<Scenario, { title: string; unit: string; scale: number; digits: number; higherIsBetter: boolean }> = {
  tcp1: { title: 'TCP ×1', unit: 'Gbit/s', scale: 1e9, digits: 2, higherIsBetter: true },
  tcp4: { title: 'TCP ×4', unit: 'Gbit/s', scale: 1e9, digits: 2, higherIsBetter: true },
  udp64: { title: 'UDP 64 B', unit: 'kpps', scale: 1e3, digits: 0, higherIsBetter: true },
  rtt: { title: 'ping RTT', unit: 'µs', scale: 1, digits: 0, higherIsBetter: false },
  esp64: { title: 'ESP, 22 B UDP payload', unit: 'kpps', scale: 1e3, digits: 0, higherIsBetter: true },
  esp1400: { title: 'ESP, 1400 B UDP payload', unit: 'Gbit/s', scale: 1e9, digits: 2, higherIsBetter: true },
  plain64: { title: 'plain, 22 B UDP payload', unit: 'kpps', scale: 1e3, digits: 0, higherIsBetter: true },
  plain1400: { title: 'plain, 1400 B UDP payload', unit: 'Gbit/s', scale: 1e9, digits: 2, higherIsBetter: true },
};

/** The OVS configuration a vswitch row is held against (the issue's targets). */
export function ovsReference(id: RowId): RowId {
  return id === 'vs-uplink-sw' || id === 'vs-legacy' ? 'ovs' : 'ovs-tso';
}

export function stat(r: RowResult | undefined, s: Scenario, f: (x: Sample) => number | undefined = (x) => x.value): Spread | null {
  const xs = (r?.samples[s] ?? []).map(f).filter((v): v is number => v !== undefined && v !== null && Number.isFinite(v));
  return spread(xs);
}

export function fmtSpread(sp: Spread | null, scen: Scenario): string {
  if (sp === null) return 'n/a';
  const m = SCENARIOS[scen];
  const f = (v: number) => (v / m.scale).toFixed(m.digits);
  return sp.n > 1 ? `${f(sp.median)} (${f(sp.min)}–${f(sp.max)})` : f(sp.median);
}

function ratio(a: Spread | null, b: Spread | null): number | null {
  if (a === null || b === null || b.median === 0) return null;
  return a.median / b.median;
}

const fx = (r: number | null) => (r === null ? 'n/a' : `${r.toFixed(2)}×`);

export interface Target {
  text: string;
  row: RowId;
  scen: Scenario;
  ref: RowId;
  min: number;
}

export const TARGETS: Target[] = [
  { text: 'VM→VM TCP ×1 ≥ 1.0× OVS userspace with TSO', row: 'vs-vm', scen: 'tcp1', ref: 'ovs-tso', min: 1.0 },
  { text: 'VM→VM TCP ×1 ≥ 0.8× Linux bridge', row: 'vs-vm', scen: 'tcp1', ref: 'bridge', min: 0.8 },
  { text: 'VM→legacy TCP ×1 (software segmentation) ≥ 1.5× OVS without TSO', row: 'vs-legacy', scen: 'tcp1', ref: 'ovs', min: 1.5 },
  { text: 'VM→uplink without TSO, TCP ×1 (software segmentation) ≥ 1.5× OVS without TSO', row: 'vs-uplink-sw', scen: 'tcp1', ref: 'ovs', min: 1.5 },
  { text: 'VM→VM 64-byte UDP delivered ≥ 1.5× OVS userspace (TSO on; TSO plays no part for 64-byte datagrams)', row: 'vs-vm', scen: 'udp64', ref: 'ovs-tso', min: 1.5 },
];

export interface Verdict {
  text: string;
  measured: string;
  ratio: number | null;
  pass: boolean | null;
  detail: string;
}

export const HEAP_LIMIT = 1 << 20;

export function verdicts(rep: Report): Verdict[] {
  const by = (id: RowId) => rep.rows.find((r) => r.id === id);
  const out: Verdict[] = TARGETS.map((t) => {
    const v = stat(by(t.row), t.scen);
    const refId = t.ref;
    const ref = stat(by(refId), t.scen);
    const r = ratio(v, ref);
    const u = SCENARIOS[t.scen];
    const measured = v === null || ref === null ? 'not measured'
      : `${fx(r)} (${(v.median / u.scale).toFixed(u.digits)} vs ${(ref.median / u.scale).toFixed(u.digits)} ${u.unit}, ${by(refId)!.label})`;
    const pass = r === null ? null : r >= t.min;
    const detail = r === null ? '' : pass ? `by ${(((r / t.min) - 1) * 100).toFixed(0)} %` : `short by ${((1 - r / t.min) * 100).toFixed(0)} % (needs ${(t.min * ref!.median / u.scale).toFixed(u.digits)} ${u.unit})`;
    return { text: t.text, measured, ratio: r, pass, detail };
  });
  // Heap: the 60-second soak when it ran, else the heap after full GCs across the whole run.
  if (rep.soak !== null) {
    const s = rep.soak;
    out.push({
      text: `no heap growth under a ${s.seconds}-second load (< 1 MiB after a full GC)`,
      measured: `${kib(s.growth)} heap, ${s.gcCount} GCs (${s.minor} minor, ${s.major} major), RSS ${kib(s.rssGrowth)}`,
      ratio: null, pass: s.growth < HEAP_LIMIT, detail: '',
    });
  } else if (rep.heapAcrossRun !== null) {
    out.push({
      text: `no heap growth (without \`--soak\`: heap after a full GC, after vswitch A's first test and after its last, ${rep.heapAcrossRun.minutes.toFixed(1)} min apart; \`--soak\` runs the 60-second load)`,
      measured: kib(rep.heapAcrossRun.delta), ratio: null, pass: rep.heapAcrossRun.delta < HEAP_LIMIT, detail: '',
    });
  }
  return out;
}

export function kib(b: number): string {
  const s = b < 0 ? '−' : '+';
  const a = Math.abs(b);
  return a >= 1 << 20 ? `${s}${(a / (1 << 20)).toFixed(1)} MiB` : `${s}${(a / 1024).toFixed(0)} KiB`;
}

const MAIN: Scenario[] = ['tcp1', 'tcp4', 'udp64', 'rtt'];

function mdTable(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function cpuCell(r: RowResult, s: Scenario): string {
  const c = stat(r, s, (x) => x.cpuPct ?? undefined);
  return c === null ? '' : `${c.median.toFixed(0)}`;
}

function resultCell(r: RowResult, s: Scenario): string {
  if (!r.samples[s] && r.errors[s]) return 'failed';
  if (!r.samples[s]) return r.failed !== undefined || r.id !== 'vs-ipsec' ? 'n/a' : 'n/a¹';
  if (s === 'rtt') {
    const p99 = stat(r, 'rtt', (x) => x.p99);
    return `${fmtSpread(stat(r, s), s)}${p99 !== null ? ` / ${p99.median.toFixed(0)}` : ''}`;
  }
  return fmtSpread(stat(r, s), s);
}

export function mainTable(rep: Report): string[][] {
  return rep.rows.map((r) => [
    r.label,
    ...MAIN.map((s) => resultCell(r, s)),
    r.kind === 'reference' && r.id !== 'ovs' && r.id !== 'ovs-tso' ? 'kernel' : `${cpuCell(r, 'tcp1') || '–'} / ${cpuCell(r, 'udp64') || '–'}`,
    r.guestTso,
  ]);
}

const MAIN_HEAD = ['path', 'TCP ×1, Gbit/s', 'TCP ×4, Gbit/s', 'UDP 64 B delivered, kpps', 'ping RTT, µs: median / p99', 'switch CPU %, TCP ×1 / UDP', 'guest TSO'];

export function ratioRows(rep: Report): string[][] {
  const by = (id: RowId) => rep.rows.find((r) => r.id === id);
  return rep.rows.filter((r) => r.kind === 'vswitch' && Object.keys(r.samples).some((s) => MAIN.includes(s as Scenario))).map((r) => {
    const ovs = by(ovsReference(r.id));
    const cells = [r.label, ovs?.label ?? 'n/a'];
    for (const s of MAIN) {
      const v = stat(r, s);
      cells.push(`${fx(ratio(v, stat(by('bridge'), s)))} / ${fx(ratio(v, stat(ovs, s)))}`);
    }
    return cells;
  });
}

const RATIO_HEAD = ['vswitch path', 'held against', 'TCP ×1: ÷ bridge / ÷ OVS', 'TCP ×4', 'UDP 64 B', 'RTT (lower is better)'];

function padTable(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max([...h].length, ...rows.map((r) => [...(r[i] ?? '')].length)));
  const line = (cells: string[]) => cells.map((c, i) => c + ' '.repeat(w[i]! - [...c].length)).join('  ');
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

export function terminalReport(rep: Report): string {
  const v = verdicts(rep);
  return [
    '',
    `Switches compared (median, min–max of ${rep.reps}):`,
    padTable(MAIN_HEAD, mainTable(rep)),
    '',
    'vswitch ÷ Linux bridge / ÷ OVS (medians):',
    padTable(RATIO_HEAD, ratioRows(rep)),
    '',
    ...espLines(rep, false),
    ...(rep.soak === null ? [] : [
      `Soak, ${rep.soak.seconds} s (${rep.soak.throughput.join('; ')}): ${rep.soak.gcCount} GCs (${rep.soak.minor} minor, ${rep.soak.major} major), ` +
        `heap after full GC ${rep.soak.heapSeries.map((h) => (h.heapAfterGc / 1048576).toFixed(2)).join(' → ')} MiB, RSS ${kib(rep.soak.rssGrowth)}`, '']),
    ...rep.profiles.flatMap((p) => p.summary === null ? [`Profile ${p.scenario}: ${p.error ?? 'none'}`] : [
      `Profile ${p.scenario} (${p.throughput}): ${p.summary.top.slice(0, 5).map((f) => `${f.name} ${f.selfPct.toFixed(0)} %`).join(', ')}`]),
    '',
    'Targets (issue 8):',
    ...v.map((x) => `  ${x.pass === null ? 'n/a ' : x.pass ? 'PASS' : 'MISS'}  ${x.text}: ${x.measured} ${x.detail}`),
    ...(rep.failures.length > 0 ? ['', 'Problems:', ...rep.failures.map((f) => `  - ${f}`)] : []),
  ].join('\n');
}

function espLines(rep: Report, md: boolean): string[] {
  const hw = rep.rows.find((r) => r.id === 'vs-uplink-hw');
  const ip = rep.rows.find((r) => r.id === 'vs-ipsec');
  if (ip === undefined) return [];
  if (!ip.samples.esp64 && !ip.samples.esp1400) {
    return [md ? `IPsec offload row: ${ip.notes.join('; ')}` : `IPsec: ${ip.notes.join('; ')}`, ''];
  }
  const rows = (['64', '1400'] as const).map((n) => {
    const p = `plain${n}` as Scenario, e = `esp${n}` as Scenario;
    const a = stat(hw, p), b = stat(ip, e);
    return [`one-way UDP, ${n === '64' ? '22' : '1400'} B payload`, fmtSpread(a, p) + ` ${SCENARIOS[p].unit}`, fmtSpread(b, e) + ` ${SCENARIOS[e].unit}`, fx(ratio(b, a)),
      `${cpuCell(hw!, p) || '–'} / ${cpuCell(ip, e) || '–'}`];
  });
  const head = ['load (raw-socket sender in vm1, counted at the far NIC)', 'plain (VM→uplink)', 'ESP by the switch', 'ESP ÷ plain', 'switch CPU %, plain / ESP'];
  return md
    ? [mdTable(head, rows), '', `¹ ${ip.notes.join('; ')}`, '']
    : ['IPsec offload (ESP in the switch):', padTable(head, rows), `  (${ip.notes.join('; ')})`, ''];
}

function detailRows(rep: Report): string[][] {
  const out: string[][] = [];
  for (const r of rep.rows) {
    if (r.kind !== 'vswitch') continue;
    for (const s of Object.keys(r.samples) as Scenario[]) {
      const xs = r.samples[s]!;
      const cpu = stat(r, s, (x) => x.cpuPct ?? undefined);
      const sys = stat(r, s, (x) => x.sysPct);
      const gcs = xs.map((x) => x.gcs).filter((g): g is number => g !== undefined);
      const pause = xs.reduce((a, x) => a + (x.gcPauseMs ?? 0), 0);
      const maxPause = Math.max(0, ...xs.map((x) => x.gcMaxPauseMs ?? 0));
      const heap = xs.map((x) => x.heapDelta).filter((h): h is number => h !== undefined);
      const paths = [...new Set(xs.map((x) => x.path).filter((p): p is string => p !== undefined))];
      const drops = [...new Set(xs.map((x) => x.drops).filter((p): p is string => p !== undefined && p !== ''))];
      const extra = s === 'tcp1' || s === 'tcp4' ? `retransmits ${spread(xs.map((x) => x.retransmits ?? 0))?.median ?? 0}`
        : s === 'udp64' ? `sent ${((spread(xs.map((x) => x.sentPps ?? 0))?.median ?? 0) / 1e3).toFixed(0)} kpps, lost ${(spread(xs.map((x) => x.lossPct ?? 0))?.median ?? 0).toFixed(1)} %` : '';
      out.push([
        r.label, SCENARIOS[s].title,
        (cpu === null ? '–' : cpu.n > 1 ? `${cpu.median.toFixed(0)} (${cpu.min.toFixed(0)}–${cpu.max.toFixed(0)})` : cpu.median.toFixed(0)) +
          (sys === null ? '' : ` / ${sys.median.toFixed(0)}`),
        gcs.length === 0 ? '–' : `${gcs.join(', ')} (${pause.toFixed(1)} ms total, max ${maxPause.toFixed(1)} ms)`,
        heap.length === 0 ? '–' : heap.map(kib).join(', '),
        paths.join(', ') || '–',
        [extra, drops.length > 0 ? `switch drops: ${drops.join('; ')}` : ''].filter((x) => x !== '').join('; '),
      ]);
    }
  }
  return out;
}

export function markdown(rep: Report, svgName: string): string {
  const m = rep.machine;
  const v = verdicts(rep);
  const L: string[] = [];
  L.push('<!-- switch:begin -->');
  L.push('## Switches compared: vswitch, the Linux bridge and Open vSwitch, in one run');
  L.push('');
  L.push(`Command: \`${rep.command}\`${rep.quick ? ' — **quick mode: one repetition of 2-second runs, for development; these are not results**' : ''}.`);
  L.push('');
  L.push(`Machine: ${m.cores}× ${m.cpu}, Linux ${m.kernel}, Node ${m.node}, ${m.ovs}, ${m.iperf}. Date: ${m.date}. ` +
    `Load average (1/5/15 min) at the start ${m.loadStart}, at the end ${m.loadEnd}; the run took ${rep.minutes.toFixed(1)} min.`);
  L.push('');
  L.push(`Each cell: median of ${rep.reps} repetition${rep.reps > 1 ? 's' : ''}${rep.reps > 1 ? ' (min–max)' : ''}; ` +
    `TCP and UDP runs of ${rep.seconds} s (iperf3), ${rep.pings} pings at 10 ms intervals. Repetitions are interleaved: every switch runs once before any runs twice.`);
  L.push('');
  L.push(mdTable(MAIN_HEAD, mainTable(rep)));
  L.push('');
  L.push(...espLines(rep, true));
  L.push('### Ratios');
  L.push('');
  L.push('Each vswitch row ÷ the Linux bridge and ÷ Open vSwitch, medians. The OVS row is the one the issue sets the target against: ' +
    'OVS with userspace TSO for pass-through and the hardware path, OVS without TSO for the software-segmentation rows.');
  L.push('');
  L.push(mdTable(RATIO_HEAD, ratioRows(rep)));
  L.push('');
  L.push(`![vswitch ÷ Linux bridge and ÷ OVS](${svgName})`);
  L.push('');
  L.push('### Targets (issue 8)');
  L.push('');
  L.push(mdTable(['target', 'measured', 'verdict'], v.map((x) => [x.text, x.measured, x.pass === null ? 'n/a' : `${x.pass ? 'PASS' : '**MISS**'} ${x.detail}`.trim()])));
  L.push('');
  L.push('### vswitch per test: CPU, garbage collection, offload path');
  L.push('');
  L.push('Switch CPU: user + system time of the daemon process (all threads) from `/proc/<pid>/stat` over the test, in % of one core, and the system (kernel) part of it: the reads and writes, and what the kernel does inside them — a write to a guest\'s TAP runs that guest\'s receive path (IP, TCP) in the writer\'s system call. ' +
    'GCs: collections V8 did on its own during the test, in every thread of the daemon (per repetition; a probe loaded with `--import` counts them, forced ones excluded). ' +
    'Heap Δ: heap used after a forced full GC, all threads\' heaps together, after the test minus before it. Path: what the destination port\'s offload counters say the flow\'s frames took.');
  L.push('');
  L.push(mdTable(['row', 'scenario', 'CPU % / of it system', 'GCs during test', 'heap Δ after full GC', 'path', 'other'], detailRows(rep)));
  L.push('');
  if (rep.soak !== null) {
    const s = rep.soak;
    L.push(`### Heap under a ${s.seconds}-second load (\`--soak\`)`);
    L.push('');
    L.push(`Flows at once through vswitch A: ${s.flows.join('; ')}. Achieved: ${s.throughput.join('; ')}. Switch CPU ${s.cpuPct === null ? 'n/a' : `${s.cpuPct.toFixed(0)} %`}.`);
    L.push('');
    L.push(`GCs V8 did on its own, all threads, from the first sample under load (t = 10 s) on: ${s.gcCount} (${s.minor} minor, ${s.major} major), ${s.gcPauseMs.toFixed(1)} ms of pauses in all, longest ${s.gcMaxPauseMs.toFixed(2)} ms. (Before it, the forced collection of the first sample sets off a few of V8's own in every thread, the idle main thread's as many as the data-plane thread's.)`);
    L.push('');
    L.push(mdTable(['t, s', 'heap after full GC', 'RSS'], s.heapSeries.map((h) => [h.t.toFixed(0), `${(h.heapAfterGc / (1 << 20)).toFixed(2)} MiB`, `${(h.rss / (1 << 20)).toFixed(1)} MiB`])));
    L.push('');
    L.push(`Growth: heap ${kib(s.growth)}, RSS ${kib(s.rssGrowth)}.`);
    L.push('');
  } else {
    L.push('The 60-second heap soak did not run (it runs with `--soak`).');
    L.push('');
  }
  L.push('### Where vswitch\'s time goes (CPU profiles of the daemon)');
  L.push('');
  L.push('The daemon started with `node --cpu-prof --cpu-prof-dir=DIR dist/src/cli/main.js run --config …` (vswitch A\'s ports), one scenario per profile, ' +
    'stopped through the API so the profile is written; summarized by `node dist/bench/lib/cpuprofile.js FILE`. ' +
    'Self: samples with the function on top; total: with it anywhere on the stack. % of the busy (non-idle) time of the data-plane thread, which runs the pipeline (Node writes a profile per thread; the I/O workers\' are left out); native calls (the I/O shim) count as the JS function that called them.');
  L.push('');
  for (const p of rep.profiles) {
    L.push(`#### ${p.scenario}`);
    L.push('');
    if (p.summary === null) {
      L.push(`No profile: ${p.error ?? 'unknown error'}`);
      L.push('');
      continue;
    }
    const s = p.summary;
    L.push(`${p.throughput}. Data-plane thread busy ${((100 * s.busyMs) / Math.max(1, s.wallMs)).toFixed(0)} % of ${(s.wallMs / 1000).toFixed(1)} s; GC ${s.gcPct.toFixed(1)} % of busy.`);
    L.push('');
    L.push(mdTable(['self %', 'total %', 'function', 'where'], s.top.slice(0, 12).map((f) => [f.selfPct.toFixed(1), f.totalPct.toFixed(1), `\`${f.name}\``, f.where])));
    L.push('');
    L.push(`By file (self): ${s.byFile.slice(0, 6).map((f) => `${f.file} ${f.selfPct.toFixed(0)} %`).join(', ')}.`);
    L.push('');
  }
  L.push('### How it is measured');
  L.push('');
  const notes = [
    'Every switch gets the same guests: network namespaces with one interface each, IPv4 addresses in 198.18.0.0/15, IPv6 off, offloads as the attachment gives them (the "guest TSO" column is `ethtool -k` inside the sender\'s namespace).',
    'TCP: `iperf3 -c ADDR -t N [-P 4] -J`, the receiver\'s goodput. UDP: `iperf3 -u -l 22 -b 0` (22-byte payloads: 64-byte Ethernet frames without FCS), datagrams the receiver counted (sent − lost) per second; one iperf3 sender is single-threaded, so the wire row shows the sender\'s own ceiling. RTT: `ping -i 0.01 -c N`, median and 99th percentile of the replies.',
    ...rep.rows.flatMap((r) => r.notes.map((n) => `${r.label}: ${n}.`)),
    'Open vSwitch runs from the Debian package with a private database, run directory and sockets under a temp dir (ovsdb-server and ovs-vswitchd started by the harness, stopped afterwards); the kernel has no openvswitch module, so only the userspace datapath. userspace-tso-enable is read when ovs-vswitchd starts, so each setting has its own ovs-vswitchd.',
    `vswitch settings: ${rep.vswitchSettings}.`,
    'vswitch runs as `node dist/src/cli/main.js run --config FILE` with `--expose-gc --import dist/bench/gc-probe.js` for the GC counts (the probe runs in every thread — main, data-plane, I/O workers — and does nothing until asked for a snapshot between tests; the main thread then asks the others and adds their answers).',
  ];
  for (const n of notes) L.push(`- ${n}`);
  if (rep.ovsCommands.length > 0) {
    L.push('');
    L.push('The OVS set-up with userspace TSO, as run (the other instance differs only in `userspace-tso-enable=false` and its names; `--timeout=20` on every ovs-vsctl; addresses and `link set up` in the guests omitted):');
    L.push('');
    L.push('```');
    L.push(...rep.ovsCommands);
    L.push('```');
  }
  if (rep.failures.length > 0) {
    L.push('');
    L.push('Problems in this run:');
    L.push('');
    for (const f of rep.failures) L.push(`- ${f.replace(/\n/g, ' ')}`);
  }
  L.push('<!-- switch:end -->');
  return L.join('\n');
}

// --- the chart ----------------------------------------------------------------------------

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Horizontal bars: each vswitch row × (TCP ×1, TCP ×4, UDP 64 B), ÷ bridge and ÷ OVS, with the targets marked. */
export function svg(rep: Report): string {
  const by = (id: RowId) => rep.rows.find((r) => r.id === id);
  interface Bar { label: string; bridge: number | null; ovs: number | null; ovsLabel: string; targetBridge?: number; targetOvs?: number }
  const bars: Bar[] = [];
  for (const r of rep.rows) {
    if (r.kind !== 'vswitch') continue;
    const ovsId = ovsReference(r.id);
    for (const s of ['tcp1', 'tcp4', 'udp64'] as Scenario[]) {
      if (!r.samples[s]) continue;
      const v = stat(r, s);
      const b: Bar = {
        label: `${r.label.replace(/^vswitch /, '')} — ${SCENARIOS[s].title}`,
        bridge: ratio(v, stat(by('bridge'), s)), ovs: ratio(v, stat(by(ovsId), s)), ovsLabel: ovsId === 'ovs' ? 'OVS, TSO off' : 'OVS, TSO on',
      };
      for (const t of TARGETS) {
        if (t.row !== r.id || t.scen !== s) continue;
        if (t.ref === 'bridge') b.targetBridge = t.min;
        else b.targetOvs = t.min;
      }
      bars.push(b);
    }
  }
  const W = 980, left = 330, right = 50, top = 70, rowH = 34, barH = 12;
  const H = top + bars.length * rowH + 60;
  const maxR = Math.max(2, ...bars.flatMap((b) => [b.bridge ?? 0, b.ovs ?? 0, b.targetOvs ?? 0]));
  const axisMax = Math.min(6, Math.ceil((maxR + 0.2) * 2) / 2); // room for the label after the longest bar
  const x = (r: number) => left + (Math.min(r, axisMax) / axisMax) * (W - left - right);
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  o.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  o.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">vswitch ÷ Linux bridge and ÷ Open vSwitch (userspace), medians — higher is better</text>`);
  o.push(`<text x="${W / 2}" y="40" text-anchor="middle" fill="#555">${esc(`${rep.machine.date}, ${rep.machine.cores}× ${rep.machine.cpu}, Linux ${rep.machine.kernel}, ${rep.machine.ovs}${rep.quick ? ' — quick mode, not results' : ''}`)}</text>`);
  for (let t = 0; t <= axisMax + 1e-9; t += 0.5) {
    const xx = x(t);
    o.push(`<line x1="${xx}" y1="${top - 8}" x2="${xx}" y2="${top + bars.length * rowH}" stroke="${t === 1 ? '#333' : '#ddd'}" stroke-width="${t === 1 ? 1.5 : 1}"${t === 1 ? ' stroke-dasharray="4 3"' : ''}/>`);
    o.push(`<text x="${xx}" y="${top + bars.length * rowH + 16}" text-anchor="middle" fill="#333">${t.toFixed(1)}×</text>`);
  }
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    o.push(`<text x="${left - 8}" y="${y + rowH / 2 + 4}" text-anchor="end">${esc(b.label)}</text>`);
    const bar = (val: number | null, yy: number, color: string, name: string, target?: number) => {
      if (val === null) {
        o.push(`<text x="${left + 4}" y="${yy + barH - 2}" fill="#999">${name}: n/a</text>`);
        return;
      }
      o.push(`<rect x="${left}" y="${yy}" width="${Math.max(1, x(val) - left)}" height="${barH}" fill="${color}"><title>${esc(`${b.label} ÷ ${name}: ${val.toFixed(2)}×`)}</title></rect>`);
      o.push(`<text x="${x(val) + 4}" y="${yy + barH - 2}" fill="#222">${val.toFixed(2)}×${val > axisMax ? ' →' : ''}</text>`);
      if (target !== undefined) {
        const tx = x(target);
        o.push(`<line x1="${tx}" y1="${yy - 2}" x2="${tx}" y2="${yy + barH + 2}" stroke="${val >= target ? '#1a7f37' : '#cf222e'}" stroke-width="3"><title>target ${target}×</title></line>`);
      }
    };
    bar(b.bridge, y + 4, '#4e79a7', 'Linux bridge', b.targetBridge);
    bar(b.ovs, y + 4 + barH + 2, '#f28e2b', b.ovsLabel, b.targetOvs);
  });
  const ly = H - 22;
  const lx = 20;
  o.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="#4e79a7"/><text x="${lx + 18}" y="${ly}">÷ Linux bridge</text>`);
  o.push(`<rect x="${lx + 130}" y="${ly - 10}" width="12" height="12" fill="#f28e2b"/><text x="${lx + 148}" y="${ly}">÷ OVS userspace: TSO on for pass-through and hardware rows, TSO off for software rows</text>`);
  o.push(`<line x1="${lx + 718}" y1="${ly - 11}" x2="${lx + 718}" y2="${ly + 2}" stroke="#cf222e" stroke-width="3"/><text x="${lx + 726}" y="${ly}">issue 8 target (red: missed)</text>`);
  o.push('</svg>');
  return `${o.join('\n')}\n`;
}
