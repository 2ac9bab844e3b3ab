import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  IPV4_MIN_HEADER_LEN, IpProtocol, Ipv4View, emitIpv4, ipv4ReprHeaderLen, parseIpv4, type Ipv4Repr,
} from '../../../src/wire/ipv4.js';
import { captured } from '../../util/captured-frames.js';
import { hex } from '../../util/strict-bytes.js';
import { checkDamagedInputs, checkRandomBytes, checkRoundTrip, encoded } from '../../util/wire-props.js';
import { naiveSum } from '../../util/naive-checksum.js';

/** Well-formed option bytes (NOPs and TLVs), EOL-padded to a multiple of 4, at most 40. */
const optionBytes: fc.Arbitrary<Uint8Array> = fc.array(
  fc.oneof(fc.constant([1]), fc.record({ kind: fc.integer({ min: 2, max: 255 }), data: fc.uint8Array({ maxLength: 6 }) })
    .map(({ kind, data }) => [kind, data.length + 2, ...data])),
  { maxLength: 6 },
).map((opts) => {
  const flat = opts.flat();
  while (flat.length % 4 !== 0) flat.push(0);
  return new Uint8Array(flat);
}).filter((o) => o.length <= 40);

const ipv4Repr: fc.Arbitrary<Ipv4Repr> = fc.record({
  dscp: fc.integer({ min: 0, max: 63 }),
  ecn: fc.integer({ min: 0, max: 3 }),
  ident: fc.integer({ min: 0, max: 0xffff }),
  dontFragment: fc.boolean(),
  moreFragments: fc.boolean(),
  fragOffset: fc.integer({ min: 0, max: 0x1fff }).map((x) => x * 8),
  ttl: fc.integer({ min: 0, max: 255 }),
  protocol: fc.integer({ min: 0, max: 255 }),
  src: fc.integer({ min: 0, max: 0xffffffff }),
  dst: fc.integer({ min: 0, max: 0xffffffff }),
  options: optionBytes,
  payloadLen: fc.integer({ min: 0, max: 200 }),
});

test('captured ICMP echo request: header fields, checksum, and emit reproduces it', () => {
  const f = captured.icmpEchoRequest;
  const v = new Ipv4View();
  assert.equal(v.wrap(f, 14, f.length - 14), null);
  const r = parseIpv4(v);
  assert.deepStrictEqual(r, {
    dscp: 0, ecn: 0, ident: 0xae62, dontFragment: true, moreFragments: false, fragOffset: 0, ttl: 64,
    protocol: IpProtocol.ICMP, src: 0xc6120001, dst: 0xc6120002, options: new Uint8Array(0), payloadLen: 20,
  });
  assert.equal(v.verifyChecksum(), true);
  assert.equal(v.isFragment, false);
  const out = new Uint8Array(20);
  emitIpv4(r, out, 0);
  assert.equal(hex(out), hex(f.subarray(14, 34)));
});

test('wrap: version, IHL, total length, options', () => {
  const r: Ipv4Repr = { dscp: 0, ecn: 0, ident: 1, dontFragment: false, moreFragments: false, fragOffset: 0, ttl: 1,
    protocol: 17, src: 1, dst: 2, options: new Uint8Array([7, 3, 4, 0]), payloadLen: 4 };
  const b = new Uint8Array(28);
  emitIpv4(r, b, 0);
  const ok = () => new Ipv4View().wrap(b, 0, b.length);
  assert.equal(ok(), null);
  assert.equal(new Ipv4View().wrap(b, 0, 27), 'truncated');
  b[0] = 0x65; assert.equal(ok(), 'bad-version');
  b[0] = 0x44; assert.equal(ok(), 'bad-header-length');
  b[0] = 0x48; assert.equal(ok(), 'truncated');
  b[0] = 0x46;
  b[3] = 20; assert.equal(ok(), 'bad-length');
  b[3] = 29; assert.equal(ok(), 'truncated');
  b[3] = 28;
  b[21] = 5; assert.equal(ok(), 'bad-option');
  b[21] = 1; assert.equal(ok(), 'bad-option');
  b[21] = 2; b[22] = 1; assert.equal(ok(), null); // option 7 (2 bytes), NOP, EOL
});

test('emit refuses options that IHL cannot express', () => {
  const r: Ipv4Repr = { dscp: 0, ecn: 0, ident: 1, dontFragment: false, moreFragments: false, fragOffset: 0, ttl: 1,
    protocol: 17, src: 1, dst: 2, options: new Uint8Array(44).fill(1), payloadLen: 0 };
  assert.throws(() => emitIpv4(r, new Uint8Array(64), 0), RangeError);
  const b = new Uint8Array(60);
  assert.equal(emitIpv4({ ...r, options: new Uint8Array(40).fill(1) }, b, 0), 60);
  assert.equal(b[0], 0x4f);
});

test('checksum: fill then verify, equal to a naive sum; setters keep their neighbours', () => {
  fc.assert(fc.property(ipv4Repr, fc.integer({ min: 0, max: 63 }), fc.integer({ min: 0, max: 3 }), (r, dscp, ecn) => {
    const hl = ipv4ReprHeaderLen(r);
    const b = new Uint8Array(hl + r.payloadLen);
    emitIpv4(r, b, 0);
    const v = new Ipv4View();
    assert.equal(v.wrap(b, 0, b.length), null);
    assert.equal(v.verifyChecksum(), true);
    assert.equal(naiveSum(b, 0, hl), 0xffff);
    v.dscp = dscp;
    v.ecn = ecn;
    assert.deepStrictEqual([v.dscp, v.ecn, v.version, v.headerLen, v.totalLen], [dscp, ecn, 4, hl, b.length]);
    v.ttl = (r.ttl + 1) & 0xff;
    assert.equal(v.verifyChecksum(), false);
    v.fillChecksum();
    assert.equal(v.verifyChecksum(), true);
  }));
});

test('parse∘emit is the identity', () => {
  checkRoundTrip({ arb: ipv4Repr, make: () => new Ipv4View(), emit: emitIpv4, reprLen: ipv4ReprHeaderLen, parse: parseIpv4,
    after: (r) => r.payloadLen });
});

test('random, truncated and damaged headers never throw or read out of bounds', () => {
  checkRandomBytes(() => new Ipv4View(), 80, 2000);
  checkDamagedInputs(() => new Ipv4View(), encoded(ipv4Repr, emitIpv4, ipv4ReprHeaderLen, (r) => r.payloadLen),
    IPV4_MIN_HEADER_LEN, 1000);
});
