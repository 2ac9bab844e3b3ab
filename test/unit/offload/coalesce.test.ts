import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { buildFrame, type FrameSpec } from '../../../src/wire/builder.js';
import { UdpCoalescer, MAX_SEGMENTS, eligible } from '../../../src/offload/coalesce.js';
import { segment } from '../../../src/offload/segment.js';
import { completeChecksum } from '../../../src/offload/checksum.js';
import { BufferPool } from '../../../src/packet/pool.js';
import { Batch } from '../../../src/packet/batch.js';
import { GsoType, RxCsum } from '../../../src/packet/meta.js';
import type { Packet } from '../../../src/packet/packet.js';
import { checksumsOf, hex, packetFrom } from '../../util/frames.js';
import { gcCountDuring } from '../../util/alloc.js';

const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 1024 }, { bufferSize: 66560, count: 64 }] });
const CAP = 128;
const co = new UdpCoalescer(CAP, pool);

interface Dgram {
  flow?: number;        // source port offset: a different flow
  v6?: boolean;
  payload: number;
  ident?: number;
  ttl?: number;
  csum?: 'partial' | 'verified' | 'unknown' | 'zero';
  tcp?: boolean;        // not a datagram at all
  seed?: number;
}

function frameOf(d: Dgram): Uint8Array {
  const spec: FrameSpec = {
    srcMac: 0x020000000001, dstMac: 0x020000000002,
    ip: d.v6 ? { version: 6, src: '2001:db8::1', dst: '2001:db8::2', hopLimit: d.ttl ?? 64 }
      : { version: 4, src: '198.18.0.1', dst: '198.18.0.2', ident: d.ident ?? 0, dontFragment: true, ttl: d.ttl ?? 64 },
    l4: d.tcp ? { kind: 'tcp', sport: 40000 + (d.flow ?? 0), dport: 5201, seq: 1, flags: 0x10 }
      : { kind: 'udp', sport: 4000 + (d.flow ?? 0), dport: 5000 },
    payload: Uint8Array.from({ length: d.payload }, (_, i) => (i * 7 + (d.seed ?? 0)) & 0xff),
    checksum: d.csum === 'partial' || d.csum === undefined ? 'partial' : d.csum === 'zero' ? 'zero' : 'full',
  };
  return buildFrame(spec).frame;
}

function packetOf(d: Dgram): Packet {
  const p = packetFrom(pool, frameOf(d));
  const partial = d.csum === 'partial' || d.csum === undefined;
  if (partial) {
    p.meta.needsCsum = true;
    p.meta.csumStart = d.v6 ? 54 : 34;
    p.meta.csumOffset = d.tcp ? 16 : 6;
  } else if (d.csum === 'verified' || d.csum === 'zero') {
    p.meta.rxCsum = RxCsum.VERIFIED;
  }
  return p;
}

/** The frame as a receiver sees it in the end: checksum completed. */
function finished(p: Packet): string {
  const c = packetFrom(pool, p.buf.subarray(p.off, p.off + p.len));
  c.meta.copyFrom(p.meta);
  assert.equal(completeChecksum(c), null);
  const h = hex(c.buf.subarray(c.off, c.off + c.len));
  c.release();
  return h;
}

/** What the guest's kernel makes of the output: super-frames split (our segmenter is byte-identical to the kernel's GSO). */
function split(out: Packet[]): string[] {
  const frames: string[] = [];
  const b = new Batch(256);
  for (const p of out) {
    if (p.meta.gsoType === GsoType.UDP_L4) {
      assert.equal(segment(p, b), null);
      for (let i = 0; i < b.count; i++) frames.push(finished(b.get(i)));
      b.releaseAll();
    } else {
      frames.push(finished(p));
    }
  }
  return frames;
}

function runOn(ds: Dgram[], v4 = true, v6 = true): { out: Packet[]; before: string[] } {
  const packets: Packet[] = ds.map(packetOf);
  const before = packets.map(finished);
  const tci = new Int32Array(CAP).fill(-1);
  const n = co.run(packets, tci, packets.length, v4, v6);
  return { out: packets.slice(0, n), before };
}

function release(out: Packet[]): void {
  for (const p of out) p.release();
}

const seq = (n: number, payload: number, o: Partial<Dgram> = {}): Dgram[] =>
  Array.from({ length: n }, (_, i) => ({ payload, ident: (o.ident ?? 100) + i, seed: i, ...o, ...(o.ident !== undefined ? { ident: o.ident + i } : {}) }));

test('64 datagrams of one flow become one USO super-frame the receiver splits back byte for byte', () => {
  const { out, before } = runOn(seq(MAX_SEGMENTS, 22));
  assert.equal(out.length, 1);
  const s = out[0]!;
  assert.equal(s.meta.gsoType, GsoType.UDP_L4);
  assert.equal(s.meta.gsoSize, 22);
  assert.equal(s.meta.needsCsum, true);
  assert.equal(s.meta.csumStart, 34);
  assert.equal(s.meta.csumOffset, 6);
  assert.equal(s.meta.hdrLen, 42);
  assert.equal(s.len, 42 + 64 * 22);
  assert.equal(s.buf[s.off + 18]! * 256 + s.buf[s.off + 19]!, 100, 'first datagram\'s IPv4 identification');
  assert.equal(checksumsOf(finishedFrame(s)), RxCsum.VERIFIED, 'super-frame headers and completed checksum are valid');
  assert.deepEqual([co.frames, co.datagrams], [1, 64]);
  assert.deepEqual(split(out), before);
  release(out);
  assert.equal(pool.stats().reduce((a, c) => a + c.inUse, 0), 0, 'every datagram given back');
});

function finishedFrame(p: Packet): Uint8Array {
  return Uint8Array.from(Buffer.from(finished(p), 'hex'));
}

test('IPv6 datagrams coalesce only when the receiver takes IPv6 super-frames', () => {
  let r = runOn(seq(10, 100, { v6: true }), true, true);
  assert.equal(r.out.length, 1);
  assert.equal(r.out[0]!.meta.csumStart, 54);
  assert.deepEqual(split(r.out), r.before);
  release(r.out);
  r = runOn(seq(10, 100, { v6: true }), true, false);
  assert.equal(r.out.length, 10);
  assert.deepEqual(split(r.out), r.before);
  release(r.out);
});

test('a shorter datagram ends the run; a larger one, a gap in IPv4 identification, another TTL start a new one', () => {
  const ds: Dgram[] = [
    ...seq(3, 50, { ident: 1 }), { payload: 20, ident: 4 },            // run of 4, closed by the shorter one
    { payload: 50, ident: 5 }, { payload: 60, ident: 6 },               // larger than the first: new run
    { payload: 60, ident: 9 },                                          // identification gap
    { payload: 60, ident: 10, ttl: 5 },                                 // TTL differs
    { payload: 60, ident: 11, ttl: 5 },
  ];
  const { out, before } = runOn(ds);
  assert.deepEqual(out.map((p) => p.meta.gsoType === GsoType.UDP_L4 ? `uso${(p.len - 42) / 1}` : `${p.len - 42}`),
    ['uso170', '50', '60', '60', 'uso120']);
  assert.deepEqual(split(out), before);
  release(out);
});

test('what is not coalesced: unknown or absent checksums, a bad IPv4 header checksum, TCP, and nothing passes it', () => {
  let r = runOn([...seq(3, 30, { csum: 'unknown' }), ...seq(3, 30, { csum: 'zero', ident: 10 })]);
  assert.equal(r.out.length, 6);
  assert.equal(co.frames, 0);
  release(r.out);
  // verified checksums do coalesce
  r = runOn(seq(4, 30, { csum: 'verified' }));
  assert.equal(r.out.length, 1);
  assert.deepEqual(split(r.out), r.before);
  release(r.out);
  // a bad IPv4 header checksum
  const bad = packetOf({ payload: 30, ident: 1 });
  bad.buf[bad.off + 24]! ^= 0xff;
  assert.equal(eligible(bad, true, true), -1);
  bad.release();
  // a TCP segment between datagrams of one flow: the datagrams after it stay after it
  r = runOn([...seq(2, 30, { ident: 1 }), { payload: 10, tcp: true }, ...seq(2, 30, { ident: 3 })]);
  assert.equal(r.out.length, 3);
  assert.deepEqual(split(r.out), r.before);
  release(r.out);
});

test('interleaved flows coalesce per flow, keeping each flow\'s order', () => {
  const ds: Dgram[] = [];
  for (let i = 0; i < 12; i++) ds.push({ flow: i % 3, payload: 40, ident: 1000 * (i % 3) + Math.floor(i / 3), seed: i });
  const { out, before } = runOn(ds);
  assert.equal(out.length, 3);
  const got = split(out);
  for (let f = 0; f < 3; f++) {
    assert.deepEqual(got.filter((_, i) => Math.floor(i / 4) === f), before.filter((_, i) => i % 3 === f));
  }
  release(out);
});

test('no free super-frame buffer: the datagrams go as they came', () => {
  const small = new BufferPool({ classes: [{ bufferSize: 2048, count: 20 }] }); // every buffer holds a datagram
  const c = new UdpCoalescer(CAP, small);
  const packets = seq(20, 100).map((d) => { const p = packetFrom(small, frameOf(d)); p.meta.needsCsum = true; p.meta.csumStart = 34; p.meta.csumOffset = 6; return p; });
  const before = packets.map((p) => hex(p.buf.subarray(p.off, p.end)));
  const n = c.run(packets, new Int32Array(CAP), 20, true, true);
  assert.equal(n, 20);
  assert.deepEqual(packets.map((p) => hex(p.buf.subarray(p.off, p.end))), before);
  for (const p of packets) p.release();
});

test('property: any mix of flows, sizes, identifications and checksum states splits back to the same frames per flow', () => {
  const arbD: fc.Arbitrary<Dgram> = fc.record({
    flow: fc.integer({ min: 0, max: 2 }), v6: fc.boolean(), payload: fc.oneof(fc.constant(22), fc.integer({ min: 0, max: 1400 })),
    ident: fc.integer({ min: 0, max: 3 }), ttl: fc.constantFrom(64, 64, 64, 1),
    csum: fc.constantFrom('partial', 'partial', 'verified', 'unknown', 'zero'), tcp: fc.constantFrom(false, false, false, true),
    seed: fc.integer({ min: 0, max: 255 }),
  });
  fc.assert(fc.property(fc.array(arbD, { minLength: 0, maxLength: 100 }), fc.boolean(), fc.boolean(), (raw, v4, v6) => {
    // identifications mostly consecutive per flow, as a socket's are
    const next = new Map<string, number>();
    const ds = raw.map((d) => {
      const k = `${d.flow}/${d.v6}/${d.tcp}`;
      const id = (next.get(k) ?? 65530) + (d.ident === 3 ? 2 : 0);
      next.set(k, (id + 1) & 0xffff);
      return { ...d, ident: id & 0xffff };
    });
    const { out, before } = runOn(ds, v4, v6);
    const got = split(out);
    assert.equal(got.length, before.length);
    // per flow (addresses, ports, protocol) the same frames in the same order
    const flowOf = (h: string) => {
      const b = Buffer.from(h, 'hex');
      const v6f = b.readUInt16BE(12) === 0x86dd;
      return v6f ? `6/${b[20]}/${b.subarray(22, 58).toString('hex')}` : `4/${b[23]}/${b.subarray(26, 38).toString('hex')}`;
    };
    const group = (fs: string[]) => {
      const m = new Map<string, string[]>();
      for (const h of fs) m.set(flowOf(h), [...(m.get(flowOf(h)) ?? []), h]);
      return [...m.entries()].sort();
    };
    assert.deepEqual(group(got), group(before));
    // TCP segments (never coalesced) keep their place: the same ones, with as many frames before each
    const isTcp = (h: string) => { const b = Buffer.from(h, 'hex'); return b[b.readUInt16BE(12) === 0x86dd ? 20 : 23] === 6; };
    const tcpAt = (fs: string[]) => fs.flatMap((h, i) => isTcp(h) ? [`${i}:${h}`] : []);
    assert.deepEqual(tcpAt(got), tcpAt(before));
    release(out);
    assert.equal(pool.stats().reduce((a, c) => a + c.inUse, 0), 0);
  }), { numRuns: 300 });
});

test('coalescing a batch allocates nothing (no GC over 20 000 batches)', async () => {
  const frames = seq(64, 22).map(frameOf);
  const packets: Packet[] = new Array(64);
  const tci = new Int32Array(CAP).fill(-1);
  const gcs = await gcCountDuring(() => {
    for (let k = 0; k < 20_000; k++) {
      for (let i = 0; i < 64; i++) {
        const p = pool.take(frames[i]!.length)!;
        p.write(frames[i]!);
        p.meta.needsCsum = true; p.meta.csumStart = 34; p.meta.csumOffset = 6;
        packets[i] = p;
      }
      const n = co.run(packets, tci, 64, true, true);
      for (let i = 0; i < n; i++) packets[i]!.release();
    }
  });
  assert.equal(co.frames, 1);
  assert.equal(gcs, 0);
});
