// NDIS_OFFLOAD bytes: the layout is recomputed here from the C declarations
// in ntddndis.h (member sizes and natural alignment) and checked against the
// NDIS_SIZEOF constants, against offsets Windows' own symbols give, and
// against the encoder's bytes; then round trips and hostile input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  NDIS_OBJECT_TYPE_OFFLOAD, NDIS_OFFLOAD_REVISION_LATEST, NDIS_SIZEOF_NDIS_OFFLOAD, NdisOffset,
  decodeNdisOffload, encodeNdisOffload, summarizeNdisOffload,
} from '../../../../src/offload/translate/ndis.js';
import {
  checksumAll, ipsecNone, noOffloads, normalizeCapabilities, segmentationAll, segmentationNone,
  type OffloadCapabilities,
} from '../../../../src/offload/capabilities.js';
import { arbCaps, overPromises } from './caps-arb.js';

// --- the layout, from the declarations ---------------------------------------

type Member = readonly [name: string, size: number, align: number];

function layout(members: readonly Member[]): { offsets: Map<string, number>; end: Map<string, number>; size: number; align: number } {
  const offsets = new Map<string, number>();
  const end = new Map<string, number>();
  let off = 0;
  let align = 1;
  for (const [name, size, a] of members) {
    off = Math.ceil(off / a) * a;
    offsets.set(name, off);
    end.set(name, off + size);   // RTL_SIZEOF_THROUGH_FIELD
    off += size;
    align = Math.max(align, a);
  }
  return { offsets, end, size: Math.ceil(off / align) * align, align };
}

const ULONG: [number, number] = [4, 4];
const BOOLEAN: [number, number] = [1, 1];
const struct = (m: readonly Member[]): [number, number] => {
  const l = layout(m);
  return [l.size, l.align];
};
// ntddndis.h: { ULONG Encapsulation; ULONG <bitfields>; } ×4
const CHECKSUM = struct([['v4tx', ...struct([['enc', ...ULONG], ['bits', ...ULONG]])], ['v4rx', 8, 4], ['v6tx', 8, 4], ['v6rx', 8, 4]]);
const LSO_V1 = struct([['enc', ...ULONG], ['max', ...ULONG], ['min', ...ULONG], ['bits', ...ULONG]]);
const IPSEC_V1 = struct([['supported', ...struct([['a', ...ULONG], ['b', ...ULONG], ['c', ...ULONG], ['d', ...ULONG], ['e', ...ULONG]])], ['ah', ...ULONG], ['esp', ...ULONG]]);
const LSO_V2 = struct([['v4', ...struct([['enc', ...ULONG], ['max', ...ULONG], ['min', ...ULONG]])], ['v6', ...LSO_V1]]);
const IPSEC_V2_MEMBERS: Member[] = [
  ['Encapsulation', ...ULONG],
  ...['IPv6Supported', 'IPv4Options', 'IPv6NonIPsecExtensionHeaders', 'Ah', 'Esp', 'AhEspCombined', 'Transport', 'Tunnel',
    'TransportTunnelCombined', 'LsoSupported', 'ExtendedSequenceNumbers'].map((n): Member => [n, ...BOOLEAN]),
  ['UdpEsp', ...ULONG], ['AuthenticationAlgorithms', ...ULONG], ['EncryptionAlgorithms', ...ULONG], ['SaOffloadCapacity', ...ULONG],
];
const IPSEC_V2 = struct(IPSEC_V2_MEMBERS);
const RSC = struct([['v4', ...BOOLEAN], ['v6', ...BOOLEAN]]);
const ENCAP = struct([['bits', ...ULONG], ['maxHeader', ...ULONG]]);
// union { struct { USHORT port; USHORT configurable:1; }; ULONG Value; }
const ENCAP_INFO = struct([['u', 4, 4]]);
const ENCAP_V2 = struct([['bits', ...ULONG], ['maxHeader', ...ULONG], ['info', ...ENCAP_INFO], ['r1', ...ULONG], ['r2', ...ULONG]]);
const XLAT = struct([['enum', ...ULONG], ['flags', ...ULONG]]);
const USO = struct([
  ['v4', ...struct([['enc', ...ULONG], ['max', ...ULONG], ['bits', ...ULONG]])],
  ['v6', ...struct([['enc', ...ULONG], ['max', ...ULONG], ['bits', ...ULONG], ['bits2', ...ULONG]])],
]);

const NDIS_OFFLOAD = layout([
  ['Header', 4, 2], ['Checksum', ...CHECKSUM], ['LsoV1', ...LSO_V1], ['IPsecV1', ...IPSEC_V1], ['LsoV2', ...LSO_V2],
  ['Flags', ...ULONG], ['IPsecV2', ...IPSEC_V2], ['Rsc', ...RSC], ['EncapsulatedPacketTaskOffloadGre', ...ENCAP],
  ['EncapsulatedPacketTaskOffloadVxlan', ...ENCAP_V2], ['EncapsulationTypes', 1, 1], ['Rfc6877Xlat', ...XLAT],
  ['UdpSegmentation', ...USO], ['UdpRsc', ...BOOLEAN],
]);

test('sub-structure sizes as Windows\' symbols give them', () => {
  // ndis.sys PDB type dumps (ntdiff/headers): Checksum 0x20, LsoV1 0x10, IPsecV1 0x1c, LsoV2 0x1c,
  // IPsecV2 0x20, Rsc 0x2, Gre 0x8, Vxlan 0x14, Xlat 0x8, UdpSegmentation 0x1c
  assert.deepEqual([CHECKSUM[0], LSO_V1[0], IPSEC_V1[0], LSO_V2[0], IPSEC_V2[0], RSC[0], ENCAP[0], ENCAP_V2[0], XLAT[0], USO[0]],
    [0x20, 0x10, 0x1c, 0x1c, 0x20, 0x2, 0x8, 0x14, 0x8, 0x1c]);
  assert.equal(layout(IPSEC_V2_MEMBERS).offsets.get('UdpEsp'), 0x10);
});

test('NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_1..7 = RTL_SIZEOF_THROUGH_FIELD of the field each revision ends with', () => {
  const through = ['', 'Flags', 'IPsecV2', 'EncapsulatedPacketTaskOffloadGre', 'EncapsulationTypes', 'Rfc6877Xlat', 'UdpSegmentation', 'UdpSegmentation'];
  for (let r = 1; r <= 7; r++) assert.equal(NDIS_SIZEOF_NDIS_OFFLOAD[r], NDIS_OFFLOAD.end.get(through[r]!), `revision ${r}`);
  assert.deepEqual(NDIS_SIZEOF_NDIS_OFFLOAD.slice(1), [112, 144, 156, 177, 188, 216, 216]);
  assert.equal(NDIS_OFFLOAD_REVISION_LATEST, 7);
});

test('member offsets agree with Windows\' symbols', () => {
  const pdb: Record<string, number> = {
    Checksum: 0x4, LsoV1: 0x24, IPsecV1: 0x34, LsoV2: 0x50, Flags: 0x6c, IPsecV2: 0x70, Rsc: 0x90,
    EncapsulatedPacketTaskOffloadGre: 0x94, EncapsulatedPacketTaskOffloadVxlan: 0x9c, EncapsulationTypes: 0xb0,
    Rfc6877Xlat: 0xb4, UdpSegmentation: 0xbc, UdpRsc: 0xd8,
  };
  for (const [name, off] of Object.entries(pdb)) assert.equal(NDIS_OFFLOAD.offsets.get(name), off, name);
  assert.equal(NDIS_OFFLOAD.size, 0xdc);   // sizeof with UdpRsc (Windows 11 24H2)
});

test('the encoder\'s field offsets follow from the layout', () => {
  const o = (n: string) => NDIS_OFFLOAD.offsets.get(n)!;
  const O = NdisOffset;
  assert.equal(O.ipv4TxEncapsulation, o('Checksum'));
  assert.equal(O.ipv6RxBits, o('Checksum') + 3 * 8 + 4);
  assert.equal(O.lsoV1MaxOffLoadSize, o('LsoV1') + 4);
  assert.equal(O.lsoV2Ipv4MaxOffLoadSize, o('LsoV2') + 4);
  assert.equal(O.lsoV2Ipv6MaxOffLoadSize, o('LsoV2') + 12 + 4);
  assert.equal(O.lsoV2Ipv6Bits, o('LsoV2') + 12 + 12);
  assert.equal(O.flags, o('Flags'));
  const ipsec = layout(IPSEC_V2_MEMBERS).offsets;
  for (const [ours, theirs] of [['ipsecV2Ipv6Supported', 'IPv6Supported'], ['ipsecV2Esp', 'Esp'], ['ipsecV2Transport', 'Transport'],
    ['ipsecV2Tunnel', 'Tunnel'], ['ipsecV2AuthenticationAlgorithms', 'AuthenticationAlgorithms'],
    ['ipsecV2EncryptionAlgorithms', 'EncryptionAlgorithms'], ['ipsecV2SaOffloadCapacity', 'SaOffloadCapacity']] as const) {
    assert.equal(O[ours], o('IPsecV2') + ipsec.get(theirs)!, ours);
  }
  assert.equal(O.rscIpv6Enabled, o('Rsc') + 1);
  assert.equal(O.usoIpv4Bits, o('UdpSegmentation') + 8);
  assert.equal(O.usoIpv6MaxOffLoadSize, o('UdpSegmentation') + 12 + 4);
  assert.equal(O.usoIpv6Bits2, o('UdpSegmentation') + 12 + 12);
});

// --- bytes ---------------------------------------------------------------------------

const u32 = (b: Uint8Array, off: number) => new DataView(b.buffer, b.byteOffset).getUint32(off, true);

function fullCaps(): OffloadCapabilities {
  const c = noOffloads();
  c.txChecksum = checksumAll();
  c.rxChecksum = { ...checksumAll(), ipv4Header: false };
  c.lso = { ...segmentationAll(), maxOffloadSize: 0x12345, minSegmentCount: 3 };
  c.uso = { ...segmentationAll(), maxOffloadSize: 0x2345, minSegmentCount: 5, tcpOptions: false };
  c.ipsec = { enabled: true, algorithms: ['aes-gcm-128', 'aes-gcm-256'], maxSa: 0xabcd, transport: true, tunnel: false, v4: true, v6: true };
  c.rsc = { v4: true, v6: false };
  c.rxPartialChecksum = true;
  return c;
}

test('header: type 0xA7, the revision, Size = NDIS_SIZEOF for it, little-endian', () => {
  for (let r = 1; r <= 7; r++) {
    const b = encodeNdisOffload(noOffloads(), r);
    assert.equal(b.length, NDIS_SIZEOF_NDIS_OFFLOAD[r]);
    assert.deepEqual([...b.subarray(0, 4)], [NDIS_OBJECT_TYPE_OFFLOAD, r, b.length & 0xff, b.length >> 8]);
    assert.ok(b.subarray(4).every((x) => x === 0), 'no offloads: all zero after the header');
  }
  assert.deepEqual([...encodeNdisOffload(noOffloads()).subarray(0, 4)], [0xa7, 7, 0xd8, 0x00]);
  assert.throws(() => encodeNdisOffload(noOffloads(), 8), RangeError);
  assert.throws(() => encodeNdisOffload(noOffloads(), 0), RangeError);
});

test('fields land where the structure has them', () => {
  const b = encodeNdisOffload(fullCaps());
  // Checksum.IPv4Transmit: Encapsulation IEEE_802_3; IpOptions|TcpOptions|Tcp|Udp|Ip = 1 in bits 0,2,4,6,8
  assert.equal(u32(b, 0x04), 2);
  assert.equal(u32(b, 0x08), 0x155);
  assert.equal(u32(b, 0x0c), 2);
  assert.equal(u32(b, 0x10), 0x055);   // receive: no IPv4 header checksum
  assert.equal(u32(b, 0x14), 2);
  assert.equal(u32(b, 0x18), 0x55);    // IPv6: ext headers, TCP options, TCP, UDP
  // LsoV1 (IPv4, ≤ 64K), LsoV2
  assert.deepEqual([u32(b, 0x24), u32(b, 0x28), u32(b, 0x2c), u32(b, 0x30)], [2, 65536, 3, 0b0101]);
  assert.equal(u32(b, 0x54), 0x12345, 'LsoV2.IPv4.MaxOffLoadSize at 0x54');
  assert.equal(u32(b, 0x58), 3, 'LsoV2.IPv4.MinSegmentCount at 0x58');
  assert.deepEqual([u32(b, 0x5c), u32(b, 0x60), u32(b, 0x64), u32(b, 0x68)], [2, 0x12345, 3, 0b0101]);
  assert.equal(u32(b, 0x6c), 0, 'Flags');
  // IPsecV2: ESP, IPv6, transport; AES-GCM-128|256 in both masks; SaOffloadCapacity
  assert.equal(u32(b, 0x70), 2);
  assert.deepEqual([...b.subarray(0x74, 0x7f)], [1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]);
  assert.deepEqual([u32(b, 0x80), u32(b, 0x84), u32(b, 0x88), u32(b, 0x8c)], [0, 0x28, 0x28, 0xabcd]);
  assert.deepEqual([b[0x90], b[0x91]], [1, 0]);
  assert.ok(b.subarray(0x94, 0xbc).every((x) => x === 0), 'encapsulated offloads, encapsulation types, 464XLAT: none');
  // UdpSegmentation: MinSegmentCount in bits 0-5, SubMssFinalSegmentSupported bit 6
  assert.deepEqual([u32(b, 0xbc), u32(b, 0xc0), u32(b, 0xc4)], [2, 0x2345, 5 | 0x40]);
  assert.deepEqual([u32(b, 0xc8), u32(b, 0xcc), u32(b, 0xd0), u32(b, 0xd4)], [2, 0x2345, 5 | 0x40, 1]);
});

test('revision 6 offers whole-MSS USO only (no SubMssFinalSegmentSupported), which reads back as no USO', () => {
  const b = encodeNdisOffload(fullCaps(), 6);
  assert.equal(u32(b, 0xc4), 5);
  const d = decodeNdisOffload(b);
  assert.ok(d.ok);
  assert.deepEqual(d.caps.uso, segmentationNone());
});

test('IPv4 LSO without options is said with LSOv1 only (LSOv2 implies IP and TCP options)', () => {
  const c = { ...fullCaps(), lso: { ...segmentationAll(), v6: false, ipv4Options: false, ipv6ExtHeaders: false } };
  const b = encodeNdisOffload(c);
  assert.equal(u32(b, 0x24), 2);
  assert.equal(u32(b, 0x50), 0, 'no LsoV2.IPv4');
  const d = decodeNdisOffload(b);
  assert.ok(d.ok);
  assert.deepEqual(d.caps.lso, normalizeCapabilities(c).lso);
});

// --- round trips -----------------------------------------------------------------

/** What NDIS can carry of normalized caps (from the mapping in ndis.ts). */
function representable(caps: OffloadCapabilities): OffloadCapabilities {
  const c = normalizeCapabilities(caps);
  c.vlan = { insert: false, strip: false };
  c.uro = { v4: false, v6: false }; // UdpRsc lies beyond revision 7
  for (const k of ['txChecksum', 'rxChecksum'] as const) {
    const x = c[k];
    const any4 = x.ipv4Header || x.tcp4 || x.udp4;
    const any6 = x.tcp6 || x.udp6;
    x.ipv4Options &&= any4;
    x.ipv6ExtHeaders &&= any6;
    x.tcpOptions &&= any4 || any6;
  }
  const lso = c.lso;
  if (lso.v4 || lso.v6) {
    lso.maxOffloadSize = Math.max(0, Math.min(0xffffffff, Math.floor(lso.maxOffloadSize)));
    lso.minSegmentCount = Math.max(0, Math.ceil(lso.minSegmentCount));
    if (lso.v4 && !(lso.ipv4Options && lso.tcpOptions)) lso.maxOffloadSize = Math.min(lso.maxOffloadSize, 65536);
    lso.ipv4Options &&= lso.v4;
    lso.ipv6ExtHeaders &&= lso.v6;
    if (lso.minSegmentCount > 0xffffffff) c.lso = segmentationNone();
  }
  const uso = c.uso;
  uso.v4 &&= uso.ipv4Options;
  uso.ipv4Options = uso.v4;
  uso.tcpOptions = false;
  uso.ipv6ExtHeaders &&= uso.v6;
  uso.maxOffloadSize = Math.max(0, Math.min(0xffffffff, Math.floor(uso.maxOffloadSize)));
  uso.minSegmentCount = Math.max(0, Math.ceil(uso.minSegmentCount));
  if (!uso.v4 && !uso.v6 || uso.minSegmentCount > 63) c.uso = segmentationNone();
  if (!c.ipsec.v4) c.ipsec = ipsecNone();
  c.ipsec.maxSa = Math.floor(c.ipsec.maxSa);
  c.rxPartialChecksum = c.rsc.v4 || c.rsc.v6;
  return normalizeCapabilities(c);
}

test('round trip at the latest revision: exactly what NDIS can carry comes back', () => {
  const full = fullCaps();
  const d = decodeNdisOffload(encodeNdisOffload(full));
  assert.ok(d.ok);
  assert.equal(d.revision, 7);
  assert.deepEqual(d.caps, representable(full));
  assert.deepEqual(d.caps, normalizeCapabilities(full), 'fullCaps is representable as it is');
  fc.assert(fc.property(arbCaps, (caps) => {
    const r = decodeNdisOffload(encodeNdisOffload(caps));
    assert.ok(r.ok, r.ok ? '' : r.detail);
    assert.deepEqual(r.caps, representable(caps));
  }), { numRuns: 3000 });
});

test('a sub-structure that is not supported is all zeros', () => {
  const O = NdisOffset;
  // [Encapsulation offset, end of what it governs]
  const parts: Array<[number, number]> = [
    [O.ipv4TxEncapsulation, O.ipv4TxBits + 4], [O.ipv4RxEncapsulation, O.ipv4RxBits + 4],
    [O.ipv6TxEncapsulation, O.ipv6TxBits + 4], [O.ipv6RxEncapsulation, O.ipv6RxBits + 4],
    [O.lsoV1Encapsulation, O.lsoV1Bits + 4], [O.lsoV2Ipv4Encapsulation, O.lsoV2Ipv4MinSegmentCount + 4],
    [O.lsoV2Ipv6Encapsulation, O.lsoV2Ipv6Bits + 4], [O.ipsecV2Encapsulation, O.ipsecV2SaOffloadCapacity + 4],
    [O.usoIpv4Encapsulation, O.usoIpv4Bits + 4], [O.usoIpv6Encapsulation, O.usoIpv6Bits2 + 4],
  ];
  fc.assert(fc.property(arbCaps, fc.integer({ min: 1, max: 7 }), (caps, rev) => {
    const b = encodeNdisOffload(caps, rev);
    for (const [enc, end] of parts) {
      if (end > b.length || u32(b, enc) !== 0) continue;
      assert.ok(b.subarray(enc, end).every((x) => x === 0), `0x${enc.toString(16)}..0x${end.toString(16)}`);
    }
  }), { numRuns: 2000 });
});

test('round trip at every revision: never more than caps (sizes included), and a fixpoint', () => {
  fc.assert(fc.property(arbCaps, fc.integer({ min: 1, max: 7 }), (caps, rev) => {
    const r = decodeNdisOffload(encodeNdisOffload(caps, rev));
    assert.ok(r.ok);
    assert.deepEqual(overPromises(r.caps, normalizeCapabilities(caps), { sizes: true }), []);
    const again = decodeNdisOffload(encodeNdisOffload(r.caps, rev));
    assert.ok(again.ok);
    assert.deepEqual(again.caps, r.caps);
    if (rev < 2) assert.equal(r.caps.ipsec.enabled, false);
    if (rev < 3) assert.deepEqual(r.caps.rsc, { v4: false, v6: false });
    if (rev < 7) assert.deepEqual(r.caps.uso, segmentationNone());
  }), { numRuns: 3000 });
});

// --- hostile input -------------------------------------------------------------------

test('short, foreign or inconsistent headers are refused with a reason', () => {
  const good = encodeNdisOffload(fullCaps());
  for (let n = 0; n < good.length; n++) {
    const d = decodeNdisOffload(good.subarray(0, n));
    assert.ok(!d.ok && d.error === 'truncated', `${n} bytes`);
    assert.ok(!d.ok && d.detail.length > 0);
  }
  const withType = good.slice();
  withType[0] = 0x80;   // NDIS_OBJECT_TYPE_DEFAULT
  assert.deepEqual(decodeNdisOffload(withType), { ok: false, error: 'bad-type', detail: 'Header.Type 0x80, expected NDIS_OBJECT_TYPE_OFFLOAD (0xa7)' });
  const rev0 = good.slice();
  rev0[1] = 0;
  assert.equal((decodeNdisOffload(rev0) as { error: string }).error, 'bad-revision');
  const small = good.slice();
  small[2] = 188;   // revision 7 with revision 5's size
  assert.equal((decodeNdisOffload(small) as { error: string }).error, 'bad-size');
  const bigger = new Uint8Array(300);
  bigger.set(good);
  bigger[2] = 44;
  bigger[3] = 1;   // Size 300: more than the bytes of good, fine inside 300 bytes
  assert.ok(decodeNdisOffload(bigger).ok);
  assert.equal((decodeNdisOffload(bigger.subarray(0, 299)) as { error: string }).error, 'truncated');
});

test('undefined values in 2-bit support fields are refused; padding and trailing bytes are ignored', () => {
  const good = encodeNdisOffload(fullCaps());
  const bad = good.slice();
  new DataView(bad.buffer).setUint32(0x08, 0x155 | 0b10 << 4, true);   // TcpChecksum = 3
  assert.deepEqual(decodeNdisOffload(bad), { ok: false, error: 'bad-field', detail: 'IPv4Transmit.TcpChecksum = 3' });
  const bad2 = good.slice();
  new DataView(bad2.buffer).setUint32(0x68, 0b1001, true);   // TcpOptionsSupported = 2
  assert.equal((decodeNdisOffload(bad2) as { error: string }).error, 'bad-field');
  const padded = good.slice();
  padded[0x7f] = 0xee;   // padding inside IPsecV2
  padded[0x92] = 0xee;   // padding after Rsc
  assert.deepEqual(decodeNdisOffload(padded), decodeNdisOffload(good));
  const longer = new Uint8Array(good.length + 16).fill(0xff);
  longer.set(good);
  assert.deepEqual(decodeNdisOffload(longer), decodeNdisOffload(good));
});

test('a later revision is read as the latest known one; an older one only as far as it goes', () => {
  const b8 = new Uint8Array(220);
  b8.set(encodeNdisOffload(fullCaps()));
  b8[1] = 8;
  b8[2] = 220;
  const d8 = decodeNdisOffload(b8);
  assert.ok(d8.ok);
  assert.equal(d8.revision, 8);
  assert.deepEqual(d8.caps, normalizeCapabilities(fullCaps()));
  // revision 1 bytes followed by revision 7 content: the extra is not read
  const b1 = encodeNdisOffload(fullCaps()).slice();
  b1[1] = 1;
  b1[2] = 112;
  const d1 = decodeNdisOffload(b1);
  assert.ok(d1.ok);
  assert.equal(d1.caps.ipsec.enabled, false);
  assert.equal(d1.caps.uso.v4, false);
});

test('any bytes at all: a result or a reason, never an exception, never a read outside them', () => {
  const good = encodeNdisOffload(fullCaps());
  fc.assert(fc.property(
    fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      // valid headers over random bodies
      fc.tuple(fc.integer({ min: 1, max: 9 }), fc.uint8Array({ minLength: 216, maxLength: 260 })).map(([rev, body]) => {
        const b = body.slice();
        b[0] = 0xa7;
        b[1] = rev;
        b[2] = b.length & 0xff;
        b[3] = b.length >> 8;
        return b;
      }),
      // single bit flips of a good encoding
      fc.tuple(fc.integer({ min: 0, max: good.length * 8 - 1 })).map(([i]) => {
        const b = good.slice();
        b[i >> 3]! ^= 1 << (i & 7);
        return b;
      }),
    ),
    fc.integer({ min: 0, max: 8 }),
    (bytes, shift) => {
      // a view that does not start at offset 0 of its buffer
      const backing = new Uint8Array(bytes.length + shift);
      backing.set(bytes, shift);
      const view = backing.subarray(shift);
      const d = decodeNdisOffload(view);
      assert.deepEqual(d, decodeNdisOffload(bytes.slice()), 'where the bytes sit in their buffer does not matter');
      if (d.ok) {
        assert.ok(d.size <= bytes.length);
        assert.deepEqual(d.caps, normalizeCapabilities(d.caps));
      } else {
        assert.ok(['truncated', 'bad-type', 'bad-revision', 'bad-size', 'bad-field'].includes(d.error));
        assert.ok(d.detail.length > 0);
      }
    },
  ), { numRuns: 5000 });
});

test('summary for the CLI decodes the same bytes', () => {
  const s = summarizeNdisOffload(encodeNdisOffload(fullCaps()))!;
  assert.equal(s['revision'], 7);
  assert.equal(s['ndis'], '6.85');
  assert.deepEqual(s['LsoV2.IPv6'], { encapsulation: 2, maxOffLoadSize: 0x12345, minSegmentCount: 3 });
  assert.equal(summarizeNdisOffload(new Uint8Array(3)), null);
});
