// Transmit worker threads (`switch.workers`) with multi-queue TAPs, end to
// end: guests' kernels on TAPs, the legacy NIC and the uplink written by a
// worker. The case that matters is overload — a 64-byte UDP flood fills the
// rings, receivers pause for backpressure — and what must hold afterwards:
// every buffer comes back, the pause ends by itself, and the switch carries
// ping and TCP as before (it once stayed paused for good: nothing reaped the
// completion ring while no new packet was queued).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, type LabNode } from '../util/lab.js';
import { hasCommand, inCI, isRoot } from '../util/env.js';

const runnable = isRoot() && hasCommand('ip') && hasCommand('ping') && hasCommand('iperf3');
const why = 'needs root, iproute2, ping and iperf3';
if (!runnable && inCI) throw new Error(`cannot run in CI: ${why}`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let lab: Lab;
let baseline = 0;

before(async () => {
  if (!runnable) return;
  lab = await Lab.start({ workers: 1, nodes: ['vm1', 'vm2', 'leg', 'phys'], portOverrides: { vm1: { queues: 2 }, vm2: { queues: 2 } } });
  for (const to of ['vm2', 'leg', 'phys'] as const) assert.equal(lab.ping('vm1', to).status, 0, `vm1 → ${to} before the flood`);
  baseline = await inUse();
});

after(async () => {
  if (!runnable) return;
  await lab.stop();
  assert.deepEqual(lab.leftovers(), [], 'namespaces or devices left behind');
});

async function inUse(): Promise<number> {
  return (await lab.api.call<{ pool: { inUse: number } }>('GET', '/v1/stats')).pool.inUse;
}

/** iperf3 from vm1 to `to`; resolves with iperf3's JSON end summary. */
async function iperf(to: LabNode, args: string[], port: number): Promise<Record<string, any>> {
  const srv = lab.spawnIn(to, ['iperf3', '-s', '-1', '-p', String(port), '-B', lab.ip4(to)]);
  await sleep(300);
  const r = lab.exec('vm1', ['iperf3', '-c', lab.ip4(to), '-p', String(port), '-J', ...args], { timeout: 40_000 });
  srv.kill();
  assert.equal(r.status, 0, `iperf3 to ${to}: ${r.stdout.slice(0, 400)} ${r.stderr}`);
  return (JSON.parse(r.stdout) as { end: Record<string, any> }).end;
}

test('a 64-byte UDP flood through the transmit worker to every kind of port, then: all buffers back, receive resumes, ping and TCP work', { skip: !runnable && why, timeout: 180_000 }, async () => {
  let port = 5300;
  for (const to of ['vm2', 'leg', 'phys'] as const) {
    const end = await iperf(to, ['-u', '-b', '0', '-l', '22', '-t', '3'], port++);
    assert.ok(end['sum'].packets > 1000, `the flood to ${to} ran (${end['sum'].packets} datagrams sent)`);
    // The pause ends and the buffers held by the worker come back without new traffic.
    let now = await inUse();
    for (let i = 0; i < 50 && now > baseline + 64; i++) {
      await sleep(100);
      now = await inUse();
    }
    assert.ok(now <= baseline + 64, `after the flood to ${to}: ${now} buffers in use, ${baseline} before`);
    const ping = lab.ping('vm1', to, false, 3);
    assert.equal(ping.status, 0, `vm1 → ${to} after the flood: ${ping.stdout}`);
  }
  // TCP at full speed through each path afterwards (pass-through, software segmentation to the legacy NIC, the uplink).
  for (const to of ['vm2', 'leg', 'phys'] as const) {
    const end = await iperf(to, ['-t', '2'], port++);
    assert.ok(end['sum_received'].bytes > 10 << 20, `TCP to ${to} after the flood: ${end['sum_received'].bytes} B`);
  }
  const stats = await lab.stats();
  for (const to of ['vm2', 'leg', 'phys'] as const) {
    const c = stats[to]!;
    assert.ok(c['txPackets'] > 0, `${to} was written to`);
  }
});
