import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { buildFrame, patternPayload, type FrameSpec, type Ipv4Spec, type Ipv6Spec } from '../../../src/wire/builder.js';
import { segment, segmentCount } from '../../../src/offload/segment.js';
import { BufferPool } from '../../../src/packet/pool.js';
import { Batch } from '../../../src/packet/batch.js';
import { GsoType, RxCsum } from '../../../src/packet/meta.js';
import { IpProtocol } from '../../../src/wire/ipv4.js';
import { EtherType } from '../../../src/wire/ethernet.js';
import { checksumsOf, packetFrom } from '../../util/frames.js';
import { gcCountDuring } from '../../util/alloc.js';

const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 1024 }, { bufferSize: 66560, count: 64 }] });
const out = new Batch(256);

const TS_OPTS = new Uint8Array([1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78]); // NOP NOP timestamps
const DST_OPTS = new Uint8Array([0x1e, 2, 0xaa, 0xbb]); // an RFC 3692 experimental option

const arbIp: fc.Arbitrary<Ipv4Spec | Ipv6Spec> = fc.oneof(
  fc.record({
    version: fc.constant(4 as const), src: fc.constant('198.18.0.1'), dst: fc.constant('198.18.7.9'),
    ident: fc.integer({ min: 0, max: 0xffff }), dontFragment: fc.boolean(),
    options: fc.constantFrom(new Uint8Array(0), new Uint8Array([0x94, 4, 0, 0]), new Uint8Array([1, 1, 1, 0])),
    ttl: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({
    version: fc.constant(6 as const), src: fc.constant('2001:db8::a'), dst: fc.constant('2001:db8:1::b'),
    flowLabel: fc.integer({ min: 0, max: 0xfffff }),
    ext: fc.constantFrom([], [{ type: IpProtocol.IPv6Opts, data: DST_OPTS }], [{ type: IpProtocol.HOPOPT }, { type: IpProtocol.IPv6Opts, data: DST_OPTS }]),
  }),
);
const arbVlans = fc.constantFrom([], [{ tpid: EtherType.VLAN, pcp: 3, dei: false, vid: 100 }],
  [{ tpid: EtherType.QINQ, pcp: 0, dei: false, vid: 7 }, { tpid: EtherType.VLAN, pcp: 5, dei: true, vid: 4094 }]);

function gsoTypeFor(ip: Ipv4Spec | Ipv6Spec, tcp: boolean): GsoType {
  return tcp ? (ip.version === 4 ? GsoType.TCPV4 : GsoType.TCPV6) : GsoType.UDP_L4;
}

/** What the kernel's GSO would send as segment i of `spec` (all fields derived independently). */
function expectedSegment(spec: FrameSpec, payload: Uint8Array, i: number, n: number, mss: number, partial: boolean): Uint8Array {
  const ip = spec.ip.version === 4 ? { ...spec.ip, ident: ((spec.ip.ident ?? 0) + i) & 0xffff } : spec.ip;
  let l4 = spec.l4;
  if (l4.kind === 'tcp') {
    let flags = l4.flags ?? 0x18;
    if (i > 0) flags &= ~0x80;
    if (i < n - 1) flags &= ~0x09;
    l4 = { ...l4, seq: ((l4.seq ?? 1) + i * mss) >>> 0, flags };
  }
  return buildFrame({ ...spec, ip, l4, payload: payload.subarray(i * mss, Math.min(payload.length, (i + 1) * mss)), checksum: partial ? 'partial' : 'full' }).frame;
}

function checkSegments(spec: FrameSpec, mss: number, partial: boolean): void {
  const payload = spec.payload as Uint8Array;
  const built = buildFrame({ ...spec, checksum: 'partial' });
  const p = packetFrom(pool, built.frame);
  p.meta.gsoType = gsoTypeFor(spec.ip, spec.l4.kind === 'tcp');
  p.meta.gsoSize = mss;
  p.meta.needsCsum = true;
  p.meta.csumStart = built.l4Off;
  p.meta.csumOffset = built.csumOffset;
  const inUse = pool.inUse;
  out.clear();
  try {
    checkOutput(spec, payload, built, p, mss, partial, inUse);
  } finally {
    out.releaseAll();
    p.release();
  }
  assert.equal(pool.inUse, inUse - 1);
}

function checkOutput(spec: FrameSpec, payload: Uint8Array, built: ReturnType<typeof buildFrame>, p: ReturnType<typeof packetFrom>, mss: number, partial: boolean, inUse: number): void {
  assert.equal(segment(p, out, { partialChecksum: partial }), null);
  const n = segmentCount(payload.length, mss);
  assert.equal(out.count, n);
  assert.equal(pool.inUse, inUse + n);
  const rejoined: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = out.get(i);
    const got = s.copyOut();
    assert.deepEqual(got, expectedSegment(spec, payload, i, n, mss, partial), `segment ${i}/${n}`);
    assert.ok(got.length <= built.payloadOff + mss);
    rejoined.push(...got.subarray(built.payloadOff));
    if (partial) {
      assert.ok(s.meta.needsCsum);
      assert.equal(s.meta.csumStart, built.l4Off);
      assert.equal(s.meta.csumOffset, built.csumOffset);
    } else {
      assert.equal(s.meta.needsCsum, false);
      assert.equal(checksumsOf(got), RxCsum.VERIFIED);
      assert.equal(s.meta.rxCsum, RxCsum.VERIFIED);
    }
    assert.equal(s.meta.gsoType, GsoType.NONE, 'segments are plain packets');
  }
  assert.deepEqual(new Uint8Array(rejoined), payload, 'segments reassemble to the payload');
}

test('property: TSO v4/v6 segments equal independently built kernel-style segments, reassemble, and check', () => {
  fc.assert(fc.property(
    arbIp, arbVlans, fc.integer({ min: 0, max: 12000 }), fc.integer({ min: 64, max: 1800 }),
    fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xff }), fc.boolean(), fc.boolean(),
    (ip, vlans, len, mss, seq, flags, withOpts, partial) => {
      const spec: FrameSpec = {
        ip, vlans, payload: patternPayload(len, seq & 0xff),
        l4: { kind: 'tcp', sport: 40000, dport: 5201, seq, flags: flags | 0x10, options: withOpts ? TS_OPTS : undefined },
      };
      checkSegments(spec, mss, partial);
    }), { numRuns: 300 });
});

test('property: USO (UDP_L4) v4/v6 datagrams equal independently built ones and reassemble', () => {
  fc.assert(fc.property(
    arbIp, arbVlans, fc.integer({ min: 1, max: 12000 }), fc.integer({ min: 100, max: 1800 }), fc.boolean(),
    (ip, vlans, len, mss, partial) => {
      const spec: FrameSpec = { ip, vlans, payload: patternPayload(len, 3), l4: { kind: 'udp', sport: 4433, dport: 443 } };
      checkSegments(spec, mss, partial);
    }), { numRuns: 200 });
});

test('IPv4 identification wraps at 16 bits and the TCP sequence at 32', () => {
  checkSegments({
    ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2', ident: 0xfffe },
    l4: { kind: 'tcp', sport: 1, dport: 2, seq: 0xffffff00, flags: 0x19 }, payload: patternPayload(5000),
  }, 1448, false);
});

test('a super-frame whose payload fits one segment becomes one ordinary packet', () => {
  const spec: FrameSpec = { ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' }, l4: { kind: 'tcp', sport: 1, dport: 2, flags: 0x99 }, payload: patternPayload(1000) };
  checkSegments(spec, 1448, false);
  checkSegments(spec, 1000, false);
});

test('64 KiB super-frames: the biggest a guest sends', () => {
  checkSegments({ ip: { version: 6, src: '2001:db8::1', dst: '2001:db8::2' }, l4: { kind: 'tcp', sport: 1, dport: 2, options: TS_OPTS }, payload: patternPayload(65535 - 40 - 32) }, 1428, false);
  checkSegments({ ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' }, l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: patternPayload(65535 - 40) }, 1448, true);
});

test('NDIS-style large send input (IPv4 total length and header checksum zero, IPv6 payload length zero) is fixed up', () => {
  const spec4: FrameSpec = { ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2', ident: 9 }, l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: patternPayload(4000) };
  const b4 = buildFrame({ ...spec4, checksum: 'zero' });
  b4.frame.fill(0, 14 + 2, 14 + 4);    // total length
  b4.frame.fill(0, 14 + 10, 14 + 12);  // header checksum
  const p = packetFrom(pool, b4.frame);
  p.meta.gsoType = GsoType.TCPV4; p.meta.gsoSize = 1448;
  out.clear();
  assert.equal(segment(p, out), null);
  assert.equal(out.count, 3);
  for (let i = 0; i < 3; i++) assert.deepEqual(out.get(i).copyOut(), expectedSegment(spec4, spec4.payload as Uint8Array, i, 3, 1448, false));
  out.releaseAll(); p.release();

  const spec6: FrameSpec = { ip: { version: 6, src: '2001:db8::1', dst: '2001:db8::2' }, l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: patternPayload(3000) };
  const b6 = buildFrame({ ...spec6, checksum: 'zero' });
  b6.frame.fill(0, 14 + 4, 14 + 6);
  const q = packetFrom(pool, b6.frame);
  q.meta.gsoType = GsoType.TCPV6; q.meta.gsoSize = 1440;
  assert.equal(segment(q, out), null);
  assert.equal(out.count, 3);
  for (let i = 0; i < 3; i++) assert.deepEqual(out.get(i).copyOut(), expectedSegment(spec6, spec6.payload as Uint8Array, i, 3, 1440, false));
  out.releaseAll(); q.release();
});

test('segmentation is only what the metadata says: gso type must match the headers', () => {
  const tcp4 = buildFrame({ ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' }, l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: 3000 }).frame;
  const udp6 = buildFrame({ ip: { version: 6, src: '2001:db8::1', dst: '2001:db8::2' }, l4: { kind: 'udp', sport: 1, dport: 2 }, payload: 3000 }).frame;
  const cases: [Uint8Array, GsoType, number, string][] = [
    [tcp4, GsoType.TCPV6, 1000, 'gso-proto-mismatch'],
    [tcp4, GsoType.UDP_L4, 1000, 'gso-proto-mismatch'],
    [udp6, GsoType.TCPV4, 1000, 'gso-proto-mismatch'],
    [udp6, GsoType.UDP, 1000, 'gso-unsupported'],
    [tcp4, GsoType.TCPV4, 0, 'gso-bad-size'],
    [tcp4, GsoType.NONE, 1000, 'gso-proto-mismatch'],
    [tcp4.subarray(0, 30), GsoType.TCPV4, 1000, 'gso-bad-headers'],
  ];
  for (const [f, t, size, want] of cases) {
    const p = packetFrom(pool, f);
    p.meta.gsoType = t; p.meta.gsoSize = size;
    out.clear();
    assert.equal(segment(p, out), want);
    assert.equal(out.count, 0);
    p.release();
  }
  const frag = tcp4.slice();
  frag[14 + 6] = 0x20;
  const p = packetFrom(pool, frag);
  p.meta.gsoType = GsoType.TCPV4; p.meta.gsoSize = 1000;
  assert.equal(segment(p, out), 'gso-fragment');
  p.release();
  assert.equal(pool.inUse, 0);
});

test('all or nothing: pool exhaustion and a full batch leave no segment and no buffer behind', () => {
  const tiny = new BufferPool({ classes: [{ bufferSize: 2048, count: 4 }, { bufferSize: 66560, count: 1 }] });
  const big = buildFrame({ ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' }, l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: 10000 }).frame;
  const p = packetFrom(tiny, big);
  p.meta.gsoType = GsoType.TCPV4; p.meta.gsoSize = 1448;
  const b = new Batch(64);
  assert.equal(segment(p, b), 'pool-exhausted');
  assert.equal(b.count, 0);
  assert.equal(tiny.inUse, 1);
  const small = new Batch(3);
  assert.equal(segment(p, small), 'batch-full');
  assert.equal(tiny.inUse, 1);
  p.release();
});

test('segmenting allocates nothing: 2 000 super-frames (90 000 segments) without a garbage collection', async () => {
  const f = buildFrame({ ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' }, l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: 65000 }).frame;
  const p = packetFrom(pool, f);
  p.meta.gsoType = GsoType.TCPV4; p.meta.gsoSize = 1448;
  const b = new Batch(64);
  const run = (n: number) => { for (let i = 0; i < n; i++) { segment(p, b); b.releaseAll(); } };
  run(200);
  const gcs = await gcCountDuring(() => run(2000));
  assert.equal(gcs, 0);
  p.release();
});
