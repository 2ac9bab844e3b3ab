// UDP receive coalescing (URO) with real guest kernels: datagrams from vm1's
// kernel, coalesced by the switch into USO super-frames, split again by the
// receiving guest's kernel, must arrive as they were sent — every byte, in
// order per flow, none lost to the coalescing — over IPv4 and IPv6, with
// two flows interleaved. The legacy NIC never gets a super-frame, and
// `uro: false` switches it off at run time. And the TAPs' queue length
// towards the switch (txqueuelen): the default, a configured one, a live change.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, type LabNode } from '../util/lab.js';
import { hasCommand, inCI, isRoot } from '../util/env.js';

const runnable = isRoot() && hasCommand('ip') && hasCommand('ping');
const why = 'needs root, iproute2 and ping';
if (!runnable && inCI) throw new Error(`cannot run in CI: ${why}`);

const probe = join(dirname(fileURLToPath(import.meta.url)), '../util/udp-probe.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let lab: Lab;

before(async () => {
  if (!runnable) return;
  lab = await Lab.start({ nodes: ['vm1', 'vm2', 'leg'], portOverrides: { leg: { txQueueLen: 512 } } });
  // Neighbours resolved first, both IP versions: a guest's kernel may reorder the datagrams it held
  // while resolving (the answer is processed on another CPU while the sender goes on).
  for (const to of ['vm2', 'leg'] as const) {
    for (const v6 of [false, true]) assert.equal(lab.ping('vm1', to, v6).status, 0, `vm1 → ${to} IPv${v6 ? 6 : 4}`);
  }
});

after(async () => {
  if (!runnable) return;
  await lab.stop();
  assert.deepEqual(lab.leftovers(), [], 'namespaces or devices left behind');
});

interface ProbeResult { received: number; bad: number; reordered: number; firstReorder: unknown; perFlow: number[] }

/** Send `count` datagrams per flow from vm1 to `to`; what the receiver saw. */
async function transfer(to: LabNode, v6: boolean, count: number, flows: number, port: number): Promise<ProbeResult> {
  const addr = v6 ? lab.ip6(to) : lab.ip4(to);
  const rx = lab.spawnIn(to, [process.execPath, probe, 'recv', '--bind', addr, '--port', String(port),
    '--expect', String(count * flows), '--flows', String(flows), '--timeout-ms', '8000']);
  let out = '';
  rx.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<void>((r) => rx.once('exit', () => r()));
  for (let i = 0; i < 100 && !out.includes('ready'); i++) await sleep(50);
  assert.ok(out.includes('ready'), 'receiver ready');
  const tx = lab.exec('vm1', [process.execPath, probe, 'send', '--dst', addr, '--port', String(port),
    '--count', String(count), '--flows', String(flows), '--burst', '48'], { timeout: 60_000 });
  assert.equal(tx.status, 0, `sender: ${tx.stderr}`);
  await exited;
  const line = out.split('\n').find((l) => l.startsWith('{'));
  assert.ok(line !== undefined, `receiver printed no result: ${out}`);
  return JSON.parse(line) as ProbeResult;
}

async function coalesced(port: string): Promise<{ datagrams: number; frames: number }> {
  return (await lab.stats())[port]!['offload']['coalesced'];
}

for (const v6 of [false, true]) {
  test(`IPv${v6 ? 6 : 4}: two interleaved flows to a VM arrive whole and in order, most of them coalesced`, { skip: !runnable && why }, async (t) => {
    const before = await coalesced('vm2');
    const n = 6000;
    const r = await transfer('vm2', v6, n, 2, v6 ? 7002 : 7001);
    const after = await coalesced('vm2');
    const merged = after.datagrams - before.datagrams;
    t.diagnostic(`received ${r.received} of ${2 * n}; ${merged} coalesced into ${after.frames - before.frames} super-frames`);
    assert.equal(r.bad, 0, 'no datagram changed');
    assert.equal(r.reordered, 0, `no datagram overtook an earlier one of its flow (first: ${JSON.stringify(r.firstReorder)})`);
    assert.ok(r.received >= 0.98 * 2 * n, `received ${r.received} of ${2 * n} (${JSON.stringify(r.perFlow)})`);
    assert.ok(merged >= 0.3 * r.received, `coalesced ${merged} of ${r.received} datagrams`);
    assert.ok(after.frames - before.frames < merged / 2, `${after.frames - before.frames} super-frames for ${merged} datagrams`);
  });
}

test('the legacy NIC gets plain datagrams only; uro: false stops coalescing at run time', { skip: !runnable && why }, async () => {
  const r = await transfer('leg', false, 3000, 1, 7003);
  assert.equal(r.bad, 0);
  assert.ok(r.received >= 0.98 * 3000, `legacy received ${r.received}`);
  assert.deepEqual(await coalesced('leg'), { datagrams: 0, frames: 0 });

  await lab.api.call('PATCH', '/v1/ports/vm2', { uro: false });
  const show = await lab.api.call<{ ports: Record<string, unknown>[] }>('GET', '/v1/ports');
  assert.equal(show.ports.find((p) => p['name'] === 'vm2')!['uro'], false);
  const before = await coalesced('vm2');
  const r2 = await transfer('vm2', false, 3000, 1, 7004);
  assert.equal(r2.bad, 0);
  assert.ok(r2.received >= 0.98 * 3000, `received ${r2.received}`);
  assert.deepEqual(await coalesced('vm2'), before, 'nothing coalesced with uro: false');
  await lab.api.call('PATCH', '/v1/ports/vm2', { uro: true });
});

test('TAP queue length: 4096 by default, as configured, changed live', { skip: !runnable && why }, async () => {
  const qlen = (n: LabNode) => /qlen (\d+)/.exec(lab.exec(n, ['ip', 'link', 'show', 'dev', lab.dev(n)]).stdout)?.[1];
  assert.equal(qlen('vm1'), '4096');
  assert.equal(qlen('leg'), '512');
  await lab.api.call('PATCH', '/v1/ports/vm2', { txQueueLen: 2048 });
  assert.equal(qlen('vm2'), '2048');
  await assert.rejects(lab.api.call('PATCH', '/v1/ports/vm2', { txQueueLen: 3 }), /txQueueLen/);
  assert.equal(lab.ping('vm1', 'vm2').status, 0);
});
