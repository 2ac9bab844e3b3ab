import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { buildFrame, type FrameSpec } from '../../../src/wire/builder.js';
import { completeChecksum, completeChecksumAt, fillIpv4HeaderChecksum, verifyChecksums } from '../../../src/offload/checksum.js';
import { BufferPool } from '../../../src/packet/pool.js';
import { RxCsum } from '../../../src/packet/meta.js';
import { FrameLayout, parseFrame } from '../../../src/wire/frame.js';
import { checksumsOf, layoutOf, packetFrom } from '../../util/frames.js';

const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 64 }, { bufferSize: 66560, count: 8 }] });

const v4 = { version: 4 as const, src: '198.18.0.1', dst: '198.19.255.254' };
const v6 = { version: 6 as const, src: '2001:db8::1', dst: '2001:db8:ffff::2' };
const kinds: FrameSpec['l4'][] = [
  { kind: 'tcp', sport: 40000, dport: 5201, seq: 0xfffffff0, flags: 0x18 },
  { kind: 'udp', sport: 53, dport: 4789 },
  { kind: 'icmp', type: 8, id: 7, seq: 1 },
];

test('partial checksums are completed to exactly the full checksum (TCP/UDP/ICMP over IPv4 and IPv6)', () => {
  for (const ip of [v4, v6]) {
    for (const l4 of kinds) {
      for (const payload of [0, 1, 57, 1400, 9001]) {
        const spec: FrameSpec = { ip, l4: l4.kind === 'icmp' ? { ...l4, type: ip.version === 6 ? 128 : 8 } : l4, payload };
        const full = buildFrame({ ...spec, checksum: 'full' });
        const part = buildFrame({ ...spec, checksum: 'partial' });
        const p = packetFrom(pool, part.frame);
        p.meta.needsCsum = true;
        p.meta.csumStart = part.l4Off;
        p.meta.csumOffset = part.csumOffset;
        assert.equal(completeChecksum(p), null);
        assert.deepEqual(p.copyOut(), full.frame, `${ip.version}/${l4.kind}/${payload}`);
        assert.equal(p.meta.needsCsum, false, 'request cleared once done');
        assert.equal(checksumsOf(p.copyOut()), RxCsum.VERIFIED);
        p.release();
      }
    }
  }
  assert.equal(pool.inUse, 0);
});

test('a completed checksum of zero is 0x0000 (RFC 1071), except in a UDP checksum field, where zero means none and 0xffff goes instead', () => {
  // Headers whose one's-complement sum is 0xffff with the field zero: the checksum is 0.
  const udp = new Uint8Array([0xff, 0xfe, 0x00, 0x01, 0, 0, 0, 0]);
  assert.equal(completeChecksumAt(udp, 0, 6, udp.length), null);
  assert.deepEqual([...udp.subarray(6)], [0xff, 0xff], 'UDP (field at 6): 0xffff');
  const tcp = new Uint8Array(20);
  tcp.set([0xff, 0xfe, 0x00, 0x01]);
  assert.equal(completeChecksumAt(tcp, 0, 16, tcp.length), null);
  assert.deepEqual([...tcp.subarray(16, 18)], [0, 0], 'TCP (field at 16): 0x0000, which Wireshark calls Good');
  const icmp = new Uint8Array([0xff, 0xfe, 0, 0, 0x00, 0x01]);
  assert.equal(completeChecksumAt(icmp, 0, 2, icmp.length), null);
  assert.deepEqual([...icmp.subarray(2, 4)], [0, 0], 'ICMP (field at 2): 0x0000');
});

test('checksum positions outside the frame are refused, nothing written', () => {
  const b = new Uint8Array(40);
  assert.equal(completeChecksumAt(b, 30, 9, 40), 'csum-out-of-range');
  assert.equal(completeChecksumAt(b, 30, 8, 40), null);
  assert.equal(completeChecksumAt(b, -1, 0, 40), 'csum-out-of-range');
  assert.equal(completeChecksumAt(b, 0, 0, 41), 'csum-out-of-range');
  const p = packetFrom(pool, new Uint8Array(60));
  p.meta.needsCsum = true; p.meta.csumStart = 50; p.meta.csumOffset = 16;
  assert.equal(completeChecksum(p), 'csum-out-of-range');
  assert.ok(p.meta.needsCsum, 'a failed completion leaves the request in place');
  p.release();
});

test('IPv4 header checksum is computed in place', () => {
  const f = buildFrame({ ip: { ...v4, options: new Uint8Array([0x94, 4, 0, 0]) }, l4: kinds[0]!, payload: 10 }).frame;
  const want = f.slice(24, 26);
  f[24] = 0; f[25] = 0;
  fillIpv4HeaderChecksum(f, 14, 24);
  assert.deepEqual(f.slice(24, 26), want);
});

test('receive verification: VERIFIED when right, FAILED after any single bit flip, per protocol', () => {
  fc.assert(fc.property(
    fc.constantFrom(v4, v6), fc.constantFrom(...kinds), fc.integer({ min: 1, max: 3000 }), fc.nat(),
    (ip, l4, payload, flipSeed) => {
      const spec: FrameSpec = { ip, l4: l4.kind === 'icmp' ? { ...l4, type: ip.version === 6 ? 128 : 8 } : l4, payload };
      const b = buildFrame(spec);
      assert.equal(checksumsOf(b.frame), RxCsum.VERIFIED);
      // Flip one bit in the transport part (header or payload).
      const at = b.l4Off + (flipSeed % (b.frame.length - b.l4Off));
      const bad = b.frame.slice();
      bad[at]! ^= 1 << (flipSeed % 8);
      const lay = new FrameLayout();
      // A flip that breaks the headers is a parse error, not a checksum verdict; a flip
      // that zeroes a UDP/IPv4 checksum makes it "no checksum", which is valid.
      const zeroedUdp = l4.kind === 'udp' && ip.version === 4 && bad[b.l4Off + 6] === 0 && bad[b.l4Off + 7] === 0;
      if (parseFrame(bad, 0, bad.length, lay) === null && !zeroedUdp) assert.equal(verifyChecksums(bad, lay), RxCsum.FAILED);
    }), { numRuns: 500 });
});

test('a bad IPv4 header checksum is FAILED even when the transport checksum is right', () => {
  const b = buildFrame({ ip: v4, l4: kinds[0]!, payload: 100 });
  b.frame[14 + 10]! ^= 0xff;
  assert.equal(checksumsOf(b.frame), RxCsum.FAILED);
});

test('UDP checksum zero: "none" over IPv4 (VERIFIED), forbidden over IPv6 (FAILED)', () => {
  const a = buildFrame({ ip: v4, l4: kinds[1]!, payload: 10, checksum: 'zero' });
  assert.equal(checksumsOf(a.frame), RxCsum.VERIFIED);
  const b = buildFrame({ ip: v6, l4: kinds[1]!, payload: 10, checksum: 'zero' });
  assert.equal(checksumsOf(b.frame), RxCsum.FAILED);
});

test('nothing we cannot check is VERIFIED: fragments, unknown protocols, non-IP', () => {
  const f = buildFrame({ ip: v4, l4: kinds[0]!, payload: 100 }).frame;
  f[14 + 6] = 0x20; // MF
  fillIpv4HeaderChecksum(f, 14, 20);
  assert.equal(checksumsOf(f), RxCsum.UNKNOWN);
  const g = buildFrame({ ip: v4, l4: kinds[0]!, payload: 100 }).frame;
  g[14 + 9] = 47; // GRE
  fillIpv4HeaderChecksum(g, 14, 20);
  assert.equal(checksumsOf(g), RxCsum.UNKNOWN);
  const arp = new Uint8Array(60);
  arp[12] = 0x08; arp[13] = 0x06;
  assert.equal(checksumsOf(arp), RxCsum.UNKNOWN);
  const lay = layoutOf(buildFrame({ ip: v6, l4: kinds[0]!, payload: 100 }).frame);
  assert.equal(lay.l4HeaderLen, 20);
});

test('link padding after the IP packet is not part of the transport checksum', () => {
  const b = buildFrame({ ip: v4, l4: kinds[1]!, payload: 4 });
  const padded = new Uint8Array(60);
  padded.set(b.frame);
  padded.fill(0xab, b.frame.length);
  assert.equal(checksumsOf(padded), RxCsum.VERIFIED);
});
