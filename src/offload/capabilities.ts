// One capability model for every port, shaped after NDIS_OFFLOAD (the
// structure a Windows miniport reports and the Hyper-V switch advertises):
// checksum per direction, IP version and protocol; large send (LSO v2);
// UDP segmentation; IPsec; receive of large frames (RSC / guest TSO); VLAN.
//
// The same value describes what an external NIC can do (read from the device)
// and what the switch advertises to a vNIC; translate/ turns it into Linux
// TUN flags and ethtool names, virtio-net feature bits and NDIS bytes.

export interface ChecksumOffload {
  ipv4Header: boolean;
  tcp4: boolean;
  udp4: boolean;
  tcp6: boolean;
  udp6: boolean;
  /** Packets with IPv4 options / TCP options / IPv6 extension headers are handled too. */
  ipv4Options: boolean;
  tcpOptions: boolean;
  ipv6ExtHeaders: boolean;
}

export interface SegmentationOffload {
  v4: boolean;
  v6: boolean;
  /** Largest super-frame (IP packet) accepted. */
  maxOffloadSize: number;
  /** Fewest segments a super-frame must produce to be offloaded (NDIS MinSegmentCount). */
  minSegmentCount: number;
  ipv4Options: boolean;
  tcpOptions: boolean;
  ipv6ExtHeaders: boolean;
}

export const IPSEC_ALGORITHMS = ['aes-gcm-128', 'aes-gcm-256'] as const;
export type IpsecAlgorithm = (typeof IPSEC_ALGORITHMS)[number];

export interface IpsecOffload {
  enabled: boolean;
  algorithms: IpsecAlgorithm[];
  /** Security associations the device can hold (NDIS_IPSEC_OFFLOAD_V2 SaOffloadCapacity). */
  maxSa: number;
  transport: boolean;
  tunnel: boolean;
  v4: boolean;
  v6: boolean;
}

export interface OffloadCapabilities {
  /** Computes checksums on transmit (NDIS IPv4Transmit/IPv6Transmit). */
  txChecksum: ChecksumOffload;
  /** Verifies checksums on receive (NDIS IPv4Receive/IPv6Receive). */
  rxChecksum: ChecksumOffload;
  /** TCP large send (NDIS LsoV2 IPv4/IPv6). */
  lso: SegmentationOffload;
  /** UDP segmentation (NDIS UdpSegmentation). */
  uso: SegmentationOffload;
  ipsec: IpsecOffload;
  /** Accepts coalesced / TSO super-frames on receive (RSC; virtio GUEST_TSO4/6). */
  rsc: { v4: boolean; v6: boolean };
  /**
   * Accepts coalesced UDP on receive: consecutive datagrams of one flow as
   * one USO super-frame that the receiver splits again (URO; Windows'
   * UDP RSC, virtio GUEST_USO4/6, a Linux TAP on kernels with USO).
   */
  uro: { v4: boolean; v6: boolean };
  /** Accepts frames whose checksum is still partial on receive (virtio GUEST_CSUM). */
  rxPartialChecksum: boolean;
  vlan: { insert: boolean; strip: boolean };
}

export const MAX_OFFLOAD_SIZE = 65535;

export function checksumNone(): ChecksumOffload {
  return { ipv4Header: false, tcp4: false, udp4: false, tcp6: false, udp6: false, ipv4Options: false, tcpOptions: false, ipv6ExtHeaders: false };
}

export function checksumAll(): ChecksumOffload {
  return { ipv4Header: true, tcp4: true, udp4: true, tcp6: true, udp6: true, ipv4Options: true, tcpOptions: true, ipv6ExtHeaders: true };
}

export function segmentationNone(): SegmentationOffload {
  return { v4: false, v6: false, maxOffloadSize: 0, minSegmentCount: 0, ipv4Options: false, tcpOptions: false, ipv6ExtHeaders: false };
}

export function segmentationAll(): SegmentationOffload {
  return { v4: true, v6: true, maxOffloadSize: MAX_OFFLOAD_SIZE, minSegmentCount: 2, ipv4Options: true, tcpOptions: true, ipv6ExtHeaders: true };
}

export function ipsecNone(): IpsecOffload {
  return { enabled: false, algorithms: [], maxSa: 0, transport: false, tunnel: false, v4: false, v6: false };
}

/** A device that does nothing for us: the legacy NIC, or an uplink with every offload off. */
export function noOffloads(): OffloadCapabilities {
  return {
    txChecksum: checksumNone(), rxChecksum: checksumNone(), lso: segmentationNone(), uso: segmentationNone(),
    ipsec: ipsecNone(), rsc: { v4: false, v6: false }, uro: { v4: false, v6: false }, rxPartialChecksum: false, vlan: { insert: false, strip: false },
  };
}

/** A vNIC's advertisement with nothing switched off: send checksum, LSO and USO; receive checksum. */
export function vnicOffloads(): OffloadCapabilities {
  const c = noOffloads();
  c.txChecksum = checksumAll();
  c.rxChecksum = checksumAll();
  c.lso = segmentationAll();
  c.uso = segmentationAll();
  return c;
}

export function cloneCapabilities(c: OffloadCapabilities): OffloadCapabilities {
  return {
    txChecksum: { ...c.txChecksum }, rxChecksum: { ...c.rxChecksum }, lso: { ...c.lso }, uso: { ...c.uso },
    ipsec: { ...c.ipsec, algorithms: [...c.ipsec.algorithms] }, rsc: { ...c.rsc }, uro: { ...c.uro },
    rxPartialChecksum: c.rxPartialChecksum, vlan: { ...c.vlan },
  };
}

export function capabilitiesEqual(a: OffloadCapabilities, b: OffloadCapabilities): boolean {
  return JSON.stringify(normalizeCapabilities(a)) === JSON.stringify(normalizeCapabilities(b));
}

/**
 * Enforce the dependencies every format has (virtio 1.2 §5.1.3.1, Linux
 * netdev_fix_features, NDIS LSO requiring checksum): segmentation needs
 * transmit checksum of the same protocol and IP version; receiving large
 * frames needs accepting partial checksums; IPsec needs at least one
 * algorithm, mode and IP version. Returns a new value; input unchanged.
 */
export function normalizeCapabilities(c: OffloadCapabilities): OffloadCapabilities {
  const n = cloneCapabilities(c);
  for (const k of ['txChecksum', 'rxChecksum'] as const) {
    const x = n[k];
    // Option support means nothing without a protocol to checksum.
    if (!x.ipv4Header && !x.tcp4 && !x.udp4 && !x.tcp6 && !x.udp6) n[k] = checksumNone();
  }
  n.lso.v4 &&= n.txChecksum.tcp4;
  n.lso.v6 &&= n.txChecksum.tcp6;
  n.uso.v4 &&= n.txChecksum.udp4;
  n.uso.v6 &&= n.txChecksum.udp6;
  for (const s of [n.lso, n.uso]) {
    if (!s.v4 && !s.v6) Object.assign(s, segmentationNone());
  }
  n.rsc.v4 &&= n.rxPartialChecksum;
  n.rsc.v6 &&= n.rxPartialChecksum;
  n.uro.v4 &&= n.rxPartialChecksum;
  n.uro.v6 &&= n.rxPartialChecksum;
  const algs = IPSEC_ALGORITHMS.filter((a) => n.ipsec.algorithms.includes(a));
  n.ipsec.algorithms = algs;
  if (!n.ipsec.enabled || algs.length === 0 || n.ipsec.maxSa <= 0 || (!n.ipsec.transport && !n.ipsec.tunnel) ||
      (!n.ipsec.v4 && !n.ipsec.v6)) {
    n.ipsec = ipsecNone();
  }
  return n;
}

/** Union of IPsec offload over several devices (what some uplink can do). */
export function ipsecUnion(list: readonly IpsecOffload[]): IpsecOffload {
  const on = list.filter((i) => i.enabled);
  if (on.length === 0) return ipsecNone();
  return {
    enabled: true,
    algorithms: IPSEC_ALGORITHMS.filter((a) => on.some((i) => i.algorithms.includes(a))),
    maxSa: on.reduce((n, i) => n + i.maxSa, 0),
    transport: on.some((i) => i.transport),
    tunnel: on.some((i) => i.tunnel),
    v4: on.some((i) => i.v4),
    v6: on.some((i) => i.v6),
  };
}
