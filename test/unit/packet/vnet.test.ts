import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  decodeVnetHeader, encodeVnetHeader, VNET_HDR_LEN, VNET_HDR_MRG_LEN, VnetFlag, VnetGso, type VnetSource,
} from '../../../src/packet/vnet.js';
import { GsoType, OffloadMeta, RxCsum } from '../../../src/packet/meta.js';
import { buildFrame, type FrameSpec } from '../../../src/wire/builder.js';

interface Hdr { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number }

function hdr(h: Hdr, size = VNET_HDR_LEN): Uint8Array {
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  b[0] = h.flags ?? 0;
  b[1] = h.gsoType ?? 0;
  dv.setUint16(2, h.hdrLen ?? 0, true);
  dv.setUint16(4, h.gsoSize ?? 0, true);
  dv.setUint16(6, h.csumStart ?? 0, true);
  dv.setUint16(8, h.csumOffset ?? 0, true);
  return b;
}

const tcp4: FrameSpec = { ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' }, l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: 4000, checksum: 'partial' };
const tcp6: FrameSpec = { ip: { version: 6, src: '2001:db8::1', dst: '2001:db8::2' }, l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: 4000, checksum: 'partial' };
const udp4: FrameSpec = { ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' }, l4: { kind: 'udp', sport: 1, dport: 2 }, payload: 4000, checksum: 'partial' };
const F_TCP4 = buildFrame(tcp4).frame;   // l4 at 34, headers 54
const F_TCP6 = buildFrame(tcp6).frame;   // l4 at 54, headers 74
const F_UDP4 = buildFrame(udp4).frame;   // l4 at 34

function decode(h: Hdr, frame: Uint8Array, source: VnetSource = 'guest', size = VNET_HDR_LEN) {
  const meta = new OffloadMeta();
  const err = decodeVnetHeader(hdr(h, size), 0, size, frame, 0, frame.length, meta, source);
  return { err, meta };
}

const TSO4 = { flags: VnetFlag.NEEDS_CSUM, gsoType: VnetGso.TCPV4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16 };

test('a Linux guest TSOv4 header decodes into segmentation + partial checksum metadata', () => {
  const { err, meta } = decode(TSO4, F_TCP4);
  assert.equal(err, null);
  assert.equal(meta.gsoType, GsoType.TCPV4);
  assert.equal(meta.gsoSize, 1448);
  assert.equal(meta.hdrLen, 54);
  assert.ok(meta.needsCsum);
  assert.equal(meta.csumStart, 34);
  assert.equal(meta.csumOffset, 16);
  assert.equal(meta.gsoEcn, false);
  assert.equal(meta.rxCsum, RxCsum.UNKNOWN);
});

test('12-byte headers decode the same', () => {
  const { err, meta } = decode(TSO4, F_TCP4, 'guest', VNET_HDR_MRG_LEN);
  assert.equal(err, null);
  assert.equal(meta.gsoType, GsoType.TCPV4);
});

test('header shorter than its size, or an odd size, is vnet-truncated', () => {
  const meta = new OffloadMeta();
  assert.equal(decodeVnetHeader(new Uint8Array(9), 0, 10, F_TCP4, 0, F_TCP4.length, meta, 'guest'), 'vnet-truncated');
  assert.equal(decodeVnetHeader(new Uint8Array(11), 0, 11, F_TCP4, 0, F_TCP4.length, meta, 'guest'), 'vnet-truncated');
});

test('gso_type: unknown values, ECN alone and ECN on UDP are refused; ECN on TCP is kept', () => {
  for (const t of [2, 6, 7, 0x40, 0x7f]) assert.equal(decode({ ...TSO4, gsoType: t }, F_TCP4).err, 'vnet-bad-gso-type', `type ${t}`);
  assert.equal(decode({ gsoType: VnetGso.ECN }, F_TCP4).err, 'vnet-bad-gso-type');
  assert.equal(decode({ flags: 1, gsoType: VnetGso.UDP_L4 | VnetGso.ECN, gsoSize: 1000, csumStart: 34, csumOffset: 6 }, F_UDP4).err, 'vnet-bad-gso-type');
  const { err, meta } = decode({ ...TSO4, gsoType: VnetGso.TCPV4 | VnetGso.ECN }, F_TCP4);
  assert.equal(err, null);
  assert.ok(meta.gsoEcn);
});

test('gso_size 0 and the kernel-reserved 0xffff are refused', () => {
  assert.equal(decode({ ...TSO4, gsoSize: 0 }, F_TCP4).err, 'vnet-bad-gso-size');
  assert.equal(decode({ ...TSO4, gsoSize: 0xffff }, F_TCP4).err, 'vnet-bad-gso-size');
});

test('csum_start/csum_offset must lie inside the frame with room for the transport header', () => {
  const n = F_TCP4.length;
  assert.equal(decode({ flags: 1, csumStart: n, csumOffset: 0 }, F_TCP4).err, 'vnet-csum-out-of-range');
  assert.equal(decode({ flags: 1, csumStart: 34, csumOffset: n - 35 }, F_TCP4).err, 'vnet-csum-out-of-range');
  assert.equal(decode({ flags: 1, csumStart: 34, csumOffset: n - 36 }, F_TCP4).err, null, 'field ending exactly at the frame end is fine');
  // TCP GSO needs the 20-byte TCP header after csum_start.
  assert.equal(decode({ ...TSO4, csumStart: n - 18 }, F_TCP4).err, 'vnet-csum-out-of-range');
});

test('csum_start before the minimal network header is refused (kernel nh_min_len)', () => {
  assert.equal(decode({ flags: 1, csumStart: 6, csumOffset: 16 }, F_TCP4).err, 'vnet-csum-before-l3');
  assert.equal(decode({ flags: 1, csumStart: 19, csumOffset: 16 }, F_TCP4).err, 'vnet-csum-before-l3');
  // TCPv6 GSO: at least an IPv6 header before the transport header.
  assert.equal(decode({ flags: 1, gsoType: VnetGso.TCPV6, gsoSize: 1000, csumStart: 34, csumOffset: 16 }, F_TCP6).err, 'vnet-csum-before-l3');
  assert.equal(decode({ flags: 1, gsoType: VnetGso.TCPV6, gsoSize: 1000, csumStart: 54, csumOffset: 16 }, F_TCP6).err, null);
});

test('TCP GSO with csum_offset other than 16 and USO with other than 6 are refused', () => {
  assert.equal(decode({ ...TSO4, csumOffset: 6 }, F_TCP4).err, 'vnet-bad-csum-offset');
  assert.equal(decode({ flags: 1, gsoType: VnetGso.UDP_L4, gsoSize: 1000, csumStart: 34, csumOffset: 16 }, F_UDP4).err, 'vnet-bad-csum-offset');
  assert.equal(decode({ flags: 1, gsoType: VnetGso.UDP_L4, gsoSize: 1000, csumStart: 34, csumOffset: 6 }, F_UDP4).err, null);
});

test('USO requires NEEDS_CSUM and at most UDP_MAX_SEGMENTS segments', () => {
  assert.equal(decode({ gsoType: VnetGso.UDP_L4, gsoSize: 1000 }, F_UDP4).err, 'vnet-gso-needs-csum');
  assert.equal(decode({ flags: 1, gsoType: VnetGso.UDP_L4, gsoSize: 8, csumStart: 34, csumOffset: 6 }, F_UDP4).err, 'vnet-too-many-segments');
  assert.equal(decode({ flags: 1, gsoType: VnetGso.UDP_L4, gsoSize: 32, csumStart: 34, csumOffset: 6 }, F_UDP4).err, null);
});

test('GSO without NEEDS_CSUM: the frame is dissected and must match the gso type', () => {
  const ok = decode({ gsoType: VnetGso.TCPV4, gsoSize: 1448 }, F_TCP4);
  assert.equal(ok.err, null);
  assert.equal(ok.meta.gsoType, GsoType.TCPV4);
  assert.equal(ok.meta.needsCsum, false);
  assert.equal(decode({ gsoType: VnetGso.TCPV4, gsoSize: 1448 }, F_TCP6).err, 'vnet-gso-proto-mismatch');
  assert.equal(decode({ gsoType: VnetGso.TCPV6, gsoSize: 1448 }, F_TCP4).err, 'vnet-gso-proto-mismatch');
  assert.equal(decode({ gsoType: VnetGso.TCPV4, gsoSize: 1448 }, F_UDP4).err, 'vnet-gso-proto-mismatch');
  assert.equal(decode({ gsoType: VnetGso.TCPV4, gsoSize: 1448 }, F_TCP4.subarray(0, 40)).err, 'vnet-gso-proto-mismatch');
});

test('hdr_len is raised to cover the checksum field, and may not exceed the frame', () => {
  const { meta } = decode({ ...TSO4, hdrLen: 10 }, F_TCP4);
  assert.equal(meta.hdrLen, 34 + 16 + 2);
  assert.equal(decode({ ...TSO4, hdrLen: F_TCP4.length + 1 }, F_TCP4).err, 'vnet-hdr-len');
});

test('"too small packets are not really GSO ones": GSO cleared, checksum request kept', () => {
  const { err, meta } = decode({ ...TSO4, gsoSize: 4000 }, F_TCP4); // payload is exactly 4000
  assert.equal(err, null);
  assert.equal(meta.gsoType, GsoType.NONE);
  assert.equal(meta.gsoSize, 0);
  assert.ok(meta.needsCsum);
  assert.equal(decode({ ...TSO4, gsoSize: 3999 }, F_TCP4).meta.gsoType, GsoType.TCPV4);
});

test('DATA_VALID is believed from the kernel only, and never together with NEEDS_CSUM', () => {
  assert.equal(decode({ flags: VnetFlag.DATA_VALID }, F_TCP4, 'guest').meta.rxCsum, RxCsum.UNKNOWN);
  assert.equal(decode({ flags: VnetFlag.DATA_VALID }, F_TCP4, 'kernel').meta.rxCsum, RxCsum.VERIFIED);
  assert.equal(decode({ flags: VnetFlag.DATA_VALID | 1, csumStart: 34, csumOffset: 16 }, F_TCP4, 'kernel').meta.rxCsum, RxCsum.UNKNOWN);
});

test('RSC_INFO from the kernel carries coalesced segment and dup-ack counts', () => {
  const { meta } = decode({ flags: VnetFlag.RSC_INFO | VnetFlag.DATA_VALID, gsoType: VnetGso.TCPV4, gsoSize: 1448, csumStart: 3, csumOffset: 1 }, F_TCP4, 'kernel');
  assert.equal(meta.rscSegments, 3);
  assert.equal(meta.rscDupAcks, 1);
  assert.equal(decode({ flags: VnetFlag.RSC_INFO, gsoType: VnetGso.TCPV4, gsoSize: 1448, csumStart: 3, csumOffset: 1 }, F_TCP4, 'guest').meta.rscSegments, 0);
});

test('encode: NEEDS_CSUM wins over DATA_VALID; DATA_VALID only when allowed; VLAN shift; num_buffers', () => {
  const m = new OffloadMeta();
  m.needsCsum = true; m.csumStart = 34; m.csumOffset = 16; m.rxCsum = RxCsum.VERIFIED;
  m.gsoType = GsoType.TCPV4; m.gsoSize = 1448; m.hdrLen = 54; m.gsoEcn = true;
  const b = new Uint8Array(12);
  encodeVnetHeader(m, b, 0, 12, true, 4);
  assert.deepEqual([...b], [1, 0x81, 58, 0, 0xa8, 5, 38, 0, 16, 0, 1, 0]);
  const v = new OffloadMeta();
  v.rxCsum = RxCsum.VERIFIED;
  encodeVnetHeader(v, b, 0, 10);
  assert.equal(b[0], VnetFlag.DATA_VALID);
  encodeVnetHeader(v, b, 0, 10, false);
  assert.equal(b[0], 0);
});

test('property: encode then decode (as the kernel) gives the metadata back', () => {
  fc.assert(fc.property(
    fc.constantFrom(GsoType.NONE, GsoType.TCPV4), fc.integer({ min: 1, max: 3999 }), fc.boolean(), fc.boolean(),
    fc.constantFrom(VNET_HDR_LEN, VNET_HDR_MRG_LEN),
    (gso, size, ecn, csum, hsz) => {
      const m = new OffloadMeta();
      if (gso !== GsoType.NONE) { m.gsoType = gso; m.gsoSize = size; m.gsoEcn = ecn; m.hdrLen = 54; }
      if (csum || gso !== GsoType.NONE) { m.needsCsum = true; m.csumStart = 34; m.csumOffset = 16; }
      const b = new Uint8Array(hsz);
      encodeVnetHeader(m, b, 0, hsz);
      const back = new OffloadMeta();
      assert.equal(decodeVnetHeader(b, 0, hsz, F_TCP4, 0, F_TCP4.length, back, 'kernel'), null);
      assert.deepEqual(back, m);
    }));
});

test('property: random headers over random or real frames never throw and leave no half-decoded metadata', () => {
  fc.assert(fc.property(
    fc.uint8Array({ minLength: 10, maxLength: 10 }),
    fc.oneof(fc.uint8Array({ minLength: 0, maxLength: 200 }), fc.constantFrom(F_TCP4, F_TCP6, F_UDP4)),
    fc.constantFrom<VnetSource>('guest', 'kernel'),
    (h, frame, source) => {
      const meta = new OffloadMeta();
      const err = decodeVnetHeader(h, 0, 10, frame, 0, frame.length, meta, source);
      if (err !== null) assert.deepEqual(meta, new OffloadMeta());
      if (meta.needsCsum) assert.ok(meta.csumStart + meta.csumOffset + 2 <= frame.length);
    }), { numRuns: 3000 });
});
