// Loaded into the vswitch daemon by the switch benchmark only:
//
//   node --expose-gc --import file:///…/dist/bench/gc-probe.js dist/src/cli/main.js run --config …
//
// with VSWITCH_BENCH_PROBE=<file>. It counts the garbage collections V8 does
// on its own (not the ones forced below) and their pauses. On SIGUSR2 it
// writes a snapshot of those counters to <file>, then forces a full
// collection and adds the heap that survived it — so the benchmark can read
// "GCs during this test" and "heap after a full GC, before and after" without
// anything in the switch knowing about it. It does nothing on its own.
//
// Main isolate only: a worker thread's GCs are not seen here (RSS covers them).

import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { renameSync, writeFileSync } from 'node:fs';

export interface ProbeSnapshot {
  seq: number;
  /** Wall clock (ms since the epoch) when taken. */
  t: number;
  /** V8's own collections since the probe started (forced ones excluded). */
  gcCount: number;
  minor: number;
  major: number;
  /** Sum of their pauses, ms; the longest since the previous snapshot. */
  gcPauseMs: number;
  gcMaxPauseMs: number;
  /** heapUsed before and after the forced full collection, bytes. */
  heapUsed: number;
  heapAfterGc: number;
  rss: number;
  arrayBuffers: number;
  forcedGc: boolean;
}

const out = process.env['VSWITCH_BENCH_PROBE'];
if (out !== undefined && out !== '') {
  let gcCount = 0;
  let minor = 0;
  let major = 0;
  let gcPauseMs = 0;
  let gcMaxPauseMs = 0;
  let seq = 0;
  const take = (entries: PerformanceEntry[]) => {
    for (const e of entries) {
      const d = (e as PerformanceEntry & { detail?: { kind?: number; flags?: number } }).detail ?? {};
      if (((d.flags ?? 0) & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED) !== 0) continue;
      gcCount++;
      if (d.kind === constants.NODE_PERFORMANCE_GC_MINOR) minor++;
      else if (d.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major++;
      gcPauseMs += e.duration;
      if (e.duration > gcMaxPauseMs) gcMaxPauseMs = e.duration;
    }
  };
  const obs = new PerformanceObserver((list) => take(list.getEntries()));
  obs.observe({ entryTypes: ['gc'] });
  const gc = (globalThis as { gc?: () => void }).gc;
  process.on('SIGUSR2', () => {
    take(obs.takeRecords());
    const before = process.memoryUsage();
    const snap: ProbeSnapshot = {
      seq: ++seq, t: Date.now(), gcCount, minor, major, gcPauseMs, gcMaxPauseMs,
      heapUsed: before.heapUsed, heapAfterGc: before.heapUsed, rss: before.rss, arrayBuffers: before.arrayBuffers,
      forcedGc: gc !== undefined,
    };
    if (gc !== undefined) {
      gc();
      const after = process.memoryUsage();
      snap.heapAfterGc = after.heapUsed;
      snap.rss = after.rss;
    }
    gcMaxPauseMs = 0;
    writeFileSync(`${out}.tmp`, JSON.stringify(snap));
    renameSync(`${out}.tmp`, out);
  });
}
