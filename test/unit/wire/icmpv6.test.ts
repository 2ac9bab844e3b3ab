import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ICMPV6_HEADER_LEN, Icmpv6Type, Icmpv6View, NdOptionType, checkNdOptions, emitIcmpv6, icmpv6ReprLen, ndFixedLen,
  parseIcmpv6, type Icmpv6Repr, type NdOption,
} from '../../../src/wire/icmpv6.js';
import { IpProtocol } from '../../../src/wire/ipv4.js';
import { Ipv6ExtWalker, Ipv6View, emitIpv6 } from '../../../src/wire/ipv6.js';
import { ipv6FromString, ipv6ToString } from '../../../src/wire/bytes.js';
import { captured } from '../../util/captured-frames.js';
import { hex, strictBytes, wrapStrict } from '../../util/strict-bytes.js';
import { checkDamagedInputs, checkRandomBytes, checkRoundTrip, encoded } from '../../util/wire-props.js';
import { naiveChecksum } from '../../util/naive-checksum.js';

const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const mac = fc.integer({ min: 0, max: 0xffffffffffff });
const addr = fc.uint8Array({ minLength: 16, maxLength: 16 });

const ndOption: fc.Arbitrary<NdOption> = fc.oneof(
  mac.map((m) => ({ kind: 'source-link-addr' as const, mac: m })),
  mac.map((m) => ({ kind: 'target-link-addr' as const, mac: m })),
  u32.map((mtu) => ({ kind: 'mtu' as const, mtu })),
  fc.record({
    type: u8.filter((t) => t !== NdOptionType.SourceLinkAddr && t !== NdOptionType.TargetLinkAddr && t !== NdOptionType.Mtu),
    data: fc.integer({ min: 0, max: 2 }).chain((k) => fc.uint8Array({ minLength: 8 * k + 6, maxLength: 8 * k + 6 })),
  }).map((u) => ({ kind: 'unknown' as const, ...u })),
);
const options = fc.array(ndOption, { maxLength: 4 });

const icmpv6Repr: fc.Arbitrary<Icmpv6Repr> = fc.oneof(
  fc.record({ kind: fc.constantFrom('echo-request' as const, 'echo-reply' as const), identifier: u16, sequence: u16 }),
  fc.record({ kind: fc.constant('neighbor-solicit' as const), target: addr, options }),
  fc.record({ kind: fc.constant('neighbor-advert' as const), router: fc.boolean(), solicited: fc.boolean(),
    override: fc.boolean(), target: addr, options }),
  fc.record({ kind: fc.constant('other' as const), type: u8, code: u8, rest: u32 }).filter((r) =>
    // Echo and NS/NA with code 0 have their own kinds; other ND messages need more than 8 bytes.
    !(r.code === 0 && [128, 129, 135, 136].includes(r.type)) && !(ndFixedLen(r.type) > ICMPV6_HEADER_LEN)),
);

function icmpOf(frame: Uint8Array): { ip: Ipv6View; icmp: Icmpv6View } {
  const ip = new Ipv6View();
  assert.equal(ip.wrap(frame, 14, frame.length - 14), null);
  const w = new Ipv6ExtWalker();
  assert.equal(w.walk(ip), null);
  assert.equal(w.protocol, IpProtocol.ICMPv6);
  const icmp = new Icmpv6View();
  assert.equal(icmp.wrap(frame, w.upperOff, w.upperLen), null);
  return { ip, icmp };
}

/** Re-emits a captured message from its repr and checksum; must give the same bytes. */
function assertReEmits(frame: Uint8Array, ip: Ipv6View, icmp: Icmpv6View): void {
  const copy = frame.slice();
  copy.fill(0, icmp.off, icmp.off + icmp.len);
  const n = emitIcmpv6(parseIcmpv6(icmp), copy, icmp.off);
  assert.equal(n, icmp.len);
  const v = new Icmpv6View();
  assert.equal(v.wrap(copy, icmp.off, icmp.len), null);
  v.fillChecksumV6(copy, ip.srcOff, ip.dstOff);
  assert.equal(hex(copy), hex(frame));
}

test('captured neighbor solicitation: target, source link-layer address, checksum', () => {
  const { ip, icmp } = icmpOf(captured.neighborSolicit);
  const r = parseIcmpv6(icmp);
  assert.equal(r.kind, 'neighbor-solicit');
  if (r.kind !== 'neighbor-solicit') return;
  assert.equal(ipv6ToString(r.target), '2001:db8::2');
  assert.deepStrictEqual(r.options, [{ kind: 'source-link-addr', mac: 0x02000000000a }]);
  assert.deepStrictEqual([icmp.isNd, icmp.sourceLinkAddr, icmp.targetLinkAddr, icmp.ndOptionsLen], [true, 0x02000000000a, -1, 8]);
  assert.equal(ipv6ToString(icmp.buf, icmp.targetOff), '2001:db8::2');
  assert.equal(icmp.verifyChecksumV6(captured.neighborSolicit, ip.srcOff, ip.dstOff), true);
  assert.equal(icmp.checksum, naiveChecksum(captured.neighborSolicit, ip.srcOff, ip.dstOff, 16, IpProtocol.ICMPv6,
    icmp.off, icmp.len, icmp.checksumOff));
  assertReEmits(captured.neighborSolicit, ip, icmp);
});

test('captured neighbor advertisement: flags, target link-layer address, checksum', () => {
  const { ip, icmp } = icmpOf(captured.neighborAdvert);
  assert.deepStrictEqual(parseIcmpv6(icmp), {
    kind: 'neighbor-advert', router: false, solicited: true, override: true,
    target: ipv6FromString('2001:db8::2'), options: [{ kind: 'target-link-addr', mac: 0x02000000000b }],
  });
  assert.equal(icmp.targetLinkAddr, 0x02000000000b);
  assert.equal(icmp.verifyChecksumV6(captured.neighborAdvert, ip.srcOff, ip.dstOff), true);
  assertReEmits(captured.neighborAdvert, ip, icmp);
});

test('captured echo, router solicitation, DAD probe and MLDv2 report (behind hop-by-hop) verify', () => {
  const echo = icmpOf(captured.icmpv6EchoRequest);
  assert.deepStrictEqual(parseIcmpv6(echo.icmp), { kind: 'echo-request', identifier: 0xdd7d, sequence: 1 });
  assert.equal(echo.icmp.verifyChecksumV6(echo.ip.buf, echo.ip.srcOff, echo.ip.dstOff), true);
  assert.equal(echo.icmp.ndOptionsLen, 0);
  assert.equal(echo.icmp.nextNdOption(-1), -1);

  const rs = icmpOf(captured.routerSolicit);
  assert.deepStrictEqual([rs.icmp.type, rs.icmp.isNd, rs.icmp.sourceLinkAddr], [Icmpv6Type.RouterSolicitation, true, 0x02000000000a]);
  assert.equal(rs.icmp.verifyChecksumV6(rs.ip.buf, rs.ip.srcOff, rs.ip.dstOff), true);

  const dad = icmpOf(captured.dadSolicit);
  assert.equal(ipv6ToString(dad.ip.buf, dad.ip.srcOff), '::');
  const r = parseIcmpv6(dad.icmp);
  assert.equal(r.kind === 'neighbor-solicit' && r.options[0]?.kind === 'unknown' && r.options[0].type, 14);
  assert.equal(dad.icmp.verifyChecksumV6(dad.ip.buf, dad.ip.srcOff, dad.ip.dstOff), true);
  assertReEmits(captured.dadSolicit, dad.ip, dad.icmp);

  // The MLDv2 checksum covers only the ICMPv6 message: the walker gives where and how long.
  const mld = icmpOf(captured.mldv2Report);
  assert.deepStrictEqual([mld.icmp.type, mld.icmp.len], [143, 48]);
  assert.equal(mld.icmp.verifyChecksumV6(mld.ip.buf, mld.ip.srcOff, mld.ip.dstOff), true);
});

test('ND options: zero length and overruns are bad, the fixed part must fit', () => {
  const ns = captured.neighborSolicit.slice(14 + 40);
  assert.equal(new Icmpv6View().wrap(ns, 0, ns.length), null);
  const zero = ns.slice();
  zero[25] = 0;
  assert.equal(new Icmpv6View().wrap(zero, 0, zero.length), 'bad-option');
  const over = ns.slice();
  over[25] = 2;
  assert.equal(new Icmpv6View().wrap(over, 0, over.length), 'bad-option');
  assert.equal(new Icmpv6View().wrap(ns, 0, 25), 'bad-option');
  assert.equal(new Icmpv6View().wrap(ns, 0, 24), null);
  assert.equal(new Icmpv6View().wrap(ns, 0, 23), 'truncated');
  assert.equal(checkNdOptions(new Uint8Array([1, 1, 0, 0, 0, 0, 0, 0, 3, 0]), 0, 10), 'bad-option');
  // Iteration stops on a position that is not an option start.
  const v = new Icmpv6View();
  assert.equal(v.wrap(ns, 0, ns.length), null);
  assert.deepStrictEqual([v.nextNdOption(-1), v.nextNdOption(24), v.nextNdOption(31), v.nextNdOption(3)], [24, -1, -1, -1]);
});

test('parse∘emit is the identity', () => {
  checkRoundTrip({ arb: icmpv6Repr, make: () => new Icmpv6View(), emit: emitIcmpv6, reprLen: icmpv6ReprLen,
    parse: parseIcmpv6, numRuns: 500 });
});

test('checksum with the IPv6 pseudo-header: fill, verify, naive reference, any change detected', () => {
  fc.assert(fc.property(icmpv6Repr, fc.uint8Array({ maxLength: 64 }), addr, addr, u16, (r, payload, src, dst, pick) => {
    const n = icmpv6ReprLen(r);
    // ND messages (router solicitations among the 'other' kind too) end with their options.
    const isNd = r.kind === 'neighbor-solicit' || r.kind === 'neighbor-advert' || (r.kind === 'other' && ndFixedLen(r.type) > 0);
    const body = isNd ? new Uint8Array(0) : payload;
    const len = n + body.length;
    const b = new Uint8Array(40 + len);
    emitIpv6({ dscp: 0, ecn: 0, flowLabel: 0, payloadLen: len, nextHeader: IpProtocol.ICMPv6, hopLimit: 255, src, dst }, b, 0);
    emitIcmpv6(r, b, 40);
    b.set(body, 40 + n);
    const v = new Icmpv6View();
    assert.equal(v.wrap(b, 40, len), null);
    v.fillChecksumV6(b, 8, 24);
    assert.equal(v.verifyChecksumV6(b, 8, 24), true);
    assert.equal(v.checksum, naiveChecksum(b, 8, 24, 16, IpProtocol.ICMPv6, 40, len, 42));
    b[8 + (pick % (b.length - 8))] ^= 0x20; // addresses or message: both are summed
    assert.equal(v.verifyChecksumV6(b, 8, 24), false);
  }), { numRuns: 300 });
});

test('random bytes never throw or read out of bounds, ND types included', () => {
  checkRandomBytes(() => new Icmpv6View(), 80, 1000);
  fc.assert(fc.property(fc.integer({ min: 133, max: 137 }), fc.uint8Array({ maxLength: 80 }), (type, rest) => {
    const b = new Uint8Array(1 + rest.length);
    b[0] = type;
    b.set(rest, 1);
    const { error, view } = wrapStrict(() => new Icmpv6View(), b);
    if (error === null) for (let o = view.nextNdOption(-1), i = 0; o >= 0; o = view.nextNdOption(o), i++) assert.ok(i < 10);
  }), { numRuns: 3000 });
});

test('truncated and damaged messages never throw or read out of bounds', () => {
  checkDamagedInputs(() => new Icmpv6View(), encoded(icmpv6Repr, emitIcmpv6, icmpv6ReprLen), ICMPV6_HEADER_LEN, 1000);
  assert.equal(wrapStrict(() => new Icmpv6View(), strictBytes(captured.neighborAdvert.slice(54))).error, null);
});
