import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool, DoubleFreeError } from '../../../src/packet/pool.js';
import { Batch } from '../../../src/packet/batch.js';
import { GsoType, RxCsum } from '../../../src/packet/meta.js';
import { gcCountDuring } from '../../util/alloc.js';

const small = () => new BufferPool({ classes: [{ bufferSize: 2048, count: 4 }, { bufferSize: 66560, count: 2 }], headroom: 128 });

test('take picks the smallest size class that fits and counts buffers in use', () => {
  const pool = small();
  assert.equal(pool.capacity, 6);
  const a = pool.take(1500)!;
  assert.equal(a.capacity, 2048);
  assert.equal(a.headroom, 128);
  const b = pool.take(9000)!;
  assert.equal(b.capacity, 66560);
  assert.equal(pool.inUse, 2);
  assert.equal(pool.maxFrameLen, 66560 - 128);
  assert.equal(pool.take(66560 - 127), null, 'frame larger than any buffer');
  a.release();
  b.release();
  assert.equal(pool.inUse, 0);
});

test('a full small class spills into the larger class, then take returns null and counts exhaustion', () => {
  const pool = small();
  const got = [];
  for (let i = 0; i < 6; i++) got.push(pool.take(64)!);
  assert.ok(got.every((p) => p !== null));
  assert.equal(got.filter((p) => p.capacity === 66560).length, 2);
  assert.equal(pool.take(64), null);
  const st = pool.stats();
  assert.ok(st[0]!.exhausted >= 1 && st[1]!.exhausted >= 1);
  assert.equal(st[0]!.peak, 4);
  for (const p of got) p.release();
  assert.equal(pool.inUse, 0);
});

test('buffers do not overlap and each packet has its own stable index', () => {
  const pool = small();
  const ps = [];
  for (let i = 0; i < 6; i++) ps.push(pool.take(10)!);
  const ranges = ps.map((p) => [p.base, p.base + p.capacity] as const).sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i]![0] >= ranges[i - 1]![1], 'overlap');
  assert.deepEqual(new Set(ps.map((p) => p.index)).size, 6);
  for (const p of ps) assert.equal(pool.packets[p.index], p);
});

test('giving a buffer back twice is detected, counted and thrown', () => {
  const pool = small();
  const p = pool.take(100)!;
  p.release();
  assert.throws(() => p.release(), DoubleFreeError);
  assert.equal(pool.doubleFrees, 1);
  assert.equal(pool.inUse, 0, 'the double free did not corrupt the free list');
  // The free list holds each buffer once: we can take exactly `capacity` buffers.
  const all = [];
  for (;;) { const q = pool.take(10); if (q === null) break; all.push(q); }
  assert.equal(all.length, pool.capacity);
});

test('a packet from another pool is refused', () => {
  const a = small();
  const b = small();
  const p = a.take(10)!;
  assert.throws(() => b.give(p));
});

test('take resets frame, metadata and headroom of a reused buffer', () => {
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 1 }] });
  const p = pool.take(100)!;
  p.write(new Uint8Array([1, 2, 3]));
  p.meta.gsoType = GsoType.TCPV4;
  p.meta.rxCsum = RxCsum.VERIFIED;
  p.push(4);
  p.release();
  const q = pool.take(100)!;
  assert.equal(q, p);
  assert.equal(q.len, 0);
  assert.equal(q.headroom, pool.headroom);
  assert.equal(q.meta.gsoType, GsoType.NONE);
  assert.equal(q.meta.rxCsum, RxCsum.UNKNOWN);
});

test('push/pull/setLength/write respect headroom and capacity', () => {
  const pool = new BufferPool({ classes: [{ bufferSize: 256, count: 1 }], headroom: 16 });
  const p = pool.take(10)!;
  assert.ok(p.write(new Uint8Array(240)));
  assert.equal(p.tailroom, 0);
  assert.equal(p.write(new Uint8Array(241)), false);
  assert.equal(p.len, 240, 'a failed write changes nothing');
  assert.ok(p.push(16));
  assert.equal(p.push(1), false);
  assert.ok(p.pull(20));
  assert.equal(p.len, 236);
  assert.equal(p.pull(1000), false);
  assert.equal(p.setLength(-1), false);
});

test('pool memory is WebAssembly memory with the SIMD checksum kernel on Node 20', () => {
  const pool = small();
  assert.equal(pool.memory.accelerated, true);
  assert.ok(pool.bytes.buffer instanceof SharedArrayBuffer, 'shared, so workers can exchange packets');
});

test('take and give allocate nothing: a million cycles run without a single garbage collection', async () => {
  const pool = small();
  const batch = new Batch(4);
  const cycle = () => {
    for (let i = 0; i < 4; i++) batch.push(pool.take(100)!);
    batch.releaseAll();
  };
  for (let i = 0; i < 20000; i++) cycle(); // warm up the JIT
  const gcs = await gcCountDuring(() => { for (let i = 0; i < 250000; i++) cycle(); });
  assert.equal(gcs, 0, `${gcs} collections during 1M take/give: something allocates`);
  assert.equal(pool.inUse, 0);
});

test('the allocation detector does see a loop that allocates', async () => {
  const keep: { x: number }[] = [];
  const gcs = await gcCountDuring(() => {
    for (let i = 0; i < 1_000_000; i++) { keep[i & 7] = { x: i }; }
  });
  assert.ok(gcs > 0, 'no collection seen: the detector cannot fail');
});

test('batch keeps its capacity and order; releaseAll returns every buffer', () => {
  const pool = small();
  const b = new Batch(3);
  const ps = [pool.take(1)!, pool.take(1)!, pool.take(1)!];
  for (const p of ps) assert.ok(b.push(p));
  assert.ok(b.full);
  assert.equal(b.push(pool.take(1)!), false);
  assert.equal(b.get(1), ps[1]);
  b.truncate(2);
  assert.equal(b.count, 2);
  ps[2]!.release();
  b.releaseAll();
  assert.ok(b.empty);
  assert.equal(pool.inUse, 1, 'only the packet the batch refused is still out');
});

test('references: a retained packet returns to the pool with its last release', () => {
  const pool = small();
  const p = pool.take(10)!;
  p.retain();
  p.retain();
  assert.ok(p.shared);
  p.release();
  p.release();
  assert.equal(pool.inUse, 1);
  assert.equal(p.shared, false);
  p.release();
  assert.equal(pool.inUse, 0);
  assert.throws(() => p.release(), DoubleFreeError);
});
