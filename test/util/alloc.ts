// Allocation detector for hot-path tests: runs `fn` and counts the garbage
// collections that happened meanwhile. Young-generation collections (scavenges)
// only happen when something allocates, so a loop that allocates nothing
// — what the data path promises — runs with none, while a loop allocating
// even a small object per iteration triggers several per million iterations.
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { setImmediate as tick } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
const fullGc = runInNewContext('gc') as () => void;

export async function gcCountDuring(fn: () => void): Promise<number> {
  const starts: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) starts.push(e.startTime);
  });
  obs.observe({ entryTypes: ['gc'] });
  // Start from an empty young generation so earlier garbage cannot trigger one.
  fullGc();
  await tick();
  const t0 = performance.now();
  fn();
  const t1 = performance.now();
  await tick();
  await tick();
  obs.disconnect();
  // Entries arrive asynchronously: count those that started during the run.
  return starts.filter((t) => t >= t0 && t <= t1).length;
}

/**
 * Bytes allocated while `fn` runs by functions defined in files whose URL
 * contains one of `where`, as V8's sampling heap profiler sees them —
 * including objects already collected again (a per-packet heap number that
 * dies young is exactly what this must catch; counting GCs misses it until
 * the young generation fills). Statistical: an allocation is sampled on
 * average every `interval` bytes, so a loop that allocates 16 bytes per
 * iteration for 10^5 iterations shows up as ~1.6 MB, and one that allocates
 * nothing shows 0.
 */
export async function bytesAllocatedDuring(fn: () => void, where: string[], interval = 256): Promise<{ bytes: number; top: string[] }> {
  const { Session } = await import('node:inspector');
  const s = new Session();
  s.connect();
  const post = <T>(method: string, params: object = {}): Promise<T> =>
    new Promise((res, rej) => s.post(method, params, (e, r) => (e ? rej(e) : res(r as T))));
  interface Node { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: Node[] }
  try {
    await post('HeapProfiler.enable');
    fullGc();
    await post('HeapProfiler.startSampling', { samplingInterval: interval, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    fn();
    const { profile } = await post<{ profile: { head: Node } }>('HeapProfiler.stopSampling');
    let bytes = 0;
    const top: [number, string][] = [];
    const walk = (n: Node): void => {
      const url = n.callFrame.url;
      if (n.selfSize > 0 && where.some((w) => url.includes(w))) {
        bytes += n.selfSize;
        top.push([n.selfSize, `${n.callFrame.functionName || '(anonymous)'} ${url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber + 1}`]);
      }
      for (const c of n.children) walk(c);
    };
    walk(profile.head);
    top.sort((a, b) => b[0] - a[0]);
    return { bytes, top: top.slice(0, 5).map(([b, f]) => `${b} B in ${f}`) };
  } finally {
    await post('HeapProfiler.disable').catch(() => undefined);
    s.disconnect();
  }
}

/**
 * The least of `tries` runs of bytesAllocatedDuring. V8 may still be compiling
 * (or replacing a frame on the stack) during one run on a loaded machine, and
 * what it allocates then is its own, once; an allocation per packet shows in
 * every run.
 */
export async function leastBytesAllocatedDuring(fn: () => void, where: string[], tries = 3): Promise<{ bytes: number; top: string[]; runs: number }> {
  let best: { bytes: number; top: string[] } | null = null;
  let runs = 0;
  while (runs < tries) {
    const r = await bytesAllocatedDuring(fn, where);
    runs++;
    if (best === null || r.bytes < best.bytes) best = r;
    if (best.bytes === 0) break;
  }
  return { ...best!, runs };
}
