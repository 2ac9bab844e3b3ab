import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  addSums, checksum, copySum, finish, fold, pseudoHeaderSumV4, pseudoHeaderSumV6, registerChecksumKernel,
  setChecksumKernelThreshold, sum, unregisterChecksumKernel, updateChecksum16, updateChecksum32, type ChecksumKernel,
} from '../../../src/wire/checksum.js';
import { simdAvailable, simdChecksumKernel } from '../../../src/wire/checksum-simd.js';
import { Ipv4View, IpProtocol, emitIpv4 } from '../../../src/wire/ipv4.js';
import { Ipv6View, emitIpv6 } from '../../../src/wire/ipv6.js';
import { TcpView, emitTcp } from '../../../src/wire/tcp.js';
import { UdpView, emitUdp } from '../../../src/wire/udp.js';
import { ipv6FromString } from '../../../src/wire/bytes.js';
import { captured } from '../../util/captured-frames.js';
import { fromHex } from '../../util/strict-bytes.js';
import { naiveSum } from '../../util/naive-checksum.js';

/** Deterministic filler: xorshift32 bytes from a seed. */
function fill(b: Uint8Array, seed: number, from = 0, to = b.length): void {
  let x = seed | 1;
  for (let i = from; i < to; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    b[i] = x;
  }
}

const swap16 = (x: number) => ((x & 0xff) << 8) | (x >>> 8);

test('RFC 1071 §3 numerical example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2', () => {
  const b = fromHex('0001f203f4f5f6f7');
  assert.equal(sum(b, 0, 8), 0xddf2);
  assert.equal(checksum(b, 0, 8), 0x220d);
  assert.equal(naiveSum(b), 0xddf2);
  // Byte order independence (§2(B)): the swapped data sums to the swapped sum.
  assert.equal(sum(fromHex('0100 03f2 f5f4 f7f6'), 0, 8), 0xf2dd);
  // Writing the checksum in makes the whole sum 0xffff.
  const whole = fromHex('0001f203f4f5f6f7220d');
  assert.equal(sum(whole, 0, 10), 0xffff);
});

test('fold and addSums keep the end-around carry', () => {
  // 2^16 ≡ 1 (mod 0xffff): 2^48 - 1 folds to 0xffff, 2^52 - 1 to 2^4 - 1.
  assert.deepStrictEqual(
    [fold(0), fold(0xffff), fold(0x10000), fold(0x1fffe), fold(0xffffffff), fold(2 ** 48 - 1), fold(2 ** 52 - 1)],
    [0, 0xffff, 1, 0xffff, 0xffff, 0xffff, 15]);
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), (a, b) => {
    assert.equal(addSums(a, b), fold(a + b));
    assert.equal(finish(a), ~a & 0xffff);
  }));
});

test('sum equals a naive reference: random data, offsets, byte offsets and lengths 0..70000', () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 9 }),
    fc.oneof(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 70000 })),
    fc.integer({ min: 0, max: 0xffff }), fc.integer(),
    (byteOff, off, len, initial, seed) => {
      const backing = new Uint8Array(byteOff + off + len + 3);
      fill(backing, seed);
      const buf = backing.subarray(byteOff);
      assert.equal(sum(buf, off, len, initial), addSums(naiveSum(buf, off, len), initial));
    }), { numRuns: 300 });
  // Every short length at every alignment: the switch-over points of the loops.
  const b = new Uint8Array(300);
  fill(b, 12345);
  for (let off = 0; off < 8; off++) {
    for (let len = 0; len <= 200; len++) assert.equal(sum(b, off, len), naiveSum(b, off, len), `off ${off} len ${len}`);
  }
  // All-ones data exercises the carries hardest.
  const ones = new Uint8Array(70001).fill(0xff);
  for (const len of [65535, 65536, 65537, 70000]) assert.equal(sum(ones, 1, len), naiveSum(ones, 1, len));
});

/** A registered kernel that counts its calls, so a test knows the fast path ran. */
function countingKernel(k: ChecksumKernel): ChecksumKernel & { calls: number } {
  const c = {
    buffer: k.buffer, calls: 0,
    sumLE(a: number, n: number) { c.calls++; return k.sumLE(a, n); },
    copySumLE(s: number, n: number, d: number) { c.calls++; return k.copySumLE(s, n, d); },
    copy(d: number, s: number, n: number) { k.copy(d, s, n); },
  };
  return c;
}

for (const shared of [false, true]) {
  test(`WebAssembly SIMD kernel over ${shared ? 'shared ' : ''}WebAssembly.Memory equals the naive sum`, () => {
    assert.equal(simdAvailable(), true, 'Node 20 has WebAssembly SIMD');
    const mem = shared ? new WebAssembly.Memory({ initial: 3, maximum: 3, shared: true }) : new WebAssembly.Memory({ initial: 3 });
    const raw = simdChecksumKernel(mem);
    assert.ok(raw !== null);
    const all = new Uint8Array(mem.buffer);
    fill(all, 99);
    // The raw kernel: little-endian words, so its result is the byte-swapped sum.
    for (const [a, n] of [[0, 0], [1, 1], [3, 17], [5, 64], [16, 1000], [7, 70000]] as const) {
      assert.equal(swap16(raw.sumLE(a, n)), naiveSum(all, a, n), `sumLE(${a}, ${n})`);
    }
    const k = countingKernel(raw);
    registerChecksumKernel(k);
    try {
      setChecksumKernelThreshold(0);
      fc.assert(fc.property(
        fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 9 }),
        fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 70000 })),
        fc.integer({ min: 0, max: 0xffff }), fc.integer(),
        (byteOff, off, len, initial, seed) => {
          const view = new Uint8Array(mem.buffer, byteOff, off + len + 3);
          fill(view, seed);
          const calls = k.calls;
          assert.equal(sum(view, off, len, initial), addSums(naiveSum(view, off, len), initial));
          assert.equal(k.calls, calls + 1, 'the kernel did the sum');
          // Same bytes outside the memory: the portable path, same answer.
          const copy = view.slice();
          assert.equal(sum(copy, off, len, initial), sum(view, off, len, initial));
        }), { numRuns: 200 });
      // copySum: the bytes arrive and the sum is theirs, with or without the kernel.
      fc.assert(fc.property(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 7 }),
        fc.integer(), (len, src, gap, seed) => {
          const view = new Uint8Array(mem.buffer, 8, 2 * len + 32);
          fill(view, seed);
          const dst = src + len + gap;
          const expected = naiveSum(view, src, len);
          const want = view.slice(src, src + len);
          assert.equal(copySum(view, dst, src, len), expected);
          assert.deepStrictEqual(view.slice(dst, dst + len), want);
          const plain = new Uint8Array(view.length);
          fill(plain, seed);
          assert.equal(copySum(plain, dst, src, len), expected);
          assert.deepStrictEqual(plain.slice(dst, dst + len), want);
        }), { numRuns: 100 });
    } finally {
      unregisterChecksumKernel(k);
      setChecksumKernelThreshold(16);
    }
    const calls = k.calls;
    sum(all, 0, 1000);
    assert.equal(k.calls, calls, 'unregistered kernels are not used');
  });
}

test('RFC 1624: incremental update equals recomputation (§4 example and property)', () => {
  // §4: HC = 0xdd2f, a field changes from 0x5555 to 0x3285; eqn. 3 gives 0x0000 (eqn. 2 would give 0xffff).
  assert.equal(updateChecksum16(0xdd2f, 0x5555, 0x3285), 0x0000);
  fc.assert(fc.property(fc.integer({ min: 10, max: 30 }), fc.integer(), fc.nat(), fc.integer({ min: 0, max: 0xffff }),
    fc.integer({ min: 0, max: 0xffffffff }), (words, seed, pick, new16, new32) => {
      const b = new Uint8Array(words * 2);
      fill(b, seed);
      b[0] = 0x45; // never all zero (where ±0 would differ, RFC 1624 §3)
      b[10] = 0; b[11] = 0;
      const c = checksum(b, 0, b.length);
      b[10] = c >>> 8; b[11] = c & 0xff;
      // A 16-bit word other than the checksum field and the first.
      const choices = [...Array(words).keys()].filter((w) => w !== 0 && w !== 5);
      const at = choices[pick % choices.length]! * 2;
      const old16 = (b[at]! << 8) | b[at + 1]!;
      b[at] = new16 >>> 8; b[at + 1] = new16 & 0xff;
      const upd = updateChecksum16(c, old16, new16);
      b[10] = 0; b[11] = 0;
      assert.equal(upd, checksum(b, 0, b.length));
      b[10] = upd >>> 8; b[11] = upd & 0xff;
      // A 32-bit field at an even offset clear of the checksum field (like an address at 12).
      const at32 = 12 + 2 * (pick % (words - 7));
      const old32 = ((b[at32]! << 24) | (b[at32 + 1]! << 16) | (b[at32 + 2]! << 8) | b[at32 + 3]!) >>> 0;
      b[at32] = new32 >>> 24; b[at32 + 1] = new32 >>> 16; b[at32 + 2] = new32 >>> 8; b[at32 + 3] = new32;
      const upd32 = updateChecksum32(upd, old32, new32);
      b[10] = 0; b[11] = 0;
      assert.equal(upd32, checksum(b, 0, b.length));
    }), { numRuns: 500 });
});

test('pseudo-header sums equal sums over the pseudo-header bytes (RFC 768 / RFC 8200 §8.1)', () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 40, maxLength: 40 }), fc.integer({ min: 0, max: 255 }),
    fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xfffff }), (addrs, proto, len16, len32) => {
      const v4 = [...addrs.subarray(0, 8), 0, proto, len16 >>> 8, len16 & 0xff];
      assert.equal(pseudoHeaderSumV4(addrs, 0, 4, proto, len16), naiveSum(v4));
      const v6 = [...addrs.subarray(4, 36), len32 >>> 24, (len32 >>> 16) & 0xff, (len32 >>> 8) & 0xff, len32 & 0xff, 0, 0, 0, proto];
      assert.equal(pseudoHeaderSumV6(addrs, 4, 20, proto, len32), naiveSum(v6));
    }));
});

test('known-good packets from the kernel verify with the pseudo-header sums', () => {
  // TCP SYN over IPv4 (captured; the kernel computed its checksum in software).
  const syn = captured.tcpSyn;
  const ip4 = new Ipv4View();
  assert.equal(ip4.wrap(syn, 14, syn.length - 14), null);
  assert.equal(ip4.verifyChecksum(), true);
  const tcpLen = ip4.payloadLen;
  assert.equal(sum(syn, ip4.payloadOff, tcpLen, pseudoHeaderSumV4(syn, ip4.srcOff, ip4.dstOff, IpProtocol.TCP, tcpLen)), 0xffff);
  // UDP over IPv6.
  const u6 = captured.udp6;
  const ip6 = new Ipv6View();
  assert.equal(ip6.wrap(u6, 14, u6.length - 14), null);
  assert.equal(sum(u6, ip6.payloadOff, ip6.payloadLen,
    pseudoHeaderSumV6(u6, ip6.srcOff, ip6.dstOff, IpProtocol.UDP, ip6.payloadLen)), 0xffff);
  // Wrong protocol or length in the pseudo-header: no longer valid.
  assert.notEqual(sum(u6, ip6.payloadOff, ip6.payloadLen,
    pseudoHeaderSumV6(u6, ip6.srcOff, ip6.dstOff, IpProtocol.TCP, ip6.payloadLen)), 0xffff);
  assert.notEqual(sum(syn, ip4.payloadOff, tcpLen, pseudoHeaderSumV4(syn, ip4.srcOff, ip4.dstOff, IpProtocol.TCP, tcpLen + 2)), 0xffff);
});

test('a TCP/IPv4 and a UDP/IPv6 packet built here: fill, then verify', () => {
  const payload = new TextEncoder().encode('vswitch checksum test, odd length!');
  const t = new Uint8Array(20 + 20 + payload.length);
  emitIpv4({ dscp: 0, ecn: 0, ident: 1, dontFragment: true, moreFragments: false, fragOffset: 0, ttl: 64,
    protocol: IpProtocol.TCP, src: 0xc6120001, dst: 0xc6130002, options: new Uint8Array(0), payloadLen: 20 + payload.length }, t, 0);
  emitTcp({ srcPort: 40000, dstPort: 80, seq: 1, ack: 2, flags: 0x18, window: 512, urgent: 0, options: [] }, t, 20);
  t.set(payload, 40);
  const ip4 = new Ipv4View();
  assert.equal(ip4.wrap(t, 0, t.length), null);
  const tcp = new TcpView();
  assert.equal(tcp.wrap(t, 20, ip4.payloadLen), null);
  tcp.fillChecksumV4(ip4);
  assert.equal(sum(t, 20, tcp.len, pseudoHeaderSumV4(t, 12, 16, IpProtocol.TCP, tcp.len)), 0xffff);
  assert.equal(tcp.verifyChecksumV4(ip4), true);

  const u = new Uint8Array(40 + 8 + payload.length);
  emitIpv6({ dscp: 0, ecn: 0, flowLabel: 1, payloadLen: 8 + payload.length, nextHeader: IpProtocol.UDP, hopLimit: 64,
    src: ipv6FromString('2001:db8::a')!, dst: ipv6FromString('2001:db8:1::b')! }, u, 0);
  emitUdp({ srcPort: 5000, dstPort: 4789, payloadLen: payload.length }, u, 40);
  u.set(payload, 48);
  const udp = new UdpView();
  assert.equal(udp.wrap(u, 40, u.length - 40), null);
  udp.fillChecksumV6(u, 8, 24);
  assert.equal(sum(u, 40, udp.length, pseudoHeaderSumV6(u, 8, 24, IpProtocol.UDP, udp.length)), 0xffff);
  assert.equal(udp.verifyChecksumV6(u, 8, 24), true);
});
