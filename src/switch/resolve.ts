// The per-destination offload decision (DESIGN.md §2, the resolution table):
//
// | destination                                  | can do it? | what happens                                  |
// | external port, feature on in its caps        | yes        | hardware: metadata passed down with the frame |
// | external port, feature off or absent         | no         | software: segment / fill checksums, then send |
// | vNIC that accepts large / partial frames     | yes        | pass-through: the super-frame goes whole      |
// | vNIC without them, legacy port               | no         | software; switch-computed sums marked verified |
//
// Pure: reads the packet's metadata and layout and the destination; writes
// the decision into a reusable Resolution. The reasons are constant strings
// (no allocation) that `trace` shows as "why".

import { GsoType, type OffloadMeta } from '../packet/meta.js';
import { FrameLayout, L3 } from '../wire/frame.js';
import { IpProtocol } from '../wire/ipv4.js';
import type { ChecksumOffload, SegmentationOffload } from '../offload/capabilities.js';
import { segmentCount } from '../offload/segment.js';
import { Drop } from './counters.js';
import type { Port } from './port.js';

export const OffloadMode = {
  /** Nothing was asked for. */
  NONE: 0,
  /** The destination NIC does it: metadata goes down with the frame. */
  HARDWARE: 1,
  /** The destination guest takes the super-frame / partial checksum whole. */
  PASS_THROUGH: 2,
  /** The switch does it (segments and/or checksums). */
  SOFTWARE: 3,
  /** It cannot be delivered validly to this destination. */
  DROP: 4,
} as const;
export type OffloadMode = (typeof OffloadMode)[keyof typeof OffloadMode];
export const OFFLOAD_MODE_NAMES = ['none', 'hardware', 'pass-through', 'software', 'drop'] as const;

export class Resolution {
  mode: OffloadMode = OffloadMode.NONE;
  /** SOFTWARE: split the super-frame. */
  segment = false;
  /** SOFTWARE: leave checksums partial (the destination finishes them) rather than computing them. */
  partial = false;
  /** DROP: reason index (Drop.*). */
  drop = -1;
  why = '';

  set(mode: OffloadMode, segment: boolean, partial: boolean, why: string): void {
    this.mode = mode;
    this.segment = segment;
    this.partial = partial;
    this.drop = -1;
    this.why = why;
  }

  dropWith(reason: number, why: string): void {
    this.mode = OffloadMode.DROP;
    this.segment = false;
    this.partial = false;
    this.drop = reason;
    this.why = why;
  }
}

function checksumFor(c: ChecksumOffload, lay: FrameLayout): boolean {
  const v6 = lay.l3 === L3.IPV6;
  let ok: boolean;
  if (lay.l4Proto === IpProtocol.TCP) ok = v6 ? c.tcp6 : c.tcp4;
  else if (lay.l4Proto === IpProtocol.UDP) ok = v6 ? c.udp6 : c.udp4;
  else return false;
  return ok && headersSupported(c, lay);
}

/** Options/extension headers present in the frame are ones the device handles. */
function headersSupported(c: { ipv4Options: boolean; tcpOptions: boolean; ipv6ExtHeaders: boolean }, lay: FrameLayout): boolean {
  if (lay.l3 === L3.IPV4 && lay.l3HeaderLen > 20 && !c.ipv4Options) return false;
  if (lay.l3 === L3.IPV6 && lay.ipv6ExtCount > 0 && !c.ipv6ExtHeaders) return false;
  if (lay.l4Proto === IpProtocol.TCP && lay.l4HeaderLen > 20 && !c.tcpOptions) return false;
  return true;
}

function segmentationFor(s: SegmentationOffload, lay: FrameLayout, ipLen: number, nseg: number): boolean {
  const v6 = lay.l3 === L3.IPV6;
  return (v6 ? s.v6 : s.v4) && ipLen <= s.maxOffloadSize && nseg >= s.minSegmentCount && headersSupported(s, lay);
}

/**
 * Decide what `dest` gets for a packet with metadata `m` and layout `lay`
 * (frame length `frameLen`, untagged inside the switch).
 */
export function resolveOffload(m: OffloadMeta, lay: FrameLayout, frameLen: number, dest: Port, out: Resolution): void {
  // What the MTU limits: everything after the Ethernet header (and any tag left in the frame).
  const ipLen = frameLen - 14 - 4 * lay.tagCount;
  const external = dest.kind === 'external';

  if (m.gsoType !== GsoType.NONE) {
    const tcp = m.gsoType === GsoType.TCPV4 || m.gsoType === GsoType.TCPV6;
    const v6 = lay.l3 === L3.IPV6;
    const l34 = lay.payloadOff - lay.l3Off;
    if (!external && dest.acceptsLarge(v6)) {
      out.set(OffloadMode.PASS_THROUGH, false, false, 'guest accepts large frames: super-frame delivered whole');
      return;
    }
    if (l34 + m.gsoSize > dest.mtu) {
      out.dropWith(Drop['gso-exceeds-mtu'], 'segments of gso_size would exceed the destination MTU');
      return;
    }
    if (external) {
      const c = dest.deviceCaps;
      const nseg = segmentCount(lay.ipEnd - lay.payloadOff, m.gsoSize);
      const hw = segmentationFor(tcp ? c.lso : c.uso, lay, ipLen, nseg) && checksumFor(c.txChecksum, lay);
      if (hw) {
        out.set(OffloadMode.HARDWARE, false, false, tcp ? 'uplink does TSO: super-frame passed down' : 'uplink does USO: super-frame passed down');
        return;
      }
      if (checksumFor(c.txChecksum, lay)) {
        out.set(OffloadMode.SOFTWARE, true, true, tcp ? 'uplink lacks TSO: segmented in software, checksums by the NIC' : 'uplink lacks USO: segmented in software, checksums by the NIC');
      } else {
        out.set(OffloadMode.SOFTWARE, true, false, 'uplink lacks segmentation and checksum offload: both in software');
      }
      return;
    }
    if (dest.acceptsPartialChecksum()) {
      out.set(OffloadMode.SOFTWARE, true, true, 'guest does not take large frames: segmented in software, checksums left partial');
    } else {
      out.set(OffloadMode.SOFTWARE, true, false, dest.kind === 'legacy'
        ? 'legacy NIC: segmented and checksummed in software'
        : 'guest takes no offloaded frames: segmented and checksummed in software');
    }
    return;
  }

  if (ipLen > dest.mtu) {
    out.dropWith(Drop['mtu-exceeded'], 'frame above the destination MTU and no segmentation metadata');
    return;
  }
  if (!m.needsCsum) {
    out.set(OffloadMode.NONE, false, false, 'no offload requested');
    return;
  }
  if (external) {
    if (checksumFor(dest.deviceCaps.txChecksum, lay)) out.set(OffloadMode.HARDWARE, false, false, 'uplink computes the checksum');
    else out.set(OffloadMode.SOFTWARE, false, false, 'uplink lacks checksum offload: computed in software');
    return;
  }
  if (dest.acceptsPartialChecksum()) {
    out.set(OffloadMode.PASS_THROUGH, false, false, 'guest accepts partial checksums');
  } else {
    out.set(OffloadMode.SOFTWARE, false, false, dest.kind === 'legacy'
      ? 'legacy NIC: checksum computed in software'
      : 'guest takes no partial checksums: computed in software');
  }
}
