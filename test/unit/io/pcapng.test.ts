// pcapng capture, read back with a small reader written here from the
// format's definition (draft-ietf-opsawg-pcapng), independent of the writer:
// block framing, lengths, alignment, interface and packet fields, the 802.1Q
// tag where the wire had it, the offload comments, truncation, buffering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getHeapSpaceStatistics } from 'node:v8';
import { BufferPool } from '../../../src/packet/pool.js';
import { GsoType, RxCsum, OffloadMeta } from '../../../src/packet/meta.js';
import { buildFrame } from '../../../src/wire/builder.js';
import { inject } from '../../../src/io/memory.js';
import {
  PcapngWriter, PcapngBlockStream, capturePort, describeOffloads, DEFAULT_SNAPLEN, type PcapngWriterOptions,
} from '../../../src/io/pcapng.js';
import { gcCountDuring } from '../../util/alloc.js';
import { topology, tcpFrame, udpFrame, tso, MAC, type Topology } from '../../util/topology.js';

// ---------------------------------------------------------------- the reader

interface Options { [code: number]: Buffer[] }
interface Shb { major: number; minor: number; sectionLength: bigint; options: Options }
interface Idb { linkType: number; snaplen: number; options: Options; name: string }
interface Epb {
  ifId: number; ts: bigint; capLen: number; origLen: number; data: Buffer;
  flags: number | undefined; comment: string | undefined; options: Options;
}
interface Isb { ifId: number; ts: bigint; options: Options }
interface Capture { shb: Shb; ifaces: Idb[]; packets: Epb[]; stats: Isb[]; blockTypes: number[] }

const u64 = (b: Buffer, o: number) => (BigInt(b.readUInt32LE(o + 4)) << 32n) | BigInt(b.readUInt32LE(o));
const ts64 = (b: Buffer, o: number) => (BigInt(b.readUInt32LE(o)) << 32n) | BigInt(b.readUInt32LE(o + 4));

/** Options from `o` to `end`: TLVs padded to 32 bits, zero padding, ending exactly with opt_endofopt. */
function readOptions(b: Buffer, o: number, end: number, where: string): Options {
  const opts: Options = {};
  for (;;) {
    assert.ok(o + 4 <= end, `${where}: options run past the block (no opt_endofopt)`);
    const code = b.readUInt16LE(o);
    const len = b.readUInt16LE(o + 2);
    if (code === 0) {
      assert.equal(len, 0, `${where}: opt_endofopt has length 0`);
      assert.equal(o + 4, end, `${where}: opt_endofopt is the last thing in the block`);
      return opts;
    }
    const padded = (len + 3) & ~3;
    assert.ok(o + 4 + padded <= end, `${where}: option ${code} fits the block`);
    (opts[code] ??= []).push(b.subarray(o + 4, o + 4 + len));
    for (let i = o + 4 + len; i < o + 4 + padded; i++) assert.equal(b[i], 0, `${where}: option padding is zero`);
    o += 4 + padded;
  }
}

function readPcapng(b: Buffer): Capture {
  assert.equal(b.length % 4, 0, 'file length is a multiple of 4');
  const cap: Capture = { shb: undefined!, ifaces: [], packets: [], stats: [], blockTypes: [] };
  let o = 0;
  while (o < b.length) {
    assert.ok(o + 12 <= b.length, `block at ${o} has room for its header and trailer`);
    const type = b.readUInt32LE(o);
    const len = b.readUInt32LE(o + 4);
    const where = `block ${cap.blockTypes.length} (type ${type}) at ${o}`;
    assert.equal(len % 4, 0, `${where}: length ${len} is a multiple of 4`);
    assert.ok(len >= 12 && o + len <= b.length, `${where}: length ${len} fits the file`);
    assert.equal(b.readUInt32LE(o + len - 4), len, `${where}: trailing length equals leading length`);
    const end = o + len - 4;
    cap.blockTypes.push(type);
    if (cap.blockTypes.length === 1) assert.equal(type, 0x0a0d0d0a, 'the file starts with a Section Header Block');
    switch (type) {
      case 0x0a0d0d0a:
        assert.equal(b.readUInt32LE(o + 8), 0x1a2b3c4d, 'byte-order magic, little-endian');
        cap.shb = {
          major: b.readUInt16LE(o + 12), minor: b.readUInt16LE(o + 14),
          sectionLength: b.readBigInt64LE(o + 16), options: readOptions(b, o + 24, end, where),
        };
        break;
      case 1: {
        assert.equal(b.readUInt16LE(o + 10), 0, `${where}: reserved is zero`);
        const options = readOptions(b, o + 16, end, where);
        cap.ifaces.push({
          linkType: b.readUInt16LE(o + 8), snaplen: b.readUInt32LE(o + 12), options,
          name: options[2]?.[0]?.toString('utf8') ?? '',
        });
        break;
      }
      case 6: {
        const ifId = b.readUInt32LE(o + 8);
        assert.ok(ifId < cap.ifaces.length, `${where}: interface ${ifId} was described before`);
        const capLen = b.readUInt32LE(o + 20);
        const origLen = b.readUInt32LE(o + 24);
        assert.ok(capLen <= origLen, `${where}: captured ≤ original length`);
        assert.ok(capLen <= cap.ifaces[ifId]!.snaplen, `${where}: captured ≤ snaplen`);
        const dataEnd = o + 28 + capLen;
        const optStart = o + 28 + ((capLen + 3) & ~3);
        for (let i = dataEnd; i < optStart; i++) assert.equal(b[i], 0, `${where}: packet padding is zero`);
        const options = readOptions(b, optStart, end, where);
        const flags = options[2]?.[0];
        if (flags !== undefined) assert.equal(flags.length, 4, 'epb_flags is 4 bytes');
        cap.packets.push({
          ifId, ts: ts64(b, o + 12), capLen, origLen, data: Buffer.from(b.subarray(o + 28, dataEnd)),
          flags: flags?.readUInt32LE(0), comment: options[1]?.[0]?.toString('utf8'), options,
        });
        break;
      }
      case 5: {
        const ifId = b.readUInt32LE(o + 8);
        assert.ok(ifId < cap.ifaces.length, `${where}: statistics of a described interface`);
        cap.stats.push({ ifId, ts: ts64(b, o + 12), options: readOptions(b, o + 20, end, where) });
        break;
      }
      default:
        assert.fail(`${where}: unexpected block type`);
    }
    o += len;
  }
  assert.ok(cap.shb !== undefined, 'a section header');
  return cap;
}

// ---------------------------------------------------------------- helpers

/** A stream that copies what it is given (the writer reuses its chunks once written). */
class Sink extends Writable {
  readonly chunks: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.chunks.push(Buffer.from(chunk));
    cb();
  }
  get bytes(): Buffer { return Buffer.concat(this.chunks); }
}

/** A stream that keeps references (no copy) and completes writes only when told: a slow disk. */
class SlowSink extends Writable {
  readonly held: Buffer[] = [];
  private readonly waiting: (() => void)[] = [];
  constructor() { super({ highWaterMark: 1 }); }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.held.push(chunk);
    this.waiting.push(() => cb());
  }
  release(): void {
    for (const f of this.waiting.splice(0)) f();
  }
}

const newSpaceUsed = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.space_used_size;

const T0 = 1_700_000_000_123_456; // µs since 1970: 2023-11-14T22:13:20.123456Z
const pinnedClock = () => T0;

function vlanTopology(): Topology {
  // vm1, vm2 and the legacy VM in VLAN 100; the uplink trunks it tagged.
  return topology({
    overrides: {
      vm1: { vlan: { mode: 'access', vlan: 100 } },
      vm2: { vlan: { mode: 'access', vlan: 100 } },
      legacy: { vlan: { mode: 'access', vlan: 100 } },
      peer: { vlan: { mode: 'trunk', allowed: [100], native: 1 } },
    },
  });
}

function writer(out: Writable | string, opts: PcapngWriterOptions = {}): PcapngWriter {
  return new PcapngWriter(out, { flushIntervalMs: 0, clock: pinnedClock, ...opts });
}

function packetsOf(cap: Capture, name: string): Epb[] {
  const id = cap.ifaces.findIndex((i) => i.name === name);
  assert.ok(id >= 0, `interface ${name} described`);
  return cap.packets.filter((p) => p.ifId === id);
}

// ---------------------------------------------------------------- tests

test('a switch captured on four ports reads back: one IDB each, every rx and tx frame as sent, tags, flags, offload comments', async () => {
  const t = vlanTopology();
  const sink = new Sink();
  const w = writer(sink, { comment: 'unit test' });
  const names = ['vm1', 'vm2', 'legacy', 'peer'] as const;
  const stops = names.map((n) => capturePort(t.ports[n], w));

  // A TSO super-frame from vm1 to the uplink's MAC (unknown in VLAN 100:
  // flooded): vm2 takes it whole, the uplink's NIC segments it (metadata
  // passed down, tag 100 inserted), the legacy VM gets software segments.
  const superFrame = tcpFrame('vm1', 'peer', 6000);
  // A plain frame with a correct checksum, and an IPv6 UDP datagram.
  const plain = buildFrame({
    srcMac: MAC.vm1, dstMac: MAC.vm2, ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.2' },
    l4: { kind: 'tcp', sport: 40000, dport: 80 }, payload: 100, checksum: 'full',
  }).frame;
  const v6 = udpFrame('vm1', 'vm2', 300, true);
  const sent = [superFrame, plain, v6];
  inject(t.sw, t.ports.vm1, [superFrame], tso());
  inject(t.sw, t.ports.vm1, [plain, v6], (p, i) => {
    if (i === 1) { p.meta.needsCsum = true; p.meta.csumStart = 54; p.meta.csumOffset = 6; }
  });
  // From the uplink: a tagged broadcast the NIC verified.
  const fromUplink = buildFrame({
    srcMac: MAC.peer, dstMac: 0xffffffffffff, vlans: [{ tpid: 0x8100, pcp: 5, dei: false, vid: 100 }],
    ip: { version: 4, src: '198.18.0.5', dst: '198.18.255.255' }, l4: { kind: 'udp', sport: 9, dport: 9 }, payload: 20, checksum: 'full',
  }).frame;
  inject(t.sw, t.ports.peer, [fromUplink], (p) => { p.meta.rxCsum = RxCsum.VERIFIED; });
  for (const s of stops) s();
  await w.close();

  const cap = readPcapng(sink.bytes);
  assert.equal(cap.shb.major, 1);
  assert.equal(cap.shb.minor, 0);
  assert.equal(cap.shb.sectionLength, -1n, 'section length not specified');
  assert.equal(cap.shb.options[4]![0]!.toString(), 'vswitch', 'shb_userappl');
  assert.ok(cap.shb.options[3]![0]!.length > 0, 'shb_os');
  assert.equal(cap.shb.options[1]![0]!.toString(), 'unit test', 'section comment');

  assert.deepEqual(cap.ifaces.map((i) => i.name), [...names], 'one IDB per port, in capture order');
  for (const [i, n] of names.entries()) {
    const f = cap.ifaces[i]!;
    assert.equal(f.linkType, 1, 'LINKTYPE_ETHERNET');
    assert.equal(f.snaplen, DEFAULT_SNAPLEN);
    assert.equal(f.options[3]![0]!.toString(), t.ports[n].kind, 'if_description is the port kind');
    assert.deepEqual([...f.options[9]![0]!], [6], 'if_tsresol: microseconds');
    assert.equal(f.options[6]![0]!.readUIntBE(0, 6), MAC[n], 'if_MACaddr');
    assert.match(f.options[1]![0]!.toString(), new RegExp(`kind=${t.ports[n].kind} mtu=1500 vlan=`));
  }
  assert.equal(cap.ifaces[3]!.options[1]![0]!.toString(), 'vswitch port 4: kind=external mtu=1500 vlan=trunk:100 native=1');

  // Received on vm1: exactly what was injected, inbound unicast, with the guest's metadata.
  const rx = packetsOf(cap, 'vm1').filter((p) => (p.flags! & 3) === 1);
  assert.equal(rx.length, 3);
  rx.forEach((p, i) => {
    assert.deepEqual(p.data, Buffer.from(sent[i]!), `vm1 rx ${i}: frame bytes`);
    assert.equal(p.origLen, sent[i]!.length);
    assert.equal(p.flags, 1 | (1 << 2), 'inbound, unicast');
    assert.equal(p.ts, BigInt(T0), 'timestamp from the clock, high word first');
  });
  assert.equal(rx[0]!.comment, 'vswitch: dir=rx gso=tcpv4 gso_size=1448 hdr_len=54 csum=partial(34+16)');
  assert.equal(rx[1]!.comment, 'vswitch: dir=rx gso=none csum=none');
  assert.equal(rx[2]!.comment, 'vswitch: dir=rx gso=none csum=partial(54+6)');

  // Sent: each port's EPBs are byte for byte what its backend put on the wire, tag and all.
  for (const n of ['vm2', 'legacy', 'peer'] as const) {
    const wire = t.be[n].take();
    const got = packetsOf(cap, n).filter((p) => (p.flags! & 3) === 2);
    assert.ok(wire.length > 0, `${n} sent something`);
    assert.equal(got.length, wire.length, `${n}: every sent frame captured`);
    got.forEach((p, i) => {
      assert.deepEqual(p.data, Buffer.from(wire[i]!.frame), `${n} tx ${i}: bytes as on the wire`);
      assert.equal(p.origLen, wire[i]!.frame.length);
      assert.equal(p.flags, 2, 'outbound');
      assert.equal(p.comment, describeOffloads(wire[i]!.meta, 'tx'), `${n} tx ${i}: comment describes the metadata sent`);
    });
  }
  // The uplink's copies carry the 802.1Q tag at offset 12 (VLAN 100), the frame bytes after it.
  const up = packetsOf(cap, 'peer').filter((p) => p.flags === 2);
  assert.equal(up.length, 3, 'super-frame, plain frame and datagram flooded to the uplink');
  assert.equal(up[0]!.data.readUInt16BE(12), 0x8100);
  assert.equal(up[0]!.data.readUInt16BE(14) & 0xfff, 100);
  assert.equal(up[0]!.origLen, superFrame.length + 4);
  assert.deepEqual(up[0]!.data.subarray(16), Buffer.from(superFrame.subarray(12)));
  assert.deepEqual(up[0]!.data.subarray(0, 12), Buffer.from(superFrame.subarray(0, 12)));
  assert.match(up[0]!.comment!, /^vswitch: dir=tx gso=tcpv4 gso_size=1448 /, 'TSO passed down to the NIC');
  // The legacy VM got the super-frame as software segments, checksums done and marked verified.
  const leg = packetsOf(cap, 'legacy');
  assert.ok(leg.length >= 5);
  assert.equal(leg[0]!.comment, 'vswitch: dir=tx gso=none csum=none rx_csum=verified');
  // The uplink's tagged broadcast, as received: tag in band, inbound broadcast, verified by the NIC.
  const upRx = packetsOf(cap, 'peer').filter((p) => (p.flags! & 3) === 1);
  assert.equal(upRx.length, 1);
  assert.deepEqual(upRx[0]!.data, Buffer.from(fromUplink));
  assert.equal(upRx[0]!.flags, 1 | (3 << 2), 'inbound, broadcast');
  assert.equal(upRx[0]!.comment, 'vswitch: dir=rx gso=none csum=none rx_csum=verified');

  // Statistics per interface on close.
  assert.equal(cap.stats.length, 4);
  for (const s of cap.stats) {
    const n = packetsOf(cap, cap.ifaces[s.ifId]!.name).length;
    assert.equal(u64(s.options[4]![0]!, 0), BigInt(n), 'isb_ifrecv');
    assert.equal(u64(s.options[8]![0]!, 0), BigInt(n), 'isb_usrdeliv');
    assert.equal(u64(s.options[7]![0]!, 0), 0n, 'isb_osdrop');
    assert.equal(ts64(s.options[2]![0]!, 0), BigInt(T0), 'isb_starttime');
  }
  assert.deepEqual(cap.blockTypes.slice(-4), [5, 5, 5, 5], 'statistics come last');
  assert.equal(w.stats.packets, cap.packets.length);
  assert.ok(sink.writableFinished, 'the stream was ended');
});

test('a frame longer than the snaplen is cut, its original length kept; the tag counts in both', async () => {
  const t = vlanTopology();
  const sink = new Sink();
  const w = writer(sink, { snaplen: 128 });
  capturePort(t.ports.vm1, w);
  capturePort(t.ports.peer, w);
  const f = buildFrame({
    srcMac: MAC.vm1, dstMac: MAC.peer, ip: { version: 4, src: '198.18.0.1', dst: '198.18.0.5' },
    l4: { kind: 'udp', sport: 1, dport: 2 }, payload: 1000, checksum: 'full',
  }).frame;
  inject(t.sw, t.ports.vm1, [f]);
  await w.close();
  const cap = readPcapng(sink.bytes);
  assert.equal(cap.ifaces[0]!.snaplen, 128);
  const [rx] = packetsOf(cap, 'vm1');
  assert.equal(rx!.capLen, 128);
  assert.equal(rx!.origLen, f.length);
  assert.deepEqual(rx!.data, Buffer.from(f.subarray(0, 128)));
  const [tx] = packetsOf(cap, 'peer');
  assert.equal(tx!.capLen, 128);
  assert.equal(tx!.origLen, f.length + 4);
  assert.equal(tx!.data.readUInt32BE(12), 0x81000064, 'tag inserted');
  assert.deepEqual(tx!.data.subarray(16), Buffer.from(f.subarray(12, 124)));
  assert.equal(tx!.comment, 'vswitch: dir=tx gso=none csum=none');

  // A snaplen that ends right after the tag.
  const t2 = vlanTopology();
  const s2 = new Sink();
  const w2 = writer(s2, { snaplen: 16 });
  capturePort(t2.ports.peer, w2);
  inject(t2.sw, t2.ports.vm1, [f]);
  await w2.close();
  const [short] = readPcapng(s2.bytes).packets;
  assert.equal(short!.capLen, 16);
  assert.deepEqual(short!.data, Buffer.concat([Buffer.from(f.subarray(0, 12)), Buffer.from([0x81, 0, 0, 100])]));
  assert.throws(() => new PcapngWriter(new Sink(), { snaplen: 8 }), RangeError);
});

test('a tag the NIC stripped (out of band) is put back where the wire had it', async () => {
  const t = vlanTopology();
  const sink = new Sink();
  const w = writer(sink);
  capturePort(t.ports.peer, w);
  const f = udpFrame('peer', 'vm1', 30);
  inject(t.sw, t.ports.peer, [f], (p) => { p.meta.vlanPresent = true; p.meta.vlanTci = (2 << 13) | 100; });
  await w.close();
  const [rx] = readPcapng(sink.bytes).packets;
  assert.equal(rx!.origLen, f.length + 4);
  assert.equal(rx!.data.readUInt16BE(12), 0x8100);
  assert.equal(rx!.data.readUInt16BE(14), (2 << 13) | 100);
  assert.deepEqual(rx!.data.subarray(16), Buffer.from(f.subarray(12)));
  assert.equal(rx!.comment, 'vswitch: dir=rx gso=none csum=none vlan=100 vlan_pcp=2', 'and the comment says it came out of band');
});

test('a stream that fails: packets are dropped and counted, nothing overflows, close rejects with the error', async () => {
  const t = topology();
  let calls = 0;
  const failing = new Writable({ write(_c: Buffer, _e, cb) { calls++; cb(new Error('disk full')); } });
  const w = writer(failing, { flushBytes: 4096 });
  capturePort(t.ports.vm1, w);
  const frames = Array.from({ length: 100 }, (_, i) => tcpFrame('vm1', 'vm2', 100, { seq: i }));
  inject(t.sw, t.ports.vm1, frames);
  await new Promise((r) => setImmediate(r));
  assert.equal(calls, 1, 'the first write failed');
  assert.ok(w.closed, 'a failed stream stops the capture');
  inject(t.sw, t.ports.vm1, frames);
  assert.equal(t.ports.vm1.capture, null, 'the hook removed itself at the first packet it could not write');
  assert.deepEqual({ packets: w.stats.packets, dropped: w.stats.dropped }, { packets: 100, dropped: 1 });
  // Blocks keep being encoded and discarded without overflowing the chunk.
  for (let i = 0; i < 100; i++) w.addInterface({ name: `late${i}`, comment: 'x'.repeat(5000) });
  await assert.rejects(w.close(), /disk full/);
});

test('writes are batched: nothing reaches the stream before the threshold, the timer or close; close flushes everything', async () => {
  const t = topology();
  const sink = new Sink();
  const w = writer(sink);
  capturePort(t.ports.vm1, w);
  capturePort(t.ports.vm2, w);
  const frames = Array.from({ length: 100 }, (_, i) => tcpFrame('vm1', 'vm2', 60, { seq: i }));
  inject(t.sw, t.ports.vm1, frames);
  await new Promise((r) => setImmediate(r));
  assert.equal(sink.chunks.length, 0, 'about 30 KB buffered: not one write yet');
  await w.close();
  assert.equal(sink.chunks.length, 1, 'one write on close');
  const cap = readPcapng(sink.bytes);
  assert.equal(cap.packets.length, 200, '100 received on vm1, 100 sent on vm2');

  // With a 4 KiB threshold: a write per ~4 KiB, never one per packet.
  const t2 = topology();
  const sink2 = new Sink();
  const w2 = writer(sink2, { flushBytes: 4096 });
  capturePort(t2.ports.vm1, w2);
  inject(t2.sw, t2.ports.vm1, frames);
  await new Promise((r) => setImmediate(r));
  const sizes = sink2.chunks.map((c) => c.length);
  assert.ok(sizes.length >= 3 && sizes.length <= 6, `${sizes.length} writes for 100 packets of ~150 B`);
  assert.ok(sizes.every((n) => n >= 4096 && n < 4096 + 512), `each write is whole blocks just past the threshold: ${sizes}`);
  await w2.close();
  assert.equal(readPcapng(sink2.bytes).packets.length, 100);
});

test('a trickle of packets reaches the stream on the flush timer, before close', async () => {
  const t = topology();
  const sink = new Sink();
  const w = new PcapngWriter(sink, { flushIntervalMs: 20 });
  capturePort(t.ports.vm1, w);
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'vm2', 10)]);
  assert.equal(sink.chunks.length, 0);
  await new Promise((r) => setTimeout(r, 80));
  const cap = readPcapng(sink.bytes);
  assert.equal(cap.packets.length, 1, 'flushed by the timer');
  const age = BigInt(Date.now()) * 1000n - cap.packets[0]!.ts;
  assert.ok(age >= 0n && age < 5_000_000n, `real-time clock in µs (packet ${age} µs old)`);
  await w.close();
});

test('a chunk is reused only after the stream wrote it; a stream that lags makes the capture drop (counted), never block', async () => {
  const t = topology();
  const slow = new SlowSink();
  const w = writer(slow, { flushBytes: 4096, maxPendingBytes: 16 * 1024 });
  capturePort(t.ports.vm1, w);
  const frames = Array.from({ length: 400 }, (_, i) => tcpFrame('vm1', 'vm2', 100, { seq: i }));
  inject(t.sw, t.ports.vm1, frames);
  const s = w.stats;
  assert.ok(s.dropped > 0, 'dropped while nothing was written');
  assert.equal(s.packets + s.dropped, 400);
  // The disk catches up: room again, packets are written again, into reused chunks.
  const pump = setInterval(() => slow.release(), 1);
  while (slow.writableLength > 0) await new Promise((r) => setTimeout(r, 2));
  inject(t.sw, t.ports.vm1, frames.slice(0, 10));
  await w.close();
  clearInterval(pump);
  // The held chunks were never overwritten: the file reads back whole.
  const cap = readPcapng(Buffer.concat(slow.held));
  assert.equal(cap.packets.length, s.packets + 10);
  for (const p of cap.packets) assert.equal(p.data.readUInt16BE(12), 0x0800, 'intact frame');
  const [isb] = cap.stats;
  assert.equal(u64(isb!.options[4]![0]!, 0), 410n, 'isb_ifrecv: every packet seen');
  assert.equal(u64(isb!.options[7]![0]!, 0), BigInt(s.dropped), 'isb_osdrop: the ones dropped');
  assert.equal(u64(isb!.options[8]![0]!, 0), BigInt(s.packets + 10), 'isb_usrdeliv: the ones written');
});

test('capturePort: stop removes the hook, one capture per port, the same interface on re-capture, a closed writer unhooks', async () => {
  const t = topology();
  const sink = new Sink();
  const w = writer(sink);
  const stop = capturePort(t.ports.vm1, w);
  assert.throws(() => capturePort(t.ports.vm1, w), /already being captured/);
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'vm2', 10)]);
  stop();
  assert.equal(t.ports.vm1.capture, null);
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'vm2', 10)]);
  const stop2 = capturePort(t.ports.vm1, w);
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'vm2', 10)]);
  stop();
  assert.notEqual(t.ports.vm1.capture, null, 'an old stop does not remove a newer capture');
  capturePort(t.ports.vm2, w);
  await w.close();
  assert.ok(w.closed);
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'vm2', 10)]);
  assert.equal(t.ports.vm1.capture, null, 'unhooked itself after close');
  assert.equal(t.ports.vm2.capture, null);
  stop2();
  const cap = readPcapng(sink.bytes);
  assert.deepEqual(cap.ifaces.map((i) => i.name), ['vm1', 'vm2']);
  assert.deepEqual(cap.packets.map((p) => p.ifId), [0, 0], 'two of the four packets (and vm2 never sent one)');
  assert.throws(() => w.addInterface({ name: 'late' }), /closed/);
});

test('endStream false: close waits until everything is written and leaves the stream open', async () => {
  const slow = new SlowSink();
  const w = writer(slow, { endStream: false });
  w.addInterface({ name: 'a' });
  const closed = w.close();
  assert.equal(w.close(), closed, 'closing twice is the same close');
  let done = false;
  void closed.then(() => { done = true; });
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(done, false, 'not before the stream wrote the bytes');
  slow.release();
  await closed;
  assert.equal(slow.writableEnded, false, 'the stream is still open');
  const cap = readPcapng(Buffer.concat(slow.held));
  assert.deepEqual(cap.blockTypes, [0x0a0d0d0a, 1, 5]);
});

test('to a file: close resolves once the file is written and closed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vswitch-pcapng-'));
  try {
    const path = join(dir, 'cap.pcapng');
    const t = topology();
    const w = new PcapngWriter(path);
    capturePort(t.ports.vm1, w);
    capturePort(t.ports.host, w);
    inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'host', 30), udpFrame('vm1', 'host', 40)]);
    await w.close();
    const cap = readPcapng(readFileSync(path));
    assert.deepEqual(cap.ifaces.map((i) => i.name), ['vm1', 'host']);
    assert.equal(cap.packets.length, 4);
    await assert.rejects(new PcapngWriter(join(dir, 'no', 'such', 'dir.pcapng')).close(), /ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('frames of every size and alignment, tagged or not, read back byte for byte', async () => {
  const pool = new BufferPool({ classes: [{ bufferSize: 70000, count: 2 }] });
  const sink = new Sink();
  const w = writer(sink);
  const id = w.addInterface({ name: 'x' });
  const expected: Buffer[] = [];
  const bytes = Buffer.alloc(66000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >>> 8) * 13 + (i >>> 16)) & 0xff;
  for (const len of [1, 11, 12, 13, 15, 16, 17, 63, 64, 1514, 8191, 8192, 9000, 65535]) {
    for (let shift = 0; shift < 4; shift++) {
      for (const tci of [-1, 0xa064]) {
        const p = pool.take(len + shift)!;
        p.write(bytes.subarray(0, len + shift));
        p.pull(shift); // the frame starts 0-3 bytes past a word boundary
        assert.ok(w.writePacket(id, p, 'tx', tci));
        const f = Buffer.from(bytes.subarray(shift, shift + len));
        const head = Math.min(12, len);
        expected.push(tci < 0 ? f : Buffer.concat([f.subarray(0, head), Buffer.from([0x81, 0, 0xa0, 0x64]), f.subarray(head)]));
        p.release();
      }
    }
  }
  await w.close();
  const got = readPcapng(sink.bytes).packets;
  assert.equal(got.length, expected.length);
  got.forEach((p, i) => {
    assert.equal(p.origLen, expected[i]!.length);
    assert.ok(p.data.equals(expected[i]!), `packet ${i} (${expected[i]!.length} B) intact`);
  });
});

test('the offload comment: always dir, gso and csum; the rest only when it applies', () => {
  const m = new OffloadMeta();
  assert.equal(describeOffloads(m, 'tx'), 'vswitch: dir=tx gso=none csum=none');
  m.gsoType = GsoType.TCPV6; m.gsoSize = 1440; m.hdrLen = 86; m.gsoEcn = true;
  m.needsCsum = true; m.csumStart = 54; m.csumOffset = 16; m.ipv4HeaderCsum = true;
  m.rxCsum = RxCsum.FAILED; m.vlanPresent = true; m.vlanTci = (3 << 13) | 42;
  m.rscSegments = 5; m.rscDupAcks = 1; m.saHandle = 7;
  assert.equal(describeOffloads(m, 'rx'),
    'vswitch: dir=rx gso=tcpv6 gso_size=1440 hdr_len=86 gso_ecn csum=partial(54+16) ip_csum=compute rx_csum=failed vlan=42 vlan_pcp=3 rsc=5/1 sa=7');
  m.reset();
  m.gsoType = GsoType.UDP_L4; m.gsoSize = 1400; m.rxCsum = RxCsum.VERIFIED; m.vlanPresent = true; m.vlanTci = 100;
  assert.equal(describeOffloads(m, 'tx'), 'vswitch: dir=tx gso=udp-l4 gso_size=1400 hdr_len=0 csum=none rx_csum=verified vlan=100');
  // Metadata from an untrusted guest, before validation: shown as is, bounded.
  m.reset();
  (m as { gsoType: number }).gsoType = 99; m.gsoSize = 2 ** 60; m.csumStart = -3; m.needsCsum = true; m.csumOffset = NaN;
  assert.equal(describeOffloads(m, 'rx'), 'vswitch: dir=rx gso=99 gso_size=9007199254740991 hdr_len=0 csum=partial(-3+0)');
});

test('capturing allocates nothing per packet (but the clock reading: one boxed number)', async () => {
  // Measured as growth of V8's young generation over a burst (after a full
  // collection, none during it): exact to the byte, unlike counting
  // collections, which a young generation of 16 MiB would hide.
  const measure = async (opts: PcapngWriterOptions) => {
    const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 8 }] });
    let written = 0;
    const discard = new Writable({ write(chunk: Buffer, _enc, cb) { written += chunk.length; cb(); } });
    const w = new PcapngWriter(discard, { flushBytes: 1 << 20, flushIntervalMs: 0, ...opts });
    const ids = [w.addInterface({ name: 'a' }), w.addInterface({ name: 'b' })];
    const pkts = [tcpFrame('vm1', 'vm2', 20), tcpFrame('vm1', 'vm2', 1400), udpFrame('vm1', 'vm2', 3, true)].map((f, i) => {
      const p = pool.take(f.length)!;
      p.write(f);
      if (i === 1) tso()(p);
      if (i === 2) { p.meta.rxCsum = RxCsum.VERIFIED; p.meta.vlanPresent = true; p.meta.vlanTci = 7; }
      return p;
    });
    // Mostly small frames (the most packets per byte), every fifth one tagged.
    const burst = (n: number) => {
      for (let i = 0; i < n; i++) {
        w.writePacket(ids[i & 1]!, pkts[i % 7 === 0 ? 1 : i & 1 ? 0 : 2]!, i & 2 ? 'tx' : 'rx', i % 5 === 0 ? 100 : -1);
      }
    };
    // Warm up through every path (new chunks, then reused ones), so the JIT
    // has settled; then the least of three runs (a late deoptimisation
    // shows in one run, an allocation in all).
    for (let i = 0; i < 3; i++) {
      burst(20000);
      await new Promise((r) => setImmediate(r));
    }
    const n = 20000;
    let grew = Infinity;
    let gcs = 0;
    for (let i = 0; i < 3; i++) {
      gcs += await gcCountDuring(() => {
        const before = newSpaceUsed();
        burst(n);
        grew = Math.min(grew, newSpaceUsed() - before);
      });
      await new Promise((r) => setImmediate(r));
    }
    await w.close();
    assert.equal(written, w.stats.bytes);
    assert.equal(w.stats.packets, 6 * n);
    return { perPacket: grew / n, gcs };
  };
  const pinned = await measure({ clock: pinnedClock });
  assert.equal(pinned.gcs, 0);
  assert.ok(pinned.perPacket < 1, `${pinned.perPacket.toFixed(2)} B allocated per packet`);
  const real = await measure({});
  assert.equal(real.gcs, 0);
  assert.ok(real.perPacket < 17, `${real.perPacket.toFixed(2)} B allocated per packet with the real clock`);
});

/** Push `chunks` through a PcapngBlockStream; what came out, the stream, and the error if it failed. */
async function throughBlocks(chunks: Buffer[]): Promise<{ out: Buffer; s: PcapngBlockStream; error: Error | null }> {
  const s = new PcapngBlockStream();
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  const ended = new Promise<Error | null>((res) => { s.once('end', () => res(null)); s.once('error', (e) => res(e)); });
  for (const c of chunks) s.write(c);
  s.end();
  const error = await ended;
  return { out: Buffer.concat(parts), s, error };
}

test('a capture cut off mid-block is passed on in whole blocks only, whatever the chunking; garbage is an error', async () => {
  const t = topology();
  const parts: Buffer[] = [];
  const w = writer(new Writable({ write(c: Buffer, _e, cb) { parts.push(Buffer.from(c)); cb(); } }));
  capturePort(t.ports.vm1, w);
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'host', 300), udpFrame('vm1', 'host', 40), tcpFrame('vm1', 'vm2', 1400)]);
  await w.close();
  const whole = Buffer.concat(parts);
  const full = readPcapng(whole);
  // Block boundaries, from the independent reader's view of the same bytes.
  const ends: number[] = [];
  for (let o = 0; o < whole.length;) { o += whole.readUInt32LE(o + 4); ends.push(o); }
  assert.equal(ends.at(-1), whole.length);
  let seed = 7;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  for (let cut = 1; cut <= whole.length; cut += 1 + rnd(37)) {
    const chunks: Buffer[] = [];
    for (let o = 0; o < cut;) { const n = Math.min(cut - o, 1 + rnd(300)); chunks.push(whole.subarray(o, o + n)); o += n; }
    const { out, s, error } = await throughBlocks(chunks);
    assert.equal(error, null);
    const kept = ends.filter((e) => e <= cut).at(-1) ?? 0;
    assert.equal(out.length, kept, `cut at ${cut}`);
    assert.ok(whole.subarray(0, kept).equals(out));
    assert.equal(s.droppedBytes, cut - kept);
    if (kept > 0) readPcapng(out); // always a well-formed file
  }
  const all = await throughBlocks([whole]);
  assert.equal(readPcapng(all.out).packets.length, full.packets.length);
  assert.equal(all.s.droppedBytes, 0);
  // Not pcapng at all, or an impossible block length.
  assert.match(String((await throughBlocks([Buffer.from('GET / HTTP/1.1\r\n\r\n')])).error), /not pcapng/);
  const bad = Buffer.from(whole);
  bad.writeUInt32LE(13, ends[0]! + 4);
  assert.match(String((await throughBlocks([bad])).error), /block of length 13/);
});
