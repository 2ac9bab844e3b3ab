// Capabilities ⇄ Linux: the TUNSETOFFLOAD flags vswitch puts on a guest's
// TAP, the `ethtool -k` table the guest then sees, and an uplink's
// `ethtool -k` features read back into capabilities.
//
// Direction matters. TUNSETOFFLOAD flags say what the *reader of the TAP fd*
// (the switch) accepts, so they become the TAP netdev's *transmit* features:
// with TUN_F_CSUM the guest's stack may hand the switch partial checksums,
// with TUN_F_TSO4 TCP/IPv4 super-frames, and so on. They are the send
// offloads the switch advertises to the vNIC. The receive side of a
// vnet-header TAP is not negotiated at all: the kernel accepts whatever a
// virtio_net_hdr written to the fd says (virtio_net_hdr_to_skb), so it has no
// flags here.
//
// Sources:
// - flag values: include/uapi/linux/if_tun.h (TUN_F_USO4/6 since Linux 6.2,
//   TUN_F_UDP_TUNNEL_GSO/_CSUM added in 2025 and accepted by this 6.18
//   kernel; the Debian header on this machine stops at TUN_F_UFO).
// - what the kernel accepts: drivers/net/tun.c set_offload(). Every bit it
//   does not consume stays in `arg` and the ioctl fails with EINVAL: without
//   TUN_F_CSUM nothing else is consumed; TSO_ECN only with TSO4 or TSO6; USO4
//   and USO6 only together; UFO is accepted and ignored; the UDP tunnel bits
//   only with some plain GSO (TSO4/TSO6/USO), the tunnel-csum bit only with
//   the tunnel bit. (tap.c, the macvtap flavour, differs: it silently
//   ignores an unpaired USO bit.)
// - what the guest sees: measured, not derived — test/vectors/translate/
//   tun-ethtool.json records `ethtool -k` for all 512 combinations of the nine
//   bits (and each higher bit) on Linux 6.18, made by tun-ethtool.py next to
//   it; test/unit/offload/translate/linux.test.ts holds this file to it.

import {
  MAX_OFFLOAD_SIZE, checksumNone, ipsecNone, noOffloads, normalizeCapabilities, segmentationNone,
  IPSEC_ALGORITHMS,
  type ChecksumOffload, type IpsecAlgorithm, type OffloadCapabilities, type SegmentationOffload,
} from '../capabilities.js';

export const TUN_F = {
  /** "You can hand me unchecksummed packets." */
  CSUM: 0x01,
  TSO4: 0x02,
  TSO6: 0x04,
  /** "I can handle TSO with ECN bits." */
  TSO_ECN: 0x08,
  /** Accepted with CSUM and ignored: UFO is gone from the kernel (4.14). */
  UFO: 0x10,
  USO4: 0x20,
  USO6: 0x40,
  UDP_TUNNEL_GSO: 0x80,
  UDP_TUNNEL_GSO_CSUM: 0x100,
} as const;

/** Every bit this kernel's set_offload knows. */
export const TUN_F_KNOWN = 0x1ff;

export const TUN_F_NAMES: ReadonlyArray<readonly [string, number]> = [
  ['TUN_F_CSUM', TUN_F.CSUM], ['TUN_F_TSO4', TUN_F.TSO4], ['TUN_F_TSO6', TUN_F.TSO6],
  ['TUN_F_TSO_ECN', TUN_F.TSO_ECN], ['TUN_F_UFO', TUN_F.UFO], ['TUN_F_USO4', TUN_F.USO4],
  ['TUN_F_USO6', TUN_F.USO6], ['TUN_F_UDP_TUNNEL_GSO', TUN_F.UDP_TUNNEL_GSO],
  ['TUN_F_UDP_TUNNEL_GSO_CSUM', TUN_F.UDP_TUNNEL_GSO_CSUM],
];

/** Why TUNSETOFFLOAD(flags) fails with EINVAL. */
export type TunRefusal =
  | 'not-a-flag-word'            // not an integer in [0, 2^32)
  | 'unknown-flag'               // a bit above TUN_F_UDP_TUNNEL_GSO_CSUM
  | 'needs-csum'                 // any offload bit without TUN_F_CSUM
  | 'ecn-needs-tso'              // TSO_ECN without TSO4/TSO6
  | 'uso-needs-both'             // USO4 without USO6 or the reverse
  | 'tunnel-needs-gso'           // UDP_TUNNEL_GSO without TSO4/TSO6/USO
  | 'tunnel-csum-needs-tunnel';  // UDP_TUNNEL_GSO_CSUM without UDP_TUNNEL_GSO

/** The reason the kernel refuses `flags`, or null when it takes them. */
export function tunOffloadRefusal(flags: number): TunRefusal | null {
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xffffffff) return 'not-a-flag-word';
  if (flags > TUN_F_KNOWN) return 'unknown-flag';
  if (flags === 0) return null;
  if (!(flags & TUN_F.CSUM)) return 'needs-csum';
  const tso = (flags & (TUN_F.TSO4 | TUN_F.TSO6)) !== 0;
  if (flags & TUN_F.TSO_ECN && !tso) return 'ecn-needs-tso';
  const uso = flags & (TUN_F.USO4 | TUN_F.USO6);
  if (uso !== 0 && uso !== (TUN_F.USO4 | TUN_F.USO6)) return 'uso-needs-both';
  if (flags & TUN_F.UDP_TUNNEL_GSO && !tso && uso === 0) return 'tunnel-needs-gso';
  if (flags & TUN_F.UDP_TUNNEL_GSO_CSUM && !(flags & TUN_F.UDP_TUNNEL_GSO)) return 'tunnel-csum-needs-tunnel';
  return null;
}

export function tunFlagNames(flags: number): string[] {
  return TUN_F_NAMES.filter(([, b]) => (flags & b) !== 0).map(([n]) => n);
}

export interface TunOptions {
  /**
   * Offer TSO with ECN (TUN_F_TSO_ECN) along with TSO. The capability model
   * has no ECN field; its LSO includes the kernel's CWR rule (CWR on the first
   * segment only), which vswitch's software segmentation implements, so the
   * default is yes.
   */
  ecn?: boolean;
}

/**
 * The guest's partial checksums arrive with an explicit csum_start/offset
 * for any protocol and any header chain (NETIF_F_HW_CSUM), so advertising
 * them promises all of these.
 */
export function genericChecksum(c: ChecksumOffload): boolean {
  return c.tcp4 && c.udp4 && c.tcp6 && c.udp6 && c.ipv4Options && c.tcpOptions && c.ipv6ExtHeaders;
}

/** A Linux guest's TSO frames carry TCP options (timestamps) and any IP options / extension headers its socket has. */
export function tcpSegmentationV4(s: SegmentationOffload): boolean {
  return s.v4 && s.ipv4Options && s.tcpOptions;
}
export function tcpSegmentationV6(s: SegmentationOffload): boolean {
  return s.v6 && s.ipv6ExtHeaders && s.tcpOptions;
}
/** Linux has one UDP segmentation feature for both IP versions. */
export function udpSegmentationBoth(s: SegmentationOffload): boolean {
  return s.v4 && s.v6 && s.ipv4Options && s.ipv6ExtHeaders;
}

/**
 * The flags vswitch passes to TUNSETOFFLOAD on a guest's TAP so that the
 * guest may send what `caps` says the port accepts: partial checksums
 * (TUN_F_CSUM), TSO super-frames (TSO4/TSO6, with ECN), USO (USO4|USO6).
 * Only what the flags can say without over-promising is set: TUN_F_CSUM needs
 * every L4 checksum (see genericChecksum), TSO/USO need TUN_F_CSUM, USO needs
 * both IP versions. Sizes cannot be said with flags (the guest's gso_max_size
 * bounds it: IP packets up to 64 KiB). The result is always accepted by the
 * kernel (tunOffloadRefusal(result) === null).
 */
export function toTunOffloadFlags(caps: OffloadCapabilities, opts: TunOptions = {}): number {
  const c = normalizeCapabilities(caps);
  if (!genericChecksum(c.txChecksum)) return 0;
  let f: number = TUN_F.CSUM;
  if (tcpSegmentationV4(c.lso)) f |= TUN_F.TSO4;
  if (tcpSegmentationV6(c.lso)) f |= TUN_F.TSO6;
  if (opts.ecn !== false && f & (TUN_F.TSO4 | TUN_F.TSO6)) f |= TUN_F.TSO_ECN;
  if (udpSegmentationBoth(c.uso)) f |= TUN_F.USO4 | TUN_F.USO6;
  return f;
}

function allSegmentation(v4: boolean, v6: boolean, tcp: boolean): SegmentationOffload {
  if (!v4 && !v6) return segmentationNone();
  return {
    v4, v6, maxOffloadSize: MAX_OFFLOAD_SIZE, minSegmentCount: 2,
    ipv4Options: v4, tcpOptions: tcp, ipv6ExtHeaders: v6,
  };
}

/**
 * The send capabilities a guest was given by TUNSETOFFLOAD(flags): what the
 * port accepts from it. Flags the kernel refuses give nothing (the ioctl
 * fails). ECN, UFO and the UDP tunnel bits have no place in the model;
 * sizes are the model's unrestricted defaults (the flags carry none).
 */
export function fromTunOffloadFlags(flags: number): OffloadCapabilities {
  const c = noOffloads();
  if (tunOffloadRefusal(flags) !== null || !(flags & TUN_F.CSUM)) return c;
  c.txChecksum = { ...checksumNone(), tcp4: true, udp4: true, tcp6: true, udp6: true, ipv4Options: true, tcpOptions: true, ipv6ExtHeaders: true };
  const tso4 = (flags & TUN_F.TSO4) !== 0;
  const tso6 = (flags & TUN_F.TSO6) !== 0;
  c.lso = allSegmentation(tso4, tso6, true);
  const uso = (flags & TUN_F.USO4) !== 0;
  c.uso = allSegmentation(uso, uso, false);
  return normalizeCapabilities(c);
}

/**
 * The offload features a guest sees in `ethtool -k` on its TAP (opened with
 * IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) after TUNSETOFFLOAD(flags), by the names
 * `ethtool -k` prints; null when the kernel refuses the flags (EINVAL, and
 * the features stay as they were). Measured on Linux 6.18: scatter-gather,
 * GSO, GRO and VLAN insertion are on whatever the flags; receive checksum,
 * LRO and hardware GRO are off and fixed (a TAP has no NIC behind it).
 */
export function linuxFeaturesForTunFlags(flags: number): Record<string, boolean> | null {
  if (tunOffloadRefusal(flags) !== null) return null;
  const csum = (flags & TUN_F.CSUM) !== 0;
  const tso4 = (flags & TUN_F.TSO4) !== 0;
  const tso6 = (flags & TUN_F.TSO6) !== 0;
  const ecn = (flags & TUN_F.TSO_ECN) !== 0;
  const uso = (flags & TUN_F.USO4) !== 0;
  const tnl = (flags & TUN_F.UDP_TUNNEL_GSO) !== 0;
  const tnlCsum = (flags & TUN_F.UDP_TUNNEL_GSO_CSUM) !== 0;
  return {
    'rx-checksumming': false,
    'tx-checksumming': csum,
    'tx-checksum-ipv4': false,
    'tx-checksum-ip-generic': csum,
    'tx-checksum-ipv6': false,
    'tx-checksum-sctp': false,
    'scatter-gather': true,
    'tx-scatter-gather': true,
    'tx-scatter-gather-fraglist': true,
    'tcp-segmentation-offload': tso4 || tso6,
    'tx-tcp-segmentation': tso4,
    'tx-tcp-ecn-segmentation': ecn,
    'tx-tcp-mangleid-segmentation': false,
    'tx-tcp6-segmentation': tso6,
    'generic-segmentation-offload': true,
    'generic-receive-offload': true,
    'large-receive-offload': false,
    'rx-vlan-offload': false,
    'tx-vlan-offload': true,
    'tx-udp_tnl-segmentation': tnl,
    'tx-udp_tnl-csum-segmentation': tnlCsum,
    'tx-udp-segmentation': uso,
    'tx-esp-segmentation': false,
    'esp-hw-offload': false,
    'rx-gro-hw': false,
  };
}

// --- reading an uplink's features -----------------------------------------------

/**
 * `ethtool -k <dev>` text → feature name → value as printed ("on",
 * "off [fixed]", "off [requested on]"). Lines that are not "name: value"
 * (the "Features for" header, blank lines, error messages) are skipped;
 * never throws.
 */
export function parseEthtoolK(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('Features for ')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (name === '' || /\s/.test(name) || !/^(on|off)\b/.test(value)) continue;
    out[name] = value;
  }
  return out;
}

/** Whether a feature value (as printed by ethtool, or a boolean) means on now. "off [requested on]" is off. */
export function ethtoolOn(value: string | boolean | undefined): boolean {
  if (typeof value === 'boolean') return value;
  return value !== undefined && /^on\b/.test(value.trim());
}

// `ethtool -k` prints some features under legacy names; the kernel's own
// names (netdev_features_strings, used by ethtool netlink and `ethtool -K`)
// are accepted as well.
const ALIASES: Record<string, string> = {
  'rx-checksum': 'rx-checksumming',
  'rx-lro': 'large-receive-offload',
  'rx-gro': 'generic-receive-offload',
  'tx-generic-segmentation': 'generic-segmentation-offload',
  'rx-vlan-hw-parse': 'rx-vlan-offload',
  'tx-vlan-hw-insert': 'tx-vlan-offload',
};

function canonical(features: Record<string, string | boolean>): Map<string, boolean> {
  const m = new Map<string, boolean>();
  for (const [k, v] of Object.entries(features)) m.set(ALIASES[k] ?? k, ethtoolOn(v));
  return m;
}

export interface EthtoolHints {
  /** The device's gso_max_size (`ip -d link`), if known: bounds LSO/USO super-frames. */
  gsoMaxSize?: number;
  /**
   * What the NIC's ESP offload can do. Linux does not report algorithms or
   * SA capacity for esp-hw-offload (drivers check each SA when it is added),
   * so without these an ESP-capable uplink gets no IPsec capability: the
   * switch never offloads to an algorithm it cannot confirm.
   */
  ipsec?: { algorithms: IpsecAlgorithm[]; maxSa: number; transport?: boolean; tunnel?: boolean; v4?: boolean; v6?: boolean };
}

/** The uplink says it can do ESP in hardware (esp-hw-offload on), algorithms unknown. */
export function ethtoolHasEspOffload(features: Record<string, string | boolean>): boolean {
  return canonical(features).get('esp-hw-offload') === true;
}

/**
 * An uplink NIC's capabilities from its `ethtool -k` features (as parsed by
 * parseEthtoolK, or name → boolean; ethtool's legacy and the kernel's names
 * both work). Child features are read, never the group lines
 * (tcp-segmentation-offload can say "on" while every TSO child is off).
 *
 * - transmit checksum: tx-checksum-ip-generic (any protocol) or
 *   tx-checksum-ipv4 / -ipv6 (TCP and UDP of that version). The kernel's
 *   contract is per feature: a driver that cannot handle some header chain
 *   falls back per packet (ndo_features_check), so options and extension
 *   headers go with the protocol. Linux never offloads the IPv4 header
 *   checksum, so ipv4Header is false.
 * - receive checksum: rx-checksumming (TCP/UDP, both versions; the IPv4
 *   header checksum is always verified by the stack).
 * - LSO: tx-tcp-segmentation (v4), tx-tcp6-segmentation (v6); USO:
 *   tx-udp-segmentation (one feature for both versions). Sizes from
 *   hints.gsoMaxSize, else the model's maximum; no minimum segment count.
 *   tx-tcp-ecn-segmentation is not modelled (the kernel segments CWR frames
 *   in software when it is off).
 * - receive coalescing: rx-gro-hw or large-receive-offload; coalesced frames
 *   reach a packet socket with partial checksums (tcp_gro_complete), hence
 *   rxPartialChecksum with them. Software GRO (generic-receive-offload) also
 *   hands a packet socket super-frames but is not a NIC capability.
 * - VLAN: tx-vlan-hw-insert (tx-vlan-offload), rx-vlan-hw-parse (rx-vlan-offload).
 * - IPsec: esp-hw-offload, and only with hints.ipsec (see EthtoolHints).
 */
export function capabilitiesFromEthtool(features: Record<string, string | boolean>, hints: EthtoolHints = {}): OffloadCapabilities {
  const f = canonical(features);
  const on = (name: string): boolean => f.get(name) === true;
  const c = noOffloads();

  const generic = on('tx-checksum-ip-generic');
  const tx4 = generic || on('tx-checksum-ipv4');
  const tx6 = generic || on('tx-checksum-ipv6');
  c.txChecksum = {
    ipv4Header: false, tcp4: tx4, udp4: tx4, tcp6: tx6, udp6: tx6,
    ipv4Options: tx4, tcpOptions: tx4 || tx6, ipv6ExtHeaders: tx6,
  };
  const rx = on('rx-checksumming');
  c.rxChecksum = {
    ipv4Header: false, tcp4: rx, udp4: rx, tcp6: rx, udp6: rx, ipv4Options: rx, tcpOptions: rx, ipv6ExtHeaders: rx,
  };

  const size = hints.gsoMaxSize !== undefined && Number.isFinite(hints.gsoMaxSize)
    ? Math.max(0, Math.min(MAX_OFFLOAD_SIZE, Math.floor(hints.gsoMaxSize)))
    : MAX_OFFLOAD_SIZE;
  const seg = (v4: boolean, v6: boolean, tcp: boolean): SegmentationOffload => (v4 || v6
    ? { v4, v6, maxOffloadSize: size, minSegmentCount: 1, ipv4Options: v4, tcpOptions: tcp, ipv6ExtHeaders: v6 }
    : segmentationNone());
  c.lso = seg(on('tx-tcp-segmentation'), on('tx-tcp6-segmentation'), true);
  const uso = on('tx-udp-segmentation');
  c.uso = seg(uso, uso, false);

  const coalesce = on('rx-gro-hw') || on('large-receive-offload');
  c.rsc = { v4: coalesce, v6: coalesce };
  c.rxPartialChecksum = coalesce;

  c.vlan = { insert: on('tx-vlan-offload'), strip: on('rx-vlan-offload') };

  const h = hints.ipsec;
  if (on('esp-hw-offload') && h !== undefined) {
    c.ipsec = {
      enabled: true,
      algorithms: IPSEC_ALGORITHMS.filter((a) => h.algorithms.includes(a)),
      maxSa: Number.isFinite(h.maxSa) ? Math.max(0, Math.floor(h.maxSa)) : 0,
      transport: h.transport ?? true,
      tunnel: h.tunnel ?? false,
      v4: h.v4 ?? true,
      v6: h.v6 ?? true,
    };
  } else {
    c.ipsec = ipsecNone();
  }
  return normalizeCapabilities(c);
}
