import { test } from 'node:test';
import assert from 'node:assert/strict';
import { topology, nicCaps, tcpFrame, tso, learnAll, assertBalanced, MAC } from '../../util/topology.js';
import { inject } from '../../../src/io/memory.js';
import { GsoType } from '../../../src/packet/meta.js';

/** Each read of the CPU clock advances it by 1 ms: every software offload costs 1 ms. */
function ticking(t: ReturnType<typeof topology>) {
  return () => (t.clock.ns += 1_000_000);
}

test('software offload work is charged to the sending port: packets, bytes, CPU time', () => {
  const t = topology({ uplink: nicCaps({ tso: false }) });
  learnAll(t);
  const f = tcpFrame('vm1', 'peer', 20000);
  inject(t.sw, t.ports.vm1, [f, f], tso());
  const c = t.ports.vm1.counters;
  assert.equal(c.swPackets, 2);
  assert.equal(c.swBytes, 2 * f.length);
  assert.equal(c.swSegments, 28);
  assert.equal(t.ports.peer.counters.swPackets, 0, 'not charged to the receiver');
  assertBalanced(t);
});

test('over budget, "drop": the work is refused and counted; the budget refills with time', () => {
  const t = topology({ uplink: nicCaps({ tso: false }), overrides: { vm1: { budget: { cpuNsPerSec: 2_000_000, burstNs: 2_000_000, action: 'drop' } } } });
  { const tick = ticking(t); t.sw.fillClockNs = (o) => { o[0] = tick(); }; }
  learnAll(t);
  const f = tcpFrame('vm1', 'peer', 10000);
  inject(t.sw, t.ports.vm1, [f, f, f, f], tso());
  assert.equal(t.be.peer.take().length, 14, 'two super-frames within budget');
  assert.deepEqual(t.ports.peer.counters.dropsByReason('tx'), { 'offload-budget': 2 });
  // Work that needs no software (pass-through to a VM) is not limited.
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'vm2', 10000)], tso());
  assert.equal(t.be.vm2.take().length, 1);
  t.clock.ms += 1000;
  inject(t.sw, t.ports.vm1, [f], tso());
  assert.equal(t.be.peer.take().length, 7, 'refilled after a second');
  assert.ok(t.ports.vm1.counters.swCpuNs >= 3_000_000);
  assertBalanced(t);
});

test('over budget, "throttle": packets wait in a backlog and go when the budget refills; a full backlog drops', () => {
  const t = topology({ uplink: nicCaps({ tso: false }), overrides: { vm1: { budget: { cpuNsPerSec: 1_000_000, burstNs: 1_000_000, action: 'throttle', backlog: 3 } } } });
  { const tick = ticking(t); t.sw.fillClockNs = (o) => { o[0] = tick(); }; }
  learnAll(t);
  const frames = Array.from({ length: 6 }, (_, i) => tcpFrame('vm1', 'peer', 3000, { seq: 1 + i * 3000 }));
  inject(t.sw, t.ports.vm1, frames, tso());
  const c = t.ports.vm1.counters;
  assert.equal(t.be.peer.take().length, 3, 'first super-frame went');
  assert.equal(c.pending, 3, 'three parked');
  assert.deepEqual(c.dropsByReason('rx'), { 'backlog-full': 2 });
  assert.ok(c.balanced, 'received = forwarded + dropped + pending');
  assertBalanced(t);
  for (let s = 0; s < 3; s++) {
    t.clock.ms += 1000;
    t.sw.tick();
  }
  const got = t.be.peer.take();
  assert.equal(got.length, 9, 'the backlog drained, in order');
  assert.equal(c.pending, 0);
  assert.equal(c.throttled, 3);
  assertBalanced(t);
});

test('trace shows every stage and, per destination, why it gets hardware, pass-through or software — and changes nothing', () => {
  const t = topology({ uplink: nicCaps({ tso: false }) });
  const f = tcpFrame('vm1', 'vm2', 20000);
  const snapshot = () => JSON.stringify(t.sw.listPorts().map((p) => p.counters.snapshot()));
  const before = snapshot();
  const macsBefore = t.sw.macs.size;
  const tr = t.sw.trace('vm1', f, tso());
  assert.equal(snapshot(), before, 'no counters touched');
  assert.equal(t.sw.macs.size, macsBefore, 'nothing learned');
  assert.equal(t.pool.inUse, 0);
  assert.equal(tr.outcome, 'forwarded');
  assert.deepEqual(tr.stages.map((s) => `${s.stage}:${s.verdict}`), ['validate:ok', 'ingress:allow', 'forward:ok']);
  assert.match(tr.stages[2]!.detail!, /unknown unicast/);
  const by = Object.fromEntries(tr.destinations.map((d) => [d.port, d]));
  assert.equal(by['vm2']!.offload, 'pass-through');
  assert.equal(by['host']!.offload, 'pass-through');
  assert.equal(by['legacy']!.offload, 'software');
  assert.equal(by['legacy']!.segments, 14);
  assert.equal(by['legacy']!.partialChecksum, false);
  assert.equal(by['peer']!.offload, 'software');
  assert.equal(by['peer']!.partialChecksum, true);
  assert.match(by['peer']!.why, /lacks TSO/);
  for (const b of Object.values(t.be)) assert.equal(b.sent.length, 0, 'nothing delivered');
});

test('trace reports drops with their reason', () => {
  const t = topology({ overrides: { vm1: { security: { allowedMacs: [MAC.vm1] } } } });
  const tr = t.sw.trace('vm1', tcpFrame('vm2', 'host', 100), tso());
  assert.equal(tr.outcome, 'spoofed-mac');
  const bad = t.sw.trace('vm1', tcpFrame('vm1', 'host', 3000), (p) => { tso()(p); p.meta.csumStart = 20; });
  assert.equal(bad.outcome, 'csum-start-mismatch');
  assert.equal(t.pool.inUse, 0);
});

test('a super-frame to a NIC that can segment but with gso_size beyond the NIC\'s MTU is dropped, never sent oversize', () => {
  const t = topology({ overrides: { peer: { mtu: 1400 } } });
  learnAll(t);
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 6000)], tso(1448));
  assert.equal(t.be.peer.sent.length, 0);
  assert.deepEqual(t.ports.peer.counters.dropsByReason('tx'), { 'gso-exceeds-mtu': 1 });
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 6000)], tso(1300));
  assert.equal(t.be.peer.take()[0]!.meta.gsoType, GsoType.TCPV4);
  assertBalanced(t);
});
