// Known answers from draft-mcgrew-gcm-test-01 ("Test Cases for the use of
// GCM and GMAC in IPsec ESP", §4), transcribed to
// test/vectors/esp/draft-mcgrew-gcm-test-01.json and checked there against
// python-cryptography by make-gcm-vectors.py.
//
// The draft's packets are bare ESP packets whose next header is 1 (ICMP)
// whatever the payload, and whose IVs are not counters. So: the packet is
// put behind an IPv4 or IPv6 header with protocol 1, encapsulated in
// transport mode with the vector's SPI, sequence number and key, and the IV
// reproduced with the SA's ivMask (IV = counter XOR mask); the ESP bytes
// must be the draft's, byte for byte. Decapsulation of the draft's packet
// must give the payload back. Cases with ESN (64-bit sequence numbers), a
// 192-bit key or SPI 0 are outside what the engine does; they and all the
// others still check the AEAD (node:crypto) on its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BufferPool } from '../../../../src/packet/pool.js';
import { FrameLayout, parseFrame } from '../../../../src/wire/frame.js';
import { get16, set16 } from '../../../../src/wire/bytes.js';
import { sum } from '../../../../src/wire/checksum.js';
import { EspSa, decapsulate, encapsulate } from '../../../../src/offload/ipsec/esp.js';
import type { EspAlgorithm, IpsecMode } from '../../../../src/offload/ipsec/sa.js';
import { nodeAead } from '../../../../src/io/aead-node.js';
import { fromHex, hex } from '../../../util/frames.js';

interface Case {
  name: string; keyBits: number; esn: boolean; key: string; salt: string; spi: string; seq: string; iv: string;
  plaintext: string; payloadData: string; padLength: number; nextHeader: number; aad: string; ciphertextTag: string; packet: string;
}

const root = join(dirname(fileURLToPath(import.meta.url)), '../../../../..');
const doc = JSON.parse(readFileSync(join(root, 'test/vectors/esp/draft-mcgrew-gcm-test-01.json'), 'utf8')) as { cases: Case[] };
const cases = doc.cases;
/** What the engine does: 32-bit sequence numbers, AES-128/256, SPI ≠ 0. */
const engineCases = cases.filter((c) => !c.esn && (c.keyBits === 128 || c.keyBits === 256) && c.spi !== '00000000');
const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 16 }] });

test('the vector file holds the draft\'s AES-GCM-ESP cases, and the engine\'s share of them', () => {
  assert.equal(cases.length, 16);
  assert.deepEqual(engineCases.map((c) => c.spi), ['0000a5f8', '4a2cbfe3', '335467ae']);
  assert.deepEqual(engineCases.map((c) => c.keyBits), [128, 256, 128]);
});

/** Ethernet + an IP header (protocol `proto`) + `payload`. */
function ipFrame(v: 4 | 6, proto: number, payload: Uint8Array): Uint8Array {
  const hl = v === 4 ? 20 : 40;
  const f = new Uint8Array(14 + hl + payload.length);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
  set16(f, 12, v === 4 ? 0x0800 : 0x86dd);
  if (v === 4) {
    f.set([0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2], 14);
    set16(f, 16, hl + payload.length);
    set16(f, 24, ~sum(f, 14, 20) & 0xffff);
  } else {
    f.set([0x60, 0, 0, 0, 0, 0, proto, 64], 14);
    set16(f, 18, payload.length);
    f.set(fromHex('20010db8000000000000000000000001'), 22);
    f.set(fromHex('20010db8000000000000000000000002'), 38);
  }
  f.set(payload, 14 + hl);
  return f;
}

function saOf(c: Case, direction: 'in' | 'out', v: 4 | 6, mode: IpsecMode = 'transport'): EspSa {
  const seq = parseInt(c.seq, 16);
  // IV = (0 ‖ seq) XOR mask: the mask that makes it the draft's IV.
  const mask = fromHex(c.iv);
  mask[4]! ^= seq >>> 24; mask[5]! ^= (seq >>> 16) & 0xff; mask[6]! ^= (seq >>> 8) & 0xff; mask[7]! ^= seq & 0xff;
  return new EspSa({
    spi: parseInt(c.spi, 16), direction, mode, algorithm: `aes-gcm-${c.keyBits}` as EspAlgorithm,
    key: fromHex(c.key), salt: fromHex(c.salt), src: v === 4 ? '198.18.0.1' : '2001:db8::1', dst: v === 4 ? '198.18.0.2' : '2001:db8::2',
    seq,
  }, { ivMask: mask });
}

const lay = new FrameLayout();

/**
 * Parse a plaintext frame. Case 12's payload is empty behind protocol 1,
 * which parseFrame calls a truncated ICMP message — after filling in the
 * layout up to L4, which is all ESP needs.
 */
function parsePlain(buf: Uint8Array, off: number, len: number, empty: boolean): void {
  assert.equal(parseFrame(buf, off, len, lay), empty ? 'truncated' : null);
}

for (const c of engineCases) {
  for (const v of [4, 6] as const) {
    test(`${c.name}, behind IPv${v}: encapsulate produces the draft's packet byte for byte`, () => {
      const sa = saOf(c, 'out', v);
      const f = ipFrame(v, c.nextHeader, fromHex(c.payloadData));
      const p = pool.take(f.length)!;
      p.write(f);
      parsePlain(p.buf, p.off, p.len, c.payloadData === '');
      assert.equal(encapsulate(p, sa, nodeAead, lay), null);
      const out = p.copyOut();
      p.release();
      const hl = v === 4 ? 20 : 40;
      assert.equal(hex(out.subarray(14 + hl)), c.packet);
      assert.equal(out[14 + (v === 4 ? 9 : 6)], 50);
      assert.equal(v === 4 ? get16(out, 16) : get16(out, 18) + 40, hl + c.packet.length / 2);
      if (v === 4) assert.equal(sum(out, 14, 20), 0xffff);
    });

    test(`${c.name}, behind IPv${v}: decapsulate gives the payload back (transport), refuses next header 1 (tunnel)`, () => {
      const f = ipFrame(v, 50, fromHex(c.packet));
      for (const mode of ['transport', 'tunnel'] as const) {
        const sa = saOf(c, 'in', v, mode);
        const p = pool.take(f.length)!;
        p.write(f);
        assert.equal(parseFrame(p.buf, p.off, p.len, lay), null);
        const e = decapsulate(p, sa, nodeAead, lay);
        const back = p.copyOut();
        p.release();
        if (mode === 'tunnel') {
          assert.equal(e, 'bad-next-header');
          continue;
        }
        assert.equal(e, null);
        assert.equal(hex(back), hex(ipFrame(v, c.nextHeader, fromHex(c.payloadData))));
        // A flipped ICV bit: no longer the draft's packet.
        const g = f.slice();
        g[g.length - 1]! ^= 1;
        const q = pool.take(g.length)!;
        q.write(g);
        parseFrame(q.buf, q.off, q.len, lay);
        assert.equal(decapsulate(q, saOf(c, 'in', v), nodeAead, lay), 'auth-failed');
        q.release();
      }
    });
  }
}

test('case 12 (sequence number 2^32-1): the last packet an SA may send, then it is exhausted', () => {
  const c = engineCases.find((x) => x.seq === 'ffffffff')!;
  const sa = saOf(c, 'out', 4);
  const f = ipFrame(4, 1, fromHex(c.payloadData));
  const p = pool.take(f.length)!;
  p.write(f);
  parsePlain(p.buf, p.off, p.len, true);
  assert.equal(encapsulate(p, sa, nodeAead, lay), null);
  assert.equal(hex(p.copyOut().subarray(34)), c.packet);
  p.write(f);
  parsePlain(p.buf, p.off, p.len, true);
  assert.equal(encapsulate(p, sa, nodeAead, lay), 'seq-exhausted');
  p.release();
});

test('case 4 (SPI 0, reserved by RFC 4303 §2.1) is refused as an SA', () => {
  const c = cases.find((x) => x.spi === '00000000')!;
  assert.throws(() => saOf(c, 'in', 4), /SPI/);
});

for (const c of cases) {
  test(`${c.name}: node:crypto AES-GCM seals and opens it (${c.keyBits}-bit key, ${c.aad.length / 2}-byte AAD)`, () => {
    const key = fromHex(c.key);
    const nonce = fromHex(c.salt + c.iv);
    const aad = fromHex(c.aad);
    const pt = fromHex(c.plaintext);
    const buf = new Uint8Array(pt.length + 16 + 8);
    buf.set(pt, 4);
    nodeAead.seal(key, nonce, aad, buf, 4, pt.length, buf, 4 + pt.length);
    assert.equal(hex(buf.subarray(4, 4 + pt.length + 16)), c.ciphertextTag);
    assert.ok(nodeAead.open(key, nonce, aad, buf, 4, pt.length, buf, 4 + pt.length));
    assert.equal(hex(buf.subarray(4, 4 + pt.length)), c.plaintext);
    // A bad tag: false, and the ciphertext stays as it was (no unauthenticated plaintext).
    buf.set(fromHex(c.ciphertextTag), 4);
    buf[4 + pt.length]! ^= 0x10;
    const before = hex(buf);
    assert.equal(nodeAead.open(key, nonce, aad, buf, 4, pt.length, buf, 4 + pt.length), false);
    assert.equal(hex(buf), before);
  });
}
