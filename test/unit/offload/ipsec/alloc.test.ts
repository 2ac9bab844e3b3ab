// The ESP engine allocates nothing per packet: encapsulating and
// decapsulating a long burst (transport and tunnel, IPv4 and IPv6, replay
// window moving) runs without a single garbage collection. The AEAD is a
// stand-in that allocates nothing itself (node:crypto's does, by design of
// its API); it still tags and checks, so a broken round trip shows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../../../../src/packet/pool.js';
import { FrameLayout, parseFrame } from '../../../../src/wire/frame.js';
import { buildFrame } from '../../../../src/wire/builder.js';
import { EspSa, decapsulate, encapsulate, type Aead } from '../../../../src/offload/ipsec/esp.js';
import type { IpsecMode, SecurityAssociation } from '../../../../src/offload/ipsec/sa.js';
import { gcCountDuring } from '../../../util/alloc.js';

/** XOR "cipher" keyed by key and nonce, with a 16-byte checksum "tag" over AAD and ciphertext. No allocation. */
class FakeAead implements Aead {
  private readonly acc = new Uint32Array(4);
  private ks(key: Uint8Array, nonce: Uint8Array, i: number): number {
    return key[i % key.length]! ^ nonce[i % 12]! ^ (i & 0xff);
  }
  private tag(aad: Uint8Array, buf: Uint8Array, off: number, len: number, out: Uint8Array, at: number): void {
    const a = this.acc;
    a.fill(0x9e3779b9);
    for (let i = 0; i < aad.length; i++) a[i & 3] = Math.imul(a[i & 3]! ^ aad[i]!, 0x01000193);
    for (let i = 0; i < len; i++) a[i & 3] = Math.imul(a[i & 3]! ^ buf[off + i]!, 0x01000193);
    for (let i = 0; i < 16; i++) out[at + i] = a[i >>> 2]! >>> ((i & 3) * 8);
  }
  seal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, buf: Uint8Array, off: number, len: number, tagOut: Uint8Array, tagOff: number): void {
    for (let i = 0; i < len; i++) buf[off + i] = buf[off + i]! ^ this.ks(key, nonce, i);
    this.tag(aad, buf, off, len, tagOut, tagOff);
  }
  private readonly check = new Uint8Array(16);
  open(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, buf: Uint8Array, off: number, len: number, tag: Uint8Array, tagOff: number): boolean {
    this.tag(aad, buf, off, len, this.check, 0);
    for (let i = 0; i < 16; i++) if (this.check[i] !== tag[tagOff + i]) return false;
    for (let i = 0; i < len; i++) buf[off + i] = buf[off + i]! ^ this.ks(key, nonce, i);
    return true;
  }
}

const KEY = new Uint8Array(16).map((_, i) => i * 7);
const SALT = new Uint8Array([1, 2, 3, 4]);

function sa(direction: 'in' | 'out', mode: IpsecMode, v: 4 | 6, spi: number): SecurityAssociation {
  return {
    spi, direction, mode, algorithm: 'aes-gcm-128', key: KEY, salt: SALT,
    src: v === 4 ? '198.18.0.1' : '2001:db8::1', dst: v === 4 ? '198.18.0.2' : '2001:db8::2', replayWindow: 1024,
  };
}

test('encapsulate + decapsulate of 40 000 packets (transport/tunnel, IPv4/IPv6) allocate nothing', async () => {
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 64 }] });
  const aead = new FakeAead();
  const frames = [
    buildFrame({ ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' }, l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: 1200, checksum: 'full' }).frame,
    buildFrame({ ip: { version: 6, src: '2001:db8::1', dst: '2001:db8::2' }, l4: { kind: 'udp', sport: 1, dport: 2 }, payload: 333, checksum: 'full' }).frame,
  ];
  const flows = (['transport', 'tunnel'] as const).flatMap((mode, m) => ([4, 6] as const).map((v, i) => ({
    out: new EspSa(sa('out', mode, v, 0x100 + 2 * m + i)), in: new EspSa(sa('in', mode, v, 0x100 + 2 * m + i)),
    frame: frames[mode === 'transport' ? (v === 4 ? 0 : 1) : i]!,
  })));
  const lay = new FrameLayout();
  let failures = 0;
  const burst = (n: number) => {
    for (let k = 0; k < n; k++) {
      const f = flows[k & 3]!;
      const p = pool.take(f.frame.length)!;
      p.write(f.frame);
      parseFrame(p.buf, p.off, p.len, lay);
      if (encapsulate(p, f.out, aead, lay) !== null) failures++;
      parseFrame(p.buf, p.off, p.len, lay);
      if (decapsulate(p, f.in, aead, lay) !== null) failures++;
      if (p.len !== f.frame.length) failures++;
      p.release();
    }
  };
  burst(4000); // warm up (JIT)
  const gcs = await gcCountDuring(() => burst(40000));
  assert.equal(failures, 0);
  assert.equal(gcs, 0, `${gcs} garbage collections during 40 000 ESP round trips`);
  assert.equal(pool.inUse, 0);
  assert.equal(flows.reduce((n, f) => n + f.in.packets, 0), 44000);
});

test('the allocation check sees an allocation per packet (it can fail)', async () => {
  const keep: unknown[] = [];
  const gcs = await gcCountDuring(() => {
    for (let i = 0; i < 200000; i++) keep[i & 7] = { i, s: new Uint8Array(16) };
  });
  assert.ok(gcs > 0);
});
