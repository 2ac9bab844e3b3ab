// Offload metadata carried with every packet through the switch: what the
// sender asked for (checksum, segmentation), what is known about the
// received checksum, the out-of-band VLAN tag and the IPsec SA. The fields
// mirror struct virtio_net_hdr and NDIS_TCP_IP_CHECKSUM/LSO_V2 per-packet
// info, so every backend can translate to and from it without loss.

/** Segmentation requested for the packet. Values are the virtio gso_type codes. */
export const GsoType = {
  NONE: 0,
  TCPV4: 1,
  /** UFO: one UDP datagram to be sent as IP fragments (legacy virtio). */
  UDP: 3,
  TCPV6: 4,
  /** USO: UDP payload split into datagrams of gsoSize (UDP_L4). */
  UDP_L4: 5,
} as const;
export type GsoType = (typeof GsoType)[keyof typeof GsoType];

/** What is known about the packet's checksums on receive. */
export const RxCsum = {
  /** Nobody checked; the receiver must. */
  UNKNOWN: 0,
  /** The NIC or the switch verified (or computed) every checksum. */
  VERIFIED: 1,
  /** Verified and found wrong (kept for counters; such packets are not marked valid). */
  FAILED: 2,
} as const;
export type RxCsum = (typeof RxCsum)[keyof typeof RxCsum];

export const NO_SA = -1;

export class OffloadMeta {
  /** The L4 checksum is partial: sum from csumStart to the end, store at csumStart + csumOffset. */
  needsCsum = false;
  /** Offsets relative to the start of the frame (the Ethernet header). */
  csumStart = 0;
  csumOffset = 0;
  /** The IPv4 header checksum must be computed (NDIS large send leaves it zero). */
  ipv4HeaderCsum = false;
  gsoType: GsoType = GsoType.NONE;
  /** Payload bytes per segment (MSS for TCP). */
  gsoSize = 0;
  /** Length of all headers as the sender stated it (a hint; the switch parses its own). */
  hdrLen = 0;
  /** The sender set ECN/CWR on a TSO frame (virtio GSO_ECN). */
  gsoEcn = false;
  rxCsum: RxCsum = RxCsum.UNKNOWN;
  /** Receive-side coalescing info (virtio RSC_INFO): segments merged and duplicate ACKs. */
  rscSegments = 0;
  rscDupAcks = 0;
  /** Out-of-band 802.1Q tag (stripped by the NIC or to be inserted by it). */
  vlanPresent = false;
  vlanTci = 0;
  /** IPsec security association handle, or NO_SA. */
  saHandle = NO_SA;
  /** Received as ESP and decrypted by the switch's engine (the VM gets plaintext). */
  ipsecDecrypted = false;

  get isGso(): boolean {
    return this.gsoType !== GsoType.NONE;
  }

  /** Any offload request the next hop must honour (checksum or segmentation). */
  get needsOffload(): boolean {
    return this.needsCsum || this.ipv4HeaderCsum || this.gsoType !== GsoType.NONE;
  }

  reset(): void {
    this.needsCsum = false;
    this.csumStart = 0;
    this.csumOffset = 0;
    this.ipv4HeaderCsum = false;
    this.gsoType = GsoType.NONE;
    this.gsoSize = 0;
    this.hdrLen = 0;
    this.gsoEcn = false;
    this.rxCsum = RxCsum.UNKNOWN;
    this.rscSegments = 0;
    this.rscDupAcks = 0;
    this.vlanPresent = false;
    this.vlanTci = 0;
    this.saHandle = NO_SA;
    this.ipsecDecrypted = false;
  }

  clearGso(): void {
    this.gsoType = GsoType.NONE;
    this.gsoSize = 0;
    this.hdrLen = 0;
    this.gsoEcn = false;
  }

  copyFrom(o: OffloadMeta): void {
    this.needsCsum = o.needsCsum;
    this.csumStart = o.csumStart;
    this.csumOffset = o.csumOffset;
    this.ipv4HeaderCsum = o.ipv4HeaderCsum;
    this.gsoType = o.gsoType;
    this.gsoSize = o.gsoSize;
    this.hdrLen = o.hdrLen;
    this.gsoEcn = o.gsoEcn;
    this.rxCsum = o.rxCsum;
    this.rscSegments = o.rscSegments;
    this.rscDupAcks = o.rscDupAcks;
    this.vlanPresent = o.vlanPresent;
    this.vlanTci = o.vlanTci;
    this.saHandle = o.saHandle;
    this.ipsecDecrypted = o.ipsecDecrypted;
  }
}

export function gsoTypeName(t: GsoType): string {
  switch (t) {
    case GsoType.NONE: return 'none';
    case GsoType.TCPV4: return 'tcpv4';
    case GsoType.UDP: return 'ufo';
    case GsoType.TCPV6: return 'tcpv6';
    case GsoType.UDP_L4: return 'udp-l4';
  }
}
