import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  topology, nicCaps, tcpFrame, udpFrame, tso, uso, csumOnly, learnAll, assertBalanced, type Topology,
} from '../../util/topology.js';
import { inject, type SentFrame } from '../../../src/io/memory.js';
import { GsoType, RxCsum } from '../../../src/packet/meta.js';
import { checksumsOf, layoutOf } from '../../util/frames.js';

/** Payload bytes of delivered frames, concatenated (for integrity checks). */
function payloadOf(frames: SentFrame[]): Uint8Array {
  const parts = frames.map((f) => { const l = layoutOf(f.frame); return f.frame.subarray(l.payloadOff, l.ipEnd); });
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function originalPayload(frame: Uint8Array): Uint8Array {
  const l = layoutOf(frame);
  return frame.slice(l.payloadOff, l.ipEnd);
}

function assertAllFit(frames: SentFrame[], mtu = 1500): void {
  for (const f of frames) assert.ok(f.frame.length - 14 <= mtu, `frame of ${f.frame.length} B above MTU ${mtu}`);
}

function send(t: Topology, from: 'vm1' | 'vm2' | 'host' | 'legacy' | 'peer', frames: Uint8Array[], prep?: Parameters<typeof inject>[3]): void {
  inject(t.sw, t.ports[from], frames, prep);
}

test('VM→VM: a TSO super-frame passes through whole to a vNIC that accepts large frames', () => {
  const t = topology();
  learnAll(t);
  const f = tcpFrame('vm1', 'vm2', 30000);
  send(t, 'vm1', [f], tso());
  const got = t.be.vm2.take();
  assert.equal(got.length, 1, 'one transfer');
  assert.deepEqual(got[0]!.frame, f);
  assert.equal(got[0]!.meta.gsoType, GsoType.TCPV4);
  assert.equal(got[0]!.meta.gsoSize, 1448);
  assert.ok(got[0]!.meta.needsCsum, 'partial checksum travels with it');
  assert.equal(t.ports.vm2.counters.txPassThrough, 1);
  assert.equal(t.ports.vm1.counters.swPackets, 0, 'no software work');
  assert.equal(t.be.legacy.sent.length + t.be.host.sent.length + t.be.peer.sent.length, 0, 'known unicast goes to one port');
  assertBalanced(t);
});

test('VM→VM with pass-through switched off: segmented in software, partial checksums for the guest', () => {
  const t = topology({ overrides: { vm2: { passThrough: false } } });
  learnAll(t);
  const f = tcpFrame('vm1', 'vm2', 10000);
  send(t, 'vm1', [f], tso());
  const got = t.be.vm2.take();
  assert.equal(got.length, 7);
  assertAllFit(got);
  for (const s of got) {
    assert.equal(s.meta.gsoType, GsoType.NONE);
    assert.equal(s.meta.needsCsum, false, 'no pass-through means no partial checksum either');
    assert.equal(s.meta.rxCsum, RxCsum.VERIFIED, 'switch-computed checksums are marked verified');
    assert.equal(checksumsOf(s.frame), RxCsum.VERIFIED);
  }
  assert.deepEqual(payloadOf(got), originalPayload(f));
  assert.equal(t.ports.vm1.counters.swPackets, 1, 'work charged to the sender');
  assert.equal(t.ports.vm2.counters.swPackets, 0);
  assert.equal(t.ports.vm2.counters.txSoftware, 1);
  assert.equal(t.ports.vm2.counters.txSegments, 7);
  assertBalanced(t);
});

test('VM→legacy: only MTU-sized frames with complete checksums, never metadata', () => {
  const t = topology();
  learnAll(t);
  for (const v6 of [false, true]) {
    const mss = v6 ? 1440 : 1448;
    const f = tcpFrame('vm1', 'legacy', 20000, { v6 });
    send(t, 'vm1', [f], tso(mss, v6));
    const got = t.be.legacy.take();
    assert.equal(got.length, Math.ceil(20000 / mss));
    assertAllFit(got);
    for (const s of got) assert.equal(checksumsOf(s.frame), RxCsum.VERIFIED);
    assert.deepEqual(payloadOf(got), originalPayload(f));
  }
  // Checksum offload alone is done too.
  const c = tcpFrame('vm1', 'legacy', 500);
  send(t, 'vm1', [c], csumOnly());
  const [one] = t.be.legacy.take();
  assert.equal(checksumsOf(one!.frame), RxCsum.VERIFIED);
  assertBalanced(t);
});

test('VM→uplink with TSO: hardware — the super-frame and its metadata go down to the NIC', () => {
  const t = topology({ uplink: nicCaps({ tso: true }) });
  learnAll(t);
  const f = tcpFrame('vm1', 'peer', 60000);
  send(t, 'vm1', [f], tso());
  const got = t.be.peer.take();
  assert.equal(got.length, 1);
  assert.equal(got[0]!.meta.gsoType, GsoType.TCPV4);
  assert.equal(t.ports.peer.counters.txHardware, 1);
  assert.equal(t.ports.vm1.counters.swPackets, 0);
  assertBalanced(t);
});

test('VM→uplink without TSO: software segmentation, checksums left to the NIC; without checksum offload too: full', () => {
  const t = topology({ uplink: nicCaps({ tso: false }) });
  learnAll(t);
  const f = tcpFrame('vm1', 'peer', 10000, { v6: true });
  send(t, 'vm1', [f], tso(1440, true));
  let got = t.be.peer.take();
  assert.equal(got.length, 7);
  assertAllFit(got);
  for (const s of got) { assert.ok(s.meta.needsCsum); assert.equal(s.meta.csumStart, 54); }
  t.sw.updateCapabilities('peer', nicCaps({ tso: false, csum: false }));
  send(t, 'vm1', [f], tso(1440, true));
  got = t.be.peer.take();
  assert.equal(got.length, 7);
  for (const s of got) { assert.equal(s.meta.needsCsum, false); assert.equal(checksumsOf(s.frame), RxCsum.VERIFIED); }
  assert.equal(t.ports.peer.counters.txSoftware, 2);
  assertBalanced(t);
});

test('USO super-frames: hardware where the NIC has it, software datagrams elsewhere', () => {
  const t = topology({ uplink: nicCaps({ uso: true }) });
  learnAll(t);
  const f = udpFrame('vm1', 'peer', 6000);
  send(t, 'vm1', [f], uso(1400));
  assert.equal(t.be.peer.take()[0]!.meta.gsoType, GsoType.UDP_L4);
  const g = udpFrame('vm1', 'legacy', 6000, true);
  send(t, 'vm1', [g], uso(1400, true));
  const got = t.be.legacy.take();
  assert.equal(got.length, 5);
  for (const s of got) assert.equal(checksumsOf(s.frame), RxCsum.VERIFIED);
  assert.deepEqual(payloadOf(got), originalPayload(g));
  assertBalanced(t);
});

test('flooding one super-frame: whole to the vNICs, hardware to the uplink, segmented for the legacy NIC', () => {
  const t = topology();
  // Nothing learned: the destination is unknown and the frame floods.
  const f = tcpFrame('vm1', 'vm2', 20000);
  send(t, 'vm1', [f], tso());
  const vm2 = t.be.vm2.take();
  const host = t.be.host.take();
  const peer = t.be.peer.take();
  const legacy = t.be.legacy.take();
  assert.equal(vm2.length, 1);
  assert.equal(vm2[0]!.meta.gsoType, GsoType.TCPV4);
  assert.deepEqual(vm2[0]!.frame, f, 'the shared original is untouched by the others\' treatment');
  assert.equal(host.length, 1);
  assert.equal(peer.length, 1);
  assert.equal(peer[0]!.meta.gsoType, GsoType.TCPV4);
  assert.equal(legacy.length, 14);
  assertAllFit(legacy);
  for (const s of legacy) assert.equal(checksumsOf(s.frame), RxCsum.VERIFIED);
  assert.deepEqual(payloadOf(legacy), originalPayload(f));
  assert.equal(t.ports.vm1.counters.forwarded, 1);
  assert.equal(t.ports.vm1.counters.swPackets, 1, 'segmented once for all who need it');
  assertBalanced(t);
});

test('flooding a partial-checksum frame: pass-through keeps it partial while the legacy copy is completed', () => {
  const t = topology({ uplink: nicCaps({ csum: false, tso: false }) });
  const f = tcpFrame('vm1', 'vm2', 800);
  send(t, 'vm1', [f], csumOnly());
  const [a] = t.be.vm2.take();
  assert.ok(a!.meta.needsCsum);
  assert.deepEqual(a!.frame, f, 'field still holds the pseudo-header sum');
  for (const n of ['legacy', 'peer'] as const) {
    const [b] = t.be[n].take();
    assert.equal(b!.meta.needsCsum, false);
    assert.equal(checksumsOf(b!.frame), RxCsum.VERIFIED, n);
  }
  assertBalanced(t);
});

test('receive checksum: the NIC\'s verdict reaches the vNIC; a guest\'s claim does not; nothing unverified is marked verified', () => {
  const t = topology();
  learnAll(t);
  const f = tcpFrame('peer', 'vm1', 100, { checksum: 'full' });
  send(t, 'peer', [f], (p) => { p.meta.rxCsum = RxCsum.VERIFIED; });
  assert.equal(t.be.vm1.take()[0]!.meta.rxCsum, RxCsum.VERIFIED);
  send(t, 'peer', [f]);
  assert.equal(t.be.vm1.take()[0]!.meta.rxCsum, RxCsum.UNKNOWN, 'the NIC did not say so');
  send(t, 'vm2', [tcpFrame('vm2', 'vm1', 100, { checksum: 'full' })], (p) => { p.meta.rxCsum = RxCsum.VERIFIED; });
  assert.equal(t.be.vm1.take()[0]!.meta.rxCsum, RxCsum.UNKNOWN, 'a guest cannot vouch for its own checksum');
  assertBalanced(t);
});

test('uplink TSO switched off and on while traffic flows: nothing lost, nothing sent unsegmented', () => {
  const t = topology();
  learnAll(t);
  const forwardedBefore = t.ports.vm1.counters.forwarded;
  const frames = Array.from({ length: 40 }, (_, i) => tcpFrame('vm1', 'peer', 8000, { seq: 1 + i * 8000 }));
  let hw = 0, segs = 0;
  for (let i = 0; i < frames.length; i++) {
    if (i === 10) t.sw.updateCapabilities('peer', nicCaps({ tso: false }));
    if (i === 20) t.sw.updateCapabilities('peer', nicCaps({ tso: false, csum: false }));
    if (i === 30) t.sw.updateCapabilities('peer', nicCaps({ tso: true }));
    send(t, 'vm1', [frames[i]!], tso());
    const got = t.be.peer.take();
    if (i < 10 || i >= 30) {
      assert.equal(got.length, 1);
      assert.equal(got[0]!.meta.gsoType, GsoType.TCPV4);
      hw++;
    } else {
      assert.equal(got.length, 6, `frame ${i}`);
      assertAllFit(got);
      for (const s of got) {
        assert.equal(s.meta.gsoType, GsoType.NONE, 'never a super-frame to a NIC that cannot segment');
        if (i >= 20) assert.equal(checksumsOf(s.frame), RxCsum.VERIFIED);
      }
      assert.deepEqual(payloadOf(got), originalPayload(frames[i]!));
      segs++;
    }
  }
  assert.equal(hw, 20);
  assert.equal(segs, 20);
  assert.equal(t.ports.peer.counters.txHardware, 20);
  assert.equal(t.ports.peer.counters.txSoftware, 20);
  assert.equal(t.ports.vm1.counters.forwarded - forwardedBefore, 40);
  assertBalanced(t);
});

test('VM→host: a host vNIC is treated like a synthetic one', () => {
  const t = topology();
  learnAll(t);
  send(t, 'vm1', [tcpFrame('vm1', 'host', 20000)], tso());
  assert.equal(t.be.host.take()[0]!.meta.gsoType, GsoType.TCPV4);
  assertBalanced(t);
});

test('a frame too large for the destination and without segmentation metadata is dropped, not segmented', () => {
  const t = topology({ overrides: { vm1: { mtu: 9000 } } });
  learnAll(t);
  send(t, 'vm1', [tcpFrame('vm1', 'legacy', 8000, { checksum: 'full' })]);
  assert.equal(t.be.legacy.sent.length, 0);
  assert.deepEqual(t.ports.legacy.counters.dropsByReason('tx'), { 'mtu-exceeded': 1 });
  assert.deepEqual(t.ports.vm1.counters.dropsByReason('rx'), { 'egress-dropped': 1 });
  assertBalanced(t);
});

test('frames from the uplink above its MTU are never taken for super-frames (VPP af_packet trap)', () => {
  const t = topology();
  learnAll(t);
  send(t, 'peer', [tcpFrame('peer', 'vm1', 9000, { checksum: 'full' })]);
  assert.equal(t.be.vm1.sent.length, 0);
  assert.deepEqual(t.ports.peer.counters.dropsByReason('rx'), { oversize: 1 });
  assertBalanced(t);
});

test('a super-frame whose payload fits one segment leaves as a plain packet, GSO cleared (Calico 11160)', () => {
  const t = topology();
  learnAll(t);
  send(t, 'vm1', [tcpFrame('vm1', 'peer', 1000)], tso(1448));
  const [got] = t.be.peer.take();
  assert.equal(got!.meta.gsoType, GsoType.NONE);
  assert.equal(got!.meta.gsoSize, 0);
  assert.ok(got!.meta.needsCsum, 'the checksum request stays');
  send(t, 'vm1', [tcpFrame('vm1', 'vm2', 1448)], tso(1448));
  assert.equal(t.be.vm2.take()[0]!.meta.gsoType, GsoType.NONE);
  assertBalanced(t);
});

test('csum_start/csum_offset are checked against the real headers (virtio-win netkvm trap)', () => {
  const t = topology();
  learnAll(t);
  const f = tcpFrame('vm1', 'vm2', 3000);
  // netkvm computed csum_start from a zero header offset: the IP header length only.
  send(t, 'vm1', [f], (p) => { tso()(p); p.meta.csumStart = 20; });
  send(t, 'vm1', [f], (p) => { tso()(p); p.meta.csumOffset = 6; });
  send(t, 'vm1', [udpFrame('vm1', 'vm2', 3000)], (p) => { uso()(p); p.meta.csumOffset = 16; });
  send(t, 'vm1', [f], (p) => { tso()(p); p.meta.gsoType = GsoType.TCPV6; });
  send(t, 'vm1', [f], (p) => { tso()(p); p.meta.gsoType = GsoType.UDP_L4; });
  assert.equal(t.be.vm2.sent.length, 0);
  assert.deepEqual(t.ports.vm1.counters.dropsByReason('rx'), {
    'csum-start-mismatch': 1, 'csum-offset-mismatch': 2, 'gso-proto-mismatch': 2,
  });
  assertBalanced(t);
});

test('NDIS-style large send (IPv4 total length and header checksum zero, IPv6 payload length zero) is fixed up, not dropped', () => {
  const t = topology({ overrides: { vm2: { passThrough: false } } });
  learnAll(t);
  const f4 = tcpFrame('vm1', 'vm2', 6000);
  f4.fill(0, 14 + 2, 14 + 4);
  f4.fill(0, 14 + 10, 14 + 12);
  send(t, 'vm1', [f4], tso());
  const got4 = t.be.vm2.take();
  assert.equal(got4.length, 5);
  for (const s of got4) assert.equal(checksumsOf(s.frame), RxCsum.VERIFIED);
  const f6 = tcpFrame('vm1', 'vm2', 6000, { v6: true });
  f6.fill(0, 14 + 4, 14 + 6);
  send(t, 'vm1', [f6], tso(1440, true));
  const got6 = t.be.vm2.take();
  assert.equal(got6.length, 5);
  for (const s of got6) assert.equal(checksumsOf(s.frame), RxCsum.VERIFIED);
  // Passed through whole, the frame is repaired too.
  const t2 = topology();
  learnAll(t2);
  const g = tcpFrame('vm1', 'vm2', 6000);
  g.fill(0, 14 + 2, 14 + 4);
  g.fill(0, 14 + 10, 14 + 12);
  inject(t2.sw, t2.ports.vm1, [g], tso());
  const [whole] = t2.be.vm2.take();
  assert.deepEqual(whole!.frame, tcpFrame('vm1', 'vm2', 6000));
  assertBalanced(t);
  assertBalanced(t2);
});

test('a legacy sender is never offered offloads, and metadata from it is refused', () => {
  const t = topology();
  learnAll(t);
  send(t, 'legacy', [tcpFrame('legacy', 'vm1', 3000)], tso());
  assert.equal(t.be.vm1.sent.length, 0);
  assert.deepEqual(t.ports.legacy.counters.dropsByReason('rx'), { 'legacy-offload': 1 });
  assert.deepEqual(t.ports.legacy.advertised.lso.v4, false);
  assertBalanced(t);
});

test('checksum and segmentation state survive every path, whichever queue a batch comes from', () => {
  const t = topology({ overrides: { vm2: { passThrough: false } } });
  learnAll(t);
  // Interleave batches as several receive queues of one port would deliver them.
  const queues = [0, 1, 2, 3].map((q) => Array.from({ length: 4 }, (_, i) => tcpFrame('vm1', q % 2 ? 'vm2' : 'legacy', 3000 + q * 100 + i, { seq: q * 1e6 + i })));
  for (let round = 0; round < 4; round++) {
    for (let q = 0; q < 4; q++) send(t, 'vm1', [queues[q]![round]!], tso(1000 + q * 100));
  }
  for (const n of ['vm2', 'legacy'] as const) {
    const got = t.be[n].take();
    assert.ok(got.length >= 16);
    for (const s of got) {
      assert.equal(checksumsOf(s.frame), RxCsum.VERIFIED);
      assert.ok(s.frame.length <= 1514);
    }
  }
  assertBalanced(t);
});

test('the MAC of the port itself matters not: learning decides; unknown destinations flood', () => {
  const t = topology();
  send(t, 'vm1', [tcpFrame('vm1', 'vm2', 10, { checksum: 'full' })]);
  for (const n of ['vm2', 'host', 'legacy', 'peer'] as const) assert.equal(t.be[n].take().length, 1, n);
  send(t, 'vm2', [tcpFrame('vm2', 'vm1', 10, { checksum: 'full' })]);
  assert.equal(t.be.vm1.take().length, 1, 'learned: vm1 is behind its port');
  assert.equal(t.be.host.take().length, 0);
  assertBalanced(t);
});
