// Does vswitch's throughput grow with threads? The same guests and flows
// through vswitch with everything on one thread (`dataPlane: main`,
// `workers: 0`), then the pipeline on its data-plane thread, with
// `switch.workers` 0, 1 and 2 (the queues of the legacy NIC and the uplink
// on the workers; with 2, each on its own thread), repetitions interleaved
// (every setting once before any twice).
//
//   ./bench/run.sh scaling [--reps N] [--seconds N] [--no-write]
//
// Flows: the software paths, where the switch itself does the work that a
// thread can take — segmenting and checksumming 64 KiB super-frames into MTU
// frames, then dozens of writes — one destination, then two destinations at
// once (two threads can write them in parallel); and VM→VM with four streams,
// also with two TAP queues per VM and the vNICs on the workers (VMQ-like).
// Writes docs/benchmarks.md between <!-- scaling:begin/end -->.

import { cpus, loadavg, release } from 'node:os';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { cleanupSync, cpuSeconds, installCleanupHandlers, leftovers, setPrefix } from './lib/proc.js';
import { iperfTcp, reachable } from './lib/measure.js';
import { VswitchA, distRoot } from './lib/subjects.js';

const argv = process.argv.slice(2);
const val = (f: string) => {
  const i = argv.indexOf(f);
  return i >= 0 ? argv[i + 1] : undefined;
};
const REPS = Number(val('--reps') ?? 3);
const SECONDS = Number(val('--seconds') ?? 5);
const write = !argv.includes('--no-write');

if (process.getuid?.() !== 0) {
  console.error('bench scaling: needs root (network namespaces, TAPs)');
  process.exit(2);
}

const t0 = Date.now();
const prefix = `bc${Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, '0')}`;
setPrefix(prefix);
installCleanupHandlers();

interface Setting {
  label: string;
  workers: number;
  /** switch.dataPlane (default: thread). */
  dataPlane?: 'main';
  /** VMQ-like: the VMs' TAPs get this many queues, and every kind of port goes to the workers. */
  vmq?: number;
  /** Only these flows (default all). */
  flows?: FlowId[];
}
type FlowId = 'leg1' | 'leg-up' | 'vm4';
const SETTINGS: Setting[] = [
  { label: '`dataPlane: main`, `workers: 0` (one thread, the main thread, reads, switches and writes everything)', workers: 0, dataPlane: 'main' },
  { label: '`workers: 0` (the data-plane thread reads, switches and writes everything; the main thread keeps the control plane)', workers: 0 },
  { label: '`dataPlane: main`, `workers: 1` (the pipeline on the main thread, one thread writes the legacy NIC and the uplink)', workers: 1, dataPlane: 'main' },
  { label: '`workers: 1` (the default: the pipeline on the data-plane thread, one thread writes the legacy NIC and the uplink)', workers: 1 },
  { label: '`workers: 2` (the legacy NIC and the uplink each on their own thread)', workers: 2 },
  { label: '`workers: 1`, every kind of port on it, `queues: 2` on the VMs (VMQ-like)', workers: 1, vmq: 2, flows: ['vm4'] },
  { label: '`workers: 2`, every kind of port on them, `queues: 2` on the VMs: each VM queue on its own thread', workers: 2, vmq: 2, flows: ['vm4'] },
];

const FLOWS: Record<FlowId, string> = {
  leg1: 'VM→legacy, TCP ×1 (software segmentation)',
  'leg-up': 'VM→legacy and VM→uplink without TSO at once, TCP ×1 each (two destinations, software)',
  vm4: 'VM→VM, TCP ×4 (pass-through)',
};

const subjects = SETTINGS.map((s, i) => new VswitchA(prefix, 4 + i, {
  settings: { workers: s.workers, ...(s.dataPlane !== undefined ? { dataPlane: s.dataPlane } : {}), ...(s.vmq !== undefined ? { workerPorts: ['synthetic', 'host', 'legacy', 'external'] } : {}) },
  ...(s.vmq !== undefined ? { queues: s.vmq } : {}),
}, `${prefix}${i}`));
/** A setting's short name for the console. */
const name = (i: number) => {
  const s = SETTINGS[i]!;
  return `${s.dataPlane === 'main' ? 'main ' : '     '}workers ${s.workers}${s.vmq !== undefined ? ` vmq ${s.vmq}` : '      '}`;
};
const samples = new Map<string, number[]>();
const cpu = new Map<string, number[]>();
const key = (i: number, f: FlowId) => `${i}/${f}`;

async function flow(v: VswitchA, f: FlowId): Promise<number> {
  if (f === 'leg1') return (await iperfTcp(v.ns('vm1'), v.ns('leg'), v.addr('leg'), SECONDS, 1, undefined, 5301)).bps;
  if (f === 'vm4') return (await iperfTcp(v.ns('vm1'), v.ns('vm2'), v.addr('vm2'), SECONDS, 4, undefined, 5302)).bps;
  const [a, b] = await Promise.all([
    iperfTcp(v.ns('vm1'), v.ns('leg'), v.addr('leg'), SECONDS, 1, undefined, 5303),
    iperfTcp(v.ns('vm1'), v.ns('phys'), v.addr('phys'), SECONDS, 1, undefined, 5304),
  ]);
  return a.bps + b.bps;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const failures: string[] = [];
console.log(`bench scaling: run ${prefix}, ${REPS} repetition(s) × ${SECONDS} s, ${cpus().length} cores`);
const started: VswitchA[] = [];
try {
  for (const [i, v] of subjects.entries()) {
    await v.start();
    started.push(v);
    for (const to of ['vm2', 'leg', 'phys'] as const) {
      if (!(await reachable(v.ns('vm1'), v.addr(to)))) throw new Error(`setting ${i}: ${v.addr(to)} not reachable`);
    }
  }
  for (let rep = 1; rep <= REPS; rep++) {
    console.log(`repetition ${rep}/${REPS} (load ${loadavg().map((l) => l.toFixed(2)).join(' / ')})`);
    for (const f of Object.keys(FLOWS) as FlowId[]) {
      for (const [i, v] of subjects.entries()) {
        if (SETTINGS[i]!.flows !== undefined && !SETTINGS[i]!.flows!.includes(f)) continue;
        const pid = v.daemon!.pid!;
        const c0 = cpuSeconds(pid);
        const w0 = Date.now();
        try {
          const bps = await flow(v, f);
          const c1 = cpuSeconds(pid);
          (samples.get(key(i, f)) ?? samples.set(key(i, f), []).get(key(i, f))!).push(bps);
          if (c0 !== null && c1 !== null) (cpu.get(key(i, f)) ?? cpu.set(key(i, f), []).get(key(i, f))!).push(((c1.user + c1.sys - c0.user - c0.sys) / ((Date.now() - w0) / 1000)) * 100);
          console.log(`  ${name(i)}  ${FLOWS[f].padEnd(90)} ${(bps / 1e9).toFixed(2)} Gbit/s`);
        } catch (e) {
          failures.push(`${name(i).trim()}, ${FLOWS[f]}: ${(e as Error).message}`);
          console.error(`  ! ${failures[failures.length - 1]}`);
        }
      }
    }
  }
} catch (e) {
  failures.push((e as Error).message);
  console.error(`  ! ${(e as Error).message}`);
} finally {
  for (const v of started.reverse()) await v.stop().catch((e: Error) => failures.push(`stop: ${e.message}`));
}

// --- report ----------------------------------------------------------------------------------

const cell = (i: number, f: FlowId) => {
  const xs = samples.get(key(i, f)) ?? [];
  if (SETTINGS[i]!.flows !== undefined && !SETTINGS[i]!.flows!.includes(f)) return '–';
  if (xs.length === 0) return 'n/a';
  const base = median(samples.get(key(0, f)) ?? []);
  const m = median(xs);
  const c = median(cpu.get(key(i, f)) ?? []);
  return `${(m / 1e9).toFixed(2)} (${(Math.min(...xs) / 1e9).toFixed(2)}–${(Math.max(...xs) / 1e9).toFixed(2)})${i > 0 && Number.isFinite(base) ? `, ${(m / base).toFixed(2)}×` : ''}${Number.isFinite(c) ? `; CPU ${c.toFixed(0)} %` : ''}`;
};
const flows = Object.keys(FLOWS) as FlowId[];
const table = [
  `| setting | ${flows.map((f) => FLOWS[f]).join(' | ')} |`,
  `| --- | ${flows.map(() => '---').join(' | ')} |`,
  ...SETTINGS.map((s, i) => `| ${s.label} | ${flows.map((f) => cell(i, f)).join(' | ')} |`),
].join('\n');
const cpuModel = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown CPU';
const minutes = (Date.now() - t0) / 60_000;
const section = `<!-- scaling:begin -->
## Throughput and threads

Command: \`./bench/run.sh scaling${argv.length > 0 ? ` ${argv.join(' ')}` : ''}\`. Machine: ${cpus().length}× ${cpuModel}, Linux ${release()}, Node ${process.version}; ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}, ${minutes.toFixed(1)} min.

The same guests and flows through vswitch daemons that differ only in where the pipeline runs
(\`switch.dataPlane\`: the main thread, or the data-plane thread, the default), in
\`switch.workers\` (the queues of the legacy NIC and the TSO-less uplink go to the workers; with
two, one each) and, in the last two rows, in giving the VMs two TAP queues each and every kind of
port to the workers (the VM→VM flow only), ${REPS} repetitions of ${SECONDS} s interleaved. Each
cell: median Gbit/s (min–max), × the same flow with everything on one thread (first row), and the
daemon's CPU (all threads, % of one core).

${table}
${failures.length > 0 ? `\nProblems in this run:\n${failures.map((f) => `- ${f}`).join('\n')}\n` : ''}
<!-- scaling:end -->`;
console.log(`\n${table}`);
if (write) {
  const file = join(resolve(distRoot, '..'), 'docs', 'benchmarks.md');
  let doc = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const re = /<!-- scaling:begin -->[\s\S]*<!-- scaling:end -->/;
  doc = re.test(doc) ? doc.replace(re, () => section) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, doc);
  console.log(`wrote ${file}`);
}
cleanupSync();
const left = leftovers();
if (left.length > 0) console.error(`left on the machine: ${left.join(', ')}`);
console.log(`done in ${minutes.toFixed(1)} min`);
process.exit(failures.length > 0 ? 1 : 0);
