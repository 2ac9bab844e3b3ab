// describeCapabilities: the three views as plain data, and what each loses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  capabilityDifferences, decodeNdisOffload, describeCapabilities, encodeNdisOffload, toTunOffloadFlags, toVirtioFeatures,
} from '../../../../src/offload/translate/index.js';
import {
  noOffloads, normalizeCapabilities, vnicOffloads,
} from '../../../../src/offload/capabilities.js';
import { arbCaps } from './caps-arb.js';


test('a vNIC advertisement in the three views', () => {
  const d = describeCapabilities(vnicOffloads());
  assert.equal(d.linux.tunFlags, 0x6f);
  assert.deepEqual(d.linux.tunFlagNames, ['TUN_F_CSUM', 'TUN_F_TSO4', 'TUN_F_TSO6', 'TUN_F_TSO_ECN', 'TUN_F_USO4', 'TUN_F_USO6']);
  assert.equal(d.linux.ethtool['tx-tcp6-segmentation'], true);
  assert.equal(d.linux.ethtool['tx-udp-segmentation'], true);
  // TUN flags say nothing about the receive side nor the IPv4 header checksum
  assert.ok(d.linux.notExpressed.includes('rxChecksum.tcp4'));
  assert.ok(d.linux.notExpressed.includes('txChecksum.ipv4Header'));
  assert.ok(!d.linux.notExpressed.includes('lso.v4'));
  assert.deepEqual(d.virtio.featureNames, ['VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_HOST_TSO4', 'VIRTIO_NET_F_HOST_TSO6', 'VIRTIO_NET_F_HOST_ECN', 'VIRTIO_NET_F_HOST_USO']);
  assert.equal(d.virtio.features, `0x${toVirtioFeatures(vnicOffloads()).toString(16)}`);
  assert.equal(d.ndis.revision, 7);
  assert.equal(d.ndis.size, 216);
  // NDIS carries all of it except USO's TCP-options flag (meaningless for UDP)
  assert.deepEqual(d.ndis.notExpressed, ['uso.tcpOptions']);
  assert.doesNotThrow(() => JSON.stringify(d));
});

test('nothing offered: nothing lost', () => {
  const d = describeCapabilities(noOffloads());
  assert.equal(d.linux.tunFlags, 0);
  assert.deepEqual(d.linux.notExpressed, []);
  assert.deepEqual(d.virtio.featureNames, []);
  assert.deepEqual(d.virtio.notExpressed, []);
  assert.deepEqual(d.ndis.notExpressed, []);
});

test('every view is consistent with its translator, for any capabilities', () => {
  fc.assert(fc.property(arbCaps, (caps) => {
    const d = describeCapabilities(caps);
    assert.equal(d.linux.tunFlags, toTunOffloadFlags(caps));
    assert.equal(BigInt(d.virtio.features), toVirtioFeatures(caps));
    const n = decodeNdisOffload(encodeNdisOffload(caps));
    assert.ok(n.ok);
    assert.deepEqual(d.ndis.notExpressed, capabilityDifferences(normalizeCapabilities(caps), n.caps));
    JSON.stringify(d);
  }), { numRuns: 500 });
});

test('capabilityDifferences names leaf paths', () => {
  const a = vnicOffloads();
  const b = vnicOffloads();
  b.lso.v6 = false;
  b.ipsec.algorithms = [];
  assert.deepEqual(capabilityDifferences(a, a), []);
  assert.deepEqual(capabilityDifferences(a, b), ['lso.v6']);
  const c = { ...vnicOffloads(), ipsec: { enabled: true, algorithms: ['aes-gcm-128' as const], maxSa: 4, transport: true, tunnel: false, v4: true, v6: false } };
  const e = { ...c, ipsec: { ...c.ipsec, algorithms: ['aes-gcm-256' as const] } };
  assert.deepEqual(capabilityDifferences(c, e), ['ipsec.algorithms']);
});
