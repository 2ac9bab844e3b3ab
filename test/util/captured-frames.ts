// Frames captured from the Linux kernel on this project's test machine (not
// typed from memory): two network namespaces on a veth pair with transmit
// checksum offload switched off (ethtool -K tx off), so every checksum below
// was computed by the kernel in software and is known to be valid. Addresses
// are from 198.18.0.0/15 and 2001:db8::/32 (DESIGN.md §6); MACs 02:..:0a and
// 02:..:0b. Captured with an AF_PACKET socket on the receiving veth, whole
// frames from the Ethernet header on (no FCS, no padding on veth).
//
// Generated 2026-11-25 with Python sockets: ARP and neighbor discovery from
// the kernel itself, ICMP echo through ping sockets (the kernel fills the
// checksum), TCP connect + send, UDP sendto.
import { fromHex } from './strict-bytes.js';

export const captured = {
  /** ARP request: who has 198.18.0.2? tell 198.18.0.1 */
  arpRequest: fromHex('ffffffffffff02000000000a0806000108000604000102000000000ac6120001000000000000c6120002'),
  /** ARP reply: 198.18.0.2 is at 02:00:00:00:00:0b */
  arpReply: fromHex('02000000000a02000000000b0806000108000604000202000000000bc612000202000000000ac6120001'),
  /** ICMPv4 echo request 198.18.0.1 -> 198.18.0.2, id chosen by the kernel ping socket, seq 1, "vswitch-ping" */
  icmpEchoRequest: fromHex(
    '02000000000b02000000000a080045000028ae6240004001004bc6120001c612000208007143dd7c0001767377697463' +
    '682d70696e67',
  ),
  /** ICMPv4 echo reply 198.18.0.2 -> 198.18.0.1 */
  icmpEchoReply: fromHex(
    '02000000000a02000000000b0800450000283c5600004001b257c6120002c612000100007943dd7c0001767377697463' +
    '682d70696e67',
  ),
  /** ICMPv6 neighbor solicitation 2001:db8::1 -> ff02::1:ff00:2 for 2001:db8::2, source link-layer address option */
  neighborSolicit: fromHex(
    '3333ff00000202000000000a86dd6000000000203aff20010db8000000000000000000000001ff020000000000000000' +
    '0001ff00000287001c1e0000000020010db8000000000000000000000002010102000000000a',
  ),
  /** ICMPv6 neighbor advertisement 2001:db8::2 -> 2001:db8::1, flags S and O, target link-layer address option */
  neighborAdvert: fromHex(
    '02000000000a02000000000b86dd6000000000203aff20010db800000000000000000000000220010db8000000000000' +
    '00000000000188008a686000000020010db8000000000000000000000002020102000000000b',
  ),
  /** ICMPv6 echo request 2001:db8::1 -> 2001:db8::2, "vswitch-ping6" */
  icmpv6EchoRequest: fromHex(
    '02000000000b02000000000a86dd60095c5c00153a4020010db800000000000000000000000120010db8000000000000' +
    '0000000000028000677ddd7d0001767377697463682d70696e6736',
  ),
  /** TCP SYN 198.18.0.1 -> 198.18.0.2:5001, options MSS 1460, SACK permitted, timestamps, NOP, window scale 10 */
  tcpSyn: fromHex(
    '02000000000b02000000000a08004500003c5aec4000400653a8c6120001c6120002ddfe1389c3c3878900000000a002' +
    'faf0b7ff0000020405b40402080a0eafbd60000000000103030a',
  ),
  /** TCP SYN-ACK 198.18.0.2:5001 -> 198.18.0.1 */
  tcpSynAck: fromHex(
    '02000000000a02000000000b08004500003c000040004006ae94c6120002c61200011389ddfe8b64258ec3c3878aa012' +
    'fe8883940000020405b40402080ab5fac9d40eafbd600103030a',
  ),
  /** TCP PSH|ACK with "hello vswitch", NOP NOP timestamps */
  tcpData: fromHex(
    '02000000000b02000000000a0800450000415aee4000400653a1c6120001c6120002ddfe1389c3c3878a8b64258f8018' +
    '003fa26500000101080a0eafbd60b5fac9d468656c6c6f2076737769746368',
  ),
  /** UDP over IPv6 2001:db8::1 -> 2001:db8::2:5002, "hello udp6" */
  udp6: fromHex(
    '02000000000b02000000000a86dd6002071a0012114020010db800000000000000000000000120010db8000000000000' +
    '000000000002ac48138a0012baf568656c6c6f2075647036',
  ),
  /** MLDv2 report from :: to ff02::16 behind a hop-by-hop header with Router Alert and PadN */
  mldv2Report: fromHex(
    '33330000001602000000000b86dd600000000038000100000000000000000000000000000000ff020000000000000000' +
    '0000000000163a000502000001008f00349e0000000204000000ff0200000000000000000001ff00000204000000ff02' +
    '00000000000000000001ffd237fe',
  ),
  /** ICMPv6 router solicitation fe80::... -> ff02::2, source link-layer address option */
  routerSolicit: fromHex(
    '33330000000202000000000a86dd6000000000103afffe80000000000000781eaffffe41d225ff020000000000000000' +
    '0000000000028500819e00000000010102000000000a',
  ),
  /** ICMPv6 duplicate address detection: neighbor solicitation from :: with a nonce option (type 14) */
  dadSolicit: fromHex(
    '3333ffd237fe02000000000b86dd6000000000203aff00000000000000000000000000000000ff020000000000000000' +
    '0001ffd237fe87008adf00000000fe80000000000000646895fffed237fe0e01193e12be4d39',
  ),
} as const;
