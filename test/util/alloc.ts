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
