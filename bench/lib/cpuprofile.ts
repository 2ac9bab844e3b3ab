// Where the time goes: a summary of a V8 .cpuprofile (node --cpu-prof).
//
//   node dist/bench/lib/cpuprofile.js FILE.cpuprofile [--top N]
//
// Self time per function (samples whose top frame is it, weighted by the
// sampling intervals), total time (samples with it anywhere on the stack,
// counted once per sample), and self time per source file. Percentages are
// of the busy time: everything but "(idle)".

import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FnTime {
  name: string;
  where: string;
  selfMs: number;
  selfPct: number;
  totalPct: number;
}

export interface ProfileSummary {
  wallMs: number;
  idleMs: number;
  busyMs: number;
  gcPct: number;
  programPct: number;
  top: FnTime[];
  byFile: { file: string; selfPct: number }[];
}

/** "src/switch/switch.js" from a file URL; "" for V8 and native frames. */
function shortUrl(url: string): string {
  if (url === '') return '';
  let path = url;
  try { if (url.startsWith('file:')) path = fileURLToPath(url); } catch { /* keep it */ }
  const i = path.indexOf('/dist/');
  if (i >= 0) return path.slice(i + 6);
  if (path.startsWith('node:')) return path;
  return basename(path);
}

function key(cf: CallFrame): string {
  return `${cf.functionName || '(anonymous)'}\u0000${shortUrl(cf.url)}:${cf.lineNumber + 1}`;
}

/**
 * `window`: only samples taken within [start, end], in µs of CLOCK_MONOTONIC —
 * the clock of the profile's timestamps and of `process.hrtime` in any
 * process on the machine, so a harness can cut out start-up and shutdown.
 */
export function summarize(profile: CpuProfile, topN = 15, window?: [number, number]): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const fileSelf = new Map<string, number>();
  let idle = 0;
  let gc = 0;
  let program = 0;
  let all = 0;
  const seen = new Set<string>();
  let ts = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    // timeDeltas[i] is the time before sample i; attribute the next delta to it (the usual convention).
    ts += profile.timeDeltas[i] ?? 0;
    if (window !== undefined && (ts < window[0] || ts > window[1])) continue;
    const dt = (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
    const id = profile.samples[i]!;
    const node = byId.get(id);
    if (node === undefined) continue;
    all += dt;
    const fn = node.callFrame.functionName;
    if (fn === '(idle)') { idle += dt; continue; }
    if (fn === '(garbage collector)') gc += dt;
    if (fn === '(program)') program += dt;
    const k = key(node.callFrame);
    self.set(k, (self.get(k) ?? 0) + dt);
    const file = shortUrl(node.callFrame.url) || (fn.startsWith('(') ? fn : '(native / V8 builtins)');
    fileSelf.set(file, (fileSelf.get(file) ?? 0) + dt);
    seen.clear();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)!.callFrame;
      if (cf.functionName === '(root)') break;
      const kk = key(cf);
      if (seen.has(kk)) continue;
      seen.add(kk);
      total.set(kk, (total.get(kk) ?? 0) + dt);
    }
  }
  const busy = all - idle;
  const pct = (ms: number) => (busy > 0 ? (100 * ms) / busy : 0);
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, topN).map(([k, ms]) => {
    const [name, where] = k.split('\u0000') as [string, string];
    return { name, where: where.startsWith(':') ? '' : where, selfMs: ms, selfPct: pct(ms), totalPct: pct(total.get(k) ?? ms) };
  });
  const byFile = [...fileSelf.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([file, ms]) => ({ file, selfPct: pct(ms) }));
  return { wallMs: all, idleMs: idle, busyMs: busy, gcPct: pct(gc), programPct: pct(program), top, byFile };
}

export function summarizeFile(path: string, topN = 15, window?: [number, number]): ProfileSummary {
  return summarize(JSON.parse(readFileSync(path, 'utf8')) as CpuProfile, topN, window);
}

export function formatSummary(s: ProfileSummary): string {
  const lines = [
    `sampled ${(s.wallMs / 1000).toFixed(1)} s, busy ${(s.busyMs / 1000).toFixed(1)} s (${((100 * s.busyMs) / Math.max(1, s.wallMs)).toFixed(0)} % of the profiled thread), GC ${s.gcPct.toFixed(1)} % of busy`,
    '',
    '  self %  total %  function (file:line)',
    ...s.top.map((f) => `  ${f.selfPct.toFixed(1).padStart(6)}  ${f.totalPct.toFixed(1).padStart(7)}  ${f.name}${f.where ? ` (${f.where})` : ''}`),
    '',
    '  self time by file:',
    ...s.byFile.map((f) => `  ${f.selfPct.toFixed(1).padStart(6)}  ${f.file}`),
  ];
  return lines.join('\n');
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (file === undefined) {
    console.error('usage: node dist/bench/lib/cpuprofile.js FILE.cpuprofile [--top N]');
    process.exit(2);
  }
  const i = process.argv.indexOf('--top');
  console.log(formatSummary(summarizeFile(file, i > 0 ? Number(process.argv[i + 1]) : 20)));
}
