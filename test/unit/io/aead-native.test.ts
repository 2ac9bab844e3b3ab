// The native AES-GCM (one OpenSSL context per key) must be exactly node:crypto's
// AES-GCM, and must leave the buffer untouched when a tag does not verify.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createNativeAead } from '../../../src/io/aead-native.js';
import { nodeAead } from '../../../src/io/aead-node.js';

const native = createNativeAead();

test('seal: same ciphertext and tag as node:crypto, both key sizes, any length', () => {
  fc.assert(fc.property(
    fc.constantFrom(16, 32), fc.uint8Array({ minLength: 12, maxLength: 12 }), fc.uint8Array({ minLength: 8, maxLength: 12 }),
    fc.uint8Array({ minLength: 0, maxLength: 3000 }), fc.nat(64), (klen, nonce, aad, data, pad) => {
      const key = new Uint8Array(klen).map((_, i) => (i * 37 + klen) & 0xff);
      const a = new Uint8Array(pad + data.length + 16);
      a.set(data, pad);
      const b = a.slice();
      native.seal(key, nonce, aad, a, pad, data.length, a, pad + data.length);
      nodeAead.seal(key, nonce, aad, b, pad, data.length, b, pad + data.length);
      assert.deepEqual(a, b);
      assert.ok(native.open(key, nonce, aad, a, pad, data.length, a, pad + data.length));
      assert.deepEqual(a.subarray(pad, pad + data.length), data);
    }), { numRuns: 200 });
});

test('open: a tampered ciphertext, tag, nonce or AAD is refused and the buffer stays as it was', () => {
  const key = new Uint8Array(16).fill(7);
  const nonce = new Uint8Array(12).fill(1);
  const aad = new Uint8Array(8).fill(2);
  const data = new Uint8Array(1400).map((_, i) => i & 0xff);
  const sealed = data.slice();
  const tag = new Uint8Array(16);
  native.seal(key, nonce, aad, sealed, 0, sealed.length, tag, 0);
  for (const mutate of [
    (c: Uint8Array) => { c[700]! ^= 1; },
    (_c: Uint8Array, t: Uint8Array) => { t[0]! ^= 0x80; },
  ]) {
    const c = sealed.slice();
    const t = tag.slice();
    mutate(c, t);
    const before = c.slice();
    assert.equal(native.open(key, nonce, aad, c, 0, c.length, t, 0), false);
    assert.deepEqual(c, before, 'nothing decrypted into the buffer');
  }
  const wrongNonce = nonce.slice();
  wrongNonce[11]! ^= 1;
  assert.equal(native.open(key, wrongNonce, aad, sealed.slice(), 0, sealed.length, tag, 0), false);
  const wrongAad = aad.slice();
  wrongAad[0]! ^= 1;
  assert.equal(native.open(key, nonce, wrongAad, sealed.slice(), 0, sealed.length, tag, 0), false);
  assert.throws(() => native.seal(new Uint8Array(5), nonce, aad, data, 0, 10, tag, 0), /16 or 32 bytes/);
});
