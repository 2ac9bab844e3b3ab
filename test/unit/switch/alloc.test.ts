// The data path allocates nothing per packet: switching, learning, offload
// resolution, software segmentation and delivery run a long burst without a
// single garbage collection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../../../src/packet/pool.js';
import { Batch } from '../../../src/packet/batch.js';
import { Switch } from '../../../src/switch/switch.js';
import type { OutputQueue, PortBackend } from '../../../src/switch/port.js';
import { noOffloads } from '../../../src/offload/capabilities.js';
import { nodeAead } from '../../../src/io/aead-node.js';
import { parseCidr } from '../../../src/switch/policy.js';
import { leastBytesAllocatedDuring, gcCountDuring } from '../../util/alloc.js';
import { guestCaps, nicCaps, tcpFrame, tso, udpFrame, csumOnly, MAC, IP4 } from '../../util/topology.js';
import { native, nativeAvailable } from '../../../src/io/native/index.js';
import { inCI } from '../../util/env.js';
import { nativeAeadIfAvailable } from '../../../src/io/aead-native.js';
import { EspSa, encapsulate } from '../../../src/offload/ipsec/esp.js';
import type { SecurityAssociation } from '../../../src/offload/ipsec/sa.js';
import { buildFrame } from '../../../src/wire/builder.js';
import { FrameLayout, parseFrame } from '../../../src/wire/frame.js';

class CountingBackend implements PortBackend {
  frames = 0;
  constructor(readonly capabilities = guestCaps()) {}
  transmit(q: OutputQueue): number {
    this.frames += q.count;
    return q.count;
  }
}

test('switching super-frames to a pass-through VM, a legacy NIC and a TSO-less uplink allocates nothing', async () => {
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 1024 }, { bufferSize: 66560, count: 16 }] });
  const sw = new Switch({ pool });
  const vm1 = sw.addPort({ name: 'vm1', kind: 'synthetic' }, new CountingBackend());
  const vmBe = new CountingBackend();
  sw.addPort({ name: 'vm2', kind: 'synthetic' }, vmBe);
  const legBe = new CountingBackend(noOffloads());
  sw.addPort({ name: 'legacy', kind: 'legacy' }, legBe);
  const upBe = new CountingBackend(nicCaps({ tso: false }));
  sw.addPort({ name: 'peer', kind: 'external' }, upBe);
  const frame = tcpFrame('vm1', 'vm2', 30000);
  const bcast = tcpFrame('vm1', 'vm2', 30000, { dstMac: 0xffffffffffff });
  void MAC;
  const batch = new Batch(8);
  const prep = tso();
  const burst = (n: number, f: Uint8Array) => {
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < 4; k++) {
        const p = pool.take(f.length)!;
        p.write(f);
        prep(p);
        batch.push(p);
      }
      sw.receive(vm1, batch);
    }
  };
  burst(200, bcast); // warm up: flood to all three kinds of destination
  burst(200, frame);
  const gcs = await gcCountDuring(() => { burst(1000, bcast); burst(1000, frame); });
  assert.equal(gcs, 0, `${gcs} garbage collections while switching 8000 super-frames`);
  assert.equal(pool.inUse, 0);
  assert.ok(legBe.frames > 1000 && upBe.frames > 1000 && vmBe.frames > 1000);
});

test('switching small frames does not allocate per packet, not even short-lived heap numbers (sampling heap profiler, collected objects included)', async () => {
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 1024 }, { bufferSize: 66560, count: 4 }] });
  const sw = new Switch({ pool });
  // Every per-packet stage on: port security (allowed MACs and addresses), learning,
  // and IPsec's neighbour learning (on while IPsec offload is enabled).
  sw.enableIpsec(nodeAead);
  const sec = (n: 'vm1' | 'vm2') => ({ allowedMacs: [MAC[n]], allowedIps: [parseCidr(IP4[n])!] });
  const be1 = new CountingBackend();
  const be2 = new CountingBackend();
  const vm1 = sw.addPort({ name: 'vm1', kind: 'synthetic', security: sec('vm1') }, be1);
  const vm2 = sw.addPort({ name: 'vm2', kind: 'synthetic', security: sec('vm2') }, be2);
  const f12 = udpFrame('vm1', 'vm2', 22);
  const f21 = udpFrame('vm2', 'vm1', 22);
  const batch = new Batch(32);
  const burst = (n: number) => {
    for (let i = 0; i < n; i++) {
      for (const [port, f] of [[vm1, f12], [vm2, f21]] as const) {
        for (let k = 0; k < 32; k++) {
          const p = pool.take(f.length)!;
          p.write(f);
          batch.push(p);
        }
        sw.receive(port, batch);
      }
    }
  };
  // Warm up until V8 has optimized the path: what it allocates while compiling is not the data path's.
  for (let i = 0; i < 3; i++) burst(2000);
  sw.tick();
  const packets = 2 * 32 * 2000;
  const before = be1.frames + be2.frames;
  const r = await leastBytesAllocatedDuring(() => burst(2000), ['/src/switch/', '/src/wire/', '/src/offload/']);
  assert.equal(pool.inUse, 0);
  assert.equal(be1.frames + be2.frames - before, packets * r.runs, 'every frame was switched to its destination, none dropped');
  // One heap number per packet would be 16 B × 128 000 ≈ 2 MB; a few KiB of slack for what V8 does once.
  assert.ok(r.bytes < 8192, `${r.bytes} B allocated by the data path for ${packets} packets (${(r.bytes / packets).toFixed(2)} B/packet): ${r.top.join('; ')}`);
});

for (const budget of [undefined, { cpuNsPerSec: 2e9, action: 'drop' as const }]) test(`software checksums to a legacy NIC, timed and charged per packet${budget !== undefined ? ', against a CPU budget refilled per packet' : ''}, allocate nothing (native clock)`, async () => {
  if (!nativeAvailable() && inCI) throw new Error('the native shim is not built');
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 1024 }, { bufferSize: 66560, count: 4 }] });
  const shim = nativeAvailable() ? native() : null;
  const sw = new Switch({ pool, ...(shim !== null ? { fillClockNs: (o: Float64Array) => shim.clockNs(o) } : {}) });
  const vm1 = sw.addPort({ name: 'vm1', kind: 'synthetic', ...(budget !== undefined ? { budget } : {}) }, new CountingBackend());
  const legBe = new CountingBackend(noOffloads());
  sw.addPort({ name: 'legacy', kind: 'legacy', mac: MAC.legacy }, legBe);
  const f = udpFrame('vm1', 'legacy', 22);
  const prep = csumOnly(34, 6);
  const batch = new Batch(32);
  const burst = (n: number) => {
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < 32; k++) {
        const p = pool.take(f.length)!;
        p.write(f);
        prep(p);
        batch.push(p);
      }
      sw.receive(vm1, batch);
    }
  };
  for (let i = 0; i < 3; i++) burst(2000);
  sw.tick();
  const packets = 32 * 2000;
  const before = legBe.frames;
  const c = vm1.counters;
  const charged = c.swPackets;
  const r = await leastBytesAllocatedDuring(() => burst(2000), ['/src/switch/', '/src/wire/', '/src/offload/', '/src/io/']);
  assert.equal(legBe.frames - before, packets * r.runs, 'every frame reached the legacy NIC');
  assert.equal(c.swPackets - charged, packets * r.runs, 'every software checksum was charged to the sender');
  assert.ok(c.swCpuNs > 0);
  assert.equal(pool.inUse, 0);
  assert.ok(r.bytes < 8192, `${r.bytes} B allocated for ${packets} software checksums (${(r.bytes / packets).toFixed(2)} B/packet): ${r.top.join('; ')}`);
});

test('ESP at the uplink both ways, SPIs above 2^31, allocates nothing per packet in the switch', async () => {
  if (!nativeAvailable() && inCI) throw new Error('the native shim is not built');
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 1024 }, { bufferSize: 66560, count: 4 }] });
  const shim = nativeAvailable() ? native() : null;
  const sw = new Switch({ pool, ...(shim !== null ? { fillClockNs: (o: Float64Array) => shim.clockNs(o) } : {}) });
  const aead = nativeAeadIfAvailable() ?? nodeAead;
  const m = sw.enableIpsec(aead);
  const vmBe = new CountingBackend();
  const upBe = new CountingBackend(nicCaps({ ipsec: true }));
  const vm1 = sw.addPort({ name: 'vm1', kind: 'synthetic' }, vmBe);
  const peer = sw.addPort({ name: 'peer', kind: 'external' }, upBe);
  // Learn both (MAC and neighbour), as ARP would.
  const batch = new Batch(32);
  for (const [port, n] of [[vm1, 'vm1'], [peer, 'peer']] as const) {
    const f = buildFrame({ srcMac: MAC[n], dstMac: 0xffffffffffff, ip: { version: 4, src: IP4[n], dst: '198.18.255.255' }, l4: { kind: 'udp', sport: 1, dport: 1 }, payload: 1 }).frame;
    const p = pool.take(f.length)!;
    p.write(f);
    batch.push(p);
    sw.receive(port, batch);
  }
  const key = new Uint8Array(16).fill(0x11);
  const salt = new Uint8Array([1, 2, 3, 4]);
  const base = { mode: 'transport', algorithm: 'aes-gcm-128', key, salt } as const;
  const out: SecurityAssociation = { ...base, spi: 0x80001001, direction: 'out', src: IP4.vm1, dst: IP4.peer };
  const inb: SecurityAssociation = { ...base, spi: 0xc0002001, direction: 'in', src: IP4.peer, dst: IP4.vm1 };
  assert.ok(!('reason' in m.add(vm1, out)) && !('reason' in m.add(vm1, inb)), 'both SAs offloaded');
  // The peer's ESP, made ahead (each with its own sequence number, as the replay window wants).
  const peerSa = new EspSa({ ...inb, direction: 'out' });
  const plainIn = udpFrame('peer', 'vm1', 64);
  const runs = 4 + 3; // warm-up bursts + measured tries
  const perBurst = 32 * 500;
  const espIn: Uint8Array[] = [];
  for (let i = 0; i < runs * perBurst; i++) {
    const p = pool.take(plainIn.length)!;
    p.write(plainIn);
    const lay = new FrameLayout();
    assert.ok(parseFrame(p.buf, p.off, p.len, lay, {}) === null);
    assert.equal(encapsulate(p, peerSa, aead, lay), null);
    espIn.push(p.copyOut());
    p.release();
  }
  const plainOut = udpFrame('vm1', 'peer', 64);
  let next = 0;
  const burst = (n: number) => {
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < 32; k++) {
        const f = espIn[next++]!;
        const p = pool.take(f.length)!;
        p.write(f);
        batch.push(p);
      }
      sw.receive(peer, batch);
      for (let k = 0; k < 32; k++) {
        const p = pool.take(plainOut.length)!;
        p.write(plainOut);
        batch.push(p);
      }
      sw.receive(vm1, batch);
    }
  };
  for (let i = 0; i < 4; i++) burst(500);
  sw.tick();
  const before = { vm: vmBe.frames, up: upBe.frames };
  const r = await leastBytesAllocatedDuring(() => burst(500), ['/src/switch/', '/src/wire/', '/src/offload/'], 3);
  assert.equal(vmBe.frames - before.vm, perBurst * r.runs, 'every ESP packet decrypted and delivered');
  assert.equal(upBe.frames - before.up, perBurst * r.runs, 'every plaintext packet encrypted and sent');
  const view = m.list(vm1);
  assert.ok(view.every((v) => v.state === 'offloaded'));
  assert.equal(pool.inUse, 0);
  assert.ok(r.bytes < 8192, `${r.bytes} B allocated for ${2 * perBurst} ESP packets: ${r.top.join('; ')}`);
});
