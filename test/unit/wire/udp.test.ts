import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { UDP_HEADER_LEN, UdpView, emitUdp, parseUdp, udpReprLen, type UdpRepr } from '../../../src/wire/udp.js';
import { Ipv4View, IpProtocol, emitIpv4 } from '../../../src/wire/ipv4.js';
import { Ipv6View, emitIpv6 } from '../../../src/wire/ipv6.js';
import { captured } from '../../util/captured-frames.js';
import { hex, strictBytes } from '../../util/strict-bytes.js';
import { checkDamagedInputs, checkRandomBytes, checkRoundTrip, encoded } from '../../util/wire-props.js';
import { naiveChecksum } from '../../util/naive-checksum.js';

const u16 = fc.integer({ min: 0, max: 0xffff });
const udpRepr: fc.Arbitrary<UdpRepr> = fc.record({ srcPort: u16, dstPort: u16, payloadLen: fc.integer({ min: 0, max: 400 }) });

function ipv4Frame(payload: Uint8Array, src = 0xc6120001, dst = 0xc6120002): { frame: Uint8Array; ip: Ipv4View } {
  const frame = new Uint8Array(20 + payload.length);
  emitIpv4({ dscp: 0, ecn: 0, ident: 7, dontFragment: false, moreFragments: false, fragOffset: 0, ttl: 64,
    protocol: IpProtocol.UDP, src, dst, options: new Uint8Array(0), payloadLen: payload.length }, frame, 0);
  frame.set(payload, 20);
  const ip = new Ipv4View();
  assert.equal(ip.wrap(frame, 0, frame.length), null);
  return { frame, ip };
}

function datagram(r: UdpRepr, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(UDP_HEADER_LEN + payload.length);
  emitUdp(r, b, 0);
  b.set(payload, UDP_HEADER_LEN);
  return b;
}

test('captured UDP/IPv6 datagram verifies, and emit + fill reproduces it', () => {
  const ip = new Ipv6View();
  assert.equal(ip.wrap(captured.udp6, 14, captured.udp6.length - 14), null);
  const udp = new UdpView();
  assert.equal(udp.wrap(captured.udp6, ip.payloadOff, ip.payloadLen), null);
  assert.deepStrictEqual(parseUdp(udp), { srcPort: 0xac48, dstPort: 5002, payloadLen: 10 });
  assert.equal(new TextDecoder().decode(captured.udp6.subarray(udp.payloadOff)), 'hello udp6');
  assert.equal(udp.verifyChecksumV6(captured.udp6, ip.srcOff, ip.dstOff), true);
  assert.equal(udp.checksum, naiveChecksum(captured.udp6, ip.srcOff, ip.dstOff, 16, IpProtocol.UDP, udp.off, udp.length,
    udp.checksumOff));
  const copy = captured.udp6.slice();
  emitUdp(parseUdp(udp), copy, udp.off);
  const v = new UdpView();
  assert.equal(v.wrap(copy, udp.off, udp.len), null);
  assert.equal(v.verifyChecksumV6(copy, ip.srcOff, ip.dstOff), false);
  v.fillChecksumV6(copy, ip.srcOff, ip.dstOff);
  assert.equal(hex(copy), hex(captured.udp6));
});

test('wrap: the length field must cover the header and fit', () => {
  const b = datagram({ srcPort: 1, dstPort: 2, payloadLen: 4 }, new Uint8Array(4));
  const v = new UdpView();
  assert.equal(v.wrap(b, 0, 12), null);
  assert.equal(new UdpView().wrap(b, 0, 11), 'truncated');
  assert.equal(new UdpView().wrap(b, 0, 7), 'truncated');
  assert.equal(new UdpView().wrap(b, 2, 12), 'bad-length');
  v.length = 7;
  assert.equal(new UdpView().wrap(b, 0, 12), 'bad-length');
  v.length = 8;
  // Bytes after Length (e.g. Ethernet padding) are not the datagram's.
  assert.equal(v.wrap(b, 0, 12), null);
  assert.deepStrictEqual([v.payloadLen, v.len], [0, 12]);
});

test('IPv4: a zero checksum means none; IPv6: a zero checksum is wrong', () => {
  const { frame, ip } = ipv4Frame(datagram({ srcPort: 1000, dstPort: 53, payloadLen: 3 }, new Uint8Array([1, 2, 3])));
  const udp = new UdpView();
  assert.equal(udp.wrap(frame, 20, ip.payloadLen), null);
  assert.equal(udp.hasChecksum, false);
  assert.equal(udp.verifyChecksumV4(ip), true);
  udp.fillChecksumV4(ip);
  assert.equal(udp.hasChecksum, true);
  assert.equal(udp.verifyChecksumV4(ip), true);
  frame[frame.length - 1] ^= 0x80;
  assert.equal(udp.verifyChecksumV4(ip), false);
  udp.checksum = 0;
  assert.equal(udp.verifyChecksumV4(ip), true);
  assert.equal(udp.verifyChecksumV6(frame, 0, 0), false);
});

test('a Length field changed after wrap cannot make verification read past the view', () => {
  const { frame, ip } = ipv4Frame(datagram({ srcPort: 1, dstPort: 2, payloadLen: 2 }, new Uint8Array([9, 9])));
  const udp = new UdpView();
  assert.equal(udp.wrap(strictBytes(frame), 20, ip.payloadLen), null);
  udp.fillChecksumV4(ip);
  assert.equal(udp.verifyChecksumV4(ip), true);
  udp.length = 11;
  assert.equal(udp.verifyChecksumV4(ip), false);
  udp.fillChecksumV4(ip);
  udp.length = 4;
  assert.equal(udp.verifyChecksumV4(ip), false);
});

test('a computed checksum of zero is sent as 0xffff, and verifies', () => {
  // Choose the last payload word so the datagram sums to 0xffff: checksum 0.
  const payload = new Uint8Array([0x12, 0x34, 0, 0]);
  for (const v6 of [false, true]) {
    const { frame, ip } = ipv4Frame(datagram({ srcPort: 4000, dstPort: 4789, payloadLen: 4 }, payload));
    const udp = new UdpView();
    assert.equal(udp.wrap(frame, 20, ip.payloadLen), null);
    const fill = () => (v6 ? udp.fillChecksumV6(frame, 0, 0) : udp.fillChecksumV4(ip));
    fill();
    const c = udp.checksum;
    frame[frame.length - 2] = c >>> 8;
    frame[frame.length - 1] = c & 0xff;
    fill();
    assert.equal(udp.checksum, 0xffff);
    assert.equal(v6 ? udp.verifyChecksumV6(frame, 0, 0) : udp.verifyChecksumV4(ip), true);
  }
});

test('parse∘emit is the identity', () => {
  checkRoundTrip({ arb: udpRepr, make: () => new UdpView(), emit: emitUdp, reprLen: udpReprLen, parse: parseUdp,
    after: (r) => r.payloadLen });
});

test('checksum over IPv4 and IPv6 pseudo-headers: fill, verify, naive reference', () => {
  fc.assert(fc.property(udpRepr.map((r) => ({ ...r, payloadLen: 0 })), fc.uint8Array({ maxLength: 300 }),
    fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.integer({ min: 0, max: 0xffffffff }),
    (r, payload, addrs, src4) => {
      const d = datagram({ ...r, payloadLen: payload.length }, payload);
      const { frame, ip } = ipv4Frame(d, src4, ~src4 >>> 0);
      const udp = new UdpView();
      assert.equal(udp.wrap(frame, 20, ip.payloadLen), null);
      udp.fillChecksumV4(ip);
      assert.equal(udp.verifyChecksumV4(ip), true);
      const n4 = naiveChecksum(frame, 12, 16, 4, IpProtocol.UDP, 20, d.length, 26);
      assert.equal(udp.checksum, n4 === 0 ? 0xffff : n4);

      const f6 = new Uint8Array(40 + d.length);
      emitIpv6({ dscp: 0, ecn: 0, flowLabel: 0, payloadLen: d.length, nextHeader: IpProtocol.UDP, hopLimit: 1,
        src: addrs.subarray(0, 16), dst: addrs.subarray(16) }, f6, 0);
      f6.set(d, 40);
      const u6 = new UdpView();
      assert.equal(u6.wrap(f6, 40, d.length), null);
      u6.fillChecksumV6(f6, 8, 24);
      assert.equal(u6.verifyChecksumV6(f6, 8, 24), true);
      const n6 = naiveChecksum(f6, 8, 24, 16, IpProtocol.UDP, 40, d.length, 46);
      assert.equal(u6.checksum, n6 === 0 ? 0xffff : n6);
      // Any changed byte outside the Length field fails (Length changes are tested apart).
      const at = r.srcPort % (d.length - 2);
      f6[40 + (at < 4 ? at : at + 2)] ^= 4;
      assert.equal(u6.verifyChecksumV6(f6, 8, 24), false);
    }), { numRuns: 300 });
});

test('random bytes never throw or read out of bounds', () => {
  checkRandomBytes(() => new UdpView(), 40, 2000);
});

test('truncated and damaged datagrams never throw or read out of bounds', () => {
  checkDamagedInputs(() => new UdpView(), encoded(udpRepr, emitUdp, udpReprLen, (r) => r.payloadLen), UDP_HEADER_LEN);
});
