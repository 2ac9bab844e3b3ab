// nodeAead (src/io/aead-node.ts) keeps the Aead contract on packet memory
// (a shared WebAssembly memory, as the pool uses): in place, tag wherever
// asked, nothing written when the tag is wrong. Its known answers are in
// vectors.test.ts. Also reports what it costs per 1400-byte packet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDecipheriv } from 'node:crypto';
import { nodeAead } from '../../../../src/io/aead-node.js';
import { BufferPool } from '../../../../src/packet/pool.js';
import { PacketMemory } from '../../../../src/packet/memory.js';
import { FrameLayout, parseFrame } from '../../../../src/wire/frame.js';
import { buildFrame } from '../../../../src/wire/builder.js';
import { EspSa, decapsulate, encapsulate } from '../../../../src/offload/ipsec/esp.js';

const key16 = new Uint8Array(16).map((_, i) => i);
const key32 = new Uint8Array(32).map((_, i) => 255 - i);
const nonce = new Uint8Array(12).map((_, i) => 0xa0 + i);
const aad = new Uint8Array([0, 0, 0x10, 0, 0, 0, 0, 1]);

test('seals in place in shared packet memory, tag to another array; node:crypto decrypts it independently', () => {
  const mem = new PacketMemory(1 << 16);
  assert.ok(mem.bytes.buffer instanceof SharedArrayBuffer || mem.memory !== null);
  const buf = mem.bytes;
  const tag = new Uint8Array(20);
  for (const key of [key16, key32]) {
    const pt = new Uint8Array(1400).map((_, i) => (i * 13) & 0xff);
    buf.fill(0xee, 1000, 3000);
    buf.set(pt, 1001); // odd offset on purpose
    nodeAead.seal(key, nonce, aad, buf, 1001, pt.length, tag, 3);
    assert.equal(buf[1000], 0xee, 'byte before untouched');
    assert.equal(buf[1001 + 1400], 0xee, 'byte after untouched');
    assert.notDeepEqual(buf.slice(1001, 2401), pt);
    const d = createDecipheriv(key.length === 16 ? 'aes-128-gcm' : 'aes-256-gcm', key, nonce);
    d.setAAD(aad);
    d.setAuthTag(tag.subarray(3, 19));
    const back = Buffer.concat([d.update(buf.subarray(1001, 2401)), d.final()]);
    assert.deepEqual(new Uint8Array(back), pt);
    assert.ok(nodeAead.open(key, nonce, aad, buf, 1001, 1400, tag, 3));
    assert.deepEqual(buf.slice(1001, 2401), pt);
  }
});

test('open with a wrong tag, AAD, nonce or key returns false and leaves the ciphertext as it was', () => {
  const buf = new Uint8Array(600).map((_, i) => i & 0xff);
  nodeAead.seal(key16, nonce, aad, buf, 0, 584, buf, 584);
  const sealed = buf.slice();
  const bad = (k: Uint8Array, n: Uint8Array, a: Uint8Array, tweak?: (b: Uint8Array) => void) => {
    const b = sealed.slice();
    tweak?.(b);
    const before = b.slice();
    assert.equal(nodeAead.open(k, n, a, b, 0, 584, b, 584), false);
    assert.deepEqual(b, before);
  };
  bad(key16, nonce, aad, (b) => { b[599]! ^= 1; });
  bad(key16, nonce, aad, (b) => { b[0]! ^= 1; });
  bad(key16, nonce, new Uint8Array([0, 0, 0x10, 0, 0, 0, 0, 2]));
  bad(key16, nonce.map((x, i) => (i === 11 ? x ^ 1 : x)), aad);
  bad(key16.map((x) => x ^ 0x55), nonce, aad);
  const ok = sealed.slice();
  assert.ok(nodeAead.open(key16, nonce, aad, ok, 0, 584, ok, 584));
  assert.throws(() => nodeAead.seal(new Uint8Array(20), nonce, aad, ok, 0, 16, ok, 16), /20 bytes/);
});

test('cost per 1400-byte packet: AEAD alone and the whole ESP path (reported, not asserted)', (t) => {
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 8 }] });
  const buf = pool.bytes;
  const n = 20000;
  const time = (fn: () => void) => {
    for (let i = 0; i < 2000; i++) fn();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    return Number(process.hrtime.bigint() - t0) / n / 1000;
  };
  const off = pool.take(1500)!.off;
  const results: string[] = [];
  for (const key of [key16, key32]) {
    const seal = time(() => nodeAead.seal(key, nonce, aad, buf, off, 1400, buf, off + 1400));
    nodeAead.seal(key, nonce, aad, buf, off, 1400, buf, off + 1400);
    const ct = buf.slice(off, off + 1416);
    const open = time(() => { buf.set(ct, off); nodeAead.open(key, nonce, aad, buf, off, 1400, buf, off + 1400); });
    results.push(`AES-${key.length * 8}-GCM seal ${seal.toFixed(2)} µs, open ${open.toFixed(2)} µs`);
  }
  // The whole path: a 1400-byte IPv4 packet, tunnel mode, encapsulate + decapsulate.
  const f = buildFrame({ ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' }, l4: { kind: 'udp', sport: 1, dport: 2 }, payload: 1400 - 28, checksum: 'full' }).frame;
  const sa = { spi: 9, mode: 'tunnel' as const, algorithm: 'aes-gcm-128' as const, key: key16, salt: nonce.subarray(0, 4), src: '198.19.0.1', dst: '198.19.0.2', replayWindow: 0 };
  const out = new EspSa({ ...sa, direction: 'out' });
  const inb = new EspSa({ ...sa, direction: 'in' });
  const lay = new FrameLayout();
  const p = pool.take(f.length)!;
  let errors = 0;
  const both = time(() => {
    p.write(f);
    parseFrame(p.buf, p.off, p.len, lay);
    if (encapsulate(p, out, nodeAead, lay) !== null) errors++;
    parseFrame(p.buf, p.off, p.len, lay);
    if (decapsulate(p, inb, nodeAead, lay) !== null) errors++;
    p.reset(pool.headroom);
  });
  assert.equal(errors, 0);
  results.push(`ESP tunnel encapsulate + decapsulate (AES-128) ${both.toFixed(2)} µs ≈ ${(1400 * 8 / (both * 1000) * 2).toFixed(2)} Gbit/s of one-way crypto`);
  for (const r of results) t.diagnostic(r);
});
