// I/O worker threads (`switch.workers`) with multi-queue TAPs, end to end:
// guests' kernels on TAPs, the legacy NIC and the uplink read and written by
// a worker, the pipeline on the main thread. The case that matters is overload — a 64-byte UDP flood fills the
// rings, receivers pause for backpressure — and what must hold afterwards:
// every buffer comes back, the pause ends by itself, and the switch carries
// ping and TCP as before (it once stayed paused for good: nothing reaped the
// completion ring while no new packet was queued).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, type LabNode } from '../util/lab.js';
import { hasCommand, inCI, isRoot } from '../util/env.js';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const probe = join(dirname(fileURLToPath(import.meta.url)), '../util/udp-probe.js');

const runnable = isRoot() && hasCommand('ip') && hasCommand('ping') && hasCommand('iperf3');
const why = 'needs root, iproute2, ping and iperf3';
if (!runnable && inCI) throw new Error(`cannot run in CI: ${why}`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let lab: Lab;
let baseline = 0;

before(async () => {
  if (!runnable) return;
  lab = await Lab.start({ workers: 1, workerReads: true, workerPorts: ['synthetic', 'host', 'legacy', 'external'], nodes: ['vm1', 'vm2', 'leg', 'phys'], portOverrides: { vm1: { queues: 2 }, vm2: { queues: 2 } } });
  for (const to of ['vm2', 'leg', 'phys'] as const) assert.equal(lab.ping('vm1', to).status, 0, `vm1 → ${to} before the flood`);
  baseline = await inUse();
});

after(async () => {
  if (!runnable) return;
  await lab.stop();
  assert.deepEqual(lab.leftovers(), [], 'namespaces or devices left behind');
});

async function inUse(l = lab): Promise<number> {
  return (await l.api.call<{ pool: { inUse: number } }>('GET', '/v1/stats')).pool.inUse;
}

/** iperf3 from vm1 to `to`; resolves with iperf3's JSON end summary. */
async function iperf(to: LabNode, args: string[], port: number, l = lab): Promise<Record<string, any>> {
  const srv = l.spawnIn(to, ['iperf3', '-s', '-1', '-p', String(port), '-B', l.ip4(to)]);
  await sleep(300);
  const r = l.exec('vm1', ['iperf3', '-c', l.ip4(to), '-p', String(port), '-J', ...args], { timeout: 40_000 });
  srv.kill();
  assert.equal(r.status, 0, `iperf3 to ${to}: ${r.stdout.slice(0, 400)} ${r.stderr}`);
  return (JSON.parse(r.stdout) as { end: Record<string, any> }).end;
}

/**
 * Floods to every kind of port, then checks that the switch recovered, that
 * the ports in `onWorker.kinds` (and only those) have their queues on a
 * worker, and that frames were read there exactly when `onWorker.reads`.
 */
async function floodThenWork(l: Lab, base: number, onWorker: { reads: boolean; kinds: LabNode[] }): Promise<void> {
  let port = 5300;
  for (const to of ['vm2', 'leg', 'phys'] as const) {
    const end = await iperf(to, ['-u', '-b', '0', '-l', '22', '-t', '3'], port++, l);
    assert.ok(end['sum'].packets > 1000, `the flood to ${to} ran (${end['sum'].packets} datagrams sent)`);
    // The pause ends and the buffers held by the worker come back without new traffic.
    let now = await inUse(l);
    for (let i = 0; i < 50 && now > base + 64; i++) {
      await sleep(100);
      now = await inUse(l);
    }
    assert.ok(now <= base + 64, `after the flood to ${to}: ${now} buffers in use, ${base} before`);
    const ping = l.ping('vm1', to, false, 3);
    assert.equal(ping.status, 0, `vm1 → ${to} after the flood: ${ping.stdout}`);
  }
  // TCP at full speed through each path afterwards (pass-through, software segmentation to the legacy NIC, the uplink).
  for (const to of ['vm2', 'leg', 'phys'] as const) {
    const end = await iperf(to, ['-t', '2'], port++, l);
    assert.ok(end['sum_received'].bytes > 10 << 20, `TCP to ${to} after the flood: ${end['sum_received'].bytes} B`);
  }
  // The ports given to workers have a worker on every queue; the frames read came through it, or none did.
  const stats = await l.stats();
  for (const n of ['vm1', 'vm2', 'leg', 'phys'] as const) {
    const s = stats[n]!;
    assert.ok(s['txPackets'] > 0 && s['rxPackets'] > 0, `${n} sent and received`);
    const queues: Record<string, any>[] = s['queues'] ?? [s['io']];
    const onIt = onWorker.kinds.includes(n);
    for (const q of queues) assert.equal(typeof q['workerThread'] === 'number', onIt, `${n}: ${onIt ? 'a queue without a worker' : 'on a worker'}`);
    const viaWorker = queues.reduce((a, q) => a + (q['workerRxFrames'] ?? 0), 0);
    const read = queues.reduce((a, q) => a + q['framesRead'], 0);
    assert.ok(read > 0);
    assert.equal(viaWorker, onIt && onWorker.reads ? read : 0, `${n}: frames read through the worker`);
  }
}

test('a 64-byte UDP flood through the worker to every kind of port, then: all buffers back, receive resumes, ping and TCP work', { skip: !runnable && why, timeout: 180_000 }, async () => {
  await floodThenWork(lab, baseline, { reads: true, kinds: ['vm1', 'vm2', 'leg', 'phys'] });
});

test('the defaults — one worker writes the legacy NIC and the uplink, the main thread does the rest: the same floods, the same recovery', { skip: !runnable && why, timeout: 180_000 }, async () => {
  const l = await Lab.start({ nodes: ['vm1', 'vm2', 'leg', 'phys'], portOverrides: { vm1: { queues: 2 }, vm2: { queues: 2 } } });
  try {
    const sw = await l.api.call<{ workers: { count: number; reads: boolean; portKinds: string[]; threads: { queues: number }[] } }>('GET', '/v1/switch');
    assert.deepEqual([sw.workers.count, sw.workers.reads, sw.workers.portKinds], [1, false, ['legacy', 'external']], 'the default worker settings');
    assert.equal(sw.workers.threads[0]!.queues, 2, 'the worker holds the legacy NIC\'s queue and the uplink\'s');
    for (const to of ['vm2', 'leg', 'phys'] as const) assert.equal(l.ping('vm1', to).status, 0, `vm1 → ${to} before the flood`);
    await floodThenWork(l, await inUse(l), { reads: false, kinds: ['leg', 'phys'] });
  } finally {
    await l.stop();
  }
  assert.deepEqual(l.leftovers(), [], 'namespaces or devices left behind');
});

/** Frames a port's queues handed to their worker, and wrote on the main thread instead (the bypass). */
async function txPaths(l: Lab, n: LabNode): Promise<{ viaWorker: number; bypass: number }> {
  const s = (await l.stats())[n]!;
  const queues: Record<string, any>[] = s['queues'] ?? [s['io']];
  return { viaWorker: queues.reduce((a, q) => a + q['txViaWorker'], 0), bypass: queues.reduce((a, q) => a + q['txBypass'], 0) };
}

test('small output to an idle worker\'s queue is written by the main thread; bulk goes through the worker; nothing overtakes', { skip: !runnable && why, timeout: 120_000 }, async () => {
  const l = await Lab.start({ nodes: ['vm1', 'leg', 'phys'] });
  try {
    for (const to of ['leg', 'phys'] as const) {
      // Pings: one frame at a time, the worker holds nothing: none of them waits for it.
      const p0 = await txPaths(l, to);
      assert.equal(l.ping('vm1', to, false, 5).status, 0, `vm1 → ${to}`);
      const p1 = await txPaths(l, to);
      assert.ok(p1.bypass - p0.bypass >= 5, `${to}: the echo requests were written directly (${p1.bypass - p0.bypass})`);
      assert.equal(p1.viaWorker, p0.viaWorker, `${to}: no ping went through the worker`);
      // Bursts of 1, 3, 40 and 2 sequence-numbered datagrams (some 1200 B): both paths, in turn.
      const count = 4000;
      const rx = l.spawnIn(to, [process.execPath, probe, 'recv', '--bind', l.ip4(to), '--port', '7101', '--expect', String(count), '--timeout-ms', '10000']);
      let out = '';
      rx.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
      const exited = new Promise<void>((r) => rx.once('exit', () => r()));
      for (let i = 0; i < 100 && !out.includes('ready'); i++) await sleep(50);
      assert.ok(out.includes('ready'), 'receiver ready');
      const tx = l.exec('vm1', [process.execPath, probe, 'send', '--dst', l.ip4(to), '--port', '7101', '--count', String(count), '--burst', '1,3,40,2'], { timeout: 60_000 });
      assert.equal(tx.status, 0, `sender: ${tx.stderr}`);
      await exited;
      const r = JSON.parse(out.split('\n').find((x) => x.startsWith('{')) ?? '{}') as { received: number; bad: number; reordered: number; firstReorder: unknown };
      assert.deepEqual([r.received, r.bad, r.reordered], [count, 0, 0], `${to}: every datagram, unchanged and in order (first out of order: ${JSON.stringify(r.firstReorder)})`);
      const p2 = await txPaths(l, to);
      assert.ok(p2.bypass > p1.bypass && p2.viaWorker > p1.viaWorker, `${to}: both paths carried the bursts (${JSON.stringify(p1)} → ${JSON.stringify(p2)})`);
    }
    // A TCP stream to the legacy NIC (software segmentation: dozens of frames per super-frame) goes through the worker.
    const t0 = await txPaths(l, 'leg');
    const end = await iperf('leg', ['-t', '2'], 5400, l);
    const t1 = await txPaths(l, 'leg');
    const frames = end['sum_sent'].bytes / 1448;
    assert.ok(t1.viaWorker - t0.viaWorker > frames * 0.9, `TCP segments through the worker: ${t1.viaWorker - t0.viaWorker} of ~${Math.round(frames)}`);
  } finally {
    await l.stop();
  }
  assert.deepEqual(l.leftovers(), [], 'namespaces or devices left behind');
});

test('a port removed at run time lets go of its worker channels: its buffers return, the others keep working', { skip: !runnable && why, timeout: 60_000 }, async () => {
  const before = await inUse();
  await lab.api.call('DELETE', '/v1/ports/phys');
  let now = await inUse();
  for (let i = 0; i < 30 && now >= before; i++) {
    await sleep(100);
    now = await inUse();
  }
  assert.ok(now < before, `the removed port's receive buffers came back (${before} → ${now} in use)`);
  assert.equal(lab.ping('vm1', 'vm2', false, 3).status, 0, 'vm1 → vm2 after the removal');
  assert.equal(lab.ping('vm1', 'leg', false, 3).status, 0, 'vm1 → leg after the removal');
});
