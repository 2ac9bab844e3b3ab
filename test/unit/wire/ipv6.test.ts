import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  IPV6_HEADER_LEN, Ipv6ExtWalker, Ipv6FragmentView, Ipv6OptionType, Ipv6OptionsView, Ipv6RoutingView, Ipv6View,
  MAX_IPV6_EXT_HEADERS, emitIpv6, emitIpv6Fragment, emitIpv6Options, emitIpv6Routing, ipv6FragmentReprLen,
  ipv6OptionsReprLen, ipv6ReprLen, ipv6RoutingReprLen, parseIpv6, parseIpv6Fragment, parseIpv6Options,
  parseIpv6Routing, type Ipv6FragmentRepr, type Ipv6OptionsRepr, type Ipv6Repr, type Ipv6RoutingRepr,
} from '../../../src/wire/ipv6.js';
import { IpProtocol } from '../../../src/wire/ipv4.js';
import { ipv6FromString, ipv6ToString } from '../../../src/wire/bytes.js';
import { captured } from '../../util/captured-frames.js';
import { hex, strictBytes, wrapStrict, assertWireResult } from '../../util/strict-bytes.js';
import { checkDamagedInputs, checkRandomBytes, checkRoundTrip, encoded } from '../../util/wire-props.js';

const u8 = fc.integer({ min: 0, max: 255 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const addr = fc.uint8Array({ minLength: 16, maxLength: 16 });

const ipv6Repr: fc.Arbitrary<Ipv6Repr> = fc.record({
  dscp: fc.integer({ min: 0, max: 63 }),
  ecn: fc.integer({ min: 0, max: 3 }),
  flowLabel: fc.integer({ min: 0, max: 0xfffff }),
  payloadLen: fc.integer({ min: 0, max: 300 }),
  nextHeader: u8,
  hopLimit: u8,
  src: addr,
  dst: addr,
}).filter((r) => !(r.payloadLen === 0 && r.nextHeader === IpProtocol.HOPOPT)); // that is a jumbogram

const optionsRepr: fc.Arbitrary<Ipv6OptionsRepr> = fc.record({
  nextHeader: u8,
  options: fc.array(fc.record({ type: fc.integer({ min: 2, max: 255 }), data: fc.uint8Array({ maxLength: 20 }) }),
    { maxLength: 5 }),
});

const routingRepr: fc.Arbitrary<Ipv6RoutingRepr> = fc.record({
  nextHeader: u8,
  routingType: u8,
  segmentsLeft: u8,
  data: fc.integer({ min: 0, max: 4 }).chain((k) => fc.uint8Array({ minLength: 8 * k + 4, maxLength: 8 * k + 4 })),
});

const fragmentRepr: fc.Arbitrary<Ipv6FragmentRepr> = fc.record({
  nextHeader: u8,
  fragOffset: fc.integer({ min: 0, max: 8191 }).map((x) => x * 8),
  moreFragments: fc.boolean(),
  ident: u32,
});

/** IPv6 header + payload of a captured frame (after the 14-byte Ethernet header). */
function ipOf(frame: Uint8Array): Ipv6View {
  const v = new Ipv6View();
  assert.equal(v.wrap(frame, 14, frame.length - 14), null);
  return v;
}

test('captured UDP/IPv6 packet: fixed header fields', () => {
  const v = ipOf(captured.udp6);
  const r = parseIpv6(v);
  assert.equal(v.version, 6);
  assert.deepStrictEqual({ ...r, src: ipv6ToString(r.src), dst: ipv6ToString(r.dst) }, {
    dscp: 0, ecn: 0, flowLabel: 0x2071a, payloadLen: 18, nextHeader: IpProtocol.UDP, hopLimit: 64,
    src: '2001:db8::1', dst: '2001:db8::2',
  });
  assert.equal(ipv6ToString(v.buf, v.srcOff), '2001:db8::1');
  assert.equal(v.dstIsMulticast, false);
  const w = new Ipv6ExtWalker();
  assert.equal(w.walk(v), null);
  assert.deepStrictEqual([w.protocol, w.upperOff, w.upperLen, w.extCount, w.hasFragment, w.protocolFieldOff],
    [IpProtocol.UDP, 14 + 40, 18, 0, false, 14 + 6]);
  const out = new Uint8Array(40);
  emitIpv6(r, out, 0);
  assert.equal(hex(out), hex(captured.udp6.slice(14, 54)));
});

test('captured MLDv2 report: hop-by-hop Router Alert, walked and re-emitted byte for byte', () => {
  const v = ipOf(captured.mldv2Report);
  assert.equal(v.nextHeader, IpProtocol.HOPOPT);
  assert.equal(v.dstIsMulticast, true);
  const w = new Ipv6ExtWalker();
  assert.equal(w.walk(v), null);
  assert.deepStrictEqual([w.protocol, w.upperOff, w.extCount, w.protocolFieldOff], [IpProtocol.ICMPv6, 14 + 48, 1, 54]);
  const hbh = new Ipv6OptionsView();
  assert.equal(hbh.wrap(v.buf, v.payloadOff, v.payloadLen), null);
  assert.equal(hbh.hasRouterAlert, true);
  assert.equal(hbh.findOption(Ipv6OptionType.RouterAlert), 54 + 2);
  assert.equal(hbh.findOption(Ipv6OptionType.Jumbo), -1);
  const r = parseIpv6Options(hbh);
  assert.deepStrictEqual(r, { nextHeader: 58, options: [{ type: 5, data: new Uint8Array([0, 0]) }] });
  const out = new Uint8Array(ipv6OptionsReprLen(r));
  emitIpv6Options(r, out, 0);
  assert.equal(hex(out), hex(captured.mldv2Report.slice(54, 62)));
});

function header(payload: Uint8Array, nextHeader: number, payloadLen = payload.length): Uint8Array {
  const b = new Uint8Array(IPV6_HEADER_LEN + payload.length);
  emitIpv6({
    dscp: 0, ecn: 0, flowLabel: 0, payloadLen, nextHeader, hopLimit: 64,
    src: ipv6FromString('2001:db8::1')!, dst: ipv6FromString('2001:db8::2')!,
  }, b, 0);
  b.set(payload, IPV6_HEADER_LEN);
  return b;
}

test('wrap: version, truncation, jumbograms', () => {
  const ok = header(new Uint8Array(8), IpProtocol.UDP);
  assert.equal(new Ipv6View().wrap(ok, 0, ok.length), null);
  assert.equal(new Ipv6View().wrap(ok, 0, ok.length - 1), 'truncated');
  assert.equal(new Ipv6View().wrap(ok, 0, 39), 'truncated');
  assert.equal(new Ipv6View().wrap(ok, 1, ok.length), 'bad-length');
  const v4 = ok.slice();
  v4[0] = 0x45;
  assert.equal(new Ipv6View().wrap(v4, 0, v4.length), 'bad-version');
  // Extra bytes after the payload are link padding.
  const padded = new Uint8Array(ok.length + 6);
  padded.set(ok);
  const pv = new Ipv6View();
  assert.equal(pv.wrap(padded, 0, padded.length), null);
  assert.equal(pv.end, ok.length);
  // RFC 2675: payload length 0, hop-by-hop with a Jumbo Payload option (type 0xC2, 4 bytes).
  const jumboHbh = new Uint8Array([IpProtocol.TCP, 0, 0xc2, 4, 0, 1, 0, 0]);
  assert.equal(new Ipv6View().wrap(header(jumboHbh, 0, 0), 0, 48), 'unsupported');
  const plainHbh = new Uint8Array([IpProtocol.TCP, 0, 1, 4, 0, 0, 0, 0]);
  assert.equal(new Ipv6View().wrap(header(plainHbh, 0, 0), 0, 48), 'bad-length');
  assert.equal(new Ipv6View().wrap(header(new Uint8Array(0), 0, 0), 0, 40), 'bad-length');
  // Payload length 0 with no next header is just an empty packet.
  assert.equal(new Ipv6View().wrap(header(new Uint8Array(0), IpProtocol.IPv6NoNxt), 0, 40), null);
});

test('traffic class, flow label and their setters stay in their bits', () => {
  fc.assert(fc.property(ipv6Repr, fc.integer({ min: 0, max: 63 }), fc.integer({ min: 0, max: 3 }),
    fc.integer({ min: 0, max: 0xfffff }), (r, dscp, ecn, fl) => {
      const b = new Uint8Array(40 + r.payloadLen);
      emitIpv6(r, b, 0);
      const v = new Ipv6View();
      assert.equal(v.wrap(b, 0, b.length), null);
      v.flowLabel = fl;
      v.dscp = dscp;
      v.ecn = ecn;
      assert.deepStrictEqual([v.version, v.dscp, v.ecn, v.trafficClass, v.flowLabel, v.payloadLen],
        [6, dscp, ecn, (dscp << 2) | ecn, fl, r.payloadLen]);
      v.trafficClass = 0xa5;
      assert.deepStrictEqual([v.version, v.dscp, v.ecn, v.flowLabel], [6, 0xa5 >>> 2, 1, fl]);
      v.setSrc(r.dst);
      v.setDst(r.src);
      assert.deepStrictEqual([b.slice(8, 24), b.slice(24, 40)], [r.dst, r.src]);
    }));
});

test('parse∘emit is the identity: fixed header and each extension header', () => {
  checkRoundTrip({
    arb: ipv6Repr, make: () => new Ipv6View(), emit: emitIpv6, reprLen: ipv6ReprLen, parse: parseIpv6,
    after: (r) => r.payloadLen,
  });
  checkRoundTrip({
    arb: optionsRepr, make: () => new Ipv6OptionsView(), emit: emitIpv6Options, reprLen: ipv6OptionsReprLen,
    parse: parseIpv6Options,
  });
  checkRoundTrip({
    arb: routingRepr, make: () => new Ipv6RoutingView(), emit: emitIpv6Routing, reprLen: ipv6RoutingReprLen,
    parse: parseIpv6Routing,
  });
  checkRoundTrip({
    arb: fragmentRepr, make: () => new Ipv6FragmentView(), emit: emitIpv6Fragment, reprLen: ipv6FragmentReprLen,
    parse: parseIpv6Fragment,
  });
});

test('options headers are padded to 8 with Pad1 or PadN and lengths are checked', () => {
  for (let n = 0; n <= 9; n++) {
    const r: Ipv6OptionsRepr = { nextHeader: 6, options: [{ type: 0x1e, data: new Uint8Array(n).fill(0xaa) }] };
    const len = ipv6OptionsReprLen(r);
    assert.equal(len % 8, 0);
    const b = new Uint8Array(len);
    emitIpv6Options(r, b, 0);
    const pad = len - (4 + n);
    if (pad === 1) assert.equal(b[len - 1], Ipv6OptionType.Pad1);
    if (pad >= 2) assert.deepStrictEqual([...b.slice(4 + n)], [1, pad - 2, ...new Array<number>(pad - 2).fill(0)]);
    assert.deepStrictEqual(parseIpv6Options(viewOf(new Ipv6OptionsView(), b)), r);
  }
  // An option running past the header, and a lone type byte at the end.
  assert.equal(new Ipv6OptionsView().wrap(new Uint8Array([6, 0, 0x1e, 5, 0, 0, 0, 0]), 0, 8), 'bad-option');
  assert.equal(new Ipv6OptionsView().wrap(new Uint8Array([6, 0, 0, 0, 0, 0, 0, 0x1e]), 0, 8), 'bad-option');
  assert.equal(new Ipv6OptionsView().wrap(new Uint8Array([6, 0, 1, 4, 0, 0, 0, 0]), 0, 8), null);
  assert.equal(new Ipv6OptionsView().wrap(new Uint8Array([6, 1, 1, 4, 0, 0, 0, 0]), 0, 8), 'truncated');
  assert.throws(() => emitIpv6Options({ nextHeader: 6, options: [{ type: 9, data: new Uint8Array(256) }] },
    new Uint8Array(264), 0), RangeError);
});

function viewOf<V extends { wrap(b: Uint8Array, o: number, l: number): unknown }>(v: V, b: Uint8Array): V {
  assert.equal(v.wrap(b, 0, b.length), null);
  return v;
}

test('fragment and routing views', () => {
  const b = new Uint8Array(8);
  emitIpv6Fragment({ nextHeader: 17, fragOffset: 1448, moreFragments: true, ident: 0xdeadbeef }, b, 0);
  assert.equal(hex(b), '110005a9deadbeef');
  const f = viewOf(new Ipv6FragmentView(), b);
  assert.deepStrictEqual([f.isLaterFragment, f.isAtomic, f.payloadLen], [true, false, 0]);
  emitIpv6Fragment({ nextHeader: 17, fragOffset: 0, moreFragments: false, ident: 1 }, b, 0);
  assert.equal(viewOf(new Ipv6FragmentView(), b).isAtomic, true);
  assert.equal(new Ipv6FragmentView().wrap(b, 0, 7), 'truncated');

  const srh = new Uint8Array(24);
  emitIpv6Routing({ nextHeader: 41, routingType: 4, segmentsLeft: 1, data: new Uint8Array(20).fill(7) }, srh, 0);
  const rv = viewOf(new Ipv6RoutingView(), srh);
  assert.deepStrictEqual([rv.headerLen, rv.routingType, rv.segmentsLeft, rv.dataOff, rv.dataLen], [24, 4, 1, 4, 20]);
  rv.segmentsLeft = 0;
  assert.equal(srh[3], 0);
  assert.equal(new Ipv6RoutingView().wrap(srh, 0, 16), 'truncated');
});

// --- the walker against a model ---------------------------------------------

type Ext =
  | { kind: 'hbh' | 'dst'; repr: Ipv6OptionsRepr }
  | { kind: 'routing'; repr: Ipv6RoutingRepr }
  | { kind: 'fragment'; repr: Ipv6FragmentRepr }
  | { kind: 'ah'; icvWords: number };

const typeOf = (e: Ext): number => ({
  hbh: IpProtocol.HOPOPT, dst: IpProtocol.IPv6Opts, routing: IpProtocol.IPv6Route,
  fragment: IpProtocol.IPv6Frag, ah: IpProtocol.AH,
})[e.kind];

const extArb: fc.Arbitrary<Ext> = fc.oneof(
  optionsRepr.map((repr) => ({ kind: 'dst' as const, repr })),
  routingRepr.map((repr) => ({ kind: 'routing' as const, repr })),
  fragmentRepr.map((repr) => ({ kind: 'fragment' as const, repr })),
  fc.constantFrom(1, 3).map((icvWords) => ({ kind: 'ah' as const, icvWords })),
);
const upperArb = fc.constantFrom<number>(IpProtocol.TCP, IpProtocol.UDP, IpProtocol.ICMPv6, IpProtocol.IPv6NoNxt, IpProtocol.ESP, 4, 41);

const chainArb = fc.record({
  hbh: fc.option(optionsRepr, { nil: undefined }),
  rest: fc.array(extArb, { maxLength: MAX_IPV6_EXT_HEADERS }),
  upper: upperArb,
  upperBytes: fc.integer({ min: 0, max: 40 }),
}).map(({ hbh, rest, upper, upperBytes }) => {
  const exts: Ext[] = hbh === undefined ? rest : [{ kind: 'hbh', repr: hbh }, ...rest];
  return { exts: exts.slice(0, MAX_IPV6_EXT_HEADERS), upper, upperBytes };
});

/** Packet bytes for a chain, with each header's Next Header naming the one after it. */
function buildChain(exts: Ext[], upper: number, upperBytes: number): { bytes: Uint8Array; offs: number[] } {
  const parts: Uint8Array[] = [];
  const offs: number[] = [];
  let off = IPV6_HEADER_LEN;
  exts.forEach((e, i) => {
    const next = i + 1 < exts.length ? typeOf(exts[i + 1]!) : upper;
    let b: Uint8Array;
    switch (e.kind) {
      case 'hbh': case 'dst': {
        const r = { ...e.repr, nextHeader: next };
        b = new Uint8Array(ipv6OptionsReprLen(r)); emitIpv6Options(r, b, 0); break;
      }
      case 'routing': {
        const r = { ...e.repr, nextHeader: next };
        b = new Uint8Array(ipv6RoutingReprLen(r)); emitIpv6Routing(r, b, 0); break;
      }
      case 'fragment': b = new Uint8Array(8); emitIpv6Fragment({ ...e.repr, nextHeader: next }, b, 0); break;
      case 'ah':
        // RFC 4302: next header, payload length in 4-byte words minus 2, reserved, SPI, sequence, ICV.
        b = new Uint8Array(12 + 4 * e.icvWords);
        b[0] = next; b[1] = b.length / 4 - 2; b[4] = 0x12; b[11] = 1;
        break;
    }
    offs.push(off);
    parts.push(b);
    off += b.length;
  });
  parts.push(new Uint8Array(upperBytes).fill(0x5a));
  const payload = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { payload.set(p, o); o += p.length; }
  return { bytes: header(payload, exts.length > 0 ? typeOf(exts[0]!) : upper), offs };
}

test('walker finds the upper layer, counts headers and spots later fragments (model)', () => {
  const w = new Ipv6ExtWalker();
  fc.assert(fc.property(chainArb, ({ exts, upper, upperBytes }) => {
    const { bytes, offs } = buildChain(exts, upper, upperBytes);
    const ip = viewOf(new Ipv6View(), strictBytes(bytes));
    assert.equal(w.walk(ip), null);
    // Model: walk the list; a fragment with a non-zero offset ends the walk.
    let count = exts.length;
    let protocol = upper;
    let fragIndex = -1;
    let later = false;
    for (let i = 0; i < exts.length; i++) {
      const e = exts[i]!;
      if (e.kind !== 'fragment') continue;
      if (fragIndex < 0) fragIndex = i;
      if (e.repr.fragOffset !== 0) {
        later = true;
        count = i + 1;
        protocol = i + 1 < exts.length ? typeOf(exts[i + 1]!) : upper;
        break;
      }
    }
    const upperOff = count < exts.length ? offs[count]! : bytes.length - upperBytes;
    assert.deepStrictEqual(
      [w.protocol, w.extCount, w.upperOff, w.upperLen, w.fragmentOff, w.isLaterFragment, w.protocolFieldOff],
      [protocol, count, upperOff, bytes.length - upperOff, fragIndex < 0 ? -1 : offs[fragIndex]!, later,
        count === 0 ? 6 : offs[count - 1]!]);
    assert.equal(bytes[w.protocolFieldOff], w.protocol);
    // Every header the walk crossed wraps in its own view.
    for (let i = 0; i < count; i++) {
      const e = exts[i]!;
      const v = e.kind === 'fragment' ? new Ipv6FragmentView() : e.kind === 'routing' ? new Ipv6RoutingView()
        : e.kind === 'ah' ? null : new Ipv6OptionsView();
      if (v !== null) assert.equal(v.wrap(bytes, offs[i]!, bytes.length - offs[i]!), null);
    }
  }), { numRuns: 500 });
});

test('walker errors: too many headers, misplaced hop-by-hop, truncation, bad options', () => {
  const w = new Ipv6ExtWalker();
  const dst = (): Ext => ({ kind: 'dst', repr: { nextHeader: 0, options: [] } });
  const eight = buildChain(Array.from({ length: 8 }, dst), IpProtocol.TCP, 20).bytes;
  assert.equal(w.walk(viewOf(new Ipv6View(), eight)), null);
  assert.equal(w.extCount, 8);
  const nine = buildChain(Array.from({ length: 9 }, dst), IpProtocol.TCP, 20).bytes;
  assert.equal(w.walk(viewOf(new Ipv6View(), nine)), 'unsupported');
  assert.equal(w.protocol, -1);

  const late = buildChain([dst(), { kind: 'hbh', repr: { nextHeader: 0, options: [] } }], IpProtocol.TCP, 0).bytes;
  assert.equal(w.walk(viewOf(new Ipv6View(), late)), 'bad-type');

  const two = buildChain([dst(), { kind: 'routing', repr: { nextHeader: 0, routingType: 4, segmentsLeft: 0,
    data: new Uint8Array(12) } }], IpProtocol.TCP, 0).bytes;
  for (let cut = 0; cut < two.length - IPV6_HEADER_LEN; cut++) {
    // Shorten the payload length: the chain no longer fits.
    const b = two.slice(0, IPV6_HEADER_LEN + cut);
    b[4] = 0; b[5] = cut;
    assert.equal(w.walk(viewOf(new Ipv6View(), b)), 'truncated', `payload ${cut}`);
  }
  const badOpt = buildChain([dst()], IpProtocol.TCP, 0).bytes;
  badOpt[IPV6_HEADER_LEN + 2] = 0x1e; badOpt[IPV6_HEADER_LEN + 3] = 9;
  assert.equal(w.walk(viewOf(new Ipv6View(), badOpt)), 'bad-option');

  // A first fragment still walks on; its headers must all be there.
  const first = buildChain([{ kind: 'fragment', repr: { nextHeader: 0, fragOffset: 0, moreFragments: true, ident: 9 } },
    dst()], IpProtocol.UDP, 8).bytes;
  assert.equal(w.walk(viewOf(new Ipv6View(), first)), null);
  assert.deepStrictEqual([w.protocol, w.extCount, w.hasFragment, w.isLaterFragment], [IpProtocol.UDP, 2, true, false]);
  assert.equal(w.walkFrom(first, 10, 5, 0, 6), 'bad-length');
  assert.equal(w.walkFrom(first, 0, first.length + 1, 0, 6), 'bad-length');
});

test('walker on random payloads never throws or reads out of bounds', () => {
  const w = new Ipv6ExtWalker();
  fc.assert(fc.property(fc.constantFrom(0, 43, 44, 51, 60), fc.uint8Array({ maxLength: 200 }), (nh, payload) => {
    // Bias towards chains: make Next Header bytes point at more extension headers.
    const bytes = strictBytes(header(payload, nh));
    const ip = new Ipv6View();
    if (ip.wrap(bytes, 0, bytes.length) !== null) return; // an empty hop-by-hop packet reads as a jumbogram
    let e: unknown;
    try {
      e = w.walk(ip);
    } catch (err) {
      assert.fail(`walk threw on ${hex(payload)}: ${String(err)}`);
    }
    assertWireResult(e);
    if (e === null) {
      assert.ok(w.upperOff >= 40 && w.upperOff <= bytes.length);
      assert.ok(w.extCount <= MAX_IPV6_EXT_HEADERS);
    }
  }), { numRuns: 2000 });
});

test('random bytes never throw or read out of bounds (every view)', () => {
  for (const make of [() => new Ipv6View(), () => new Ipv6OptionsView(), () => new Ipv6RoutingView(),
    () => new Ipv6FragmentView()]) {
    checkRandomBytes(make, 96);
  }
});

test('truncated and damaged headers never throw or read out of bounds', () => {
  checkDamagedInputs(() => new Ipv6View(), encoded(ipv6Repr, emitIpv6, ipv6ReprLen, (r) => r.payloadLen), 40);
  checkDamagedInputs(() => new Ipv6OptionsView(), encoded(optionsRepr, emitIpv6Options, ipv6OptionsReprLen), 8);
  checkDamagedInputs(() => new Ipv6RoutingView(), encoded(routingRepr, emitIpv6Routing, ipv6RoutingReprLen), 8);
  checkDamagedInputs(() => new Ipv6FragmentView(), encoded(fragmentRepr, emitIpv6Fragment, ipv6FragmentReprLen), 8);
  assert.equal(wrapStrict(() => new Ipv6View(), captured.mldv2Report.slice(14)).error, null);
});
