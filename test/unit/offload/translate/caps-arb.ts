// Shared by the translation tests: arbitrary capability values, the
// "promises no more than" order, and where the vectors are.
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  IPSEC_ALGORITHMS, checksumAll, segmentationAll,
  type ChecksumOffload, type IpsecOffload, type OffloadCapabilities, type SegmentationOffload,
} from '../../../../src/offload/capabilities.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../..');
export const VECTORS = join(ROOT, 'test/vectors/translate');

export function readVector(name: string): string {
  return readFileSync(join(VECTORS, name), 'utf8');
}

const b = fc.boolean();

export const arbChecksum: fc.Arbitrary<ChecksumOffload> = fc.oneof(
  fc.record({ ipv4Header: b, tcp4: b, udp4: b, tcp6: b, udp6: b, ipv4Options: b, tcpOptions: b, ipv6ExtHeaders: b }),
  fc.constant(checksumAll()),
  // everything but one flag
  fc.constantFrom(...Object.keys(checksumAll())).map((k) => ({ ...checksumAll(), [k]: false })),
);

export const arbSegmentation: fc.Arbitrary<SegmentationOffload> = fc.oneof(
  fc.record({
    v4: b, v6: b,
    maxOffloadSize: fc.oneof(fc.constant(65535), fc.integer({ min: 0, max: 0x1_0000_0000 + 5 }), fc.double({ min: -10, max: 1e6, noNaN: true })),
    minSegmentCount: fc.oneof(fc.integer({ min: 0, max: 70 }), fc.integer({ min: 0, max: 0x1_0000_0000 + 5 }), fc.double({ min: -3, max: 100, noNaN: true })),
    ipv4Options: b, tcpOptions: b, ipv6ExtHeaders: b,
  }),
  fc.constant(segmentationAll()),
);

export const arbIpsec: fc.Arbitrary<IpsecOffload> = fc.record({
  enabled: b,
  algorithms: fc.subarray([...IPSEC_ALGORITHMS]),
  maxSa: fc.oneof(fc.integer({ min: 0, max: 65536 }), fc.double({ min: 0, max: 10, noNaN: true })),
  transport: b, tunnel: b, v4: b, v6: b,
});

export const arbCaps: fc.Arbitrary<OffloadCapabilities> = fc.record({
  txChecksum: arbChecksum,
  rxChecksum: arbChecksum,
  lso: arbSegmentation,
  uso: arbSegmentation,
  ipsec: arbIpsec,
  rsc: fc.record({ v4: b, v6: b }),
  uro: fc.record({ v4: b, v6: b }),
  rxPartialChecksum: b,
  vlan: fc.record({ insert: b, strip: b }),
});

function segmentationWeaker(a: SegmentationOffload, c: SegmentationOffload, sizes: boolean, why: string[], path: string): void {
  if (!a.v4 && !a.v6) return;
  for (const k of ['v4', 'v6', 'ipv4Options', 'tcpOptions', 'ipv6ExtHeaders'] as const) {
    if (a[k] && !c[k]) why.push(`${path}.${k}`);
  }
  if (sizes) {
    // a negative maximum means nothing more than 0
    if (a.maxOffloadSize > Math.max(0, c.maxOffloadSize)) why.push(`${path}.maxOffloadSize ${a.maxOffloadSize} > ${c.maxOffloadSize}`);
    if (a.minSegmentCount < c.minSegmentCount && c.minSegmentCount > 0) why.push(`${path}.minSegmentCount ${a.minSegmentCount} < ${c.minSegmentCount}`);
  }
}

/**
 * Where `a` promises more than `c` (empty: a ⊑ c). Booleans: a true needs c
 * true; sizes (if compared): a's maximum no larger, a's minimum segment count
 * no smaller; IPsec: a's algorithms a subset, SA count no larger.
 */
export function overPromises(a: OffloadCapabilities, c: OffloadCapabilities, opts: { sizes: boolean }): string[] {
  const why: string[] = [];
  for (const dir of ['txChecksum', 'rxChecksum'] as const) {
    for (const [k, v] of Object.entries(a[dir])) {
      if (v && !(c[dir] as unknown as Record<string, boolean>)[k]) why.push(`${dir}.${k}`);
    }
  }
  segmentationWeaker(a.lso, c.lso, opts.sizes, why, 'lso');
  segmentationWeaker(a.uso, c.uso, opts.sizes, why, 'uso');
  if (a.ipsec.enabled) {
    if (!c.ipsec.enabled) why.push('ipsec.enabled');
    for (const k of ['transport', 'tunnel', 'v4', 'v6'] as const) if (a.ipsec[k] && !c.ipsec[k]) why.push(`ipsec.${k}`);
    for (const alg of a.ipsec.algorithms) if (!c.ipsec.algorithms.includes(alg)) why.push(`ipsec.algorithms ${alg}`);
    if (a.ipsec.maxSa > c.ipsec.maxSa) why.push('ipsec.maxSa');
  }
  if (a.rsc.v4 && !c.rsc.v4) why.push('rsc.v4');
  if (a.rsc.v6 && !c.rsc.v6) why.push('rsc.v6');
  if (a.uro.v4 && !c.uro.v4) why.push('uro.v4');
  if (a.uro.v6 && !c.uro.v6) why.push('uro.v6');
  if (a.rxPartialChecksum && !c.rxPartialChecksum) why.push('rxPartialChecksum');
  if (a.vlan.insert && !c.vlan.insert) why.push('vlan.insert');
  if (a.vlan.strip && !c.vlan.strip) why.push('vlan.strip');
  return why;
}
