import { test } from 'node:test';
import assert from 'node:assert/strict';
import { topology, nicCaps, assertBalanced } from '../../util/topology.js';
import { MemoryBackend } from '../../../src/io/memory.js';
import { noOffloads, normalizeCapabilities, checksumNone, segmentationAll } from '../../../src/offload/capabilities.js';

test('host and synthetic vNICs are advertised send checksum, LSO, USO and receive checksum; legacy and external nothing', () => {
  const t = topology();
  for (const n of ['vm1', 'vm2', 'host'] as const) {
    const a = t.ports[n].advertised;
    assert.ok(a.txChecksum.tcp4 && a.txChecksum.udp6 && a.txChecksum.ipv4Header, `${n} tx checksum`);
    assert.ok(a.lso.v4 && a.lso.v6 && a.lso.maxOffloadSize === 65535, `${n} LSO`);
    assert.ok(a.uso.v4 && a.uso.v6, `${n} USO`);
    assert.ok(a.rxChecksum.tcp4 && a.rxChecksum.udp6, `${n} rx checksum`);
    assert.equal(a.ipsec.enabled, false, 'no IPsec: the uplink cannot');
    assert.deepEqual(t.be[n].lastAdvertised, a, 'the backend was told');
  }
  assert.deepEqual(t.ports.legacy.advertised, noOffloads());
  assert.deepEqual(t.ports.peer.advertised, noOffloads());
  assert.equal(t.be.legacy.advertisements.length, 0, 'a legacy NIC is never offered offloads');
  assertBalanced(t);
});

test('IPsec is advertised only while some external port that is up can do it', () => {
  const t = topology();
  const before = t.be.vm1.advertisements.length;
  t.sw.updateCapabilities('peer', nicCaps({ ipsec: true }));
  assert.equal(t.ports.vm1.advertised.ipsec.enabled, true);
  assert.deepEqual(t.ports.vm1.advertised.ipsec.algorithms, ['aes-gcm-128', 'aes-gcm-256']);
  assert.equal(t.be.vm1.advertisements.length, before + 1, 'notified once');
  assert.equal(t.ports.legacy.advertised.ipsec.enabled, false);
  t.sw.setPortUp('peer', false);
  assert.equal(t.ports.vm1.advertised.ipsec.enabled, false, 'withdrawn when the uplink goes down');
  t.sw.setPortUp('peer', true);
  assert.equal(t.ports.vm2.advertised.ipsec.enabled, true);
  t.sw.updateCapabilities('peer', nicCaps({ ipsec: false }));
  assert.equal(t.ports.host.advertised.ipsec.enabled, false, 'withdrawn when the NIC loses it');
  t.sw.updateCapabilities('peer', nicCaps({ ipsec: true }));
  t.sw.removePort('peer');
  assert.equal(t.ports.vm1.advertised.ipsec.enabled, false, 'withdrawn when the uplink is removed');
});

test('a second IPsec uplink keeps IPsec advertised when the first loses it', () => {
  const t = topology({ uplink: nicCaps({ ipsec: true }) });
  t.sw.addPort({ name: 'peer2', kind: 'external' }, new MemoryBackend(nicCaps({ ipsec: true })));
  t.sw.updateCapabilities('peer', nicCaps({ ipsec: false }));
  assert.equal(t.ports.vm1.advertised.ipsec.enabled, true);
});

test('an unchanged capability update notifies nobody; a changed one re-advertises only where it matters', () => {
  const t = topology();
  const n = t.be.vm1.advertisements.length;
  t.sw.updateCapabilities('peer', nicCaps());
  assert.equal(t.be.vm1.advertisements.length, n);
  // TSO off on the uplink changes nothing for the vNICs: the switch segments in software.
  t.sw.updateCapabilities('peer', nicCaps({ tso: false }));
  assert.equal(t.be.vm1.advertisements.length, n, 'vNICs keep LSO: the switch does it when the uplink cannot');
  assert.equal(t.ports.peer.deviceCaps.lso.v4, false);
});

test('per-port overrides switch advertised offloads off; LSO never without checksum', () => {
  const t = topology({ overrides: { vm1: { offloads: { lso: false } }, vm2: { offloads: { checksum: false } } } });
  assert.equal(t.ports.vm1.advertised.lso.v4, false);
  assert.equal(t.ports.vm1.advertised.txChecksum.tcp4, true);
  assert.equal(t.ports.vm2.advertised.txChecksum.tcp4, false);
  assert.equal(t.ports.vm2.advertised.lso.v4, false, 'checksum off takes LSO with it');
  assert.equal(t.ports.vm2.advertised.uso.v4, false);
});

test('normalizeCapabilities enforces the dependencies of every format', () => {
  const c = noOffloads();
  c.lso = segmentationAll();
  c.uso = segmentationAll();
  c.txChecksum = checksumNone();
  c.txChecksum.tcp4 = true;
  c.rsc = { v4: true, v6: true };
  const n = normalizeCapabilities(c);
  assert.equal(n.lso.v4, true);
  assert.equal(n.lso.v6, false, 'TSOv6 needs TCPv6 checksum');
  assert.equal(n.uso.v4, false, 'USO needs UDP checksum');
  assert.equal(n.rsc.v4, false, 'receiving large frames needs accepting partial checksums');
});
