import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { topology, tcpFrame, tso, learnAll, assertBalanced, MAC, IP4 } from '../../util/topology.js';
import { inject } from '../../../src/io/memory.js';
import { MacTable, LearnResult } from '../../../src/switch/mac-table.js';
import { parseCidr } from '../../../src/switch/policy.js';
import { buildFrame } from '../../../src/wire/builder.js';
import { EtherType } from '../../../src/wire/ethernet.js';
import { get16 } from '../../../src/wire/bytes.js';
import { IpProtocol } from '../../../src/wire/ipv4.js';

const bcast = (from: keyof typeof MAC, vlans?: { tpid: number; pcp: number; dei: boolean; vid: number }[]) => buildFrame({
  srcMac: MAC[from], dstMac: 0xffffffffffff, vlans,
  ip: { version: 4, src: IP4[from], dst: '198.18.255.255' }, l4: { kind: 'udp', sport: 67, dport: 68 }, payload: 20,
}).frame;

test('VLAN isolation: access ports in different VLANs never see each other\'s floods', () => {
  const t = topology({ overrides: { vm1: { vlan: { mode: 'access', vlan: 10 } }, vm2: { vlan: { mode: 'access', vlan: 20 } }, host: { vlan: { mode: 'access', vlan: 10 } }, legacy: { vlan: { mode: 'access', vlan: 30 } }, peer: { vlan: { mode: 'trunk', allowed: [10, 20] } } } });
  inject(t.sw, t.ports.vm1, [bcast('vm1')]);
  assert.equal(t.be.vm2.take().length, 0);
  assert.equal(t.be.legacy.take().length, 0);
  assert.equal(t.be.host.take().length, 1);
  const [up] = t.be.peer.take();
  assert.equal(up!.tci, 10, 'tagged with VLAN 10 on the trunk');
  assert.equal(get16(up!.frame, 12), EtherType.VLAN);
  assert.equal(get16(up!.frame, 14) & 0xfff, 10);
  // Tagged VLAN 20 from the trunk reaches vm2 untagged, and only vm2.
  inject(t.sw, t.ports.peer, [bcast('peer', [{ tpid: EtherType.VLAN, pcp: 5, dei: false, vid: 20 }])]);
  const [v2] = t.be.vm2.take();
  assert.deepEqual(v2!.frame, bcast('peer'), 'tag removed for the access port');
  assert.equal(t.be.vm1.take().length + t.be.host.take().length, 0);
  assertBalanced(t);
});

test('VLAN admission: tagged frames on an access port, VLANs a trunk does not carry, untagged on a trunk without native VLAN', () => {
  const t = topology({ overrides: { vm1: { vlan: { mode: 'access', vlan: 10 } }, peer: { vlan: { mode: 'trunk', allowed: [10] } } } });
  inject(t.sw, t.ports.vm1, [bcast('vm1', [{ tpid: EtherType.VLAN, pcp: 0, dei: false, vid: 10 }])]);
  inject(t.sw, t.ports.peer, [bcast('peer', [{ tpid: EtherType.VLAN, pcp: 0, dei: false, vid: 99 }])]);
  inject(t.sw, t.ports.peer, [bcast('peer')]);
  assert.deepEqual(t.ports.vm1.counters.dropsByReason('rx'), { 'vlan-not-allowed': 1 });
  assert.deepEqual(t.ports.peer.counters.dropsByReason('rx'), { 'vlan-not-allowed': 2 });
  // A priority tag (VID 0) on an access port is just priority.
  inject(t.sw, t.ports.vm1, [bcast('vm1', [{ tpid: EtherType.VLAN, pcp: 6, dei: false, vid: 0 }])]);
  const [up] = t.be.peer.take();
  assert.equal(up!.tci, (6 << 13) | 10, 'priority kept, VLAN from the access port');
  assertBalanced(t);
});

test('a trunk\'s native VLAN travels untagged', () => {
  const t = topology({ overrides: { peer: { vlan: { mode: 'trunk', allowed: [10], native: 1 } } } });
  inject(t.sw, t.ports.vm1, [bcast('vm1')]);
  assert.equal(t.be.peer.take()[0]!.tci, -1);
  inject(t.sw, t.ports.peer, [bcast('peer')]);
  assert.equal(t.be.vm1.take().length, 1);
  assertBalanced(t);
});

test('segmentation metadata survives VLAN tag removal: offsets follow the frame', () => {
  const t = topology({ overrides: { vm1: { vlan: { mode: 'trunk', allowed: [1] } }, vm2: { passThrough: false } } });
  learnAll(t);
  const f = buildFrame({ srcMac: MAC.vm1, dstMac: MAC.vm2, vlans: [{ tpid: EtherType.VLAN, pcp: 0, dei: false, vid: 1 }], ip: { version: 4, src: IP4.vm1, dst: IP4.vm2 }, l4: { kind: 'tcp', sport: 1, dport: 2 }, payload: 5000, checksum: 'partial' }).frame;
  inject(t.sw, t.ports.vm1, [f], tso(1448, false, 38));
  const got = t.be.vm2.take();
  assert.equal(got.length, 4);
  assertBalanced(t);
});

test('port security: spoofed source MAC, IPv4, IPv6 and ARP sender are dropped; link-local and DHCP are not', () => {
  const t = topology({ overrides: { vm1: { security: { allowedMacs: [MAC.vm1], allowedIps: [parseCidr('198.18.0.1')!, parseCidr('2001:db8::1/128')!] } } } });
  learnAll(t);
  const base = t.ports.vm1.counters.forwarded;
  inject(t.sw, t.ports.vm1, [tcpFrame('vm2', 'host', 10, { checksum: 'full' })]); // vm2's MAC from vm1's port
  const spoofIp = buildFrame({ srcMac: MAC.vm1, dstMac: MAC.host, ip: { version: 4, src: '198.18.0.99', dst: IP4.host }, l4: { kind: 'udp', sport: 1, dport: 2 }, payload: 1 }).frame;
  const spoof6 = buildFrame({ srcMac: MAC.vm1, dstMac: MAC.host, ip: { version: 6, src: '2001:db8::99', dst: '2001:db8::3' }, l4: { kind: 'udp', sport: 1, dport: 2 }, payload: 1 }).frame;
  const arp = new Uint8Array(42);
  arp.set(bcast('vm1').subarray(0, 12));
  arp.set([0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1], 12);
  arp.set([2, 0, 0, 0, 0, 1, 198, 18, 0, 77], 22); // sender MAC ok, sender IP 198.18.0.77
  inject(t.sw, t.ports.vm1, [spoofIp, spoof6, arp]);
  assert.deepEqual(t.ports.vm1.counters.dropsByReason('rx'), { 'spoofed-mac': 1, 'spoofed-ip': 3 });
  const ll = buildFrame({ srcMac: MAC.vm1, dstMac: MAC.host, ip: { version: 6, src: 'fe80::1', dst: 'ff02::1' }, l4: { kind: 'icmp', type: 135 }, payload: 24 }).frame;
  const dhcp = buildFrame({ srcMac: MAC.vm1, dstMac: 0xffffffffffff, ip: { version: 4, src: '0.0.0.0', dst: '255.255.255.255' }, l4: { kind: 'udp', sport: 68, dport: 67 }, payload: 300 }).frame;
  inject(t.sw, t.ports.vm1, [ll, dhcp, tcpFrame('vm1', 'host', 10, { checksum: 'full' })]);
  assert.equal(t.ports.vm1.counters.forwarded - base, 3);
  assertBalanced(t);
});

test('ACLs: ingress and egress, first match wins, default action applies', () => {
  const t = topology({
    overrides: {
      vm1: { aclIn: { defaultAction: 'allow', rules: [{ action: 'deny', protocol: IpProtocol.TCP, dstPort: [22, 22] }] } },
      vm2: { aclOut: { defaultAction: 'deny', rules: [{ action: 'allow', src: parseCidr('198.18.0.0/24')!, protocol: IpProtocol.TCP, dstPort: [5201, 5201] }] } },
    },
  });
  learnAll(t);
  const aclOutBefore = t.ports.vm2.counters.dropsByReason('tx')['acl-out'] ?? 0; // learnAll's UDP broadcasts
  const ssh = buildFrame({ srcMac: MAC.vm1, dstMac: MAC.host, ip: { version: 4, src: IP4.vm1, dst: IP4.host }, l4: { kind: 'tcp', sport: 5000, dport: 22 }, payload: 0 }).frame;
  inject(t.sw, t.ports.vm1, [ssh, tcpFrame('vm1', 'vm2', 10, { checksum: 'full' }), tcpFrame('host', 'vm2', 10, { checksum: 'full', l4: { kind: 'tcp', sport: 1, dport: 80 } })]);
  assert.deepEqual(t.ports.vm1.counters.dropsByReason('rx'), { 'acl-in': 1, 'egress-dropped': 1 });
  assert.equal(t.ports.vm2.counters.dropsByReason('tx')['acl-out']! - aclOutBefore, 1);
  assert.equal(t.be.vm2.take().length, 1, 'the allowed flow got through');
  assertBalanced(t);
});

test('MAC learning: moves are detected and reported; aging forgets; static MACs cannot be claimed elsewhere', () => {
  const t = topology({ switch: { macAgingMs: 1000 } });
  const moves: unknown[] = [];
  t.sw.events.on('mac-move', (e) => moves.push(e));
  inject(t.sw, t.ports.vm1, [bcast('vm1')]);
  assert.equal(t.sw.macs.lookup(1, MAC.vm1), t.ports.vm1.index);
  inject(t.sw, t.ports.host, [bcast('vm1')]); // vm1 live-migrated behind the host port
  assert.deepEqual(moves, [{ mac: MAC.vm1, vlan: 1, from: 'vm1', to: 'host' }]);
  assert.equal(t.sw.macs.lookup(1, MAC.vm1), t.ports.host.index);
  t.clock.ms += 1001;
  t.sw.tick();
  assert.equal(t.sw.macs.lookup(1, MAC.vm1), -1, 'aged out');
  t.sw.macs.addStatic(1, MAC.vm2, t.ports.vm2.index);
  for (const b of Object.values(t.be)) b.take();
  inject(t.sw, t.ports.legacy, [bcast('vm2')]);
  assert.deepEqual(t.ports.legacy.counters.dropsByReason('rx'), { 'static-mac-conflict': 1 });
  t.clock.ms += 5000;
  t.sw.tick();
  assert.equal(t.sw.macs.lookup(1, MAC.vm2), t.ports.vm2.index, 'static entries do not age');
  assertBalanced(t);
});

test('a port may learn at most maxMacs MACs', () => {
  const t = topology({ overrides: { vm1: { maxMacs: 2 } } });
  for (let i = 0; i < 5; i++) {
    const f = bcast('vm1');
    f[11] = 0x10 + i;
    inject(t.sw, t.ports.vm1, [f]);
  }
  assert.deepEqual(t.ports.vm1.counters.dropsByReason('rx'), { 'mac-limit': 3 });
  assertBalanced(t);
});

test('a destination behind the ingress port is not sent back (no hairpin), and a lone port has nowhere to flood', () => {
  const t = topology();
  inject(t.sw, t.ports.vm1, [bcast('vm1')]);
  inject(t.sw, t.ports.vm1, [tcpFrame('vm2', 'vm1', 1, { checksum: 'full' })]);
  assert.deepEqual(t.ports.vm1.counters.dropsByReason('rx'), { 'no-destination': 1 });
  const solo = topology({ overrides: { vm1: { vlan: { mode: 'access', vlan: 99 } } } });
  inject(solo.sw, solo.ports.vm1, [bcast('vm1')]);
  assert.deepEqual(solo.ports.vm1.counters.dropsByReason('rx'), { 'no-destination': 1 });
  assertBalanced(t);
  assertBalanced(solo);
});

test('a backend that fails to send is counted, and the buffers still come back', () => {
  const t = topology();
  learnAll(t);
  t.be.vm2.failTransmit = true;
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'vm2', 30000)], tso());
  assert.deepEqual(t.ports.vm2.counters.dropsByReason('tx'), { 'tx-error': 1 });
  assertBalanced(t);
});

test('removing a port releases its state and does not disturb the others', () => {
  const t = topology();
  learnAll(t);
  t.sw.removePort('host');
  assert.equal(t.sw.macs.lookup(1, MAC.host), -1);
  inject(t.sw, t.ports.vm1, [tcpFrame('vm1', 'vm2', 100, { checksum: 'full' })]);
  assert.equal(t.be.vm2.take().length, 1);
  const again = t.sw.addPort({ name: 'host', kind: 'host' }, t.be.host);
  assert.equal(again.index, t.ports.host.index, 'index reused');
  assertBalanced(t);
});

test('MAC table: random learn/remove/age sequences agree with a simple model', () => {
  fc.assert(fc.property(fc.array(fc.tuple(fc.constantFrom('learn', 'remove', 'age'), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 0, max: 5 })), { maxLength: 300 }), (ops) => {
    const table = new MacTable(64, 10);
    const model = new Map<string, { port: number; seen: number }>();
    let now = 0;
    for (const [op, m, vlan, port] of ops) {
      now += 1;
      const mac = 0x020000000000 + m * 0x10001;
      const key = `${vlan}/${mac}`;
      if (op === 'learn') {
        const r = table.learn(vlan, mac, port, now);
        if (r === LearnResult.FULL) { assert.ok(!model.has(key)); assert.ok(model.size >= 48); continue; }
        model.set(key, { port, seen: now });
      } else if (op === 'remove') {
        assert.equal(table.remove(vlan, mac), model.delete(key));
      } else {
        table.age(now);
        for (const [k, e] of model) if (now - e.seen >= 10) model.delete(k);
      }
      assert.equal(table.size, model.size);
    }
    for (const [k, e] of model) {
      const [vlan, mac] = k.split('/').map(Number);
      assert.equal(table.lookup(vlan!, mac!), e.port);
    }
    const perPort = new Map<number, number>();
    for (const e of model.values()) perPort.set(e.port, (perPort.get(e.port) ?? 0) + 1);
    for (let p = 0; p <= 5; p++) assert.equal(table.learnedOn(p), perPort.get(p) ?? 0);
  }), { numRuns: 300 });
});
