// Capabilities ⇄ NDIS_OFFLOAD, the structure a Windows miniport reports its
// task offloads in (and the Hyper-V switch passes to a VM's NIC), as bytes:
// little-endian, natural C alignment (the same on x86 and x64 — the structure
// holds no pointers), ULONG bitfields allocated from bit 0 upwards (MSVC).
//
// Sources
//   [H]  ntddndis.h from the WDK, NDIS 6.87 contract (copy in
//        microsoft/xdp-for-windows, published/wdkdeps/shared/ntddndis.h, commit
//        20d5106ec82d): every structure below, NDIS_OFFLOAD_REVISION_1..7 and
//        NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_n = RTL_SIZEOF_THROUGH_FIELD(
//        NDIS_OFFLOAD, Flags | IPsecV2 | EncapsulatedPacketTaskOffloadGre |
//        EncapsulationTypes | Rfc6877Xlat | UdpSegmentation | UdpSegmentation).
//   [P]  the offsets and bit positions below agree with PDB type dumps of
//        ndis.sys (ntdiff/headers, e.g. Win10 _NDIS_OFFLOAD at 0x70, 0x9c,
//        0xb4 and 0xbc bytes; a Windows 11 24H2 dump adds UdpRsc at 0xd8, size
//        0xdc — a member no revision in [H] covers, so not encoded here).
//   [D]  Microsoft Learn, https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/ntddndis/
//          ns-ntddndis-_ndis_offload                       (members, revisions 1-6 by NDIS version)
//          ns-ntddndis-_ndis_tcp_ip_checksum_offload       (NDIS_OFFLOAD_SUPPORTED 1 / NOT_SUPPORTED 0)
//          ns-ntddndis-_ndis_tcp_large_send_offload_v1 / _v2
//          ns-ntddndis-_ndis_ipsec_offload_v1 / _v2
//          ns-ntddndis-_ndis_tcp_recv_seg_coalesce_offload
//          ns-ntddndis-_ndis_encapsulated_packet_task_offload / _v2
//          ns-ntddndis-_ndis_rfc6877_464xlat_offload
//          ns-ntddndis-_ndis_udp_segmentation_offload
//        and https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/objectheader/ns-objectheader-ndis_object_header
//   [R]  https://learn.microsoft.com/en-us/windows-hardware/drivers/network/offloading-the-segmentation-of-large-tcp-packets
//        ("a NIC that supports the segmentation of large TCP packets must also
//        be able to" checksum packets with IP options and with TCP options) and
//        .../network/udp-segmentation-offload-uso- (the same for USO and IPv4
//        options; without SubMssFinalSegmentSupported every USO packet has
//        Length % MSS == 0).
//
// Layout (offset: field — bits; source)
//   0x00 Header.Type u8 (NDIS_OBJECT_TYPE_OFFLOAD 0xA7), 0x01 Header.Revision u8,
//   0x02 Header.Size u16                                               [H][D objectheader]
//   0x04 Checksum (NDIS_TCP_IP_CHECKSUM_OFFLOAD, 0x20 bytes)            [H][P][D]
//     0x04 IPv4Transmit.Encapsulation u32
//     0x08 IPv4Transmit: IpOptionsSupported 0-1, TcpOptionsSupported 2-3,
//          TcpChecksum 4-5, UdpChecksum 6-7, IpChecksum 8-9
//     0x0c IPv4Receive.Encapsulation, 0x10 IPv4Receive (bits as IPv4Transmit)
//     0x14 IPv6Transmit.Encapsulation
//     0x18 IPv6Transmit: IpExtensionHeadersSupported 0-1, TcpOptionsSupported 2-3,
//          TcpChecksum 4-5, UdpChecksum 6-7
//     0x1c IPv6Receive.Encapsulation, 0x20 IPv6Receive (bits as IPv6Transmit)
//   0x24 LsoV1.IPv4: Encapsulation, 0x28 MaxOffLoadSize, 0x2c MinSegmentCount,
//        0x30 TcpOptions 0-1, IpOptions 2-3                            [H][P][D]
//   0x34 IPsecV1 (0x1c bytes): Supported.{Encapsulation 0x34, AhEspCombined 0x38,
//        TransportTunnelCombined 0x3c, IPv4Options 0x40, Flags 0x44},
//        IPv4AH bits 0x48, IPv4ESP bits 0x4c — written as zeros        [H][P]
//   0x50 LsoV2.IPv4: Encapsulation, 0x54 MaxOffLoadSize, 0x58 MinSegmentCount
//   0x5c LsoV2.IPv6: Encapsulation, 0x60 MaxOffLoadSize, 0x64 MinSegmentCount,
//        0x68 IpExtensionHeadersSupported 0-1, TcpOptionsSupported 2-3 [H][P][D]
//   0x6c Flags u32                          ── REVISION_1 (NDIS 6.0) ends: 0x70 = 112
//   0x70 IPsecV2: Encapsulation u32; BOOLEANs IPv6Supported 0x74, IPv4Options 0x75,
//        IPv6NonIPsecExtensionHeaders 0x76, Ah 0x77, Esp 0x78, AhEspCombined 0x79,
//        Transport 0x7a, Tunnel 0x7b, TransportTunnelCombined 0x7c,
//        LsoSupported 0x7d, ExtendedSequenceNumbers 0x7e; UdpEsp 0x80,
//        AuthenticationAlgorithms 0x84, EncryptionAlgorithms 0x88,
//        SaOffloadCapacity 0x8c                                       [H][P][D]
//                                           ── REVISION_2 (NDIS 6.1) ends: 0x90 = 144
//   0x90 Rsc.IPv4.Enabled u8, 0x91 Rsc.IPv6.Enabled u8                 [H][P][D]
//   0x94 EncapsulatedPacketTaskOffloadGre: bits u32 (Tx 0-3, Rx 4-7, LsoV2 8-11,
//        Rss 12-15, Vmq 16-19, Uso 20-23), 0x98 MaxHeaderSizeSupported — zeros
//                                           ── REVISION_3 (NDIS 6.30) ends: 0x9c = 156
//   0x9c EncapsulatedPacketTaskOffloadVxlan (0x14 bytes): bits, 0xa0 MaxHeaderSize,
//        0xa4 VxlanUDPPortNumber u16, 0xa6 Configurable bit 0, 0xa8 Reserved1,
//        0xac Reserved2 — zeros
//   0xb0 EncapsulationTypes u8 — zero       ── REVISION_4 (NDIS 6.50) ends: 0xb1 = 177
//   0xb4 Rfc6877Xlat.XlatOffload u32 (NOT_SUPPORTED 0), 0xb8 Flags — zeros
//                                           ── REVISION_5 (NDIS 6.70) ends: 0xbc = 188
//   0xbc UdpSegmentation.IPv4: Encapsulation, 0xc0 MaxOffLoadSize,
//        0xc4 MinSegmentCount 0-5, SubMssFinalSegmentSupported 6 (NDIS 6.84)
//   0xc8 UdpSegmentation.IPv6: Encapsulation, 0xcc MaxOffLoadSize,
//        0xd0 MinSegmentCount 0-5, SubMssFinalSegmentSupported 6,
//        0xd4 IpExtensionHeadersSupported 0-1                          [H][P][D]
//                                           ── REVISION_6 (NDIS 6.83) ends: 0xd8 = 216
//                                           ── REVISION_7 (NDIS 6.85) ends: 0xd8 = 216
//   (REVISION_7 changes no size: NDIS 6.85 added UsoSupported to the
//   encapsulated-packet bitfields and SubMssFinalSegmentSupported is 6.84.)
//
// Mapping to the capability model
// - Encapsulation NDIS_ENCAPSULATION_IEEE_802_3 (2) marks an offload
//   supported; a sub-structure without it counts as unsupported whatever its
//   other fields say, and is written as zeros. Option flags therefore only
//   exist next to a supported protocol; tcpOptions (one flag in the model)
//   goes to every supported place NDIS has one and reads back as their AND.
// - LSO: LsoV2, plus LsoV1 for IPv4 (recommended by [D], and the only place
//   for IPv4 option bits). LSOv2 IPv4 implies IP and TCP options [R], so an
//   IPv4 LSO without both is written as LsoV1 only. NDIS sizes are per IP
//   version; the model has one: written to both, read as the stricter.
//   MaxOffLoadSize counts user data bytes in NDIS and IP packet bytes in the
//   model; it is copied as is.
// - USO (revision 6+): the model's USO is Linux's, whose last segment may be
//   short; NDIS says that with SubMssFinalSegmentSupported (NDIS 6.84, so
//   revision 7). Revision 6 gets whole-MSS USO (a subset) and reads back as
//   none; read bytes without the bit give no USO either. MinSegmentCount is
//   6 bits: a larger minimum cannot be said, and such USO is not written.
//   IPv4 options are implied [R].
// - IPsec: IPsecV2 (revision 2+) with ESP, AES-GCM in both the
//   authentication and encryption masks (IPSEC_OFFLOAD_V2_*_AES_GCM_128 0x08,
//   _256 0x20), SaOffloadCapacity = maxSa. IPsecV2 always covers IPv4
//   (IPv6Supported adds IPv6), so an IPv6-only IPsec capability cannot be
//   written. IPsecV1 (DES/3DES/MD5/SHA-1) is not used.
// - RSC (revision 3+): Rsc.IPv4/IPv6.Enabled. NDIS has no "accepts partial
//   checksums" bit; coalesced frames come with it, so rxPartialChecksum
//   reads back as rsc.
// - VLAN insertion/stripping is not part of NDIS_OFFLOAD (it is 802.1Q
//   out-of-band data and a MAC option), so it reads back as none.
// Everything else is written as zeros (not supported).

import {
  IPSEC_ALGORITHMS, ipsecNone, noOffloads, normalizeCapabilities, segmentationNone,
  type ChecksumOffload, type IpsecAlgorithm, type OffloadCapabilities, type SegmentationOffload,
} from '../capabilities.js';

export const NDIS_OBJECT_TYPE_OFFLOAD = 0xa7;
export const NDIS_ENCAPSULATION_NOT_SUPPORTED = 0;
export const NDIS_ENCAPSULATION_IEEE_802_3 = 2;
export const NDIS_OFFLOAD_NOT_SUPPORTED = 0;
export const NDIS_OFFLOAD_SUPPORTED = 1;

export const IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128 = 0x08;
export const IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256 = 0x20;
export const IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128 = 0x08;
export const IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256 = 0x20;

/** NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_n, index n. */
export const NDIS_SIZEOF_NDIS_OFFLOAD: readonly number[] = [0, 112, 144, 156, 177, 188, 216, 216];
export const NDIS_OFFLOAD_REVISION_LATEST = 7;
/** The NDIS version each revision came with [D]/[H]. */
export const NDIS_OFFLOAD_REVISION_NDIS: readonly string[] = ['', '6.0', '6.1', '6.30', '6.50', '6.70', '6.83', '6.85'];

/** Byte offsets of the fields this file reads or writes (see the layout above). */
export const NdisOffset = {
  headerType: 0x00,
  headerRevision: 0x01,
  headerSize: 0x02,
  ipv4TxEncapsulation: 0x04,
  ipv4TxBits: 0x08,
  ipv4RxEncapsulation: 0x0c,
  ipv4RxBits: 0x10,
  ipv6TxEncapsulation: 0x14,
  ipv6TxBits: 0x18,
  ipv6RxEncapsulation: 0x1c,
  ipv6RxBits: 0x20,
  lsoV1Encapsulation: 0x24,
  lsoV1MaxOffLoadSize: 0x28,
  lsoV1MinSegmentCount: 0x2c,
  lsoV1Bits: 0x30,
  ipsecV1: 0x34,
  lsoV2Ipv4Encapsulation: 0x50,
  lsoV2Ipv4MaxOffLoadSize: 0x54,
  lsoV2Ipv4MinSegmentCount: 0x58,
  lsoV2Ipv6Encapsulation: 0x5c,
  lsoV2Ipv6MaxOffLoadSize: 0x60,
  lsoV2Ipv6MinSegmentCount: 0x64,
  lsoV2Ipv6Bits: 0x68,
  flags: 0x6c,
  ipsecV2Encapsulation: 0x70,
  ipsecV2Ipv6Supported: 0x74,
  ipsecV2Ipv4Options: 0x75,
  ipsecV2Ipv6NonIpsecExtensionHeaders: 0x76,
  ipsecV2Ah: 0x77,
  ipsecV2Esp: 0x78,
  ipsecV2AhEspCombined: 0x79,
  ipsecV2Transport: 0x7a,
  ipsecV2Tunnel: 0x7b,
  ipsecV2TransportTunnelCombined: 0x7c,
  ipsecV2LsoSupported: 0x7d,
  ipsecV2ExtendedSequenceNumbers: 0x7e,
  ipsecV2UdpEsp: 0x80,
  ipsecV2AuthenticationAlgorithms: 0x84,
  ipsecV2EncryptionAlgorithms: 0x88,
  ipsecV2SaOffloadCapacity: 0x8c,
  rscIpv4Enabled: 0x90,
  rscIpv6Enabled: 0x91,
  encapsulatedGre: 0x94,
  encapsulatedVxlan: 0x9c,
  encapsulationTypes: 0xb0,
  rfc6877Xlat: 0xb4,
  usoIpv4Encapsulation: 0xbc,
  usoIpv4MaxOffLoadSize: 0xc0,
  usoIpv4Bits: 0xc4,
  usoIpv6Encapsulation: 0xc8,
  usoIpv6MaxOffLoadSize: 0xcc,
  usoIpv6Bits: 0xd0,
  usoIpv6Bits2: 0xd4,
} as const;

// bit positions of the 2-bit fields (value NDIS_OFFLOAD_SUPPORTED = 1)
const CK_IP_OPTIONS = 0;      // IPv4: IpOptionsSupported; IPv6: IpExtensionHeadersSupported
const CK_TCP_OPTIONS = 2;
const CK_TCP = 4;
const CK_UDP = 6;
const CK_IP = 8;              // IPv4 only
const LSO1_TCP_OPTIONS = 0;
const LSO1_IP_OPTIONS = 2;
const LSO2_EXT_HEADERS = 0;
const LSO2_TCP_OPTIONS = 2;
const USO_MIN_SEGMENTS_MASK = 0x3f;
const USO_SUB_MSS = 1 << 6;
const USO_EXT_HEADERS = 0;
const U32_MAX = 0xffffffff;
const USO_MIN_SEGMENTS_MAX = 63;

export type NdisError =
  | 'truncated'     // fewer bytes than the header, or than Header.Size says
  | 'bad-type'      // Header.Type is not NDIS_OBJECT_TYPE_OFFLOAD
  | 'bad-revision'  // Header.Revision 0
  | 'bad-size'      // Header.Size below NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_n for the revision
  | 'bad-field';    // a 2-bit support field holds 2 or 3 (only 0 and 1 are defined)

export type NdisDecoded =
  | { ok: true; revision: number; size: number; caps: OffloadCapabilities }
  | { ok: false; error: NdisError; detail: string };

// --- encoding -------------------------------------------------------------------

function u32(x: number): number {
  if (!Number.isFinite(x) || x <= 0) return 0;
  return x >= U32_MAX ? U32_MAX : Math.floor(x);
}

/** A minimum segment count as a ULONG, or -1 when it does not fit `max` (rounded up: never a smaller minimum). */
function minCount(x: number, max: number): number {
  if (Number.isNaN(x) || x <= 0) return 0;
  const v = Math.ceil(x);
  return v > max ? -1 : v;
}

function support(b: boolean): number {
  return b ? NDIS_OFFLOAD_SUPPORTED : NDIS_OFFLOAD_NOT_SUPPORTED;
}

function writeChecksum(dv: DataView, c: ChecksumOffload, encOff4: number, encOff6: number): void {
  if (c.ipv4Header || c.tcp4 || c.udp4) {
    dv.setUint32(encOff4, NDIS_ENCAPSULATION_IEEE_802_3, true);
    dv.setUint32(encOff4 + 4,
      support(c.ipv4Options) << CK_IP_OPTIONS | support(c.tcpOptions) << CK_TCP_OPTIONS |
      support(c.tcp4) << CK_TCP | support(c.udp4) << CK_UDP | support(c.ipv4Header) << CK_IP, true);
  }
  if (c.tcp6 || c.udp6) {
    dv.setUint32(encOff6, NDIS_ENCAPSULATION_IEEE_802_3, true);
    dv.setUint32(encOff6 + 4,
      support(c.ipv6ExtHeaders) << CK_IP_OPTIONS | support(c.tcpOptions) << CK_TCP_OPTIONS |
      support(c.tcp6) << CK_TCP | support(c.udp6) << CK_UDP, true);
  }
}

function writeLso(dv: DataView, s: SegmentationOffload): void {
  const min = minCount(s.minSegmentCount, U32_MAX);
  if (min < 0 || (!s.v4 && !s.v6)) return;
  const max = u32(s.maxOffloadSize);
  const O = NdisOffset;
  if (s.v4) {
    dv.setUint32(O.lsoV1Encapsulation, NDIS_ENCAPSULATION_IEEE_802_3, true);
    // LSOv1's MaxOffLoadSize "cannot exceed 64K bytes" [D]
    dv.setUint32(O.lsoV1MaxOffLoadSize, Math.min(max, 65536), true);
    dv.setUint32(O.lsoV1MinSegmentCount, min, true);
    dv.setUint32(O.lsoV1Bits, support(s.tcpOptions) << LSO1_TCP_OPTIONS | support(s.ipv4Options) << LSO1_IP_OPTIONS, true);
    if (s.ipv4Options && s.tcpOptions) {
      dv.setUint32(O.lsoV2Ipv4Encapsulation, NDIS_ENCAPSULATION_IEEE_802_3, true);
      dv.setUint32(O.lsoV2Ipv4MaxOffLoadSize, max, true);
      dv.setUint32(O.lsoV2Ipv4MinSegmentCount, min, true);
    }
  }
  if (s.v6) {
    dv.setUint32(O.lsoV2Ipv6Encapsulation, NDIS_ENCAPSULATION_IEEE_802_3, true);
    dv.setUint32(O.lsoV2Ipv6MaxOffLoadSize, max, true);
    dv.setUint32(O.lsoV2Ipv6MinSegmentCount, min, true);
    dv.setUint32(O.lsoV2Ipv6Bits, support(s.ipv6ExtHeaders) << LSO2_EXT_HEADERS | support(s.tcpOptions) << LSO2_TCP_OPTIONS, true);
  }
}

function writeUso(dv: DataView, s: SegmentationOffload, revision: number): void {
  if (!s.v4 && !s.v6) return;
  const min = minCount(s.minSegmentCount, USO_MIN_SEGMENTS_MAX);
  if (min < 0) return;
  const max = u32(s.maxOffloadSize);
  // A short last segment (Linux USO) needs SubMssFinalSegmentSupported, NDIS
  // 6.84+; revision 6 can only offer whole-MSS USO — less than the model's
  // USO, so still no over-promise (and it reads back as no USO).
  const bits = min | (revision >= 7 ? USO_SUB_MSS : 0);
  const O = NdisOffset;
  if (s.v4 && s.ipv4Options) {
    dv.setUint32(O.usoIpv4Encapsulation, NDIS_ENCAPSULATION_IEEE_802_3, true);
    dv.setUint32(O.usoIpv4MaxOffLoadSize, max, true);
    dv.setUint32(O.usoIpv4Bits, bits, true);
  }
  if (s.v6) {
    dv.setUint32(O.usoIpv6Encapsulation, NDIS_ENCAPSULATION_IEEE_802_3, true);
    dv.setUint32(O.usoIpv6MaxOffLoadSize, max, true);
    dv.setUint32(O.usoIpv6Bits, bits, true);
    dv.setUint32(O.usoIpv6Bits2, support(s.ipv6ExtHeaders) << USO_EXT_HEADERS, true);
  }
}

const IPSEC_MASK: Record<IpsecAlgorithm, { auth: number; enc: number }> = {
  'aes-gcm-128': { auth: IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_128, enc: IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128 },
  'aes-gcm-256': { auth: IPSEC_OFFLOAD_V2_AUTHENTICATION_AES_GCM_256, enc: IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_256 },
};

function writeIpsec(dv: DataView, c: OffloadCapabilities): void {
  const i = c.ipsec;
  if (!i.enabled || !i.v4) return;   // IPsecV2 always includes IPv4
  const O = NdisOffset;
  let auth = 0;
  let enc = 0;
  for (const a of i.algorithms) {
    auth |= IPSEC_MASK[a].auth;
    enc |= IPSEC_MASK[a].enc;
  }
  dv.setUint32(O.ipsecV2Encapsulation, NDIS_ENCAPSULATION_IEEE_802_3, true);
  dv.setUint8(O.ipsecV2Ipv6Supported, i.v6 ? 1 : 0);
  dv.setUint8(O.ipsecV2Esp, 1);
  dv.setUint8(O.ipsecV2Transport, i.transport ? 1 : 0);
  dv.setUint8(O.ipsecV2Tunnel, i.tunnel ? 1 : 0);
  dv.setUint32(O.ipsecV2AuthenticationAlgorithms, auth, true);
  dv.setUint32(O.ipsecV2EncryptionAlgorithms, enc, true);
  dv.setUint32(O.ipsecV2SaOffloadCapacity, u32(i.maxSa), true);
}

/**
 * `caps` as an NDIS_OFFLOAD of `revision` (1..7), Header.Size =
 * NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_n bytes long. Parts a revision does not
 * have, and parts NDIS cannot say (see the mapping above), are left out —
 * what the bytes promise is never more than `caps`.
 */
export function encodeNdisOffload(caps: OffloadCapabilities, revision: number = NDIS_OFFLOAD_REVISION_LATEST): Uint8Array {
  if (!Number.isInteger(revision) || revision < 1 || revision > NDIS_OFFLOAD_REVISION_LATEST) {
    throw new RangeError(`NDIS_OFFLOAD revision ${revision} is not one of 1..${NDIS_OFFLOAD_REVISION_LATEST}`);
  }
  const c = normalizeCapabilities(caps);
  const size = NDIS_SIZEOF_NDIS_OFFLOAD[revision]!;
  const bytes = new Uint8Array(size);
  const dv = new DataView(bytes.buffer);
  dv.setUint8(NdisOffset.headerType, NDIS_OBJECT_TYPE_OFFLOAD);
  dv.setUint8(NdisOffset.headerRevision, revision);
  dv.setUint16(NdisOffset.headerSize, size, true);
  writeChecksum(dv, c.txChecksum, NdisOffset.ipv4TxEncapsulation, NdisOffset.ipv6TxEncapsulation);
  writeChecksum(dv, c.rxChecksum, NdisOffset.ipv4RxEncapsulation, NdisOffset.ipv6RxEncapsulation);
  writeLso(dv, c.lso);
  if (revision >= 2) writeIpsec(dv, c);
  if (revision >= 3) {
    dv.setUint8(NdisOffset.rscIpv4Enabled, c.rsc.v4 ? 1 : 0);
    dv.setUint8(NdisOffset.rscIpv6Enabled, c.rsc.v6 ? 1 : 0);
  }
  if (revision >= 6) writeUso(dv, c.uso, revision);
  return bytes;
}

// --- decoding -------------------------------------------------------------------

/**
 * Reads only inside [0, size) of a buffer already checked to hold `size`
 * bytes. A 2-bit support field holding an undefined value is remembered
 * (the first one) and read as "not supported".
 */
class Reader {
  private readonly dv: DataView;
  bad: string | null = null;
  constructor(bytes: Uint8Array, readonly size: number) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, size);
  }
  u8(off: number): number {
    return this.dv.getUint8(off);
  }
  u32(off: number): number {
    return this.dv.getUint32(off, true);
  }
  supported(off: number): boolean {
    return (this.u32(off) & NDIS_ENCAPSULATION_IEEE_802_3) !== 0;
  }
  /** A 2-bit NDIS_OFFLOAD_SUPPORTED / NOT_SUPPORTED field. */
  flag(off: number, shift: number, name: string): boolean {
    const v = (this.u32(off) >>> shift) & 3;
    if (v > 1) {
      this.bad ??= `${name} = ${v}`;
      return false;
    }
    return v === 1;
  }
  bool(off: number): boolean {
    return this.u8(off) !== 0;
  }
}

function readChecksum(r: Reader, encOff4: number, encOff6: number, dir: string): ChecksumOffload {
  const b4 = encOff4 + 4;
  const b6 = encOff6 + 4;
  const on4 = r.supported(encOff4);
  const on6 = r.supported(encOff6);
  const tcpOpt4 = on4 && r.flag(b4, CK_TCP_OPTIONS, `IPv4${dir}.TcpOptionsSupported`);
  const tcpOpt6 = on6 && r.flag(b6, CK_TCP_OPTIONS, `IPv6${dir}.TcpOptionsSupported`);
  const c: ChecksumOffload = {
    ipv4Header: on4 && r.flag(b4, CK_IP, `IPv4${dir}.IpChecksum`),
    tcp4: on4 && r.flag(b4, CK_TCP, `IPv4${dir}.TcpChecksum`),
    udp4: on4 && r.flag(b4, CK_UDP, `IPv4${dir}.UdpChecksum`),
    tcp6: on6 && r.flag(b6, CK_TCP, `IPv6${dir}.TcpChecksum`),
    udp6: on6 && r.flag(b6, CK_UDP, `IPv6${dir}.UdpChecksum`),
    ipv4Options: on4 && r.flag(b4, CK_IP_OPTIONS, `IPv4${dir}.IpOptionsSupported`),
    tcpOptions: (on4 || on6) && (!on4 || tcpOpt4) && (!on6 || tcpOpt6),
    ipv6ExtHeaders: on6 && r.flag(b6, CK_IP_OPTIONS, `IPv6${dir}.IpExtensionHeadersSupported`),
  };
  return c;
}

function readLso(r: Reader): SegmentationOffload {
  const O = NdisOffset;
  const v1 = r.supported(O.lsoV1Encapsulation);
  const v2four = r.supported(O.lsoV2Ipv4Encapsulation);
  const v6 = r.supported(O.lsoV2Ipv6Encapsulation);
  const v1TcpOpt = v1 && r.flag(O.lsoV1Bits, LSO1_TCP_OPTIONS, 'LsoV1.IPv4.TcpOptions');
  const v1IpOpt = v1 && r.flag(O.lsoV1Bits, LSO1_IP_OPTIONS, 'LsoV1.IPv4.IpOptions');
  const v6Ext = v6 && r.flag(O.lsoV2Ipv6Bits, LSO2_EXT_HEADERS, 'LsoV2.IPv6.IpExtensionHeadersSupported');
  const v6TcpOpt = v6 && r.flag(O.lsoV2Ipv6Bits, LSO2_TCP_OPTIONS, 'LsoV2.IPv6.TcpOptionsSupported');
  const v4 = v2four || v1;
  if (!v4 && !v6) return segmentationNone();
  // LSOv2 IPv4 implies IP and TCP options [R]; LSOv1 says them explicitly
  const ipv4Options = v4 && (v2four || v1IpOpt);
  const tcp4 = v2four || v1TcpOpt;
  const sizes: number[] = [];
  const mins: number[] = [];
  if (v2four) {
    sizes.push(r.u32(O.lsoV2Ipv4MaxOffLoadSize));
    mins.push(r.u32(O.lsoV2Ipv4MinSegmentCount));
  } else if (v1) {
    sizes.push(r.u32(O.lsoV1MaxOffLoadSize));
    mins.push(r.u32(O.lsoV1MinSegmentCount));
  }
  if (v6) {
    sizes.push(r.u32(O.lsoV2Ipv6MaxOffLoadSize));
    mins.push(r.u32(O.lsoV2Ipv6MinSegmentCount));
  }
  return {
    v4, v6,
    maxOffloadSize: Math.min(...sizes),
    minSegmentCount: Math.max(...mins),
    ipv4Options,
    tcpOptions: (!v4 || tcp4) && (!v6 || v6TcpOpt),
    ipv6ExtHeaders: v6 && v6Ext,
  };
}

function readUso(r: Reader): SegmentationOffload {
  const O = NdisOffset;
  const b4 = r.u32(O.usoIpv4Bits);
  const b6 = r.u32(O.usoIpv6Bits);
  // without SubMssFinalSegmentSupported only whole-MSS datagrams may be sent [R]: not the model's USO
  const v4 = r.supported(O.usoIpv4Encapsulation) && (b4 & USO_SUB_MSS) !== 0;
  const v6 = r.supported(O.usoIpv6Encapsulation) && (b6 & USO_SUB_MSS) !== 0;
  const ext = v6 && r.flag(O.usoIpv6Bits2, USO_EXT_HEADERS, 'UdpSegmentation.IPv6.IpExtensionHeadersSupported');
  if (!v4 && !v6) return segmentationNone();
  const sizes: number[] = [];
  const mins: number[] = [];
  if (v4) {
    sizes.push(r.u32(O.usoIpv4MaxOffLoadSize));
    mins.push(b4 & USO_MIN_SEGMENTS_MASK);
  }
  if (v6) {
    sizes.push(r.u32(O.usoIpv6MaxOffLoadSize));
    mins.push(b6 & USO_MIN_SEGMENTS_MASK);
  }
  return {
    v4, v6,
    maxOffloadSize: Math.min(...sizes),
    minSegmentCount: Math.max(...mins),
    ipv4Options: v4,            // implied by USO [R]
    tcpOptions: false,
    ipv6ExtHeaders: v6 && ext,
  };
}

function readIpsec(r: Reader): OffloadCapabilities['ipsec'] {
  const O = NdisOffset;
  if (!r.supported(O.ipsecV2Encapsulation) || !r.bool(O.ipsecV2Esp)) return ipsecNone();
  const auth = r.u32(O.ipsecV2AuthenticationAlgorithms);
  const enc = r.u32(O.ipsecV2EncryptionAlgorithms);
  return {
    enabled: true,
    algorithms: IPSEC_ALGORITHMS.filter((a) => (auth & IPSEC_MASK[a].auth) !== 0 && (enc & IPSEC_MASK[a].enc) !== 0),
    maxSa: r.u32(O.ipsecV2SaOffloadCapacity),
    transport: r.bool(O.ipsecV2Transport),
    tunnel: r.bool(O.ipsecV2Tunnel),
    v4: true,
    v6: r.bool(O.ipsecV2Ipv6Supported),
  };
}

/**
 * An NDIS_OFFLOAD's capabilities. The header is checked first (type, a
 * revision ≥ 1, Header.Size at least NDIS_SIZEOF for that revision, and no
 * more than the bytes given); a revision above the latest known is read as
 * the latest (NDIS structures only grow at the end). Bytes past Header.Size
 * are ignored. Errors are values; nothing is read outside the given bytes.
 */
export function decodeNdisOffload(bytes: Uint8Array): NdisDecoded {
  if (bytes.length < 4) return { ok: false, error: 'truncated', detail: `${bytes.length} bytes, the header needs 4` };
  const type = bytes[0]!;
  const revision = bytes[1]!;
  const size = bytes[2]! | bytes[3]! << 8;
  if (type !== NDIS_OBJECT_TYPE_OFFLOAD) {
    return { ok: false, error: 'bad-type', detail: `Header.Type 0x${type.toString(16)}, expected NDIS_OBJECT_TYPE_OFFLOAD (0xa7)` };
  }
  if (revision < 1) return { ok: false, error: 'bad-revision', detail: 'Header.Revision 0' };
  const known = Math.min(revision, NDIS_OFFLOAD_REVISION_LATEST);
  const need = NDIS_SIZEOF_NDIS_OFFLOAD[known]!;
  if (size < need) {
    return { ok: false, error: 'bad-size', detail: `Header.Size ${size} < NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_${known} (${need})` };
  }
  if (bytes.length < size) return { ok: false, error: 'truncated', detail: `${bytes.length} bytes, Header.Size says ${size}` };
  const r = new Reader(bytes, need);
  const c = noOffloads();
  c.txChecksum = readChecksum(r, NdisOffset.ipv4TxEncapsulation, NdisOffset.ipv6TxEncapsulation, 'Transmit');
  c.rxChecksum = readChecksum(r, NdisOffset.ipv4RxEncapsulation, NdisOffset.ipv6RxEncapsulation, 'Receive');
  c.lso = readLso(r);
  if (known >= 2) c.ipsec = readIpsec(r);
  if (known >= 3) {
    c.rsc = { v4: r.bool(NdisOffset.rscIpv4Enabled), v6: r.bool(NdisOffset.rscIpv6Enabled) };
    c.rxPartialChecksum = c.rsc.v4 || c.rsc.v6;
  }
  if (known >= 6) c.uso = readUso(r);
  if (r.bad !== null) return { ok: false, error: 'bad-field', detail: r.bad };
  return { ok: true, revision, size, caps: normalizeCapabilities(c) };
}

/** A readable summary of NDIS_OFFLOAD bytes (for `vswitch caps`); null when they do not decode. */
export function summarizeNdisOffload(bytes: Uint8Array): Record<string, unknown> | null {
  const d = decodeNdisOffload(bytes);
  if (!d.ok) return null;
  const r = new Reader(bytes, NDIS_SIZEOF_NDIS_OFFLOAD[Math.min(d.revision, NDIS_OFFLOAD_REVISION_LATEST)]!);
  const O = NdisOffset;
  const hex = (x: number): string => `0x${x.toString(16).padStart(8, '0')}`;
  const out: Record<string, unknown> = {
    revision: d.revision,
    ndis: NDIS_OFFLOAD_REVISION_NDIS[Math.min(d.revision, NDIS_OFFLOAD_REVISION_LATEST)],
    size: d.size,
    'Checksum.IPv4Transmit': [hex(r.u32(O.ipv4TxEncapsulation)), hex(r.u32(O.ipv4TxBits))],
    'Checksum.IPv4Receive': [hex(r.u32(O.ipv4RxEncapsulation)), hex(r.u32(O.ipv4RxBits))],
    'Checksum.IPv6Transmit': [hex(r.u32(O.ipv6TxEncapsulation)), hex(r.u32(O.ipv6TxBits))],
    'Checksum.IPv6Receive': [hex(r.u32(O.ipv6RxEncapsulation)), hex(r.u32(O.ipv6RxBits))],
    'LsoV1.IPv4': { encapsulation: r.u32(O.lsoV1Encapsulation), maxOffLoadSize: r.u32(O.lsoV1MaxOffLoadSize), minSegmentCount: r.u32(O.lsoV1MinSegmentCount) },
    'LsoV2.IPv4': { encapsulation: r.u32(O.lsoV2Ipv4Encapsulation), maxOffLoadSize: r.u32(O.lsoV2Ipv4MaxOffLoadSize), minSegmentCount: r.u32(O.lsoV2Ipv4MinSegmentCount) },
    'LsoV2.IPv6': { encapsulation: r.u32(O.lsoV2Ipv6Encapsulation), maxOffLoadSize: r.u32(O.lsoV2Ipv6MaxOffLoadSize), minSegmentCount: r.u32(O.lsoV2Ipv6MinSegmentCount) },
  };
  if (d.revision >= 2) {
    out['IPsecV2'] = {
      encapsulation: r.u32(O.ipsecV2Encapsulation), esp: r.bool(O.ipsecV2Esp), ipv6: r.bool(O.ipsecV2Ipv6Supported),
      transport: r.bool(O.ipsecV2Transport), tunnel: r.bool(O.ipsecV2Tunnel),
      authenticationAlgorithms: hex(r.u32(O.ipsecV2AuthenticationAlgorithms)),
      encryptionAlgorithms: hex(r.u32(O.ipsecV2EncryptionAlgorithms)), saOffloadCapacity: r.u32(O.ipsecV2SaOffloadCapacity),
    };
  }
  if (d.revision >= 3) out['Rsc'] = { ipv4: r.bool(O.rscIpv4Enabled), ipv6: r.bool(O.rscIpv6Enabled) };
  if (d.revision >= 6) {
    out['UdpSegmentation.IPv4'] = { encapsulation: r.u32(O.usoIpv4Encapsulation), maxOffLoadSize: r.u32(O.usoIpv4MaxOffLoadSize), bits: hex(r.u32(O.usoIpv4Bits)) };
    out['UdpSegmentation.IPv6'] = { encapsulation: r.u32(O.usoIpv6Encapsulation), maxOffLoadSize: r.u32(O.usoIpv6MaxOffLoadSize), bits: hex(r.u32(O.usoIpv6Bits)) };
  }
  return out;
}
