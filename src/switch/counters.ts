// Per-port counters. Every packet a port receives ends in exactly one place:
// forwarded (to at least one destination), dropped for a reason, or waiting
// in the port's offload backlog — `received = forwarded + dropped + pending`
// holds at every instant and the tests check it after every scenario.
// Drops on the way out (egress ACL, MTU, …) are counted on the egress port.

export const DROP_REASONS = [
  // ingress: the frame and its offload metadata
  'malformed',               // shorter than an Ethernet header, or not parseable where it must be
  'vnet-header',             // the backend could not decode the virtio_net_hdr (reason in vnetErrors)
  'offload-bad-headers',     // asks for an offload but the L3/L4 headers do not parse
  'csum-start-mismatch',     // csum_start is not where the transport header is
  'csum-offset-mismatch',    // csum_offset is not the transport protocol's checksum field
  'gso-proto-mismatch',      // GSO type disagrees with the headers (e.g. TCPV4 on IPv6, UDP_L4 on TCP)
  'gso-bad-size',            // gso_size 0 or segments larger than any buffer
  'gso-unsupported',         // UFO (legacy IP-fragmenting UDP offload) is refused
  'legacy-offload',          // offload metadata on a legacy port, which is never offered offloads
  'oversize',                // above the port's MTU without segmentation metadata
  // ingress: policy
  'vlan-not-allowed',        // tagged on an access port, or a VLAN the trunk does not carry
  'spoofed-mac',             // source MAC not allowed on the port
  'spoofed-ip',              // source IP not allowed on the port
  'acl-in',                  // denied by the port's ingress ACL
  'static-mac-conflict',     // source MAC is pinned to another port
  'mac-limit',               // the port has learned its maximum of MACs
  // forwarding
  'no-destination',          // nowhere to send: destination is the ingress port, or nobody else in the VLAN
  'egress-dropped',          // every destination dropped it (reasons on the egress ports)
  'port-down',
  // egress
  'acl-out',                 // denied by the destination's egress ACL
  'mtu-exceeded',            // would exceed the destination's MTU and carries no segmentation metadata
  'gso-exceeds-mtu',         // its segments (gso_size) would not fit the destination's MTU
  'pool-exhausted',          // no buffer for a copy or a segment
  'offload-failed',          // software offload refused the packet (reason in the trace)
  'offload-budget',          // the sending port is over its software-offload CPU budget
  'backlog-full',            // throttled port's backlog is full
  'tx-error',                // the backend failed to send
  'ipsec-no-sa',             // an offloaded SA's packet headed somewhere its uplink is not (never sent in plaintext)
  'ipsec-uploading',         // plaintext of an SA being uploaded to its VM: held back, never sent in the clear
  'ipsec-auth-failed',       // inbound ESP whose ICV did not verify (tampered, wrong key)
  'ipsec-replay',            // inbound ESP with a sequence number seen before or left behind by the window
  'ipsec-malformed',         // inbound ESP too short, bad padding or next header
  'ipsec-selector',          // decrypted inner packet outside its SA's traffic selector (RFC 4301 §5.2)
  'ipsec-fragment',          // an IP fragment of an offloaded transport-mode flow (ESP needs whole datagrams)
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export const Drop = Object.fromEntries(DROP_REASONS.map((r, i) => [r, i])) as { readonly [K in DropReason]: number };

export class PortCounters {
  rxPackets = 0;
  rxBytes = 0;
  /** Received packets that reached at least one destination. */
  forwarded = 0;
  txPackets = 0;
  txBytes = 0;
  /** Drops of packets this port received, by reason index (see DROP_REASONS). */
  readonly rxDrops = new Float64Array(DROP_REASONS.length);
  /** Drops of packets on their way out of this port. */
  readonly txDrops = new Float64Array(DROP_REASONS.length);
  /** virtio_net_hdr decode errors, by reason. */
  readonly vnetErrors = new Map<string, number>();

  // Offload decisions for packets sent out of this port.
  txHardware = 0;
  txPassThrough = 0;
  txSoftware = 0;
  /** Segments this port sent that the switch made. */
  txSegments = 0;
  /** UDP datagrams this port was sent coalesced (URO), and the super-frames they went in. */
  txCoalesced = 0;
  txCoalescedFrames = 0;

  // Software offload work this port's guest caused (charged to the sender).
  swPackets = 0;
  swBytes = 0;
  swCpuNs = 0;
  swSegments = 0;
  swChecksums = 0;
  /** Packets parked because the port was over its budget (throttle mode). */
  throttled = 0;
  /** ESP work the switch did for this VM (encryption of what it sent, decryption of what it got). */
  ipsecPackets = 0;
  ipsecBytes = 0;
  ipsecCpuNs = 0;

  /** Packets waiting in the offload backlog. */
  pending = 0;

  get rxDropped(): number {
    let n = 0;
    for (let i = 0; i < this.rxDrops.length; i++) n += this.rxDrops[i]!;
    return n;
  }

  get txDropped(): number {
    let n = 0;
    for (let i = 0; i < this.txDrops.length; i++) n += this.txDrops[i]!;
    return n;
  }

  /** received = forwarded + dropped + pending */
  get balanced(): boolean {
    return this.rxPackets === this.forwarded + this.rxDropped + this.pending;
  }

  /** Non-zero drop counters by name (allocates: control plane). */
  dropsByReason(which: 'rx' | 'tx'): Record<string, number> {
    const arr = which === 'rx' ? this.rxDrops : this.txDrops;
    const out: Record<string, number> = {};
    for (let i = 0; i < arr.length; i++) if (arr[i]! > 0) out[DROP_REASONS[i]!] = arr[i]!;
    return out;
  }

  snapshot(): Record<string, unknown> {
    return {
      rxPackets: this.rxPackets, rxBytes: this.rxBytes, forwarded: this.forwarded,
      txPackets: this.txPackets, txBytes: this.txBytes,
      rxDrops: this.dropsByReason('rx'), txDrops: this.dropsByReason('tx'),
      vnetErrors: Object.fromEntries(this.vnetErrors),
      offload: {
        hardware: this.txHardware, passThrough: this.txPassThrough, software: this.txSoftware, segments: this.txSegments,
        coalesced: { datagrams: this.txCoalesced, frames: this.txCoalescedFrames },
      },
      charged: { packets: this.swPackets, bytes: this.swBytes, cpuNs: this.swCpuNs, segments: this.swSegments, checksums: this.swChecksums, throttled: this.throttled },
      ipsec: { packets: this.ipsecPackets, bytes: this.ipsecBytes, cpuNs: this.ipsecCpuNs },
      pending: this.pending,
    };
  }
}
