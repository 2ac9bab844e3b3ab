import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  BROADCAST_MAC, get16, get32, getMac, getMacLo, ipv4FromString, ipv4ToString, ipv6FromString, ipv6ToString, isMulticastMac,
  macFromString, macToString, set16, set32, setMac,
} from '../../../src/wire/bytes.js';
import { hex } from '../../util/strict-bytes.js';

test('16/32-bit big-endian fields and 48-bit MACs round-trip at any offset', () => {
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffffffff }),
    fc.integer({ min: 0, max: 0xffffffffffff }), fc.integer({ min: 0, max: 5 }), (v16, v32, mac, off) => {
      const b = new Uint8Array(off + 6);
      set16(b, off, v16);
      assert.equal(get16(b, off), v16);
      assert.equal(b[off], v16 >>> 8);
      set32(b, off, v32);
      assert.equal(get32(b, off), v32);
      assert.equal(b[off], v32 >>> 24);
      setMac(b, off, mac);
      assert.equal(getMac(b, off), mac);
      // The data path's halves: high 16 bits, low 32 bits signed (a small integer to V8).
      assert.equal(get16(b, off) * 0x100000000 + (getMacLo(b, off) >>> 0), mac);
      assert.equal(getMacLo(b, off), mac % 0x100000000 | 0);
      assert.equal(macFromString(macToString(mac)), mac);
    }));
  const b = new Uint8Array(6);
  setMac(b, 0, 0x0123456789ab);
  assert.equal(hex(b), '0123456789ab');
});

test('MAC text and group bit', () => {
  assert.equal(macToString(0x02000000000a), '02:00:00:00:00:0a');
  assert.equal(macFromString('02-00-00-00-00-0A'), 0x02000000000a);
  for (const bad of ['02:00:00:00:00', '02:00:00:00:00:0g', '2:00:00:00:00:0a', '']) assert.equal(macFromString(bad), null);
  assert.equal(isMulticastMac(BROADCAST_MAC), true);
  assert.equal(isMulticastMac(0x01005e000001), true);
  assert.equal(isMulticastMac(0x333300000016), true);
  assert.equal(isMulticastMac(0x02000000000a), false);
  assert.equal(isMulticastMac(0xfeffffffffff), false);
});

test('IPv4 text', () => {
  assert.equal(ipv4ToString(0xc6120001), '198.18.0.1');
  assert.equal(ipv4FromString('198.18.0.1'), 0xc6120001);
  assert.equal(ipv4FromString('255.255.255.255'), 0xffffffff);
  for (const bad of ['1.2.3', '1.2.3.4.5', '256.0.0.1', '1.2.3.-4', '1.2.3.4 ', 'a.b.c.d', '']) {
    assert.equal(ipv4FromString(bad), null, bad);
  }
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), (a) => assert.equal(ipv4FromString(ipv4ToString(a)), a)));
});

test('IPv6 text: RFC 4291 forms in, RFC 5952 canonical form out', () => {
  const canon: [string, string][] = [
    ['2001:db8::1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],        // §4.2.3: first of equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],      // §4.2.2: no "::" for one zero field
    ['2001:db8::0:1', '2001:db8::1'],
    ['2001:DB8::A', '2001:db8::a'],                        // §4.3: lower case
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],                      // §4.2.3: the longest run
    ['::', '::'], ['::1', '::1'], ['1::', '1::'],
    ['::ffff:198.18.0.1', '::ffff:c612:1'],
    ['fe80:0:0:0:6468:95ff:fed2:37fe', 'fe80::6468:95ff:fed2:37fe'],
  ];
  for (const [input, out] of canon) {
    const b = ipv6FromString(input);
    assert.ok(b !== null, input);
    assert.equal(ipv6ToString(b), out, input);
  }
  assert.equal(hex(ipv6FromString('::ffff:198.18.0.1')!), '00000000000000000000ffffc6120001');
  for (const bad of ['1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', ':::', '12345::', 'g::', '1:2:3:4:5:6:7:8::',
    '::1.2.3', '1.2.3.4', '']) {
    assert.equal(ipv6FromString(bad), null, bad);
  }
  fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 8 }), (b, zeros) => {
    b.fill(0, 4, 4 + 2 * zeros > 16 ? 16 : 4 + 2 * zeros); // bias towards zero runs
    const s = ipv6ToString(b);
    assert.deepStrictEqual(ipv6FromString(s), b);
    assert.ok(!/(^|:)0[0-9a-f]/.test(s), `no leading zeros: ${s}`);
    assert.ok(s.split('::').length <= 2);
  }), { numRuns: 500 });
});
