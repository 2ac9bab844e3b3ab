// Port policy: ordered ACLs on L2/L3/L4 fields (per port, per direction) and
// port security (which source MACs and IP addresses a port may use).
// Matching reads the frame in place through its FrameLayout; nothing allocates.

import { get16, getMac, getMacLo, ipv4FromString, ipv6FromString } from '../wire/bytes.js';
import { EtherType } from '../wire/ethernet.js';
import { FrameLayout, L3 } from '../wire/frame.js';
import { IpProtocol } from '../wire/ipv4.js';

export interface Cidr {
  version: 4 | 6;
  bytes: Uint8Array;
  prefix: number;
}

/** Parses "198.18.0.0/15", "2001:db8::/32" or a bare address (full-length prefix); null if malformed. */
export function parseCidr(text: string): Cidr | null {
  const [addr, len, ...rest] = text.trim().split('/');
  if (addr === undefined || rest.length > 0) return null;
  if (len !== undefined && !/^\d{1,3}$/.test(len)) return null;
  const v4 = ipv4FromString(addr);
  if (v4 !== null) {
    const prefix = len === undefined ? 32 : Number(len);
    if (prefix > 32) return null;
    return { version: 4, bytes: new Uint8Array([v4 >>> 24, (v4 >>> 16) & 255, (v4 >>> 8) & 255, v4 & 255]), prefix };
  }
  const v6 = ipv6FromString(addr);
  if (v6 !== null) {
    const prefix = len === undefined ? 128 : Number(len);
    if (prefix > 128) return null;
    return { version: 6, bytes: v6, prefix };
  }
  return null;
}

/** Whether the address at buf[off..] (4 or 16 bytes per the CIDR's version) is inside it. */
export function cidrContains(c: Cidr, buf: Uint8Array, off: number): boolean {
  const full = c.prefix >>> 3;
  for (let i = 0; i < full; i++) if (buf[off + i] !== c.bytes[i]) return false;
  const bits = c.prefix & 7;
  if (bits === 0) return true;
  const mask = (0xff << (8 - bits)) & 0xff;
  return (buf[off + full]! & mask) === (c.bytes[full]! & mask);
}

export type AclAction = 'allow' | 'deny';

export interface AclRule {
  action: AclAction;
  srcMac?: number;
  dstMac?: number;
  etherType?: number;
  vlan?: number;
  src?: Cidr;
  dst?: Cidr;
  /** IP protocol number (after IPv6 extension headers). */
  protocol?: number;
  /** Inclusive ranges. */
  srcPort?: readonly [number, number];
  dstPort?: readonly [number, number];
}

export interface Acl {
  rules: AclRule[];
  defaultAction: AclAction;
}

function portInRange(r: readonly [number, number] | undefined, p: number): boolean {
  return r === undefined || (p >= r[0] && p <= r[1]);
}

function addrMatches(c: Cidr | undefined, lay: FrameLayout, buf: Uint8Array, which: 'src' | 'dst'): boolean {
  if (c === undefined) return true;
  if (lay.l3 === L3.IPV4) {
    return c.version === 4 && cidrContains(c, buf, lay.l3Off + (which === 'src' ? 12 : 16));
  }
  if (lay.l3 === L3.IPV6) {
    return c.version === 6 && cidrContains(c, buf, lay.l3Off + (which === 'src' ? 8 : 24));
  }
  return false;
}

function ruleMatches(r: AclRule, buf: Uint8Array, lay: FrameLayout, vlan: number): boolean {
  if (r.vlan !== undefined && r.vlan !== vlan) return false;
  if (r.dstMac !== undefined && getMac(buf, lay.off) !== r.dstMac) return false;
  if (r.srcMac !== undefined && getMac(buf, lay.off + 6) !== r.srcMac) return false;
  if (r.etherType !== undefined && lay.etherType !== r.etherType) return false;
  if (!addrMatches(r.src, lay, buf, 'src') || !addrMatches(r.dst, lay, buf, 'dst')) return false;
  if (r.protocol !== undefined && lay.l4Proto !== r.protocol) return false;
  if (r.srcPort !== undefined || r.dstPort !== undefined) {
    const hasPorts = (lay.l4Proto === IpProtocol.TCP || lay.l4Proto === IpProtocol.UDP) && lay.l4HeaderLen > 0;
    if (!hasPorts) return false;
    if (!portInRange(r.srcPort, get16(buf, lay.l4Off)) || !portInRange(r.dstPort, get16(buf, lay.l4Off + 2))) return false;
  }
  return true;
}

/** Index of the first rule matching the frame, or -1 (the default action applies). */
export function aclMatch(acl: Acl, buf: Uint8Array, lay: FrameLayout, vlan: number): number {
  const rules = acl.rules;
  for (let i = 0; i < rules.length; i++) if (ruleMatches(rules[i]!, buf, lay, vlan)) return i;
  return -1;
}

/** Evaluate `acl` for the frame; true when allowed. First match wins; no ACL allows everything. */
export function aclAllows(acl: Acl | undefined, buf: Uint8Array, lay: FrameLayout, vlan: number): boolean {
  if (acl === undefined) return true;
  const i = aclMatch(acl, buf, lay, vlan);
  return (i >= 0 ? acl.rules[i]!.action : acl.defaultAction) === 'allow';
}

export interface PortSecurity {
  /** Source MACs the port may send from (empty/undefined: any). */
  allowedMacs?: readonly number[];
  /** Source addresses the port may use (IPv4 source, ARP sender, IPv6 source); undefined: any. */
  allowedIps?: readonly Cidr[];
}

export type SecurityVerdict = 'ok' | 'spoofed-mac' | 'spoofed-ip';

function ipAllowed(list: readonly Cidr[], version: 4 | 6, buf: Uint8Array, off: number): boolean {
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    if (c.version === version && cidrContains(c, buf, off)) return true;
  }
  return false;
}

function isUnspecifiedOrLinkLocalV6(buf: Uint8Array, off: number): boolean {
  if (buf[off] === 0xfe && (buf[off + 1]! & 0xc0) === 0x80) return true; // fe80::/10
  for (let i = 0; i < 16; i++) if (buf[off + i] !== 0) return false;
  return true; // :: (duplicate address detection)
}

/**
 * Port security check on a received frame. IPv6 link-local and unspecified
 * sources stay allowed (neighbour discovery and DAD need them); IPv4 0.0.0.0
 * too (DHCP). ARP is checked by its sender protocol address.
 */
export function checkPortSecurity(sec: PortSecurity | undefined, buf: Uint8Array, lay: FrameLayout): SecurityVerdict {
  if (sec === undefined) return 'ok';
  const macs = sec.allowedMacs;
  if (macs !== undefined && macs.length > 0) {
    // The MAC computed here, not by a call: a 48-bit number returned from a
    // function that V8 did not inline is a fresh heap number per packet.
    const o = lay.off + 6;
    const src = get16(buf, o) * 0x100000000 + (getMacLo(buf, o) >>> 0);
    let ok = false;
    for (let i = 0; i < macs.length; i++) if (macs[i] === src) { ok = true; break; }
    if (!ok) return 'spoofed-mac';
  }
  const ips = sec.allowedIps;
  if (ips === undefined) return 'ok';
  if (lay.l3 === L3.IPV4) {
    const o = lay.l3Off + 12;
    const zero = buf[o] === 0 && buf[o + 1] === 0 && buf[o + 2] === 0 && buf[o + 3] === 0;
    if (!zero && !ipAllowed(ips, 4, buf, o)) return 'spoofed-ip';
  } else if (lay.l3 === L3.IPV6) {
    const o = lay.l3Off + 8;
    if (!isUnspecifiedOrLinkLocalV6(buf, o) && !ipAllowed(ips, 6, buf, o)) return 'spoofed-ip';
  } else if (lay.etherType === EtherType.ARP) {
    // Ethernet/IPv4 ARP: sender protocol address at offset 14 of the ARP body.
    const o = lay.l3Off + 14;
    if (lay.l3Off + 28 > lay.off + lay.len) return 'spoofed-ip';
    const zero = buf[o] === 0 && buf[o + 1] === 0 && buf[o + 2] === 0 && buf[o + 3] === 0;
    if (!zero && !ipAllowed(ips, 4, buf, o)) return 'spoofed-ip';
  }
  return 'ok';
}
