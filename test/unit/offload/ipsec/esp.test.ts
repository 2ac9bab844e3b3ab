// ESP engine: round trips over random packets (IPv4/IPv6, transport/tunnel
// incl. mixed families, AES-GCM-128/256, TCP/UDP/ICMP, options and extension
// headers), the headers it writes, every error path, tampering, anti-replay,
// sequence exhaustion and selectors. The AEAD is node:crypto's (real
// AES-GCM); independence from our own reading of the RFCs comes from the
// published vectors (vectors.test.ts) and the scapy/tshark interop (e2e).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BufferPool } from '../../../../src/packet/pool.js';
import type { Packet } from '../../../../src/packet/packet.js';
import { GsoType, RxCsum } from '../../../../src/packet/meta.js';
import { FrameLayout, L3, parseFrame } from '../../../../src/wire/frame.js';
import { buildFrame, type FrameSpec, type Ipv6ExtSpec } from '../../../../src/wire/builder.js';
import { get16, get32 } from '../../../../src/wire/bytes.js';
import { sum } from '../../../../src/wire/checksum.js';
import {
  ESP_ERRORS, EspSa, decapsulate, encapsulate, espEncapsulatedLength, matchesSelector, type EspError,
} from '../../../../src/offload/ipsec/esp.js';
import type { EspAlgorithm, IpsecMode, SecurityAssociation, TrafficSelector } from '../../../../src/offload/ipsec/sa.js';
import { nodeAead } from '../../../../src/io/aead-node.js';
import { checksumsOf, fromHex, hex } from '../../../util/frames.js';

const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 128 }, { bufferSize: 65536 + 1024, count: 4 }] });
const KEY = { 'aes-gcm-128': fromHex('000102030405060708090a0b0c0d0e0f'), 'aes-gcm-256': fromHex('101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f') };
const SALT = fromHex('cafe0001');
const V4 = { a: '198.18.0.1', b: '198.18.0.2', ta: '198.19.255.1', tb: '198.19.255.2' };
const V6 = { a: '2001:db8::1', b: '2001:db8::2', ta: '2001:db8:ffff::1', tb: '2001:db8:ffff::2' };

interface PairOpts {
  mode: IpsecMode;
  algorithm?: EspAlgorithm;
  /** Endpoint family (the outer one in tunnel mode). */
  family: 4 | 6;
  spi?: number;
  seq?: number;
  replayWindow?: number;
  selector?: TrafficSelector;
}

function saSpec(o: PairOpts, direction: 'in' | 'out'): SecurityAssociation {
  const alg = o.algorithm ?? 'aes-gcm-128';
  const ad = o.family === 4 ? V4 : V6;
  const tunnel = o.mode === 'tunnel';
  const sa: SecurityAssociation = {
    spi: o.spi ?? 0x1000, direction, mode: o.mode, algorithm: alg, key: KEY[alg], salt: SALT,
    src: tunnel ? ad.ta : ad.a, dst: tunnel ? ad.tb : ad.b,
  };
  if (o.seq !== undefined) sa.seq = o.seq;
  if (o.replayWindow !== undefined) sa.replayWindow = o.replayWindow;
  if (o.selector !== undefined) sa.selector = o.selector;
  return sa;
}

function pair(o: PairOpts): { out: EspSa; inb: EspSa } {
  return { out: new EspSa(saSpec(o, 'out')), inb: new EspSa(saSpec(o, 'in')) };
}

function frame(s: Partial<FrameSpec> & { ip: FrameSpec['ip'] }): Uint8Array {
  return buildFrame({ l4: { kind: 'udp', sport: 4000, dport: 5000 }, payload: 100, checksum: 'full', ...s }).frame;
}

const udp4 = (payload: number | Uint8Array = 100) => frame({ ip: { version: 4, src: V4.a, dst: V4.b }, payload });
const udp6 = (payload: number | Uint8Array = 100) => frame({ ip: { version: 6, src: V6.a, dst: V6.b }, payload });

function take(f: Uint8Array, from: BufferPool = pool): Packet {
  const p = from.take(f.length)!;
  assert.ok(p.write(f));
  return p;
}

const lay = new FrameLayout();
function parse(p: Packet): FrameLayout {
  const e = parseFrame(p.buf, p.off, p.len, lay);
  assert.equal(e, null, `frame does not parse: ${e}`);
  return lay;
}

function enc(p: Packet, sa: EspSa): EspError | null {
  return encapsulate(p, sa, nodeAead, parse(p));
}
function dec(p: Packet, sa: EspSa): EspError | null {
  return decapsulate(p, sa, nodeAead, parse(p));
}

/** Encapsulated frame of `f` (copied out), the packet released. */
function sealed(f: Uint8Array, sa: EspSa): Uint8Array {
  const p = take(f);
  try {
    assert.equal(enc(p, sa), null);
    return p.copyOut();
  } finally {
    p.release();
  }
}

/** Decapsulate bytes; returns the error or the frame. */
function opened(f: Uint8Array, sa: EspSa): EspError | Uint8Array {
  const p = take(f);
  try {
    const e = dec(p, sa);
    return e ?? p.copyOut();
  } finally {
    p.release();
  }
}

/** Where the ESP header of an encapsulated frame is. */
function espAt(f: Uint8Array): number {
  const l = new FrameLayout();
  assert.equal(parseFrame(f, 0, f.length, l), null);
  assert.equal(l.l4Proto, 50);
  return l.l4Off;
}

// --- round trips -----------------------------------------------------------

const l4Arb = fc.oneof(
  fc.record({ kind: fc.constant('tcp' as const), sport: fc.integer({ min: 1, max: 65535 }), dport: fc.integer({ min: 1, max: 65535 }), seq: fc.nat() }),
  fc.record({ kind: fc.constant('udp' as const), sport: fc.integer({ min: 1, max: 65535 }), dport: fc.integer({ min: 1, max: 65535 }) }),
  fc.record({ kind: fc.constant('icmp' as const), type: fc.constant(8), id: fc.integer({ min: 0, max: 65535 }), seq: fc.integer({ min: 0, max: 65535 }) }),
);
const extArb: fc.Arbitrary<Ipv6ExtSpec[]> = fc.array(fc.record({
  type: fc.constantFrom(0, 60), data: fc.uint8Array({ minLength: 0, maxLength: 12 }).map((d) => new Uint8Array(d.length)),
}), { maxLength: 2 }).map((l) => {
  // Hop-by-hop only first.
  const hbh = l.filter((e) => e.type === 0).slice(0, 1);
  return [...hbh, ...l.filter((e) => e.type !== 0)];
});

const caseArb = fc.record({
  mode: fc.constantFrom<IpsecMode>('transport', 'tunnel'),
  algorithm: fc.constantFrom<EspAlgorithm>('aes-gcm-128', 'aes-gcm-256'),
  inner: fc.constantFrom<4 | 6>(4, 6),
  outer: fc.constantFrom<4 | 6>(4, 6),
  l4: l4Arb,
  payload: fc.integer({ min: 0, max: 1400 }),
  dscp: fc.integer({ min: 0, max: 63 }),
  ecn: fc.integer({ min: 0, max: 3 }),
  df: fc.boolean(),
  ipv4Options: fc.boolean(),
  ext: extArb,
  seq: fc.integer({ min: 1, max: 0xffffffff }),
});

test('round trip: encapsulate then decapsulate gives the frame back exactly, for random packets of every kind', () => {
  fc.assert(fc.property(caseArb, (c) => {
    const family = c.mode === 'transport' ? c.inner : c.outer;
    const { out, inb } = pair({ mode: c.mode, algorithm: c.algorithm, family, seq: c.seq });
    const ad = c.inner === 4 ? V4 : V6;
    const ip: FrameSpec['ip'] = c.inner === 4
      ? { version: 4, src: ad.a, dst: ad.b, dscp: c.dscp, ecn: c.ecn, dontFragment: c.df, ident: 77,
        ...(c.ipv4Options ? { options: new Uint8Array([1, 1, 1, 0]) } : {}) }
      : { version: 6, src: ad.a, dst: ad.b, trafficClass: (c.dscp << 2) | c.ecn, flowLabel: 0x12345, ext: c.ext };
    const f = frame({ ip, l4: c.l4, payload: c.payload });
    const before = new FrameLayout();
    parseFrame(f, 0, f.length, before);
    const p = take(f);
    try {
      const expectLen = espEncapsulatedLength(out, parse(p));
      assert.equal(enc(p, out), null);
      const e = p.copyOut();
      // Ethernet: same MACs, EtherType of the outer family.
      assert.deepEqual(e.subarray(0, 12), f.subarray(0, 12));
      const outerFam = c.mode === 'tunnel' ? c.outer : c.inner;
      assert.equal(get16(e, 12), outerFam === 4 ? 0x0800 : 0x86dd);
      const l = parse(p);
      assert.equal(l.l4Proto, 50);
      assert.equal(l.ipEnd - l.l3Off, expectLen);
      assert.equal(l.ipEnd, p.off + p.len, 'no bytes after the IP packet');
      if (l.l3 === L3.IPV4) assert.equal(sum(p.buf, l.l3Off, l.l3HeaderLen), 0xffff, 'outer IPv4 header checksum');
      const esp = l.l4Off - p.off;
      assert.equal(get32(e, esp), out.spi);
      assert.equal(get32(e, esp + 4), c.seq);
      assert.equal(hex(e.subarray(esp + 8, esp + 16)), '00000000' + c.seq.toString(16).padStart(8, '0'), 'IV = sequence number');
      assert.equal((e.length - esp - 16 - 16) % 4, 0, 'plaintext aligned to 4 bytes');
      if (c.mode === 'transport') {
        // The IP header (and IPv6 extension headers) stay, only lengths/protocol change.
        assert.equal(l.l3HeaderLen, before.l3HeaderLen);
        assert.deepEqual(e.subarray(14 + (c.inner === 4 ? 12 : 8), 14 + (c.inner === 4 ? 20 : 40)), f.subarray(14 + (c.inner === 4 ? 12 : 8), 14 + (c.inner === 4 ? 20 : 40)), 'addresses');
      }
      // The payload is not left in the clear.
      const plainOff = c.mode === 'tunnel' ? before.l3Off : before.l4Off;
      const plain = f.subarray(plainOff);
      if (plain.length >= 16) assert.notDeepEqual(e.subarray(esp + 16, esp + 16 + plain.length), plain);
      assert.equal(out.seq, c.seq === 0xffffffff ? 2 ** 32 : c.seq + 1);
      assert.equal(dec(p, inb), null);
      assert.equal(hex(p.copyOut()), hex(f));
      assert.equal(p.meta.rxCsum, RxCsum.UNKNOWN);
      assert.equal(out.packets, 1);
      assert.equal(inb.packets, 1);
      assert.equal(inb.bytes, out.bytes);
      assert.equal(out.bytes, c.mode === 'tunnel' ? f.length - 14 : f.length - before.l4Off);
    } finally {
      p.release();
    }
  }), { numRuns: 400 });
  assert.equal(pool.inUse, 0);
});

test('tunnel mode outer header: endpoints, TTL 64, DSCP and DF copied, ECN copied but CE → ECT(0), ID per SA', () => {
  const { out, inb } = pair({ mode: 'tunnel', family: 4 });
  const inner = (ecn: number, df: boolean) => frame({ ip: { version: 4, src: V4.a, dst: V4.b, dscp: 46, ecn, dontFragment: df, ttl: 3 } });
  const a = sealed(inner(1, false), out);
  assert.equal(hex(a.subarray(14, 34)).slice(0, 4), '45b9', 'version/IHL, DSCP 46 + ECT(1)');
  assert.equal(get16(a, 14 + 4), 0, 'first ID');
  assert.equal(get16(a, 14 + 6), 0, 'DF copied (clear)');
  assert.equal(a[14 + 8], 64);
  assert.equal(a[14 + 9], 50);
  assert.equal([...a.subarray(14 + 12, 14 + 20)].join('.'), '198.19.255.1.198.19.255.2');
  assert.equal((opened(a, inb) as Uint8Array)[14 + 8], 3, 'inner TTL untouched (the switch is not a router)');
  const b = sealed(inner(3, true), out);
  assert.equal(b[15], (46 << 2) | 2, 'CE is not copied out: ECT(0)');
  assert.equal(get16(b, 14 + 4), 1, 'second ID');
  assert.equal(get16(b, 14 + 6), 0x4000, 'DF copied (set)');

  const six = pair({ mode: 'tunnel', family: 6 }).out;
  const c = sealed(frame({ ip: { version: 4, src: V4.a, dst: V4.b, dscp: 10, ecn: 2 } }), six);
  assert.equal(get16(c, 12), 0x86dd);
  assert.equal(get32(c, 14), ((6 << 28) | (((10 << 2) | 2) << 20)) >>> 0, 'version, traffic class, flow label 0');
  assert.equal(c[14 + 6], 50);
  assert.equal(c[14 + 7], 64);
  assert.equal(get16(c, 14 + 4), c.length - 14 - 40);
  // IPv6 inside IPv4: DF set, traffic class copied.
  const d = sealed(frame({ ip: { version: 6, src: V6.a, dst: V6.b, trafficClass: 0xb8 } }), out);
  assert.equal(d[15], 0xb8);
  assert.equal(get16(d, 14 + 6), 0x4000);
  assert.equal(checksumsOf(d), RxCsum.UNKNOWN); // outer header checksum is fine (FAILED otherwise); ESP is not checked
});

test('tunnel decapsulation: congestion marked outside reaches an ECN-capable inner packet (RFC 6040)', () => {
  for (const [innerEcn, want] of [[0, 0], [1, 3], [2, 3], [3, 3]] as const) {
    for (const fam of [4, 6] as const) {
      const { out, inb } = pair({ mode: 'tunnel', family: 4 });
      const f = fam === 4 ? frame({ ip: { version: 4, src: V4.a, dst: V4.b, ecn: innerEcn } })
        : frame({ ip: { version: 6, src: V6.a, dst: V6.b, trafficClass: innerEcn } });
      const e = sealed(f, out);
      e[15] = e[15]! | 3; // a router marks CE on the outer header (checksum no longer matters to ESP)
      const back = opened(e, inb);
      assert.ok(back instanceof Uint8Array, String(back));
      const ecn = fam === 4 ? back[15]! & 3 : (back[15]! >>> 4) & 3;
      assert.equal(ecn, want, `inner ${innerEcn} over IPv${fam}`);
      if (fam === 4) assert.equal(sum(back, 14, 20), 0xffff, 'inner header checksum updated');
    }
  }
});

test('transport mode over IPv6 puts ESP after the extension headers and links it from the last one', () => {
  const { out, inb } = pair({ mode: 'transport', family: 6 });
  const f = frame({ ip: { version: 6, src: V6.a, dst: V6.b, ext: [{ type: 0, data: new Uint8Array(4) }, { type: 60, data: new Uint8Array(12) }] } });
  const e = sealed(f, out);
  assert.equal(e[14 + 6], 0, 'IPv6 header still names hop-by-hop');
  assert.equal(e[54], 60, 'hop-by-hop still names destination options');
  assert.equal(e[62], 50, 'destination options now name ESP');
  assert.equal(espAt(e), 14 + 40 + 8 + 16);
  assert.equal(get16(e, 18), e.length - 54);
  assert.equal(hex(opened(e, inb) as Uint8Array), hex(f));
});

test('a pending checksum offload is completed before encryption (the checksum ends up inside)', () => {
  for (const [mode, v] of [['transport', 4], ['tunnel', 6]] as const) {
    const { out, inb } = pair({ mode, family: v });
    const b = buildFrame({ ip: v === 4 ? { version: 4, src: V4.a, dst: V4.b } : { version: 6, src: V6.a, dst: V6.b },
      l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: 300, checksum: 'partial' });
    const p = take(b.frame);
    p.meta.needsCsum = true;
    p.meta.csumStart = b.l4Off;
    p.meta.csumOffset = b.csumOffset;
    assert.equal(enc(p, out), null);
    assert.equal(p.meta.needsCsum, false);
    assert.equal(dec(p, inb), null);
    assert.equal(checksumsOf(p.copyOut()), RxCsum.VERIFIED);
    p.release();
  }
});

// --- errors ----------------------------------------------------------------

/** Frame bytes and offsets before a failing call, to prove nothing changed. */
function snapshot(p: Packet): string {
  return `${p.off}/${p.len}/${hex(p.copyOut())}`;
}

function expectError(p: Packet, sa: EspSa, run: () => EspError | null, want: EspError): void {
  const before = snapshot(p);
  const n = sa.drops[want];
  assert.equal(run(), want);
  assert.equal(snapshot(p), before, `frame changed on '${want}'`);
  assert.equal(sa.drops[want], n + 1, `drop counter for '${want}'`);
}

test("encapsulate: 'unsupported' (direction, not IP, VLAN, GSO, shared, fragment, IPv6 fragment header, > 64 KiB) leaves the frame alone", () => {
  const { out, inb } = pair({ mode: 'transport', family: 4 });
  const tun = pair({ mode: 'tunnel', family: 4 }).out;
  const cases: [string, Uint8Array, (p: Packet) => void, EspSa][] = [
    ['inbound SA', udp4(), () => {}, inb],
    ['ARP', (() => { const f = udp4(); f[12] = 0x08; f[13] = 0x06; return f; })(), () => {}, out],
    ['VLAN tag', frame({ vlans: [{ tpid: 0x8100, pcp: 0, dei: false, vid: 5 }], ip: { version: 4, src: V4.a, dst: V4.b } }), () => {}, out],
    ['GSO', udp4(1000), (p) => { p.meta.gsoType = GsoType.UDP_L4; p.meta.gsoSize = 500; }, out],
    ['shared buffer', udp4(), (p) => p.retain(), tun],
    ['IPv4 fragment (transport)', (() => {
      const f = udp4(); f[14 + 6] = 0x20; // MF
      f[24] = 0; f[25] = 0; const s = ~sum(f, 14, 20) & 0xffff; f[24] = s >>> 8; f[25] = s & 0xff; return f;
    })(), () => {}, out],
  ];
  for (const [what, f, prep, sa] of cases) {
    const p = take(f);
    prep(p);
    const l = new FrameLayout();
    parseFrame(p.buf, p.off, p.len, l);
    expectError(p, sa, () => encapsulate(p, sa, nodeAead, l), 'unsupported');
    if (p.shared) p.release();
    p.release();
    void what;
  }
  // Transport mode on an IPv6 packet with a fragment header.
  const six = pair({ mode: 'transport', family: 6 }).out;
  const frag = take(frame({ ip: { version: 6, src: V6.a, dst: V6.b, ext: [{ type: 44, data: new Uint8Array([0, 1, 0, 0, 0, 9]) }] } }));
  expectError(frag, six, () => enc(frag, six), 'unsupported');
  frag.release();
  // A layout of some other frame.
  const p = take(udp4());
  const other = new FrameLayout();
  const g = udp4(50);
  parseFrame(g, 0, g.length, other);
  expectError(p, out, () => encapsulate(p, out, nodeAead, other), 'unsupported');
  p.release();
  // The result would not fit in an IPv4 packet.
  const big = take(udp4(65535 - 20 - 8));
  expectError(big, out, () => enc(big, out), 'unsupported');
  big.release();
  assert.equal(out.seq, 1, 'no sequence number consumed');
});

test("encapsulate: 'no-room' without the headroom or tailroom the headers and trailer need", () => {
  const small = new BufferPool({ headroom: 16, classes: [{ bufferSize: 256, count: 4 }] });
  const tr = pair({ mode: 'transport', family: 4 }).out;
  const tu = pair({ mode: 'tunnel', family: 4 }).out;
  let p = take(udp4(100), small);
  expectError(p, tu, () => enc(p, tu), 'no-room'); // tunnel needs 36 in front
  assert.equal(enc(p, tr), null); // transport needs exactly 16
  p.release();
  const tiny = new BufferPool({ headroom: 15, classes: [{ bufferSize: 256, count: 4 }] });
  p = take(udp4(100), tiny);
  expectError(p, tr, () => enc(p, tr), 'no-room');
  p.release();
  // Tailroom: a frame that fills its buffer leaves no room for trailer + ICV.
  p = take(udp4(256 - 16 - 14 - 20 - 8 - 10), small);
  assert.equal(p.tailroom, 10);
  expectError(p, tr, () => enc(p, tr), 'no-room');
  p.release();
  assert.equal(small.inUse + tiny.inUse, 0);
});

test("encapsulate: sequence number 2^32-1 is the last one sent, then 'seq-exhausted' (no ESN, never wraps)", () => {
  const { out, inb } = pair({ mode: 'tunnel', family: 6, seq: 0xfffffffe });
  const a = sealed(udp6(), out);
  const b = sealed(udp6(), out);
  assert.equal(get32(b, espAt(b) + 4), 0xffffffff);
  assert.equal(out.exhausted, true);
  const p = take(udp6());
  expectError(p, out, () => enc(p, out), 'seq-exhausted');
  expectError(p, out, () => enc(p, out), 'seq-exhausted');
  p.release();
  assert.ok(opened(a, inb) instanceof Uint8Array);
  assert.ok(opened(b, inb) instanceof Uint8Array, 'the receiver takes 2^32-1');
  assert.throws(() => new EspSa({ ...saSpec({ mode: 'tunnel', family: 6 }, 'out'), seq: 0 }), /sequence number/);
});

test("decapsulate: 'unsupported' for an outbound SA, not ESP, another SPI, a fragment, VLAN, a shared buffer", () => {
  const { out, inb } = pair({ mode: 'transport', family: 4, spi: 0x2000 });
  const e = sealed(udp4(), out);
  const cases: [Uint8Array, EspSa, (p: Packet) => void][] = [
    [e, out, () => {}],
    [udp4(), inb, () => {}],
    [e, pair({ mode: 'transport', family: 4, spi: 0x2001 }).inb, () => {}],
    [e, inb, (p) => p.retain()],
    [(() => { const f = e.slice(); f[14 + 6] = 0x20; f[24] = 0; f[25] = 0; const s = ~sum(f, 14, 20) & 0xffff; f[24] = s >>> 8; f[25] = s & 0xff; return f; })(), inb, () => {}],
  ];
  for (const [f, sa, prep] of cases) {
    const p = take(f);
    prep(p);
    expectError(p, sa, () => dec(p, sa), 'unsupported');
    if (p.shared) p.release();
    p.release();
  }
  assert.ok(opened(e, inb) instanceof Uint8Array, 'and the real one still goes through');
});

test("decapsulate: 'truncated' when the ESP packet cannot hold header, IV, trailer and ICV", () => {
  const { out, inb } = pair({ mode: 'transport', family: 4 });
  const e = sealed(udp4(0), out);
  const esp = espAt(e);
  for (const keep of [0, 8, 16, 33]) {
    const f = e.slice(0, esp + keep);
    f[16] = (f.length - 14) >>> 8; f[17] = (f.length - 14) & 0xff;
    f[24] = 0; f[25] = 0; const s = ~sum(f, 14, 20) & 0xffff; f[24] = s >>> 8; f[25] = s & 0xff;
    const p = take(f);
    expectError(p, inb, () => dec(p, inb), 'truncated');
    p.release();
  }
});

test("decapsulate: any flipped bit in sequence number, IV, ciphertext or ICV is 'auth-failed'; nothing is decrypted and the window stays", () => {
  for (const mode of ['transport', 'tunnel'] as const) {
    const { out, inb } = pair({ mode, family: 4, seq: 5 });
    const e = sealed(udp4(9), out);
    const esp = espAt(e);
    for (let i = esp + 4; i < e.length; i++) {
      for (const bit of [0x01, 0x80]) {
        const f = e.slice();
        f[i] = f[i]! ^ bit;
        const p = take(f);
        expectError(p, inb, () => dec(p, inb), 'auth-failed');
        p.release();
      }
    }
    assert.equal(inb.authFailures, 2 * (e.length - esp - 4));
    assert.equal(inb.replay!.top, 0, 'forgeries did not move the window');
    assert.ok(opened(e, inb) instanceof Uint8Array);
  }
  // Longer packets, random bits.
  // Sequence number 5: no single flipped bit makes it 0 (which is 'replay').
  const { out, inb } = pair({ mode: 'tunnel', family: 6, algorithm: 'aes-gcm-256', seq: 5 });
  const e = sealed(udp6(1400), out);
  const esp = espAt(e);
  fc.assert(fc.property(fc.integer({ min: (esp + 4) * 8, max: e.length * 8 - 1 }), (bit) => {
    const f = e.slice();
    f[bit >>> 3] = f[bit >>> 3]! ^ (1 << (bit & 7));
    assert.equal(opened(f, inb), 'auth-failed');
  }), { numRuns: 300 });
  // The wrong key.
  const other = new EspSa({ ...saSpec({ mode: 'tunnel', family: 6, algorithm: 'aes-gcm-256' }, 'in'), key: KEY['aes-gcm-256'].map((b) => b ^ 1) });
  assert.equal(opened(e, other), 'auth-failed');
  const salted = new EspSa({ ...saSpec({ mode: 'tunnel', family: 6, algorithm: 'aes-gcm-256' }, 'in'), salt: fromHex('cafe0002') });
  assert.equal(opened(e, salted), 'auth-failed');
});

test("decapsulate: 'replay' for a sequence number seen (or 0), 'too-old' left of the window; a disabled window takes both", () => {
  const { out, inb } = pair({ mode: 'transport', family: 6, replayWindow: 32 });
  const frames: Uint8Array[] = [];
  for (let i = 0; i < 40; i++) frames.push(sealed(udp6(20), out));
  assert.ok(opened(frames[39]!, inb) instanceof Uint8Array); // seq 40
  let p = take(frames[39]!);
  expectError(p, inb, () => dec(p, inb), 'replay');
  p.release();
  p = take(frames[7]!); // seq 8: 40 - 8 = 32 ≥ window
  expectError(p, inb, () => dec(p, inb), 'too-old');
  p.release();
  assert.ok(opened(frames[8]!, inb) instanceof Uint8Array, 'seq 9 is the window\'s left edge');
  assert.equal(opened(frames[8]!, inb), 'replay');
  assert.equal(inb.replays, 3);
  // Sequence number zero never comes from a sender without ESN.
  const z = frames[0]!.slice();
  const esp = espAt(z);
  z[esp + 7] = 0;
  assert.equal(opened(z, inb), 'replay');

  const off = pair({ mode: 'transport', family: 6, replayWindow: 0 }).inb;
  assert.equal(off.replay, null);
  assert.ok(opened(frames[39]!, off) instanceof Uint8Array);
  assert.ok(opened(frames[39]!, off) instanceof Uint8Array);
  assert.ok(opened(frames[0]!, off) instanceof Uint8Array);
});

/** An ESP frame around any plaintext (trailer included), sealed with the SA's key: for payloads our encapsulate never makes. */
function craft(sa: SecurityAssociation, seq: number, plaintext: Uint8Array): Uint8Array {
  const v6 = sa.src.includes(':');
  const outer = frame({ ip: v6 ? { version: 6, src: sa.src, dst: sa.dst } : { version: 4, src: sa.src, dst: sa.dst }, payload: 0 });
  const hl = v6 ? 40 : 20;
  const espLen = 16 + plaintext.length + 16;
  const f = new Uint8Array(14 + hl + espLen);
  f.set(outer.subarray(0, 14 + hl));
  if (v6) { f[14 + 6] = 50; f[18] = espLen >>> 8; f[19] = espLen & 0xff; } else {
    f[14 + 9] = 50; const t = hl + espLen; f[16] = t >>> 8; f[17] = t & 0xff;
    f[24] = 0; f[25] = 0; const s = ~sum(f, 14, 20) & 0xffff; f[24] = s >>> 8; f[25] = s & 0xff;
  }
  const e = 14 + hl;
  const dv = new DataView(f.buffer);
  dv.setUint32(e, sa.spi);
  dv.setUint32(e + 4, seq);
  dv.setUint32(e + 12, seq);
  f.set(plaintext, e + 16);
  const nonce = new Uint8Array(12);
  nonce.set(sa.salt);
  nonce.set(f.subarray(e + 8, e + 16), 4);
  nodeAead.seal(sa.key, nonce, f.slice(e, e + 8), f, e + 16, plaintext.length, f, e + 16 + plaintext.length);
  return f;
}

function withTrailer(data: Uint8Array, pad: number[], nh: number): Uint8Array {
  return new Uint8Array([...data, ...pad, pad.length, nh]);
}

test("decapsulate after a valid ICV: 'bad-padding', 'bad-next-header', 'truncated' inner packets; TFC padding is dropped", () => {
  const inner4 = udp4(30).subarray(14);
  const inner6 = udp6(30).subarray(14);
  const tun = saSpec({ mode: 'tunnel', family: 4 }, 'in');
  const tra = saSpec({ mode: 'transport', family: 6 }, 'in');
  const run = (spec: SecurityAssociation, pt: Uint8Array, seq = 1): { r: EspError | Uint8Array; sa: EspSa } => {
    const sa = new EspSa(spec);
    return { r: opened(craft(spec, seq, pt), sa), sa };
  };
  assert.equal(run(tun, withTrailer(inner4, [1, 2, 4], 4)).r, 'bad-padding');
  assert.equal(run(tun, withTrailer(inner4, [0, 0], 4)).r, 'bad-padding');
  assert.equal(run(tun, new Uint8Array([1, 2, 3, 9, 4])).r, 'bad-padding', 'pad length beyond the payload');
  assert.equal(run(tun, withTrailer(inner4, [1, 2], 17)).r, 'bad-next-header');
  assert.equal(run(tun, withTrailer(inner4, [1, 2], 41)).r, 'bad-next-header', 'IPv4 packet labelled IPv6');
  assert.equal(run(tun, withTrailer(inner6, [1, 2], 4)).r, 'bad-next-header', 'IPv6 packet labelled IPv4');
  assert.equal(run(tun, withTrailer(inner4.subarray(0, 40), [1, 2], 4)).r, 'truncated', 'inner packet cut short');
  assert.equal(run(tun, withTrailer(inner4.subarray(0, 12), [1, 2], 4)).r, 'truncated', 'not even a header');
  assert.equal(run(tun, withTrailer(new Uint8Array(0), [1, 2], 59)).r, 'bad-next-header', 'dummy packet');
  assert.equal(run(tra, withTrailer(new Uint8Array(0), [1, 2], 59)).r, 'bad-next-header', 'dummy packet');
  // The window still moved: the packet was authentic.
  const { sa } = run(tun, withTrailer(inner4, [0, 0], 4), 9);
  assert.equal(sa.replay!.top, 9);
  assert.equal(sa.drops['bad-padding'], 1);
  // TFC padding (RFC 4303 §2.7) after the inner packet: dropped, the inner length rules.
  const tfc = run(tun, withTrailer(new Uint8Array([...inner4, ...new Uint8Array(37)]), [1], 4)).r;
  assert.ok(tfc instanceof Uint8Array, String(tfc));
  assert.equal(hex(tfc.subarray(14)), hex(inner4));
  // The frame of a tunnel packet: outer MACs, inner EtherType.
  const six = run(tun, withTrailer(inner6, [1, 2], 41)).r as Uint8Array;
  assert.equal(get16(six, 12), 0x86dd);
  assert.equal(hex(six.subarray(14)), hex(inner6));
});

test('every EspError has a drop counter, and the counters start at zero', () => {
  const { out } = pair({ mode: 'tunnel', family: 4 });
  assert.deepEqual(Object.keys(out.drops).sort(), [...ESP_ERRORS].sort());
  assert.ok(Object.values(out.drops).every((n) => n === 0));
});

// --- SAs and selectors ---------------------------------------------------------

test('EspSa refuses malformed SAs with the reason', () => {
  const base = saSpec({ mode: 'transport', family: 4 }, 'out');
  assert.throws(() => new EspSa({ ...base, spi: 0 }), /SPI/);
  assert.throws(() => new EspSa({ ...base, spi: 2 ** 32 }), /SPI/);
  assert.throws(() => new EspSa({ ...base, key: new Uint8Array(24) }), /16-byte key/);
  assert.throws(() => new EspSa({ ...base, algorithm: 'aes-gcm-256' }), /32-byte key/);
  assert.throws(() => new EspSa({ ...base, salt: new Uint8Array(8) }), /salt/);
  assert.throws(() => new EspSa({ ...base, dst: V6.b }), /different address families/);
  assert.throws(() => new EspSa({ ...base, src: '198.18.0.0/15' }), /not prefixes/);
  assert.throws(() => new EspSa({ ...base, src: 'vm1' }), /not an IPv4 or IPv6 address/);
  assert.throws(() => new EspSa({ ...base, selector: { dst: '198.18.0.0/33' } }), /prefix length/);
  assert.throws(() => new EspSa({ ...base, selector: { dstPort: 70000 } }), /dstPort/);
  assert.throws(() => new EspSa({ ...base, direction: 'in', replayWindow: 2048 }), /replay window/);
  assert.throws(() => new EspSa(base, { ivMask: new Uint8Array(4) }), /ivMask/);
  // The key is copied: changing the caller's array later changes nothing.
  const key = KEY['aes-gcm-128'].slice();
  const sa = new EspSa({ ...base, key });
  key.fill(0);
  assert.equal(hex(sa.key), hex(KEY['aes-gcm-128']));
});

test('matchesSelector: defaults to the SA endpoints in both modes; prefixes, protocol and ports narrow or widen it', () => {
  const m = (sel: TrafficSelector | undefined, f: Uint8Array, mode: IpsecMode = 'transport', family: 4 | 6 = 4) => {
    const sa = new EspSa({ ...saSpec({ mode, family }, 'out'), ...(sel ? { selector: sel } : {}) });
    const l = new FrameLayout();
    assert.equal(parseFrame(f, 0, f.length, l), null);
    return matchesSelector(sa, l, f);
  };
  const tcp = (src: string, dst: string, sport = 1000, dport = 443) =>
    frame({ ip: { version: 4, src, dst }, l4: { kind: 'tcp', sport, dport } });
  assert.equal(m(undefined, tcp(V4.a, V4.b)), true);
  assert.equal(m(undefined, tcp(V4.b, V4.a)), false, 'the other direction is another SA');
  assert.equal(m(undefined, tcp(V4.a, '198.18.0.3')), false);
  assert.equal(m(undefined, udp6()), false, 'other family');
  assert.equal(m({ dst: '198.18.0.0/15' }, tcp(V4.a, '198.19.1.1')), true);
  assert.equal(m({ dst: '198.18.0.0/16' }, tcp(V4.a, '198.19.1.1')), false);
  assert.equal(m({ dst: '198.18.0.0/23' }, tcp(V4.a, '198.18.1.255')), true);
  assert.equal(m({ dst: '198.18.0.0/24' }, tcp(V4.a, '198.18.1.255')), false);
  assert.equal(m({ src: '0.0.0.0/0', dst: 'any' }, tcp('198.18.7.7', '198.19.9.9')), true);
  assert.equal(m({ protocol: 6 }, tcp(V4.a, V4.b)), true);
  assert.equal(m({ protocol: 17 }, tcp(V4.a, V4.b)), false);
  assert.equal(m({ protocol: 6, dstPort: 443 }, tcp(V4.a, V4.b)), true);
  assert.equal(m({ dstPort: 443 }, tcp(V4.a, V4.b, 1000, 444)), false);
  assert.equal(m({ srcPort: 1000, dstPort: 443 }, tcp(V4.a, V4.b)), true);
  assert.equal(m({ srcPort: 1001 }, tcp(V4.a, V4.b)), false);
  const ping = frame({ ip: { version: 4, src: V4.a, dst: V4.b }, l4: { kind: 'icmp', type: 8 } });
  assert.equal(m({ dstPort: 443 }, ping), false, 'ports asked for, none there');
  assert.equal(m({ protocol: 1 }, ping), true);
  // A later fragment has no ports to look at.
  const frag = tcp(V4.a, V4.b);
  frag[14 + 6] = 0x00; frag[14 + 7] = 0x10;
  assert.equal(m({ dstPort: 443 }, frag), false);
  assert.equal(m(undefined, frag), true);
  // IPv6 prefixes. A tunnel without a selector carries only its endpoints' own
  // traffic; other hosts' packets need a selector that names them.
  const six = frame({ ip: { version: 6, src: V6.a, dst: '2001:db8:1::5' } });
  assert.equal(m({ dst: '2001:db8::/32' }, six, 'transport', 6), true);
  assert.equal(m({ dst: '2001:db8::/48' }, six, 'transport', 6), false);
  assert.equal(m({ dst: '2001:db8::/47' }, six, 'transport', 6), true);
  assert.equal(m(undefined, six, 'tunnel', 4), false, 'inner IPv6 is not the IPv4 endpoints\' traffic');
  assert.equal(m(undefined, tcp(V4.ta, V4.tb), 'tunnel', 4), true);
  assert.equal(m(undefined, tcp('198.18.3.3', '198.18.4.4'), 'tunnel', 4), false);
  assert.equal(m({ src: '0.0.0.0/0', dst: '198.18.4.0/24' }, tcp('198.18.3.3', '198.18.4.4'), 'tunnel', 6), true);
  assert.equal(m({ src: '198.18.3.0/24', dst: '0.0.0.0/0' }, tcp('198.18.4.3', '198.18.4.4'), 'tunnel', 6), false);
});

test('restoreReplay: an inbound SA continues from a handed-back window', () => {
  const { out, inb } = pair({ mode: 'transport', family: 4 });
  const f = [sealed(udp4(), out), sealed(udp4(), out), sealed(udp4(), out)];
  assert.ok(opened(f[2]!, inb) instanceof Uint8Array);
  const again = pair({ mode: 'transport', family: 4 }).inb;
  again.restoreReplay(inb.replay!.state());
  assert.equal(opened(f[2]!, again), 'replay');
  assert.ok(opened(f[0]!, again) instanceof Uint8Array);
  assert.throws(() => again.restoreReplay({ top: 1, bitmap: '00000000', size: 32 }), /window of 32, the SA has 64/);
  assert.throws(() => out.restoreReplay({ top: 1, bitmap: '0000000000000000', size: 64 }), /no replay window/);
});
