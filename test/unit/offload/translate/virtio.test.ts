// virtio-net feature bits against the uapi header and the spec's
// dependency table (VIRTIO 1.2 §5.1.3.1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { existsSync, readFileSync } from 'node:fs';
import {
  VIRTIO_NET_F, VIRTIO_NET_REQUIREMENTS, bit, enforceVirtioRequirements, fromVirtioFeatures, hasFeature,
  toVirtioFeatures, virtioFeatureNames, virtioFeatureViolations, type VirtioNetFeature,
} from '../../../../src/offload/translate/virtio.js';
import { TUN_F, toTunOffloadFlags } from '../../../../src/offload/translate/linux.js';
import {
  noOffloads, normalizeCapabilities, segmentationAll, type OffloadCapabilities, vnicOffloads,
} from '../../../../src/offload/capabilities.js';
import { arbCaps, overPromises } from './caps-arb.js';
import { need } from '../../../util/env.js';

const F = VIRTIO_NET_F;
const bits = (...names: VirtioNetFeature[]): bigint => names.reduce((b, n) => b | bit(F[n]), 0n);


test('feature bit numbers equal the uapi header for every bit it defines', (t) => {
  const header = '/usr/include/linux/virtio_net.h';
  if (!need(t, existsSync(header), `needs ${header} (linux-libc-dev)`)) return;
  const text = readFileSync(header, 'utf8');
  const defs = new Map([...text.matchAll(/#define\s+VIRTIO_NET_F_(\w+)\s+(\d+)/g)].map((m) => [m[1]!, Number(m[2])]));
  for (const n of ['CSUM', 'GUEST_CSUM', 'GUEST_TSO4', 'GUEST_TSO6', 'GUEST_ECN', 'HOST_TSO4', 'HOST_TSO6', 'HOST_ECN', 'CTRL_VQ']) {
    assert.ok(defs.has(n), `header defines VIRTIO_NET_F_${n}`);
  }
  const wrong: string[] = [];
  for (const [name, value] of defs) {
    const ours = (F as Record<string, number>)[name];
    if (ours === undefined) continue;   // a bit this file does not name (none today)
    if (ours !== value) wrong.push(`VIRTIO_NET_F_${name}: header ${value}, ours ${ours}`);
  }
  assert.deepEqual(wrong, []);
  const unknown = [...defs.keys()].filter((n) => !(n in F));
  if (unknown.length > 0) t.diagnostic(`header bits not named here: ${unknown.join(', ')}`);
});

test('the dependency table is §5.1.3.1 (offload rules spelled out)', () => {
  const req = (f: VirtioNetFeature) => VIRTIO_NET_REQUIREMENTS.find((r) => r.feature === f)?.requires;
  assert.deepEqual(req('GUEST_TSO4'), [['GUEST_CSUM']]);
  assert.deepEqual(req('GUEST_TSO6'), [['GUEST_CSUM']]);
  assert.deepEqual(req('GUEST_ECN'), [['GUEST_TSO4', 'GUEST_TSO6']]);
  assert.deepEqual(req('GUEST_UFO'), [['GUEST_CSUM']]);
  assert.deepEqual(req('GUEST_USO4'), [['GUEST_CSUM']]);
  assert.deepEqual(req('GUEST_USO6'), [['GUEST_CSUM']]);
  assert.deepEqual(req('HOST_TSO4'), [['CSUM']]);
  assert.deepEqual(req('HOST_TSO6'), [['CSUM']]);
  assert.deepEqual(req('HOST_ECN'), [['HOST_TSO4', 'HOST_TSO6']]);
  assert.deepEqual(req('HOST_UFO'), [['CSUM']]);
  assert.deepEqual(req('HOST_USO'), [['CSUM']]);
  assert.deepEqual(req('RSC_EXT'), [['HOST_TSO4', 'HOST_TSO6']]);
  assert.deepEqual(req('HASH_TUNNEL'), [['CTRL_VQ'], ['RSS', 'HASH_REPORT']]);
  assert.equal(VIRTIO_NET_REQUIREMENTS.length, 22);
});

test('every requirement is enforced: alone it is a violation, with each alternative it is not', () => {
  for (const r of VIRTIO_NET_REQUIREMENTS) {
    const alone = virtioFeatureViolations(bits(r.feature));
    assert.deepEqual(alone.map((v) => v.feature), r.requires.map(() => r.feature), `${r.feature} alone`);
    assert.deepEqual(alone.map((v) => v.missing), r.requires, `${r.feature} alone: what is missing`);
    // one alternative of each clause satisfies it
    for (let i = 0; i < Math.max(...r.requires.map((c) => c.length)); i++) {
      const pick = r.requires.map((clause) => clause[Math.min(i, clause.length - 1)]!);
      // the picked features may have requirements of their own; only this feature's are checked
      const v = virtioFeatureViolations(bits(r.feature, ...pick)).filter((x) => x.feature === r.feature);
      assert.deepEqual(v, [], `${r.feature} with ${pick.join('+')}`);
    }
    // and enforcement removes it when its requirement is missing
    assert.equal(hasFeature(enforceVirtioRequirements(bits(r.feature)), F[r.feature]), false, r.feature);
  }
});

test('enforcement is transitive: GUEST_ECN goes with the GUEST_TSO4 it needed', () => {
  assert.equal(enforceVirtioRequirements(bits('GUEST_ECN', 'GUEST_TSO4')), 0n);
  assert.equal(enforceVirtioRequirements(bits('HOST_ECN', 'HOST_TSO6', 'RSC_EXT')), 0n);
  const ok = bits('CSUM', 'HOST_TSO4', 'HOST_ECN', 'GUEST_CSUM', 'GUEST_TSO6', 'GUEST_ECN');
  assert.equal(enforceVirtioRequirements(ok), ok);
});

test('toVirtioFeatures: what the switch offers a vNIC', () => {
  assert.equal(toVirtioFeatures(vnicOffloads()), bits('CSUM', 'HOST_TSO4', 'HOST_TSO6', 'HOST_ECN', 'HOST_USO'));
  assert.equal(toVirtioFeatures(vnicOffloads(), { ecn: false }), bits('CSUM', 'HOST_TSO4', 'HOST_TSO6', 'HOST_USO'));
  const rx = { ...vnicOffloads(), rxPartialChecksum: true, rsc: { v4: true, v6: false }, uro: { v4: true, v6: true } };
  assert.equal(toVirtioFeatures(rx),
    bits('CSUM', 'HOST_TSO4', 'HOST_TSO6', 'HOST_ECN', 'HOST_USO', 'GUEST_CSUM', 'GUEST_TSO4', 'GUEST_ECN', 'GUEST_USO4', 'GUEST_USO6'));
  assert.equal(toVirtioFeatures(noOffloads()), 0n);
  assert.deepEqual(virtioFeatureNames(bits('CSUM', 'HOST_USO')), ['VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_HOST_USO']);
});

test('toVirtioFeatures never offers a feature without what it requires', () => {
  // the dependency cases that raw capabilities could produce
  const lsoNoCsum: OffloadCapabilities = { ...noOffloads(), lso: segmentationAll() };
  assert.equal(hasFeature(toVirtioFeatures(lsoNoCsum), F.HOST_TSO4), false, 'HOST_TSO4 needs CSUM');
  const usoNoCsum: OffloadCapabilities = { ...noOffloads(), uso: segmentationAll() };
  assert.equal(hasFeature(toVirtioFeatures(usoNoCsum), F.HOST_USO), false, 'HOST_USO needs CSUM');
  const rscNoPartial: OffloadCapabilities = { ...noOffloads(), rsc: { v4: true, v6: true } };
  assert.equal(toVirtioFeatures(rscNoPartial), 0n, 'GUEST_TSO needs GUEST_CSUM');
  const partialOnly: OffloadCapabilities = { ...noOffloads(), rxPartialChecksum: true };
  assert.equal(toVirtioFeatures(partialOnly), bits('GUEST_CSUM'), 'no GUEST_ECN without GUEST_TSO');
  assert.equal(toVirtioFeatures({ ...noOffloads(), uro: { v4: true, v6: true } }), 0n, 'GUEST_USO needs GUEST_CSUM');
  assert.equal(hasFeature(toVirtioFeatures({ ...vnicOffloads(), lso: { ...segmentationAll(), v4: false, v6: false } }), F.HOST_ECN), false,
    'HOST_ECN needs a HOST_TSO');
  fc.assert(fc.property(arbCaps, fc.boolean(), (caps, ecn) => {
    const b = toVirtioFeatures(caps, { ecn });
    assert.deepEqual(virtioFeatureViolations(b), []);
  }), { numRuns: 3000 });
});

test('from(to(caps)) never promises more than caps; to(from(bits)) gives valid offload bits back', () => {
  fc.assert(fc.property(arbCaps, (caps) => {
    assert.deepEqual(overPromises(fromVirtioFeatures(toVirtioFeatures(caps)), normalizeCapabilities(caps), { sizes: false }), []);
  }), { numRuns: 2000 });
  const offload: VirtioNetFeature[] = ['CSUM', 'GUEST_CSUM', 'GUEST_TSO4', 'GUEST_TSO6', 'GUEST_ECN', 'HOST_TSO4', 'HOST_TSO6', 'HOST_ECN', 'HOST_USO'];
  const ecnBits = bits('HOST_ECN', 'GUEST_ECN');
  let valid = 0;
  for (let m = 0; m < 1 << offload.length; m++) {
    const b = bits(...offload.filter((_, i) => m & (1 << i)));
    if (virtioFeatureViolations(b).length > 0) continue;
    valid++;
    const back = toVirtioFeatures(fromVirtioFeatures(b));
    assert.equal(back & ~ecnBits, b & ~ecnBits, `0x${b.toString(16)}`);
  }
  assert.ok(valid > 50);
  // bits that break §5.1.3.1 are ignored when read
  assert.deepEqual(fromVirtioFeatures(bits('HOST_TSO4')), noOffloads());
});

test('in vswitch\'s orientation the device-side HOST_* bits are the TAP flags (the switch reads the guest\'s TAP)', () => {
  // (QEMU is the other way round: its TAP faces the host network, so it maps GUEST_* to TUN_F_*.)
  fc.assert(fc.property(arbCaps, (caps) => {
    const v = toVirtioFeatures(caps);
    const t = toTunOffloadFlags(caps);
    assert.equal(hasFeature(v, F.CSUM), (t & TUN_F.CSUM) !== 0);
    assert.equal(hasFeature(v, F.HOST_TSO4), (t & TUN_F.TSO4) !== 0);
    assert.equal(hasFeature(v, F.HOST_TSO6), (t & TUN_F.TSO6) !== 0);
    assert.equal(hasFeature(v, F.HOST_ECN), (t & TUN_F.TSO_ECN) !== 0);
    assert.equal(hasFeature(v, F.HOST_USO), (t & TUN_F.USO4) !== 0);
  }), { numRuns: 2000 });
});
