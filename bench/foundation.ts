// Foundation benchmark: memcpy vs our checksum vs software segmentation,
// and heap growth over a million packets, all measured in the same run.
//
//   npm run bench:foundation            (or: node dist/bench/foundation.js [--quick] [--no-write])
//
// Writes its table into docs/benchmarks.md between the foundation markers.

import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus, release } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { sum, setChecksumKernelThreshold } from '../src/wire/checksum.js';
import { buildFrame } from '../src/wire/builder.js';
import { BufferPool } from '../src/packet/pool.js';
import { Batch } from '../src/packet/batch.js';
import { GsoType } from '../src/packet/meta.js';
import { segment } from '../src/offload/segment.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const args = new Set(process.argv.slice(2));
const quick = args.has('--quick');
const REPS = quick ? 3 : 7;
const TARGET_MS = quick ? 60 : 250;

interface Stat { median: number; min: number; max: number }

/** Run `fn(n)` for ~TARGET_MS, REPS times; returns units/second stats for `units` per call. */
function measure(fn: (iters: number) => void, unitsPerIter: number): Stat {
  // Calibrate the iteration count to the target duration.
  let iters = 1;
  for (;;) {
    const t0 = performance.now();
    fn(iters);
    const dt = performance.now() - t0;
    if (dt > TARGET_MS / 4) { iters = Math.max(1, Math.round(iters * TARGET_MS / dt)); break; }
    iters *= 4;
  }
  const rates: number[] = [];
  for (let r = 0; r < REPS; r++) {
    const t0 = performance.now();
    fn(iters);
    const dt = (performance.now() - t0) / 1000;
    rates.push((iters * unitsPerIter) / dt);
  }
  rates.sort((a, b) => a - b);
  return { median: rates[Math.floor(rates.length / 2)]!, min: rates[0]!, max: rates[rates.length - 1]! };
}

const fmt = (s: Stat, scale: number, digits = 1) =>
  `${(s.median / scale).toFixed(digits)} (${(s.min / scale).toFixed(digits)}–${(s.max / scale).toFixed(digits)})`;

const rows: string[][] = [];
const row = (...cells: string[]) => { rows.push(cells); console.log(cells.join('  |  ')); };

// --- memcpy -----------------------------------------------------------------
const plainSrc = new Uint8Array(1 << 20);
const plainDst = new Uint8Array(1 << 20);
for (let i = 0; i < plainSrc.length; i++) plainSrc[i] = (i * 7) & 0xff;
let sink = 0;
const GB = 1e9;

const memcpy64k = measure((n) => {
  for (let i = 0; i < n; i++) plainDst.set(plainSrc.subarray((i & 7) * 65536, (i & 7) * 65536 + 65536));
}, 65536);
row('memcpy (TypedArray.set), 64 KiB', 'GB/s', fmt(memcpy64k, GB), '1.00×');
const memcpy1500 = measure((n) => {
  for (let i = 0; i < n; i++) plainDst.set(plainSrc.subarray((i & 63) * 1536, (i & 63) * 1536 + 1500), 4096);
}, 1500);
row('memcpy (TypedArray.set), 1500 B', 'GB/s', fmt(memcpy1500, GB), `${(memcpy1500.median / memcpy64k.median).toFixed(2)}×`);

// --- checksum ---------------------------------------------------------------
const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 4096 }, { bufferSize: 66560, count: 64 }] });
const mem = pool.bytes;
const region = pool.take(65536)!;
mem.set(plainSrc.subarray(0, 65536), region.off);
const ratio = (s: Stat) => `${(s.median / memcpy64k.median).toFixed(2)}×`;

const jsSum64k = measure((n) => { for (let i = 0; i < n; i++) sink += sum(plainSrc, (i & 7) * 2, 65536); }, 65536);
row('checksum, portable TypeScript, 64 KiB', 'GB/s', fmt(jsSum64k, GB), ratio(jsSum64k));
const jsSum1500 = measure((n) => { for (let i = 0; i < n; i++) sink += sum(plainSrc, (i & 63) * 16, 1500); }, 1500);
row('checksum, portable TypeScript, 1500 B', 'GB/s', fmt(jsSum1500, GB), ratio(jsSum1500));

const simd = pool.memory.accelerated;
let simd64k: Stat | null = null;
if (simd) {
  simd64k = measure((n) => { for (let i = 0; i < n; i++) sink += sum(mem, region.off + (i & 7) * 2, 65536 - 16); }, 65536 - 16);
  row('checksum, WebAssembly SIMD (packet memory), 64 KiB', 'GB/s', fmt(simd64k, GB), ratio(simd64k));
  const simd1500 = measure((n) => { for (let i = 0; i < n; i++) sink += sum(mem, region.off + (i & 63) * 16, 1500); }, 1500);
  row('checksum, WebAssembly SIMD (packet memory), 1500 B', 'GB/s', fmt(simd1500, GB), ratio(simd1500));
  // The same region through the portable path, for the comparison in one run.
  setChecksumKernelThreshold(Number.MAX_SAFE_INTEGER);
  const jsInMem = measure((n) => { for (let i = 0; i < n; i++) sink += sum(mem, region.off, 65536); }, 65536);
  setChecksumKernelThreshold(16);
  row('checksum, portable TypeScript (packet memory), 64 KiB', 'GB/s', fmt(jsInMem, GB), ratio(jsInMem));
} else {
  row('checksum, WebAssembly SIMD', 'GB/s', 'unavailable on this engine', '—');
}

// --- segmentation ------------------------------------------------------------
const PAYLOAD = 65536 - 14 - 20 - 20 - 2; // a 64 KiB super-frame
const MSS = 1448;
const superFrame = buildFrame({
  ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' },
  l4: { kind: 'tcp', sport: 40000, dport: 5201, seq: 1000 }, payload: PAYLOAD, checksum: 'partial',
}).frame;
const sp = pool.take(superFrame.length)!;
sp.write(superFrame);
sp.meta.gsoType = GsoType.TCPV4;
sp.meta.gsoSize = MSS;
sp.meta.needsCsum = true;
sp.meta.csumStart = 34;
sp.meta.csumOffset = 16;
const segs = new Batch(64);
const runSegment = (partial: boolean) => (n: number) => {
  const opts = { partialChecksum: partial };
  for (let i = 0; i < n; i++) {
    const e = segment(sp, segs, opts);
    if (e !== null) throw new Error(e);
    segs.releaseAll();
  }
};
const GBIT = 1e9 / 8;
const segFull = measure(runSegment(false), PAYLOAD);
const nSegs = Math.ceil(PAYLOAD / MSS);
row(`TSO in software, 64 KiB → ${nSegs}×${MSS} B, checksums computed`, 'Gbit/s payload', fmt(segFull, GBIT),
  `${((segFull.median / PAYLOAD) * nSegs / 1e6).toFixed(2)} Mseg/s`);
const segPartial = measure(runSegment(true), PAYLOAD);
row(`TSO in software, 64 KiB → ${nSegs}×${MSS} B, checksums left partial`, 'Gbit/s payload', fmt(segPartial, GBIT),
  `${((segPartial.median / PAYLOAD) * nSegs / 1e6).toFixed(2)} Mseg/s`);

// --- heap growth over 10^6 packets ----------------------------------------------
let gcs = 0;
const obs = new PerformanceObserver((l) => { gcs += l.getEntries().length; });
const PACKETS = quick ? 200_000 : 1_000_000;
runSegment(false)(50);
gc();
const heap0 = process.memoryUsage().heapUsed;
obs.observe({ entryTypes: ['gc'] });
const frames = Math.ceil(PACKETS / nSegs);
const t0 = performance.now();
runSegment(false)(frames);
const dt = performance.now() - t0;
await new Promise((r) => setImmediate(r));
obs.disconnect();
gc();
const heap1 = process.memoryUsage().heapUsed;
const growth = heap1 - heap0;
row(`heap growth over ${(frames * nSegs).toLocaleString('en')} segments (${frames} super-frames, ${dt.toFixed(0)} ms)`,
  'bytes', `${growth}`, `${gcs} GCs during the run`);

sp.release();
region.release();
if (pool.inUse !== 0) throw new Error(`benchmark leaked ${pool.inUse} buffers`);

// --- verdicts ---------------------------------------------------------------------
const csumRatio = (simd64k ?? jsSum64k).median / memcpy64k.median;
const verdicts = [
  `checksum (64 KiB) / memcpy = ${csumRatio.toFixed(2)}× — target ≥ 0.35×: ${csumRatio >= 0.35 ? 'met' : 'MISSED'}`,
  `heap growth over ${(frames * nSegs).toLocaleString('en')} packets: ${growth} B, ${gcs} garbage collections — target ~0: ${Math.abs(growth) < 1_000_000 ? 'met' : 'MISSED'}`,
];
for (const v of verdicts) console.log(v);
if (sink === 42) console.log(''); // keep results observable

// --- write docs/benchmarks.md -----------------------------------------------------
if (!args.has('--no-write') && !quick) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
  const file = resolve(root, 'docs/benchmarks.md');
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const table = [
    '| measurement | unit | median (min–max) | ratio / note |',
    '| --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
  const section = [
    '<!-- foundation:begin -->',
    '## Foundation: checksum and segmentation engines',
    '',
    'Command: `./bench/run.sh foundation` (which runs `node dist/bench/foundation.js`).',
    `Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length}× ${cpu}, Linux ${release()}, Node ${process.version};`,
    `${REPS} repetitions of ~${TARGET_MS} ms each, median with min–max. Ratios are to memcpy of 64 KiB in the same run.`,
    '',
    table,
    '',
    ...verdicts.map((v) => `- ${v}`),
    '<!-- foundation:end -->',
  ].join('\n');
  let doc = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n\nEvery number here was produced by the command next to it, on the machine described, in one run.\n';
  const re = /<!-- foundation:begin -->[\s\S]*<!-- foundation:end -->/;
  doc = re.test(doc) ? doc.replace(re, section) : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, doc);
  console.log(`wrote ${file}`);
}
