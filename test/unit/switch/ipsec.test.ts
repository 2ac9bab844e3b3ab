// IPsec task offload in the switch core (memory backend): validation, ESP
// at the uplink both ways, never plaintext, and uploads when the path changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { topology, nicCaps, tcpFrame, tso, assertBalanced, MAC, IP4, type Topology } from '../../util/topology.js';
import { inject } from '../../../src/io/memory.js';
import { nodeAead } from '../../../src/io/aead-node.js';
import { EspSa, decapsulate, encapsulate } from '../../../src/offload/ipsec/esp.js';
import type { SecurityAssociation } from '../../../src/offload/ipsec/sa.js';
import type { UploadEvent } from '../../../src/switch/ipsec.js';
import { buildFrame } from '../../../src/wire/builder.js';
import { BufferPool } from '../../../src/packet/pool.js';
import { RxCsum } from '../../../src/packet/meta.js';
import { IpProtocol } from '../../../src/wire/ipv4.js';
import { checksumsOf, layoutOf, layoutOfPacket, packetFrom } from '../../util/frames.js';
import { fillIpv4HeaderChecksum } from '../../../src/offload/checksum.js';

const KEY = new Uint8Array(16).fill(0x11);
const SALT = new Uint8Array([1, 2, 3, 4]);

function sa(direction: 'in' | 'out', o: Partial<SecurityAssociation> = {}): SecurityAssociation {
  return {
    spi: direction === 'out' ? 0x1001 : 0x2001, direction, mode: 'transport', algorithm: 'aes-gcm-128', key: KEY, salt: SALT,
    src: direction === 'out' ? IP4.vm1 : IP4.peer, dst: direction === 'out' ? IP4.peer : IP4.vm1, ...o,
  };
}

/** A topology whose uplink has the ESP engine, with every node known (ARP-like broadcasts). */
function ipsecLab(uplinkIpsec = true): Topology & { uploads: UploadEvent[] } {
  const t = topology({ uplink: nicCaps({ ipsec: uplinkIpsec }) });
  t.sw.enableIpsec(nodeAead);
  const uploads: UploadEvent[] = [];
  t.sw.ipsec!.events.on('upload', (e) => uploads.push(e));
  for (const n of ['vm1', 'vm2', 'host', 'legacy', 'peer'] as const) {
    inject(t.sw, t.ports[n], [buildFrame({ srcMac: MAC[n], dstMac: 0xffffffffffff, ip: { version: 4, src: IP4[n], dst: '198.18.255.255' }, l4: { kind: 'udp', sport: 1, dport: 1 }, payload: 1 }).frame]);
  }
  for (const b of Object.values(t.be)) b.take();
  return Object.assign(t, { uploads });
}

const flush = () => new Promise((r) => setImmediate(r));

test('an SA is accepted only when every rule holds; each rejection has its precise reason', () => {
  const t = ipsecLab();
  const m = t.sw.ipsec!;
  const vm1 = t.ports.vm1;
  const reason = (x: ReturnType<typeof m.add>) => ('reason' in x ? x.reason : 'accepted');
  assert.equal(reason(m.add(vm1, sa('out'))), 'accepted');
  assert.equal(reason(m.add(vm1, sa('in'))), 'accepted');
  assert.equal(reason(m.add(vm1, sa('out'))), 'accepted', 'the same SA again (a restarted agent): idempotent');
  assert.equal(reason(m.add(vm1, sa('out', { key: new Uint8Array(16).fill(0x22) }))), 'duplicate-spi');
  assert.equal(reason(m.add(vm1, sa('out', { spi: 7, key: new Uint8Array(5) }))), 'bad-key');
  assert.equal(reason(m.add(vm1, sa('out', { spi: 7, algorithm: 'aes-gcm-256', key: new Uint8Array(16) }))), 'bad-key');
  assert.equal(reason(m.add(vm1, sa('out', { spi: 0 }))), 'bad-address');
  assert.equal(reason(m.add(vm1, sa('out', { spi: 7, dst: 'not-an-ip' }))), 'bad-address');
  assert.equal(reason(m.add(vm1, sa('out', { spi: 7, src: IP4.vm2 }))), 'source-not-owned', "vm2's address, claimed by vm1");
  assert.equal(reason(m.add(vm1, sa('out', { spi: 7, dst: '198.18.99.99' }))), 'destination-unknown');
  assert.equal(reason(m.add(vm1, sa('out', { spi: 7, dst: IP4.vm2 }))), 'destination-not-ipsec-capable', 'a local VM is not behind the uplink');
  assert.equal(reason(m.add(t.ports.legacy, sa('out', { spi: 7, src: IP4.legacy }))), 'ipsec-not-advertised');
  vm1.maxSa = 3;
  assert.equal(reason(m.add(vm1, sa('out', { spi: 8 }))), 'accepted');
  assert.equal(reason(m.add(vm1, sa('out', { spi: 9 }))), 'sa-limit');
  const rejected = m.rejected(vm1).map((r) => r.reason);
  assert.ok(rejected.includes('sa-limit') && rejected.includes('source-not-owned'));
});

test('algorithm, mode and uplink capacity rules', () => {
  const t = ipsecLab();
  const caps = nicCaps({ ipsec: true });
  caps.ipsec = { ...caps.ipsec, algorithms: ['aes-gcm-128'], tunnel: false, maxSa: 1 };
  t.sw.updateCapabilities('peer', caps);
  const m = t.sw.ipsec!;
  const reason = (x: ReturnType<typeof m.add>) => ('reason' in x ? x.reason : 'accepted');
  assert.equal(reason(m.add(t.ports.vm1, sa('out', { algorithm: 'aes-gcm-256', key: new Uint8Array(32) }))), 'algorithm-unsupported');
  assert.equal(reason(m.add(t.ports.vm1, sa('out', { mode: 'tunnel' }))), 'mode-unsupported');
  assert.equal(reason(m.add(t.ports.vm1, sa('out'))), 'accepted');
  assert.equal(reason(m.add(t.ports.vm2, sa('out', { spi: 0x3001, src: IP4.vm2 }))), 'uplink-sa-limit');
  t.sw.updateCapabilities('peer', nicCaps({ ipsec: false }));
  assert.equal(reason(m.add(t.ports.vm2, sa('out', { spi: 0x3002, src: IP4.vm2 }))), 'ipsec-not-advertised');
});

test('outbound: plaintext matching an offloaded SA leaves the uplink as ESP that the peer decrypts to the original packet', () => {
  const t = ipsecLab();
  t.sw.ipsec!.add(t.ports.vm1, sa('out'));
  const f = tcpFrame('vm1', 'peer', 600, { checksum: 'full' });
  inject(t.sw, t.ports.vm1, [f]);
  const [esp] = t.be.peer.take();
  assert.ok(esp !== undefined);
  const lay = layoutOf(esp.frame);
  assert.equal(lay.l4Proto, IpProtocol.ESP, 'encrypted on the wire');
  assert.ok(esp.frame.length > f.length);
  // The peer's own inbound SA (same keys) recovers exactly the packet vm1 sent.
  const pool = new BufferPool({ classes: [{ bufferSize: 4096, count: 4 }] });
  const p = packetFrom(pool, esp.frame);
  assert.equal(decapsulate(p, new EspSa({ ...sa('out'), direction: 'in' }), nodeAead, layoutOfPacket(p)), null);
  assert.deepEqual(p.copyOut(), f);
  p.release();
  const c = t.ports.vm1.counters;
  assert.equal(c.ipsecPackets, 1, 'the crypto is charged to the VM');
  assert.ok(c.ipsecBytes >= f.length);
  assertBalanced(t);
});

test('outbound TSO super-frames are segmented, checksummed, then each segment encrypted', () => {
  const t = ipsecLab();
  t.sw.ipsec!.add(t.ports.vm1, sa('out'));
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 10000)], tso(1400));
  const got = t.be.peer.take();
  assert.equal(got.length, 8);
  const peerSa = new EspSa({ ...sa('out'), direction: 'in' });
  const pool = new BufferPool({ classes: [{ bufferSize: 4096, count: 16 }] });
  let payload = 0;
  for (const g of got) {
    assert.ok(g.frame.length <= 1514, 'ESP packets fit the MTU');
    const p = packetFrom(pool, g.frame);
    assert.equal(decapsulate(p, peerSa, nodeAead, layoutOfPacket(p)), null);
    const plain = p.copyOut();
    assert.equal(checksumsOf(plain), RxCsum.VERIFIED, 'the inner TCP checksum was completed before encryption');
    const l = layoutOf(plain);
    payload += l.ipEnd - l.payloadOff;
    p.release();
  }
  assert.equal(payload, 10000);
  assertBalanced(t);
});

test('inbound: the peer\'s ESP is decrypted at the uplink and delivered in plaintext; tampered and replayed packets are dropped and counted', () => {
  const t = ipsecLab();
  t.sw.ipsec!.add(t.ports.vm1, sa('in'));
  const peerOut = new EspSa({ ...sa('in'), direction: 'out' });
  const pool = new BufferPool({ classes: [{ bufferSize: 4096, count: 8 }] });
  const plain = tcpFrame('peer', 'vm1', 300, { checksum: 'full' });
  const make = () => {
    const p = packetFrom(pool, plain);
    assert.equal(encapsulate(p, peerOut, nodeAead, layoutOfPacket(p)), null);
    const out = p.copyOut();
    p.release();
    return out;
  };
  const first = make();
  inject(t.sw, t.ports.peer, [first]);
  const [got] = t.be.vm1.take();
  assert.deepEqual(got!.frame, plain);
  assert.ok(got!.meta.ipsecDecrypted);
  inject(t.sw, t.ports.peer, [first]); // replay
  const tampered = make();
  tampered[tampered.length - 20]! ^= 0x40;
  inject(t.sw, t.ports.peer, [tampered]);
  const truncated = make().subarray(0, 14 + 20 + 12);
  inject(t.sw, t.ports.peer, [truncated]);
  assert.equal(t.be.vm1.take().length, 0, 'nothing delivered');
  const d = t.ports.peer.counters.dropsByReason('rx');
  assert.equal(d['ipsec-replay'], 1);
  assert.equal(d['ipsec-auth-failed'], 1);
  assert.equal(d['ipsec-malformed'], 1);
  assert.equal(t.ports.vm1.counters.ipsecPackets, 3, 'decryption work charged to the receiving VM');
  assertBalanced(t);
});

test('never plaintext: flooded or misdirected packets of an offloaded SA go nowhere but encrypted through the uplink', async () => {
  const t = ipsecLab();
  t.sw.ipsec!.add(t.ports.vm1, sa('out'));
  // Unknown destination MAC: the frame floods, but only the uplink gets it, encrypted.
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 100, { checksum: 'full', dstMac: 0x02000000fefe })]);
  for (const n of ['vm2', 'host', 'legacy'] as const) assert.equal(t.be[n].take().length, 0, n);
  assert.equal(layoutOf(t.be.peer.take()[0]!.frame).l4Proto, IpProtocol.ESP);
  await flush();
  assert.equal(t.uploads.length, 0, 'a flood is no reason to upload');
  // Addressed to a local port's MAC: dropped, never delivered there in the clear, and the SA goes back.
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'vm2', 100, { checksum: 'full', ip: { version: 4, src: IP4.vm1, dst: IP4.peer } })]);
  assert.equal(t.be.vm2.take().length, 0);
  assert.deepEqual(t.ports.vm2.counters.dropsByReason('tx'), { 'ipsec-no-sa': 2 }, 'the flooded copy and the switched one');
  await flush();
  assert.equal(t.uploads.length, 1, 'switched elsewhere (not flooded): the SA goes back to the VM');
  assertBalanced(t);
});

test('live migration of the peer onto this host: the SAs are uploaded with sequence number and replay window; plaintext is held back until the VM took over', async () => {
  const t = ipsecLab();
  const m = t.sw.ipsec!;
  m.add(t.ports.vm1, sa('out'));
  m.add(t.ports.vm1, sa('in'));
  // Some traffic both ways first.
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 100, { checksum: 'full' }), tcpFrame('vm1', 'peer', 100, { checksum: 'full' })]);
  t.be.peer.take();
  // The peer VM arrives on the host port (same MAC/IP), announcing itself with a gratuitous ARP.
  const garp = new Uint8Array(42);
  garp.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 5, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 5, 198, 18, 0, 5, 0, 0, 0, 0, 0, 0, 198, 18, 0, 5]);
  inject(t.sw, t.ports.host, [garp]);
  for (const b of Object.values(t.be)) b.take();
  await flush();
  assert.equal(t.uploads.length, 1, 'one upload event for the pair');
  const ev = t.uploads[0]!;
  assert.equal(ev.port, 'vm1');
  assert.match(ev.reason, /MAC moved/);
  const out = ev.sas.find((s) => s.direction === 'out')!;
  const inn = ev.sas.find((s) => s.direction === 'in')!;
  assert.equal(out.seq, 3, 'two packets were sent: the VM continues at 3');
  assert.equal(out.key, '11'.repeat(16));
  assert.equal(out.salt, '01020304');
  assert.ok(inn.replay !== undefined && inn.replay.size === 64);
  assert.deepEqual(m.list(t.ports.vm1).map((s) => s.state), ['uploading', 'uploading']);
  // Until the VM says it has the SAs, its plaintext for the peer goes nowhere.
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 100, { checksum: 'full' })]);
  assert.equal(t.be.host.take().length + t.be.peer.take().length, 0);
  assert.equal(t.ports.vm1.counters.dropsByReason('rx')['ipsec-uploading'], 1);
  // The VM installed them: its traffic (now ESP it makes itself) is switched normally, to the peer's new port.
  assert.ok(m.ackUploaded(t.ports.vm1, 'out', 0x1001));
  assert.ok(m.ackUploaded(t.ports.vm1, 'in', 0x2001));
  const vmEsp = buildFrame({ srcMac: MAC.vm1, dstMac: MAC.peer, ip: { version: 4, src: IP4.vm1, dst: IP4.peer }, l4: { kind: 'udp', sport: 1, dport: 2 }, payload: 64 }).frame;
  vmEsp[14 + 9] = IpProtocol.ESP;
  vmEsp[14 + 10] = 0; vmEsp[14 + 11] = 0;
  fillIpv4HeaderChecksum(vmEsp, 14, 20);
  inject(t.sw, t.ports.vm1, [vmEsp]);
  assert.equal(t.be.host.take().length, 1, 'the VM\'s own ESP goes to the peer');
  // Plaintext of the flow after the upload is still never sent: the uploaded SA keeps guarding.
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 100, { checksum: 'full' })]);
  assert.equal(t.be.host.take().length + t.be.peer.take().length, 0);
  assert.equal(t.ports.vm1.counters.dropsByReason('rx')['ipsec-no-sa'], 1);
  assert.deepEqual(m.list(t.ports.vm1).map((s) => s.state), ['uploaded', 'uploaded']);
  // Deleting the SA lifts the guard.
  assert.ok(m.remove(t.ports.vm1, 'out', 0x1001));
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 100, { checksum: 'full' })]);
  assert.equal(t.be.host.take().length, 1);
  assertBalanced(t);
});

test('the uplink losing IPsec (or going down) uploads its SAs and withdraws the advertisement', async () => {
  const t = ipsecLab();
  const m = t.sw.ipsec!;
  m.add(t.ports.vm1, sa('out'));
  t.sw.updateCapabilities('peer', nicCaps({ ipsec: false }));
  await flush();
  assert.equal(t.uploads.length, 1);
  assert.match(t.uploads[0]!.reason, /capabilities/);
  assert.equal(t.ports.vm1.advertised.ipsec.enabled, false);
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 100, { checksum: 'full' })]);
  assert.equal(t.be.peer.take().length, 0, 'not in the clear after the capability went');

  const t2 = ipsecLab();
  t2.sw.ipsec!.add(t2.ports.vm1, sa('out'));
  t2.sw.setPortUp('peer', false);
  await flush();
  assert.equal(t2.uploads.length, 1);
  assertBalanced(t);
  assertBalanced(t2);
});

test('IPsec work counts against the VM\'s budget: over it, the crypto is refused', () => {
  const t = ipsecLab();
  t.ports.vm1.budget = { cpuNsPerSec: 1_000_000, burstNs: 1_000_000, action: 'drop' };
  t.ports.vm1.tokens = 1_000_000;
  t.sw.fillClockNs = (o) => { o[0] = (t.clock.ns += 600_000); };
  const m = t.sw.ipsec!;
  m.add(t.ports.vm1, sa('out'));
  const f = tcpFrame('vm1', 'peer', 100, { checksum: 'full' });
  inject(t.sw, t.ports.vm1, [f, f, f, f]);
  assert.equal(t.be.peer.take().length, 2);
  assert.deepEqual(t.ports.peer.counters.dropsByReason('tx'), { 'offload-budget': 2 });
  assertBalanced(t);
});

test('trace shows the IPsec decision and changes nothing', () => {
  const t = ipsecLab();
  t.sw.ipsec!.add(t.ports.vm1, sa('out'));
  const tr = t.sw.trace('vm1', tcpFrame('vm1', 'peer', 100, { checksum: 'full' }));
  assert.ok(tr.stages.some((s) => s.stage === 'ipsec' && s.verdict === 'encrypt'));
  assert.equal(tr.destinations[0]!.port, 'peer');
  assert.match(tr.destinations[0]!.why, /ESP transport aes-gcm-128/);
  assert.equal(t.be.peer.sent.length, 0);
  assert.equal(t.sw.ipsec!.list()[0]!.counters.packets, 0);
});

test('inbound: a peer with a valid SA may only send what the SA covers (RFC 4301 §5.2)', () => {
  const t = ipsecLab();
  t.sw.ipsec!.add(t.ports.vm1, sa('in'));
  const pool = new BufferPool({ classes: [{ bufferSize: 4096, count: 4 }] });
  // Correctly encrypted (same SPI and keys), but claims a source address the SA does not cover.
  const spoof = tcpFrame('peer', 'vm1', 100, { checksum: 'full', ip: { version: 4, src: '198.18.0.77', dst: IP4.vm1 } });
  const p = packetFrom(pool, spoof);
  const wide = new EspSa({ ...sa('in'), direction: 'out', selector: { src: '0.0.0.0/0', dst: '0.0.0.0/0' } });
  assert.equal(encapsulate(p, wide, nodeAead, layoutOfPacket(p)), null);
  inject(t.sw, t.ports.peer, [p.copyOut()]);
  p.release();
  assert.equal(t.be.vm1.take().length, 0);
  assert.equal(t.ports.peer.counters.dropsByReason('rx')['ipsec-selector'], 1);
  assertBalanced(t);
});

test('ESP never makes a frame too big for the uplink: full-size TCP is re-segmented to fit, an over-long datagram is dropped and counted', () => {
  const t = ipsecLab();
  t.sw.ipsec!.add(t.ports.vm1, sa('out'));
  // A 1500-byte IP packet (no TSO): after ESP it would be 1537 B.
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 1460, { checksum: 'full' })]);
  let got = t.be.peer.take();
  assert.equal(got.length, 2, 'split into two segments');
  for (const g of got) assert.ok(g.frame.length - 14 <= 1500, `ESP packet of ${g.frame.length - 14} B`);
  // A TSO super-frame with MSS 1448: segments are cut smaller than 1448.
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'peer', 14480)], tso(1448));
  got = t.be.peer.take();
  assert.ok(got.length > 10);
  const peerSa = new EspSa({ ...sa('out'), direction: 'in' });
  const pool = new BufferPool({ classes: [{ bufferSize: 4096, count: 32 }] });
  let bytes = 0;
  for (const g of got) {
    assert.ok(g.frame.length - 14 <= 1500);
    const p = packetFrom(pool, g.frame);
    if (decapsulate(p, peerSa, nodeAead, layoutOfPacket(p)) === null) {
      const l = layoutOf(p.copyOut());
      bytes += l.ipEnd - l.payloadOff;
    }
    p.release();
  }
  assert.equal(bytes, 14480, 'every byte arrives');
  // UDP cannot be re-segmented: a datagram that would not fit is dropped and counted.
  const big = buildFrame({ srcMac: MAC.vm1, dstMac: MAC.peer, ip: { version: 4, src: IP4.vm1, dst: IP4.peer }, l4: { kind: 'udp', sport: 1, dport: 2 }, payload: 1472 }).frame;
  inject(t.sw, t.ports.vm1, [big]);
  assert.equal(t.be.peer.take().length, 0);
  assert.equal(t.ports.peer.counters.dropsByReason('tx')['mtu-exceeded'], 1);
  assertBalanced(t);
});

test('a tunnel SA without a selector protects its endpoints\' traffic only: other local traffic is not pulled in', async () => {
  const t = ipsecLab();
  t.sw.ipsec!.add(t.ports.vm1, sa('out', { mode: 'tunnel' }));
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'vm2', 100, { checksum: 'full' })]);
  assert.equal(t.be.vm2.take().length, 1, 'vm1 → vm2 is not IPsec traffic');
  await flush();
  assert.equal(t.uploads.length, 0);
  assertBalanced(t);
});
