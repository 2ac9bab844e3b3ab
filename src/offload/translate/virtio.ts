// Capabilities ⇄ virtio-net feature bits (VIRTIO 1.2+ §5.1.3 "Feature bits";
// Linux include/uapi/linux/virtio_net.h), as a device — the switch port —
// offers them to a guest's driver.
//
// The device's HOST_* bits say what it accepts from the driver (the guest's
// send offloads: partial checksums, TSO/USO super-frames); the GUEST_* bits
// say what the driver may accept from the device (partial checksums and
// coalesced super-frames on receive). The spec's dependencies
// (§5.1.3.1 "Feature bit requirements": a device must not offer, a driver
// must not accept, a feature without the ones it requires) are a table here,
// and everything this file produces satisfies it.
//
// Bit numbers: the spec's feature list (oasis-tcs/virtio-spec
// device-types/net/description.tex); GUEST_USO4 54, GUEST_USO6 55, HOST_USO 56
// and GUEST_HDRLEN 59 are in Linux's header since 6.2 (this machine's older
// Debian header lacks them).

import {
  MAX_OFFLOAD_SIZE, checksumNone, noOffloads, normalizeCapabilities, segmentationNone,
  type OffloadCapabilities, type SegmentationOffload,
} from '../capabilities.js';
import { genericChecksum, tcpSegmentationV4, tcpSegmentationV6, udpSegmentationBoth } from './linux.js';

export const VIRTIO_NET_F = {
  CSUM: 0,
  GUEST_CSUM: 1,
  CTRL_GUEST_OFFLOADS: 2,
  MTU: 3,
  MAC: 5,
  /** Legacy: "device handles packets with any GSO type". */
  GSO: 6,
  GUEST_TSO4: 7,
  GUEST_TSO6: 8,
  GUEST_ECN: 9,
  GUEST_UFO: 10,
  HOST_TSO4: 11,
  HOST_TSO6: 12,
  HOST_ECN: 13,
  HOST_UFO: 14,
  MRG_RXBUF: 15,
  STATUS: 16,
  CTRL_VQ: 17,
  CTRL_RX: 18,
  CTRL_VLAN: 19,
  CTRL_RX_EXTRA: 20,
  GUEST_ANNOUNCE: 21,
  MQ: 22,
  CTRL_MAC_ADDR: 23,
  DEVICE_STATS: 50,
  HASH_TUNNEL: 51,
  VQ_NOTF_COAL: 52,
  NOTF_COAL: 53,
  GUEST_USO4: 54,
  GUEST_USO6: 55,
  HOST_USO: 56,
  HASH_REPORT: 57,
  GUEST_HDRLEN: 59,
  RSS: 60,
  RSC_EXT: 61,
  STANDBY: 62,
  SPEED_DUPLEX: 63,
  RSS_CONTEXT: 64,
} as const;
export type VirtioNetFeature = keyof typeof VIRTIO_NET_F;

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

export function hasFeature(bits: bigint, n: number): boolean {
  return (bits & bit(n)) !== 0n;
}

/**
 * §5.1.3.1: `feature` requires, for every inner list, at least one feature of
 * that list (conjunctive normal form: [[A], [B, C]] is "A and (B or C)").
 */
export interface VirtioRequirement {
  feature: VirtioNetFeature;
  requires: VirtioNetFeature[][];
}

export const VIRTIO_NET_REQUIREMENTS: readonly VirtioRequirement[] = [
  { feature: 'GUEST_TSO4', requires: [['GUEST_CSUM']] },
  { feature: 'GUEST_TSO6', requires: [['GUEST_CSUM']] },
  { feature: 'GUEST_ECN', requires: [['GUEST_TSO4', 'GUEST_TSO6']] },
  { feature: 'GUEST_UFO', requires: [['GUEST_CSUM']] },
  { feature: 'GUEST_USO4', requires: [['GUEST_CSUM']] },
  { feature: 'GUEST_USO6', requires: [['GUEST_CSUM']] },
  { feature: 'HOST_TSO4', requires: [['CSUM']] },
  { feature: 'HOST_TSO6', requires: [['CSUM']] },
  { feature: 'HOST_ECN', requires: [['HOST_TSO4', 'HOST_TSO6']] },
  { feature: 'HOST_UFO', requires: [['CSUM']] },
  { feature: 'HOST_USO', requires: [['CSUM']] },
  { feature: 'CTRL_RX', requires: [['CTRL_VQ']] },
  { feature: 'CTRL_VLAN', requires: [['CTRL_VQ']] },
  { feature: 'GUEST_ANNOUNCE', requires: [['CTRL_VQ']] },
  { feature: 'MQ', requires: [['CTRL_VQ']] },
  { feature: 'CTRL_MAC_ADDR', requires: [['CTRL_VQ']] },
  { feature: 'NOTF_COAL', requires: [['CTRL_VQ']] },
  { feature: 'RSC_EXT', requires: [['HOST_TSO4', 'HOST_TSO6']] },
  { feature: 'RSS', requires: [['CTRL_VQ']] },
  { feature: 'VQ_NOTF_COAL', requires: [['CTRL_VQ']] },
  { feature: 'HASH_TUNNEL', requires: [['CTRL_VQ'], ['RSS', 'HASH_REPORT']] },
  { feature: 'RSS_CONTEXT', requires: [['CTRL_VQ'], ['RSS']] },
];

export interface VirtioViolation {
  feature: VirtioNetFeature;
  /** The alternatives of which none is set. */
  missing: VirtioNetFeature[];
}

/** Every §5.1.3.1 requirement `bits` breaks (empty: a valid feature set). */
export function virtioFeatureViolations(bits: bigint): VirtioViolation[] {
  const out: VirtioViolation[] = [];
  for (const r of VIRTIO_NET_REQUIREMENTS) {
    if (!hasFeature(bits, VIRTIO_NET_F[r.feature])) continue;
    for (const anyOf of r.requires) {
      if (!anyOf.some((f) => hasFeature(bits, VIRTIO_NET_F[f]))) out.push({ feature: r.feature, missing: anyOf });
    }
  }
  return out;
}

/** The largest subset of `bits` that satisfies §5.1.3.1: features whose requirements are unmet are removed until none is. */
export function enforceVirtioRequirements(bits: bigint): bigint {
  let b = bits;
  for (;;) {
    const v = virtioFeatureViolations(b);
    if (v.length === 0) return b;
    for (const x of v) b &= ~bit(VIRTIO_NET_F[x.feature]);
  }
}

export function virtioFeatureNames(bits: bigint): string[] {
  return (Object.entries(VIRTIO_NET_F) as [VirtioNetFeature, number][])
    .filter(([, n]) => hasFeature(bits, n))
    .map(([name]) => `VIRTIO_NET_F_${name}`);
}

export interface VirtioOptions {
  /** Offer HOST_ECN / GUEST_ECN with TSO (default yes; see TunOptions.ecn). */
  ecn?: boolean;
}

/**
 * The offload feature bits a device with capabilities `caps` offers a
 * driver. Send side (what the device accepts): CSUM when every L4 checksum
 * can be completed (virtio's csum_start/csum_offset is protocol-generic),
 * HOST_TSO4/6 (TCP options, and IPv4 options / IPv6 extension headers of
 * that version, as a guest's TSO frames may carry them), HOST_ECN, HOST_USO
 * (one bit for both versions). Receive side (what the guest may be given):
 * GUEST_CSUM = rxPartialChecksum (it also gates DATA_VALID, §5.1.6.4),
 * GUEST_TSO4/6 = rsc, GUEST_ECN, GUEST_USO4/6 = uro. Never breaks
 * §5.1.3.1. HOST_UFO / GUEST_UFO are never offered (Linux cannot do UFO any
 * more; vswitch does not fragment).
 */
export function toVirtioFeatures(caps: OffloadCapabilities, opts: VirtioOptions = {}): bigint {
  const c = normalizeCapabilities(caps);
  const ecn = opts.ecn !== false;
  let b = 0n;
  if (genericChecksum(c.txChecksum)) {
    b |= bit(VIRTIO_NET_F.CSUM);
    if (tcpSegmentationV4(c.lso)) b |= bit(VIRTIO_NET_F.HOST_TSO4);
    if (tcpSegmentationV6(c.lso)) b |= bit(VIRTIO_NET_F.HOST_TSO6);
    if (ecn && (hasFeature(b, VIRTIO_NET_F.HOST_TSO4) || hasFeature(b, VIRTIO_NET_F.HOST_TSO6))) b |= bit(VIRTIO_NET_F.HOST_ECN);
    if (udpSegmentationBoth(c.uso)) b |= bit(VIRTIO_NET_F.HOST_USO);
  }
  if (c.rxPartialChecksum) {
    b |= bit(VIRTIO_NET_F.GUEST_CSUM);
    if (c.rsc.v4) b |= bit(VIRTIO_NET_F.GUEST_TSO4);
    if (c.rsc.v6) b |= bit(VIRTIO_NET_F.GUEST_TSO6);
    if (ecn && (c.rsc.v4 || c.rsc.v6)) b |= bit(VIRTIO_NET_F.GUEST_ECN);
    if (c.uro.v4) b |= bit(VIRTIO_NET_F.GUEST_USO4);
    if (c.uro.v6) b |= bit(VIRTIO_NET_F.GUEST_USO6);
  }
  return b;
}

function segmentation(v4: boolean, v6: boolean, tcp: boolean): SegmentationOffload {
  if (!v4 && !v6) return segmentationNone();
  return { v4, v6, maxOffloadSize: MAX_OFFLOAD_SIZE, minSegmentCount: 2, ipv4Options: v4, tcpOptions: tcp, ipv6ExtHeaders: v6 };
}

/**
 * Capabilities from offered (or negotiated) feature bits. Features whose
 * §5.1.3.1 requirements are missing are ignored first. ECN and UFO have
 * no place in the model; sizes are the model's unrestricted
 * defaults (virtio carries none).
 */
export function fromVirtioFeatures(bits: bigint): OffloadCapabilities {
  const b = enforceVirtioRequirements(bits);
  const c = noOffloads();
  if (hasFeature(b, VIRTIO_NET_F.CSUM)) {
    c.txChecksum = { ...checksumNone(), tcp4: true, udp4: true, tcp6: true, udp6: true, ipv4Options: true, tcpOptions: true, ipv6ExtHeaders: true };
    c.lso = segmentation(hasFeature(b, VIRTIO_NET_F.HOST_TSO4), hasFeature(b, VIRTIO_NET_F.HOST_TSO6), true);
    const uso = hasFeature(b, VIRTIO_NET_F.HOST_USO);
    c.uso = segmentation(uso, uso, false);
  }
  if (hasFeature(b, VIRTIO_NET_F.GUEST_CSUM)) {
    c.rxPartialChecksum = true;
    c.rsc = { v4: hasFeature(b, VIRTIO_NET_F.GUEST_TSO4), v6: hasFeature(b, VIRTIO_NET_F.GUEST_TSO6) };
    c.uro = { v4: hasFeature(b, VIRTIO_NET_F.GUEST_USO4), v6: hasFeature(b, VIRTIO_NET_F.GUEST_USO6) };
  }
  return normalizeCapabilities(c);
}
