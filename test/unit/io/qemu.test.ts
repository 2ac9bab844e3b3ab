// The QEMU stream framing (4-byte big-endian length, then the frame) against a
// fake QEMU on a real unix socket: frames split anywhere, many per chunk,
// garbage lengths, 802.1Q insertion on the way out, reconnects, both
// directions of who listens — and no allocation per received frame.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BufferPool } from '../../../src/packet/pool.js';
import { Batch } from '../../../src/packet/batch.js';
import { Switch } from '../../../src/switch/switch.js';
import { OutputQueue, type Port, type PortBackend, type PortConfig } from '../../../src/switch/port.js';
import { Drop } from '../../../src/switch/counters.js';
import { MemoryBackend } from '../../../src/io/memory.js';
import { QemuSocketBackend, type QemuSocketOptions } from '../../../src/io/qemu.js';
import { noOffloads, capabilitiesEqual } from '../../../src/offload/capabilities.js';
import { buildFrame } from '../../../src/wire/builder.js';
import { gcCountDuring } from '../../util/alloc.js';

const VM_MAC = 0x525400000001;
const PEER_MAC = 0x020000000005;

function frame(payload: number, o: { src?: number; dst?: number; seed?: number } = {}): Uint8Array {
  const data = new Uint8Array(payload);
  for (let i = 0; i < payload; i++) data[i] = (i * 7 + (o.seed ?? 0)) & 0xff;
  return buildFrame({
    srcMac: o.src ?? VM_MAC, dstMac: o.dst ?? 0xffffffffffff,
    ip: { version: 4, src: '198.18.0.4', dst: '198.18.0.5' },
    l4: { kind: 'udp', sport: 4000, dport: 5000 }, payload: data, checksum: 'full',
  }).frame;
}

/** [len][frame] as QEMU puts it on the stream. */
function framed(...frames: Uint8Array[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of frames) {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(f.length);
    parts.push(h, Buffer.from(f));
  }
  return Buffer.concat(parts);
}

/** Split a framed stream into frames (what the fake QEMU received). */
function unframe(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i + 4 <= b.length) {
    const n = b.readUInt32BE(i);
    if (i + 4 + n > b.length) break;
    out.push(b.subarray(i + 4, i + 4 + n));
    i += 4 + n;
  }
  return out;
}

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Rig {
  sw: Switch;
  pool: BufferPool;
  vm: Port;
  qemu: QemuSocketBackend;
  peer: Port;
  peerBe: MemoryBackend;
  path: string;
  dir: string;
  done(): void;
}

function rig(o: { vm?: Partial<PortConfig>; peer?: Partial<PortConfig>; qemu?: Partial<QemuSocketOptions>; pool?: BufferPool } = {}): Rig {
  const dir = mkdtempSync(join(tmpdir(), 'vsq-unit-'));
  const path = join(dir, 'vm.sock');
  const pool = o.pool ?? new BufferPool({ classes: [{ bufferSize: 2048, count: 512 }, { bufferSize: 66560, count: 8 }] });
  const sw = new Switch({ pool });
  const qemu = new QemuSocketBackend({ address: { path }, ...o.qemu });
  const vm = sw.addPort({ name: 'vm', kind: 'legacy', ...o.vm }, qemu);
  qemu.attach(sw, vm);
  const peerBe = new MemoryBackend(noOffloads());
  const peer = sw.addPort({ name: 'peer', kind: 'legacy', ...o.peer }, peerBe);
  return {
    sw, pool, vm, qemu, peer, peerBe, path, dir,
    done() {
      sw.removePort('vm');
      sw.removePort('peer');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A fake QEMU that connects (server=off) and records what the switch sends it. */
class FakeQemu {
  readonly got: Buffer[] = [];
  closed = false;
  private constructor(readonly sock: Socket) {
    sock.on('data', (b: Buffer) => this.got.push(b));
    sock.on('close', () => { this.closed = true; });
    sock.on('error', () => {});
  }
  static connect(path: string): Promise<FakeQemu> {
    return new Promise((resolve, reject) => {
      const s = createConnection({ path });
      s.once('connect', () => resolve(new FakeQemu(s)));
      s.once('error', reject);
    });
  }
  async send(...chunks: Buffer[]): Promise<void> {
    for (const c of chunks) {
      await new Promise<void>((r) => this.sock.write(c, () => r()));
      // let each write arrive as its own chunk
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  frames(): Buffer[] {
    return unframe(Buffer.concat(this.got));
  }
  end(): void {
    this.sock.destroy();
  }
}

function assertBalanced(r: Rig): void {
  for (const p of [r.vm, r.peer]) {
    const c = p.counters;
    assert.equal(c.rxPackets, c.forwarded + c.rxDropped + c.pending, `${p.name}: received = forwarded + dropped + pending`);
  }
  assert.equal(r.pool.inUse, 0, 'every pool buffer returned');
}

test('a legacy QEMU port advertises nothing', () => {
  const q = new QemuSocketBackend({ address: { path: '/nonexistent/x.sock' } });
  assert.ok(capabilitiesEqual(q.capabilities, noOffloads()));
});

test('frames split at every byte, and several per chunk, arrive whole and in order', { timeout: 15_000 }, async () => {
  const r = rig();
  try {
    const vm = await FakeQemu.connect(r.path);
    await r.qemu.whenConnected();
    const frames = [frame(18, { seed: 1 }), frame(1472, { seed: 2 }), frame(100, { seed: 3 }), frame(600, { seed: 4 }), frame(46, { seed: 5 })];
    const stream = framed(...frames);
    // the first frame one byte at a time (the length prefix too), then the rest in uneven pieces
    const first = 4 + frames[0]!.length;
    const pieces: Buffer[] = [];
    for (let i = 0; i < first; i++) pieces.push(stream.subarray(i, i + 1));
    pieces.push(stream.subarray(first, first + 2), stream.subarray(first + 2, first + 700), stream.subarray(first + 700));
    await vm.send(...pieces);
    await until('5 frames at the peer', () => r.peerBe.sent.length === 5);
    const got = r.peerBe.take().map((s) => Buffer.from(s.frame));
    assert.deepEqual(got, frames.map((f) => Buffer.from(f)));
    // several complete frames in one chunk, handed to the switch as one batch
    let batches = 0;
    const recv = r.sw.receive.bind(r.sw);
    r.sw.receive = (port, batch) => { batches++; recv(port, batch); };
    const many = Array.from({ length: 20 }, (_, i) => frame(60 + i * 13, { seed: i }));
    await vm.send(framed(...many));
    await until('20 frames at the peer', () => r.peerBe.sent.length === 20);
    assert.deepEqual(r.peerBe.take().map((s) => Buffer.from(s.frame)), many.map((f) => Buffer.from(f)));
    assert.equal(batches, 1, 'one chunk, one batch');
    assert.equal(r.qemu.stats.framesIn, 25);
    assert.equal(r.vm.counters.rxPackets, 25);
    vm.end();
    await until('disconnect', () => !r.qemu.connected);
    assertBalanced(r);
  } finally {
    r.done();
  }
});

test('a chunk with more frames than a batch holds is handed over in full batches', { timeout: 15_000 }, async () => {
  const r = rig({ qemu: { batch: 4 } });
  try {
    const vm = await FakeQemu.connect(r.path);
    await r.qemu.whenConnected();
    const sizes: number[] = [];
    const recv = r.sw.receive.bind(r.sw);
    r.sw.receive = (port, batch) => { sizes.push(batch.count); recv(port, batch); };
    const many = Array.from({ length: 18 }, (_, i) => frame(60 + i, { seed: i }));
    await vm.send(framed(...many));
    await until('18 frames at the peer', () => r.peerBe.sent.length === 18);
    assert.deepEqual(sizes, [4, 4, 4, 4, 2]);
    assert.deepEqual(r.peerBe.take().map((x) => Buffer.from(x.frame)), many.map((f) => Buffer.from(f)));
    vm.end();
    await until('disconnect', () => !r.qemu.connected);
    assertBalanced(r);
  } finally {
    r.done();
  }
});

for (const [name, len] of [['zero', 0], ['oversized', 0x00100000], ['garbage', 0x47455420]] as const) {
  test(`a ${name} length (${len}) is counted as a malformed drop and resets the connection`, { timeout: 15_000 }, async () => {
    const r = rig();
    try {
      const vm = await FakeQemu.connect(r.path);
      await r.qemu.whenConnected();
      const good = frame(100);
      const bad = Buffer.alloc(4);
      bad.writeUInt32BE(len);
      // a good frame, then the bad length and bytes after it, all in one chunk
      await vm.send(Buffer.concat([framed(good), bad, framed(good)]));
      await until('connection reset', () => vm.closed);
      assert.equal(r.peerBe.sent.length, 1, 'the frame before the bad length is delivered, nothing after it');
      assert.equal(r.vm.counters.rxDrops[Drop.malformed], 1);
      assert.equal(r.qemu.stats.resets, 1);
      await until('backend notices', () => !r.qemu.connected);
      // the port keeps working: the VM reconnects and is heard again
      const again = await FakeQemu.connect(r.path);
      await r.qemu.whenConnected();
      await again.send(framed(good));
      await until('frame after reconnect', () => r.peerBe.sent.length === 2);
      again.end();
      await until('disconnect', () => !r.qemu.connected);
      assertBalanced(r);
    } finally {
      r.done();
    }
  });
}

test('a bad length split across chunks is caught too, and a partial frame at disconnect is counted and returned', { timeout: 15_000 }, async () => {
  const r = rig();
  try {
    const vm = await FakeQemu.connect(r.path);
    await r.qemu.whenConnected();
    const f = framed(frame(500));
    await vm.send(f.subarray(0, 300));
    assert.equal(r.pool.inUse, 1, 'the half frame holds a buffer');
    vm.end();
    await until('disconnect', () => !r.qemu.connected);
    assert.equal(r.vm.counters.rxDrops[Drop.malformed], 1, 'truncated frame counted');
    assert.equal(r.pool.inUse, 0);
    const vm2 = await FakeQemu.connect(r.path);
    await r.qemu.whenConnected();
    await vm2.send(Buffer.from([0xff, 0xff]), Buffer.from([0x00, 0x01]));
    await until('reset', () => vm2.closed);
    assert.equal(r.vm.counters.rxDrops[Drop.malformed], 2);
    assert.equal(r.qemu.stats.resets, 1);
    assertBalanced(r);
  } finally {
    r.done();
  }
});

test('frames above the MTU but within the stream limit are dropped by the switch as oversize, without a reset', { timeout: 15_000 }, async () => {
  const r = rig();
  try {
    const vm = await FakeQemu.connect(r.path);
    await r.qemu.whenConnected();
    await vm.send(framed(frame(3000), frame(100)));
    await until('the small frame', () => r.peerBe.sent.length === 1);
    assert.equal(r.vm.counters.rxDrops[Drop.oversize], 1);
    assert.equal(r.qemu.stats.resets, 0);
    assert.ok(r.qemu.connected);
    vm.end();
    await until('disconnect', () => !r.qemu.connected);
    assertBalanced(r);
  } finally {
    r.done();
  }
});

test('transmit: plain frames, an 802.1Q tag inserted after the MACs where the queue asks, nothing above MTU', { timeout: 15_000 }, async () => {
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 64 }, { bufferSize: 66560, count: 4 }] });
  const sw = new Switch({ pool });
  const dir = mkdtempSync(join(tmpdir(), 'vsq-unit-'));
  const path = join(dir, 'vm.sock');
  const qemu = new QemuSocketBackend({ address: { path } });
  const port = sw.addPort({ name: 'vm', kind: 'legacy' }, qemu);
  qemu.attach(sw, port);
  try {
    const q = new OutputQueue(8);
    const a = frame(100, { dst: VM_MAC, src: PEER_MAC, seed: 1 });
    const b = frame(1472, { dst: VM_MAC, src: PEER_MAC, seed: 2 });
    const big = frame(1600, { dst: VM_MAC, src: PEER_MAC, seed: 3 });
    const fill = () => {
      for (const [f, tci] of [[a, -1], [b, (5 << 13) | 42], [big, -1], [a, 7]] as const) {
        const p = pool.take(f.length)!;
        p.write(f);
        q.push(p, tci);
      }
    };
    fill();
    assert.equal(qemu.transmit(q, port), 0, 'nobody connected: nothing sent');
    assert.equal(qemu.stats.txNotConnected, 4);
    q.batch.releaseAll();
    const vm = await FakeQemu.connect(path);
    await qemu.whenConnected();
    fill();
    assert.equal(qemu.transmit(q, port), 3, 'the frame above the MTU is not sent');
    q.batch.releaseAll();
    assert.equal(qemu.stats.txOversize, 1);
    await until('3 frames at the VM', () => vm.frames().length === 3);
    const got = vm.frames();
    assert.deepEqual(got[0], Buffer.from(a));
    const tagged = (f: Uint8Array, tci: number) => Buffer.concat([
      Buffer.from(f.subarray(0, 12)), Buffer.from([0x81, 0x00, tci >> 8, tci & 0xff]), Buffer.from(f.subarray(12)),
    ]);
    assert.deepEqual(got[1], tagged(b, (5 << 13) | 42));
    assert.deepEqual(got[2], tagged(a, 7));
    assert.equal(qemu.stats.maxFrameOut, 1514 + 4);
    assert.equal(pool.inUse, 0);
    vm.end();
  } finally {
    sw.removePort('vm');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('through the switch: a trunk port gets tagged frames, an access port plain ones', { timeout: 15_000 }, async () => {
  const r = rig({ vm: { vlan: { mode: 'trunk', allowed: [5], native: 1 } }, peer: { vlan: { mode: 'access', vlan: 5 } } });
  try {
    const vm = await FakeQemu.connect(r.path);
    await r.qemu.whenConnected();
    const f = frame(200, { src: PEER_MAC });
    const p = r.pool.take(f.length)!;
    p.write(f);
    const b = new Batch(1);
    b.push(p);
    r.sw.receive(r.peer, b);
    await until('frame at the VM', () => vm.frames().length === 1);
    const got = vm.frames()[0]!;
    assert.equal(got.length, f.length + 4);
    assert.deepEqual([...got.subarray(12, 16)], [0x81, 0x00, 0x00, 0x05]);
    assert.deepEqual(Buffer.concat([got.subarray(0, 12), got.subarray(16)]), Buffer.from(f));
    // and the VM's tagged reply reaches the access port untagged
    const reply = frame(80, { dst: PEER_MAC });
    const replyTagged = Buffer.concat([Buffer.from(reply.subarray(0, 12)), Buffer.from([0x81, 0, 0, 5]), Buffer.from(reply.subarray(12))]);
    await vm.send(framed(replyTagged));
    await until('reply at the peer', () => r.peerBe.sent.length === 1);
    assert.deepEqual(Buffer.from(r.peerBe.sent[0]!.frame), Buffer.from(reply));
    vm.end();
    await until('disconnect', () => !r.qemu.connected);
    assertBalanced(r);
  } finally {
    r.done();
  }
});

test('one VM per port: a second connection is refused while the first is up; after it leaves, a new one works', { timeout: 15_000 }, async () => {
  const r = rig();
  try {
    const a = await FakeQemu.connect(r.path);
    await r.qemu.whenConnected();
    const b = await FakeQemu.connect(r.path);
    await until('second refused', () => b.closed);
    assert.equal(r.qemu.stats.refused, 1);
    await a.send(framed(frame(64)));
    await until('frame from the first', () => r.peerBe.sent.length === 1);
    a.end();
    await until('disconnect', () => !r.qemu.connected);
    const c = await FakeQemu.connect(r.path);
    await r.qemu.whenConnected();
    await c.send(framed(frame(64)));
    await until('frame from the third', () => r.peerBe.sent.length === 2);
    // and the switch reaches the new VM
    const f = frame(90, { src: PEER_MAC, dst: VM_MAC });
    const p = r.pool.take(f.length)!;
    p.write(f);
    const batch = new Batch(1);
    batch.push(p);
    r.sw.receive(r.peer, batch);
    await until('frame at the new VM', () => c.frames().length === 1);
    assert.equal(r.qemu.stats.connects, 2);
    c.end();
    await until('disconnect', () => !r.qemu.connected);
    assertBalanced(r);
  } finally {
    r.done();
  }
});

test('close removes the socket file, refuses to clobber a non-socket, and replaces a stale socket', { timeout: 15_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vsq-unit-'));
  try {
    const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 8 }] });
    const sw = new Switch({ pool });
    const path = join(dir, 'vm.sock');
    // a stale socket from a crashed run: a process that listened and was killed
    const r = spawnSync(process.execPath, ['-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    assert.equal(r.signal, 'SIGKILL');
    assert.ok(existsSync(path));
    const q = new QemuSocketBackend({ address: { path } });
    q.attach(sw, sw.addPort({ name: 'vm', kind: 'legacy' }, q));
    await q.listening();
    const vm = await FakeQemu.connect(path);
    await q.whenConnected();
    vm.end();
    sw.removePort('vm');
    assert.equal(existsSync(path), false, 'socket file removed on close');
    writeFileSync(path, 'not a socket');
    const q2 = new QemuSocketBackend({ address: { path } });
    assert.throws(() => q2.attach(sw, sw.addPort({ name: 'vm2', kind: 'legacy' }, q2)), /not a socket/);
    assert.ok(existsSync(path));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('connect mode: vswitch dials a listening QEMU, and redials after the connection drops', { timeout: 15_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vsq-unit-'));
  const path = join(dir, 'qemu.sock');
  const conns: Socket[] = [];
  const received: Buffer[] = [];
  let server: Server | null = null;
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 64 }] });
  const sw = new Switch({ pool });
  const qemu = new QemuSocketBackend({ address: { path }, mode: 'connect', retryMs: 20 });
  const vm = sw.addPort({ name: 'vm', kind: 'legacy' }, qemu);
  const peerBe = new MemoryBackend(noOffloads());
  sw.addPort({ name: 'peer', kind: 'legacy' }, peerBe);
  try {
    // vswitch comes up first and keeps trying until QEMU listens
    qemu.attach(sw, vm);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(qemu.connected, false);
    const srv = createServer((s) => {
      conns.push(s);
      s.on('data', (b: Buffer) => received.push(b));
      s.on('error', () => {});
    });
    server = srv;
    await new Promise<void>((r) => srv.listen(path, r));
    await qemu.whenConnected();
    await until('server side', () => conns.length === 1);
    conns[0]!.write(framed(frame(300)));
    await until('frame from QEMU', () => peerBe.sent.length === 1);
    conns[0]!.destroy();
    await until('disconnect', () => !qemu.connected);
    await qemu.whenConnected();
    await until('second connection', () => conns.length === 2);
    conns[1]!.write(framed(frame(301)));
    await until('frame after redial', () => peerBe.sent.length === 2);
    const f = frame(90, { src: PEER_MAC, dst: VM_MAC });
    const p = pool.take(f.length)!;
    p.write(f);
    const batch = new Batch(1);
    batch.push(p);
    sw.receive(sw.port('peer'), batch);
    await until('frame at QEMU', () => unframe(Buffer.concat(received)).length === 1);
    assert.deepEqual(unframe(Buffer.concat(received))[0], Buffer.from(f));
    assert.equal(qemu.stats.connects, 2);
  } finally {
    sw.removePort('vm');
    sw.removePort('peer');
    for (const c of conns) c.destroy();
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(pool.inUse, 0);
});

test('receiving allocates nothing per frame', { timeout: 15_000 }, async () => {
  class Sink implements PortBackend {
    readonly capabilities = noOffloads();
    frames = 0;
    transmit(q: OutputQueue): number { this.frames += q.count; return q.count; }
  }
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 1024 }, { bufferSize: 66560, count: 4 }] });
  const sw = new Switch({ pool });
  const qemu = new QemuSocketBackend({ address: { path: '/nonexistent/unused.sock' } });
  const vm = sw.addPort({ name: 'vm', kind: 'legacy' }, qemu);
  const sink = new Sink();
  sw.addPort({ name: 'peer', kind: 'legacy' }, sink);
  // Attach without a server: feed chunks straight to the parser as a socket would.
  const internals = qemu as unknown as { listen(): void; conn: unknown; onData(s: unknown, c: Buffer): void };
  internals.listen = () => {};
  qemu.attach(sw, vm);
  const fake = {};
  internals.conn = fake;
  // 40 frames per chunk, cut so that frames and length prefixes straddle chunks
  const frames = Array.from({ length: 40 }, (_, i) => frame(60 + i * 31, { seed: i }));
  const stream = framed(...frames);
  // cut inside a frame, then inside the third frame's length prefix
  const prefix3 = 4 + frames[0]!.length + 4 + frames[1]!.length;
  const chunks = [stream.subarray(0, 77), stream.subarray(77, prefix3 + 2), stream.subarray(prefix3 + 2, prefix3 + 3), stream.subarray(prefix3 + 3)];
  const feed = (n: number) => { for (let i = 0; i < n; i++) for (const c of chunks) internals.onData(fake, c); };
  feed(200);
  const before = sink.frames;
  const gcs = await gcCountDuring(() => feed(2000));
  assert.equal(sink.frames - before, 2000 * 40);
  assert.equal(gcs, 0, `${gcs} garbage collections while receiving ${2000 * 40} frames`);
  assert.equal(pool.inUse, 0);
  internals.conn = null;
  qemu.close();
});
