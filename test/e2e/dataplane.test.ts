// The data plane runs on a thread of its own (switch.dataPlane: thread, the
// default): the daemon's main thread keeps the control plane only. Checked by
// the kernel's own CPU accounting per thread (/proc/PID/task/TID/stat) while
// real guest kernels push TCP through the switch — and, so the measurement is
// known to tell the two apart, against the same traffic with
// `dataPlane: main`, where the main thread does the work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { STAT_STIME, STAT_UTIME, statFields } from '../../src/control/procfs.js';
import { Lab } from '../util/lab.js';
import { hasCommand, inCI, isRoot } from '../util/env.js';

const runnable = isRoot() && hasCommand('ip') && hasCommand('iperf3');
const why = 'needs root, iproute2 and iperf3';
if (!runnable && inCI) throw new Error(`cannot run in CI: ${why}`);

/** CPU ticks (user + system) of every thread of process `pid`, by thread id. */
function threadTicks(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const f = statFields(`/proc/${pid}/task/${tid}/stat`);
    if (f === null) continue; // a thread that ended meanwhile
    out.set(Number(tid), Number(f[STAT_UTIME]) + Number(f[STAT_STIME]));
  }
  return out;
}

/** Push TCP from vm1 to vm2 (pass-through) and to the legacy NIC (segmented in software) for `seconds`; CPU ticks of the daemon's main thread and of all its threads meanwhile. */
async function cpuDuring(lab: Lab, seconds: number): Promise<{ main: number; all: number }> {
  const sw = await lab.api.call<{ pid: number }>('GET', '/v1/switch');
  const pid = sw.pid;
  const servers = [lab.spawnIn('vm2', ['iperf3', '-s', '-1', '-B', lab.ip4('vm2')]), lab.spawnIn('leg', ['iperf3', '-s', '-1', '-B', lab.ip4('leg')])];
  await new Promise((r) => setTimeout(r, 500));
  const before = threadTicks(pid);
  const runs = ['vm2', 'leg'].map((to) => new Promise<number | null>((res) => {
    const c = lab.spawnIn('vm1', ['iperf3', '-c', lab.ip4(to as 'vm2' | 'leg'), '-t', String(seconds), '-J']);
    c.stdout!.resume();
    c.once('exit', res);
  }));
  const codes = await Promise.all(runs);
  const after = threadTicks(pid);
  for (const s of servers) s.kill();
  assert.deepEqual(codes, [0, 0], 'both iperf3 clients finished');
  let all = 0;
  for (const [tid, t] of after) all += t - (before.get(tid) ?? 0);
  const main = (after.get(pid) ?? 0) - (before.get(pid) ?? 0);
  return { main, all };
}

test('the switch pipeline runs on the data-plane thread: under load the main thread uses next to no CPU (and with dataPlane: main it does the work)', { skip: !runnable && why, timeout: 240_000 }, async (tc) => {
  const threaded = await Lab.start({ nodes: ['vm1', 'vm2', 'leg'] });
  let t: { main: number; all: number };
  try {
    const sw = await threaded.api.call<{ dataPlane: { mode: string; threadId: number } }>('GET', '/v1/switch');
    assert.equal(sw.dataPlane.mode, 'thread');
    assert.ok(sw.dataPlane.threadId > 0, 'a worker thread, not the main thread (0)');
    const threadCpu = async () => (await threaded.api.call<{ threads: { role: string; cpuSeconds: number }[] }>('GET', '/v1/switch')).threads;
    const th0 = await threadCpu();
    t = await cpuDuring(threaded, 4);
    const th1 = await threadCpu();
    // The API still answers while the thread switches (the request crosses to it and back).
    const stats = await threaded.stats();
    assert.ok(stats['vm2']!['txPackets'] > 1000 && stats['leg']!['txPackets'] > 1000, 'traffic went through the switch');
    // The API says the same of its threads (GET /v1/switch: per-thread CPU since start), over the same load.
    const used = (role: string) => th1.find((x) => x.role === role)!.cpuSeconds - th0.find((x) => x.role === role)!.cpuSeconds;
    tc.diagnostic(`GET /v1/switch threads, CPU s during the load: ${['main', 'data-plane', 'io'].map((r) => `${r} ${used(r).toFixed(2)}`).join(', ')}`);
    assert.ok(used('data-plane') >= 1 && used('main') <= used('data-plane') * 0.05, `the API's per-thread CPU: ${JSON.stringify([th0, th1])}`);
  } finally {
    await threaded.stop();
  }
  tc.diagnostic(`data-plane thread: main thread ${t.main} of ${t.all} CPU ticks`);
  assert.ok(t.all >= 100, `the daemon worked (${t.all} ticks in all)`);
  assert.ok(t.main <= t.all * 0.05, `main thread: ${t.main} of ${t.all} ticks`);

  const single = await Lab.start({ nodes: ['vm1', 'vm2', 'leg'], dataPlane: 'main' });
  let m: { main: number; all: number };
  try {
    const sw = await single.api.call<{ dataPlane: { mode: string; threadId: number } }>('GET', '/v1/switch');
    assert.deepEqual(sw.dataPlane, { mode: 'main', threadId: 0 });
    m = await cpuDuring(single, 4);
  } finally {
    await single.stop();
  }
  tc.diagnostic(`dataPlane: main: main thread ${m.main} of ${m.all} CPU ticks`);
  assert.ok(m.main >= m.all * 0.4, `with dataPlane: main the main thread does the switching: ${m.main} of ${m.all} ticks`);
  assert.deepEqual([...threaded.leftovers(), ...single.leftovers()], [], 'namespaces or devices left behind');
});
