// One capability value, three views: what a Linux guest is given on its TAP
// (TUNSETOFFLOAD flags and the `ethtool -k` it then shows), what a virtio-net
// device would offer, and what an NDIS miniport would report. Each view also
// says which parts of the capabilities it cannot carry.

import { normalizeCapabilities, type OffloadCapabilities } from '../capabilities.js';
import { fromTunOffloadFlags, linuxFeaturesForTunFlags, toTunOffloadFlags, tunFlagNames } from './linux.js';
import { fromVirtioFeatures, toVirtioFeatures, virtioFeatureNames } from './virtio.js';
import {
  NDIS_OFFLOAD_REVISION_LATEST, decodeNdisOffload, encodeNdisOffload, summarizeNdisOffload,
} from './ndis.js';

export * from './linux.js';
export * from './virtio.js';
export * from './ndis.js';

/**
 * The paths ("lso.v6", "ipsec.algorithms", ...) where `after` differs from
 * `before`: what a format lost on the way through it.
 */
export function capabilityDifferences(before: OffloadCapabilities, after: OffloadCapabilities): string[] {
  const out: string[] = [];
  const walk = (a: unknown, b: unknown, path: string): void => {
    if (Array.isArray(a) || Array.isArray(b)) {
      if (JSON.stringify(a) !== JSON.stringify(b)) out.push(path);
      return;
    }
    if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
      const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
      for (const k of keys) walk((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path === '' ? k : `${path}.${k}`);
      return;
    }
    if (a !== b) out.push(path);
  };
  walk(normalizeCapabilities(before), normalizeCapabilities(after), '');
  return out;
}

export interface CapabilityViews {
  linux: {
    /** Argument of TUNSETOFFLOAD on the guest's TAP. */
    tunFlags: number;
    tunFlagNames: string[];
    /** The guest's `ethtool -k` (offload features) once the flags are set. */
    ethtool: Record<string, boolean>;
    notExpressed: string[];
  };
  virtio: {
    /** Offered feature bits, as a hex string (a bigint does not JSON-encode). */
    features: string;
    featureNames: string[];
    notExpressed: string[];
  };
  ndis: {
    revision: number;
    size: number;
    summary: Record<string, unknown>;
    notExpressed: string[];
  };
}

/** The three views of `caps`, as plain JSON-ready data (for `vswitch caps`). */
export function describeCapabilities(caps: OffloadCapabilities): CapabilityViews {
  const c = normalizeCapabilities(caps);
  const flags = toTunOffloadFlags(c);
  const virtio = toVirtioFeatures(c);
  const ndisBytes = encodeNdisOffload(c, NDIS_OFFLOAD_REVISION_LATEST);
  const ndis = decodeNdisOffload(ndisBytes);
  return {
    linux: {
      tunFlags: flags,
      tunFlagNames: tunFlagNames(flags),
      ethtool: linuxFeaturesForTunFlags(flags) ?? {},
      notExpressed: capabilityDifferences(c, fromTunOffloadFlags(flags)),
    },
    virtio: {
      features: `0x${virtio.toString(16)}`,
      featureNames: virtioFeatureNames(virtio),
      notExpressed: capabilityDifferences(c, fromVirtioFeatures(virtio)),
    },
    ndis: {
      revision: NDIS_OFFLOAD_REVISION_LATEST,
      size: ndisBytes.length,
      summary: summarizeNdisOffload(ndisBytes) ?? {},
      notExpressed: ndis.ok ? capabilityDifferences(c, ndis.caps) : ['(encoding did not decode)'],
    },
  };
}
