// URO in the switch: which destinations get coalesced UDP, and what the
// counters say. (The coalescing itself: test/unit/offload/coalesce.test.ts;
// with real guest kernels: test/e2e/uro.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { topology, learnAll, assertBalanced, guestCaps, MAC, IP4, type Node, type Topology } from '../../util/topology.js';
import { inject } from '../../../src/io/memory.js';
import { buildFrame } from '../../../src/wire/builder.js';
import { GsoType } from '../../../src/packet/meta.js';
import { Batch } from '../../../src/packet/batch.js';
import { segment } from '../../../src/offload/segment.js';
import { completeChecksum } from '../../../src/offload/checksum.js';
import { packetFrom } from '../../util/frames.js';

/** `n` datagrams of one flow as a Linux guest sends them: consecutive IPv4 identification, checksum partial. */
function datagrams(to: Node | 'broadcast', n: number, payload = 100): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => buildFrame({
    srcMac: MAC.vm1, dstMac: to === 'broadcast' ? 0xffffffffffff : MAC[to],
    ip: { version: 4, src: IP4.vm1, dst: to === 'broadcast' ? '198.18.255.255' : IP4[to], ident: 500 + i, dontFragment: true },
    l4: { kind: 'udp', sport: 4000, dport: 5000 }, payload, checksum: 'partial',
  }).frame);
}

function send(t: Topology, frames: Uint8Array[]): void {
  inject(t.sw, t.ports.vm1, frames, (p) => { p.meta.needsCsum = true; p.meta.csumStart = 34; p.meta.csumOffset = 6; });
}

/** Frames as the receiver ends up with them: super-frames split by the (kernel-identical) segmenter, checksums completed. */
function received(t: Topology, frames: { frame: Uint8Array; meta: { gsoType: number } }[]): string[] {
  const out: string[] = [];
  const b = new Batch(128);
  const done = (p: ReturnType<typeof packetFrom>) => { completeChecksum(p); out.push(Buffer.from(p.buf.subarray(p.off, p.end)).toString('hex')); };
  for (const f of frames) {
    const p = packetFrom(t.pool, f.frame);
    Object.assign(p.meta, f.meta);
    if (p.meta.gsoType === GsoType.UDP_L4) {
      assert.equal(segment(p, b), null);
      for (let i = 0; i < b.count; i++) done(b.get(i));
      b.releaseAll();
    } else {
      done(p);
    }
    p.release();
  }
  return out;
}

function completed(t: Topology, frames: Uint8Array[]): string[] {
  return frames.map((f) => {
    const p = packetFrom(t.pool, f);
    p.meta.needsCsum = true; p.meta.csumStart = 34; p.meta.csumOffset = 6;
    completeChecksum(p);
    const h = Buffer.from(p.buf.subarray(p.off, p.end)).toString('hex');
    p.release();
    return h;
  });
}

test('a burst of one flow reaches a VM as one USO super-frame; counters say so', () => {
  const t = topology();
  learnAll(t);
  const tx0 = t.ports.vm2.counters.txPackets;
  const fs = datagrams('vm2', 10);
  send(t, fs);
  const got = t.be.vm2.take();
  assert.equal(got.length, 1);
  assert.equal(got[0]!.meta.gsoType, GsoType.UDP_L4);
  assert.equal(got[0]!.meta.gsoSize, 100);
  const c = t.ports.vm2.counters;
  assert.deepEqual([c.txPackets - tx0, c.txCoalesced, c.txCoalescedFrames], [1, 10, 1]);
  assert.deepEqual((c.snapshot()['offload'] as { coalesced: unknown }).coalesced, { datagrams: 10, frames: 1 });
  assert.deepEqual(received(t, got), completed(t, fs));
  assertBalanced(t);
});

test('flooded: vNICs get the super-frame, the legacy NIC and the uplink get the datagrams', () => {
  const t = topology();
  learnAll(t);
  const fs = datagrams('broadcast', 8);
  send(t, fs);
  for (const n of ['vm2', 'host'] as const) {
    const got = t.be[n].take();
    assert.equal(got.length, 1, n);
    assert.deepEqual(received(t, got), completed(t, fs), n);
  }
  for (const n of ['legacy', 'peer'] as const) {
    const got = t.be[n].take();
    assert.equal(got.length, 8, n);
    assert.ok(got.every((f) => f.meta.gsoType === GsoType.NONE), `${n}: no super-frame`);
    assert.equal(t.ports[n].counters.txCoalesced, 0);
  }
  assertBalanced(t);
});

test('not coalesced: uro off, pass-through off, or a guest that does not take USO super-frames', () => {
  const noUro = guestCaps();
  noUro.uro = { v4: false, v6: false };
  for (const [what, opts] of [
    ['uro: false', { overrides: { vm2: { uro: false } } }],
    ['passThrough: false', { overrides: { vm2: { passThrough: false } } }],
  ] as const) {
    const t = topology(opts);
    learnAll(t);
    const fs = datagrams('vm2', 10);
    send(t, fs);
    const got = t.be.vm2.take();
    assert.equal(got.length, 10, what);
    assert.equal(t.ports.vm2.counters.txCoalesced, 0, what);
    assert.deepEqual(received(t, got), completed(t, fs), what);
    assertBalanced(t);
  }
  const t = topology();
  learnAll(t);
  t.ports.vm2.deviceCaps = noUro;
  send(t, datagrams('vm2', 10));
  assert.equal(t.be.vm2.take().length, 10, 'guest without USO receive');
  // and switched back on at run time
  t.ports.vm2.deviceCaps = guestCaps();
  send(t, datagrams('vm2', 10));
  assert.equal(t.be.vm2.take().length, 1);
  assertBalanced(t);
});
