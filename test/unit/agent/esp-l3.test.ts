// The agent's userspace ESP on IP packets (what its TUN and raw socket carry):
// the fake Ethernet header in the headroom, SA selection, the ESP bytes it
// hands the raw socket, and the way back — checked against AES-GCM done here
// directly with node:crypto (RFC 4106: nonce = salt ‖ IV, AAD = SPI ‖ seq,
// 16-byte ICV; RFC 4303 trailer), not against the engine it wraps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { BufferPool } from '../../../src/packet/pool.js';
import type { Packet } from '../../../src/packet/packet.js';
import { buildFrame } from '../../../src/wire/builder.js';
import { EspL3, ESP_L3_HEADROOM, espOverhead } from '../../../src/agent/esp-l3.js';
import { parseSaFile } from '../../../src/agent/sa-file.js';
import type { SecurityAssociation } from '../../../src/offload/ipsec/sa.js';
import { ReplayWindow } from '../../../src/offload/ipsec/replay.js';
import { nodeAead } from '../../../src/io/aead-node.js';

const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 16 }] });
const KEY = '000102030405060708090a0b0c0d0e0f';
const KEY256 = KEY + 'f0e0d0c0b0a090807060504030201000';

function sas(): SecurityAssociation[] {
  return parseSaFile(JSON.stringify({
    sas: [
      { direction: 'out', spi: 0x1001, key: KEY, salt: 'cafe0001', src: '198.18.10.1', dst: '198.18.10.9' },
      { direction: 'in', spi: 0x2001, key: KEY, salt: 'cafe0002', src: '198.18.10.9', dst: '198.18.10.1' },
      { direction: 'out', spi: 0x1006, algorithm: 'aes-gcm-256', key: KEY256, salt: 'beef0001', src: '2001:db8::1', dst: '2001:db8::9' },
      { direction: 'in', spi: 0x2006, algorithm: 'aes-gcm-256', key: KEY256, salt: 'beef0002', src: '2001:db8::9', dst: '2001:db8::1' },
      { direction: 'out', spi: 0x1007, mode: 'tunnel', key: KEY, salt: 'cafe0007', src: '198.19.0.1', dst: '198.19.0.2', selector: { src: '198.18.10.0/24', dst: '198.18.77.0/24' } },
    ],
  }));
}

/** An IP packet (no Ethernet), as a TUN or an IPv4 raw socket hands it over. */
function ipPacket(src: string, dst: string, payload = 100, sport = 40000): Uint8Array {
  const v6 = src.includes(':');
  return buildFrame({
    ip: v6 ? { version: 6, src, dst } : { version: 4, src, dst },
    l4: { kind: 'tcp', sport, dport: 5001, seq: 1000, flags: 0x18 }, payload, checksum: 'full',
  }).frame.subarray(14);
}

function inPacket(bytes: Uint8Array): Packet {
  const p = pool.take(1800)!;
  assert.ok(p.headroom >= ESP_L3_HEADROOM);
  p.write(bytes);
  return p;
}

/** Independent RFC 4106 decryption of an ESP packet (header to ICV). */
function openEsp(esp: Uint8Array, key: string, salt: string): { spi: number; seq: number; inner: Buffer; nextHeader: number; padLen: number } {
  const b = Buffer.from(esp);
  const iv = b.subarray(8, 16);
  const alg = key.length === 32 ? 'aes-128-gcm' : 'aes-256-gcm';
  const d = createDecipheriv(alg, Buffer.from(key, 'hex'), Buffer.concat([Buffer.from(salt, 'hex'), iv]), { authTagLength: 16 });
  d.setAAD(b.subarray(0, 8));
  d.setAuthTag(b.subarray(b.length - 16));
  const pt = Buffer.concat([d.update(b.subarray(16, b.length - 16)), d.final()]);
  const padLen = pt[pt.length - 2]!;
  const nextHeader = pt[pt.length - 1]!;
  const pad = pt.subarray(pt.length - 2 - padLen, pt.length - 2);
  assert.deepEqual([...pad], Array.from({ length: padLen }, (_, i) => i + 1), 'RFC 4303 default padding 1, 2, 3, ...');
  return { spi: b.readUInt32BE(0), seq: b.readUInt32BE(4), inner: pt.subarray(0, pt.length - 2 - padLen), nextHeader, padLen };
}

/** Independent RFC 4106 encryption: the ESP part (SPI to ICV) of a transport-mode packet. */
function sealEsp(spi: number, seq: number, key: string, salt: string, payload: Uint8Array, nextHeader: number): Buffer {
  const padLen = (4 - ((payload.length + 2) % 4)) % 4;
  const pt = Buffer.concat([Buffer.from(payload), Buffer.from(Array.from({ length: padLen }, (_, i) => i + 1)), Buffer.from([padLen, nextHeader])]);
  const hdr = Buffer.alloc(16);
  hdr.writeUInt32BE(spi, 0);
  hdr.writeUInt32BE(seq, 4);
  hdr.writeUInt32BE(0xabcd, 8);
  hdr.writeUInt32BE(seq, 12);
  const alg = key.length === 32 ? 'aes-128-gcm' : 'aes-256-gcm';
  const c = createCipheriv(alg, Buffer.from(key, 'hex'), Buffer.concat([Buffer.from(salt, 'hex'), hdr.subarray(8)]), { authTagLength: 16 });
  c.setAAD(hdr.subarray(0, 8));
  return Buffer.concat([hdr, c.update(pt), c.final(), c.getAuthTag()]);
}

/** An IPv4 packet around an ESP part, as a raw IPv4 socket returns it. */
function ipv4Around(esp: Buffer, src: number[], dst: number[]): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + esp.length, 2);
  h[8] = 64;
  h[9] = 50;
  h.set(src, 12);
  h.set(dst, 16);
  return Buffer.concat([h, esp]);
}

test('outbound IPv4 transport: the ESP handed to the raw socket decrypts (independently) to the TUN packet\'s transport part', () => {
  const e = new EspL3(nodeAead);
  for (const sa of sas()) e.add(sa);
  const pkt = ipPacket('198.18.10.1', '198.18.10.9', 333);
  for (let i = 1; i <= 3; i++) {
    const p = inPacket(pkt);
    try {
      assert.equal(e.seal(p), null);
      assert.equal(e.peer, '198.18.10.9');
      assert.equal(e.family, 4);
      const esp = p.buf.slice(e.espOff, e.espOff + e.espLen);
      const r = openEsp(esp, KEY, 'cafe0001');
      assert.equal(r.spi, 0x1001);
      assert.equal(r.seq, i, 'sequence numbers 1, 2, 3');
      assert.equal(r.nextHeader, 6);
      assert.deepEqual([...r.inner], [...pkt.subarray(20)], 'the TCP header and payload, unchanged');
      assert.ok(e.espLen <= pkt.length - 20 + espOverhead('transport', 4), 'within the overhead the TUN MTU leaves room for');
    } finally {
      p.release();
    }
  }
  assert.equal(e.sealed, 3);
});

test('outbound IPv6 transport (AES-GCM-256) and IPv4 tunnel by selector', () => {
  const e = new EspL3(nodeAead);
  for (const sa of sas()) e.add(sa);
  const v6 = ipPacket('2001:db8::1', '2001:db8::9', 40);
  let p = inPacket(v6);
  assert.equal(e.seal(p), null);
  assert.equal(e.family, 6);
  assert.equal(e.peer, '2001:db8::9');
  let r = openEsp(p.buf.slice(e.espOff, e.espOff + e.espLen), KEY256, 'beef0001');
  assert.equal(r.spi, 0x1006);
  assert.deepEqual([...r.inner], [...v6.subarray(40)]);
  p.release();
  // Tunnel: any packet to 198.18.77.0/24 goes whole inside ESP to the tunnel end.
  const inner = ipPacket('198.18.10.1', '198.18.77.5', 60);
  p = inPacket(inner);
  assert.equal(e.seal(p), null);
  assert.equal(e.peer, '198.19.0.2');
  r = openEsp(p.buf.slice(e.espOff, e.espOff + e.espLen), KEY, 'cafe0007');
  assert.equal(r.nextHeader, 4, 'IPv4 inside');
  assert.deepEqual([...r.inner], [...inner]);
  p.release();
});

test('outbound refusals: not IP, no SA for the destination; counted', () => {
  const e = new EspL3(nodeAead);
  for (const sa of sas()) e.add(sa);
  let p = inPacket(new Uint8Array([0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]));
  assert.equal(e.seal(p), 'not-ip');
  p.release();
  p = inPacket(ipPacket('198.18.10.1', '198.18.10.50'));
  assert.equal(e.seal(p), 'no-sa');
  p.release();
  // Transport mode keeps the header: a packet from another of the VM's addresses is not the SA's.
  p = inPacket(ipPacket('198.18.10.2', '198.18.10.9'));
  assert.equal(e.seal(p), 'no-sa');
  p.release();
  assert.deepEqual(e.stats().drops, { 'not-ip': 1, 'no-sa': 2 });
});

test('inbound IPv4: independent ESP decrypted into the original packet for the TUN; replays, forgeries, strangers and unknown SPIs refused', () => {
  const e = new EspL3(nodeAead);
  for (const sa of sas()) e.add(sa);
  const plain = ipPacket('198.18.10.9', '198.18.10.1', 200);
  const espFor = (seq: number, from = plain) => ipv4Around(sealEsp(0x2001, seq, KEY, 'cafe0002', from.subarray(20), 6), [198, 18, 10, 9], [198, 18, 10, 1]);
  const open = (b: Uint8Array) => {
    const p = inPacket(b);
    try {
      const r = e.open(p, 4);
      return r ?? Buffer.from(p.buf.subarray(e.l3Off, e.l3Off + e.l3Len));
    } finally {
      p.release();
    }
  };
  const got = open(espFor(5));
  assert.ok(Buffer.isBuffer(got), String(got));
  // The IPv4 header is the outer one, restored: protocol TCP, length of the plain packet, a valid checksum.
  const want = Buffer.from(plain);
  assert.equal(got.readUInt16BE(2), want.length);
  assert.equal(got[9], 6);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += got.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  assert.equal(sum, 0xffff, 'IPv4 header checksum valid');
  assert.deepEqual(got.subarray(20), want.subarray(20));
  assert.equal(open(espFor(5)), 'replay');
  assert.equal(open(espFor(4)).constructor, Buffer, 'an older, unseen number is fine');
  const forged = espFor(6);
  forged[forged.length - 20]! ^= 1;
  assert.equal(open(forged), 'auth-failed');
  assert.equal(open(espFor(6)).constructor, Buffer, 'the forgery did not use up number 6');
  assert.equal(open(ipv4Around(sealEsp(0x9999, 1, KEY, 'cafe0002', plain.subarray(20), 6), [198, 18, 10, 9], [198, 18, 10, 1])), 'unknown-spi');
  assert.equal(open(espFor(7).subarray(0, 20 + 8 + 8 + 4)), 'truncated');
  // A valid SA holder may only send what the SA covers (RFC 4301 §5.2): here another source address inside.
  const stranger = ipPacket('198.18.10.66', '198.18.10.1', 10);
  assert.equal(open(ipv4Around(sealEsp(0x2001, 8, KEY, 'cafe0002', stranger.subarray(20), 6), [198, 18, 10, 66], [198, 18, 10, 1])), 'selector');
  const s = e.stats();
  assert.equal(s.opened, 3);
  assert.deepEqual(s.drops, { 'unknown-spi': 1, selector: 1, 'auth-failed': 1, replay: 1, truncated: 1 });
});

test('inbound IPv6: the raw socket gives the ESP part only; the header is rebuilt from the SA', () => {
  const e = new EspL3(nodeAead);
  for (const sa of sas()) e.add(sa);
  const plain = ipPacket('2001:db8::9', '2001:db8::1', 90);
  const esp = sealEsp(0x2006, 1, KEY256, 'beef0002', plain.subarray(40), 6);
  const p = inPacket(esp);
  try {
    assert.equal(e.open(p, 6), null);
    const got = Buffer.from(p.buf.subarray(e.l3Off, e.l3Off + e.l3Len));
    assert.equal(got[0]! >> 4, 6);
    assert.equal(got[6], 6, 'next header TCP');
    assert.equal(got.readUInt16BE(4), plain.length - 40, 'payload length');
    assert.deepEqual(got.subarray(8, 40), Buffer.from(plain.subarray(8, 40)), 'addresses from the SA');
    assert.deepEqual(got.subarray(40), Buffer.from(plain.subarray(40)));
  } finally {
    p.release();
  }
});

test('an uploaded SA continues: outbound from the switch\'s next sequence number, inbound with its replay window', () => {
  const [out, inb] = sas() as [SecurityAssociation, SecurityAssociation];
  const w = new ReplayWindow(64);
  for (const s of [90, 95, 99, 100]) w.update(s);
  const e = new EspL3(nodeAead);
  e.add({ ...out, seq: 4326 });
  e.add(inb, w.state());
  const p = inPacket(ipPacket('198.18.10.1', '198.18.10.9'));
  assert.equal(e.seal(p), null);
  assert.equal(openEsp(p.buf.slice(e.espOff, e.espOff + e.espLen), KEY, 'cafe0001').seq, 4326);
  p.release();
  const plain = ipPacket('198.18.10.9', '198.18.10.1');
  const open = (seq: number) => {
    const q = inPacket(ipv4Around(sealEsp(0x2001, seq, KEY, 'cafe0002', plain.subarray(20), 6), [198, 18, 10, 9], [198, 18, 10, 1]));
    try { return e.open(q, 4); } finally { q.release(); }
  };
  assert.equal(open(99), 'replay', 'seen by the switch');
  assert.equal(open(100), 'replay');
  assert.equal(open(30), 'too-old', 'left of the switch\'s window');
  assert.equal(open(98), null, 'in the window, not seen');
  assert.equal(open(101), null);
});

test('SAs come and go; one SPI per direction', () => {
  const e = new EspL3(nodeAead);
  const [out, inb] = sas() as [SecurityAssociation, SecurityAssociation];
  e.add(out);
  assert.throws(() => e.add(out), /installed already/);
  e.add(inb);
  assert.equal(e.hasOutbound && e.hasInbound, true);
  assert.equal(e.remove('out', out.spi), true);
  assert.equal(e.remove('out', out.spi), false);
  assert.equal(e.remove('in', inb.spi), true);
  assert.equal(e.hasOutbound || e.hasInbound, false);
  assert.equal(pool.inUse, 0, 'every packet went back to the pool');
});
