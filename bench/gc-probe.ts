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
// Every thread: Node runs an --import module in each worker thread too (the
// data-plane thread, which runs the pipeline, and the I/O workers), and each
// V8 isolate has its own heap and collections. The main thread takes the
// signal, asks the others over a BroadcastChannel, and writes the sum.

import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { renameSync, writeFileSync } from 'node:fs';
import { BroadcastChannel, isMainThread, threadId } from 'node:worker_threads';

/** What each thread counts, and a snapshot sums. */
interface Counters {
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
}

export interface ProbeSnapshot extends Counters {
  seq: number;
  /** Wall clock (ms since the epoch) when taken. */
  t: number;
  rss: number;
  arrayBuffers: number;
  forcedGc: boolean;
  /** Threads (V8 isolates) that answered: the main thread, the data-plane thread, the I/O workers. */
  threads: number;
  /** gcCount per thread, by Node threadId. */
  gcByThread: Record<number, number>;
}

/** One thread's part of a snapshot. */
interface Part extends Counters {
  threadId: number;
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
  /** This thread's counters, then a forced full collection and the heap that survived it. */
  const part = (): Part => {
    take(obs.takeRecords());
    const p: Part = { threadId, gcCount, minor, major, gcPauseMs, gcMaxPauseMs, heapUsed: process.memoryUsage().heapUsed, heapAfterGc: 0 };
    gc?.();
    p.heapAfterGc = process.memoryUsage().heapUsed;
    gcMaxPauseMs = 0;
    return p;
  };
  const channel = new BroadcastChannel('vswitch-bench-probe');
  channel.unref();
  if (!isMainThread) {
    channel.onmessage = (e) => {
      const m = (e as MessageEvent).data as { ask?: number };
      if (m.ask !== undefined) channel.postMessage({ seq: m.ask, part: part() });
    };
  } else {
    let parts: Part[] = [];
    let asked = 0;
    channel.onmessage = (e) => {
      const m = (e as MessageEvent).data as { seq?: number; part?: Part };
      if (m.seq === asked && m.part !== undefined) parts.push(m.part);
    };
    process.on('SIGUSR2', () => {
      asked = ++seq;
      parts = [part()];
      channel.postMessage({ ask: asked });
      // The other threads answer between two batches of their work: give them a moment.
      setTimeout(() => {
        const sum = (k: keyof Part) => parts.reduce((a, p) => a + p[k], 0);
        const mem = process.memoryUsage();
        const snap: ProbeSnapshot = {
          seq: asked, t: Date.now(), gcCount: sum('gcCount'), minor: sum('minor'), major: sum('major'),
          gcPauseMs: sum('gcPauseMs'), gcMaxPauseMs: Math.max(...parts.map((p) => p.gcMaxPauseMs)),
          heapUsed: sum('heapUsed'), heapAfterGc: sum('heapAfterGc'), rss: mem.rss, arrayBuffers: mem.arrayBuffers,
          forcedGc: gc !== undefined, threads: parts.length,
          gcByThread: Object.fromEntries(parts.map((p) => [p.threadId, p.gcCount])),
        };
        writeFileSync(`${out}.tmp`, JSON.stringify(snap));
        renameSync(`${out}.tmp`, out);
      }, 300).unref();
    });
  }
}
