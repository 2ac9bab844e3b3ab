import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ICMPV4_HEADER_LEN, Icmpv4Type, Icmpv4Unreachable, Icmpv4View, emitIcmpv4, icmpv4ReprLen, parseIcmpv4,
  type Icmpv4Repr,
} from '../../../src/wire/icmpv4.js';
import { Ipv4View, IpProtocol } from '../../../src/wire/ipv4.js';
import { captured } from '../../util/captured-frames.js';
import { hex } from '../../util/strict-bytes.js';
import { checkDamagedInputs, checkRandomBytes, checkRoundTrip, encoded } from '../../util/wire-props.js';
import { naiveSum } from '../../util/naive-checksum.js';

const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 0xffff });
const icmpRepr: fc.Arbitrary<Icmpv4Repr> = fc.oneof(
  fc.record({ kind: fc.constantFrom('echo-request' as const, 'echo-reply' as const), identifier: u16, sequence: u16 }),
  fc.record({ kind: fc.constant('other' as const), type: u8, code: u8, rest: fc.integer({ min: 0, max: 0xffffffff }) })
    .filter((r) => !(r.code === 0 && (r.type === Icmpv4Type.EchoRequest || r.type === Icmpv4Type.EchoReply))),
);

function icmpOf(frame: Uint8Array): Icmpv4View {
  const ip = new Ipv4View();
  assert.equal(ip.wrap(frame, 14, frame.length - 14), null);
  assert.equal(ip.protocol, IpProtocol.ICMP);
  const v = new Icmpv4View();
  assert.equal(v.wrap(frame, ip.payloadOff, ip.payloadLen), null);
  return v;
}

test('captured echo request and reply: fields, checksum, and emit reproduces them', () => {
  for (const [frame, kind] of [[captured.icmpEchoRequest, 'echo-request'], [captured.icmpEchoReply, 'echo-reply']] as const) {
    const v = icmpOf(frame);
    assert.deepStrictEqual(parseIcmpv4(v), { kind, identifier: 0xdd7c, sequence: 1 });
    assert.deepStrictEqual([v.isEcho, v.isError, v.payloadLen], [true, false, 12]);
    assert.equal(new TextDecoder().decode(frame.subarray(v.payloadOff)), 'vswitch-ping');
    assert.equal(v.verifyChecksum(), true);
    const copy = frame.slice();
    copy.fill(0, v.off, v.off + ICMPV4_HEADER_LEN);
    assert.equal(emitIcmpv4(parseIcmpv4(v), copy, v.off, v.payloadLen), ICMPV4_HEADER_LEN);
    assert.equal(hex(copy), hex(frame));
  }
});

test('any changed byte fails verification; fill repairs it', () => {
  const frame = captured.icmpEchoRequest.slice();
  const v = icmpOf(frame);
  for (let i = v.off; i < v.off + v.len; i++) {
    frame[i] ^= 0x01;
    assert.equal(v.verifyChecksum(), false, `byte ${i - v.off}`);
    v.fillChecksum();
    assert.equal(v.verifyChecksum(), true);
    assert.equal(naiveSum(frame, v.off, v.len), 0xffff);
  }
});

test('fragmentation needed carries the next-hop MTU in the second half-word', () => {
  const b = new Uint8Array(ICMPV4_HEADER_LEN + 28);
  const r: Icmpv4Repr = { kind: 'other', type: Icmpv4Type.DestUnreachable, code: Icmpv4Unreachable.FragmentationNeeded,
    rest: 1400 };
  emitIcmpv4(r, b, 0, 28);
  const v = new Icmpv4View();
  assert.equal(v.wrap(b, 0, b.length), null);
  assert.deepStrictEqual([v.nextHopMtu, v.isError, v.isEcho, v.verifyChecksum()], [1400, true, false, true]);
  v.nextHopMtu = 1280;
  v.identifier = 0;
  assert.equal(v.restOfHeader, 1280);
  assert.equal(v.verifyChecksum(), false);
  assert.equal(new Icmpv4View().wrap(b, 0, 7), 'truncated');
  assert.equal(new Icmpv4View().wrap(b, 30, 7), 'bad-length');
});

test('parse∘emit is the identity; emitted messages verify', () => {
  checkRoundTrip({ arb: icmpRepr, make: () => new Icmpv4View(), emit: emitIcmpv4, reprLen: icmpv4ReprLen,
    parse: parseIcmpv4 });
  fc.assert(fc.property(icmpRepr, fc.uint8Array({ maxLength: 100 }), (r, payload) => {
    const b = new Uint8Array(ICMPV4_HEADER_LEN + payload.length);
    b.set(payload, ICMPV4_HEADER_LEN);
    emitIcmpv4(r, b, 0, payload.length);
    const v = new Icmpv4View();
    assert.equal(v.wrap(b, 0, b.length), null);
    assert.equal(v.verifyChecksum(), true);
    assert.equal(naiveSum(b), 0xffff);
  }));
});

test('random bytes never throw or read out of bounds', () => {
  checkRandomBytes(() => new Icmpv4View(), 40);
});

test('truncated and damaged messages never throw or read out of bounds', () => {
  checkDamagedInputs(() => new Icmpv4View(), encoded(icmpRepr, emitIcmpv4, icmpv4ReprLen), ICMPV4_HEADER_LEN);
});
