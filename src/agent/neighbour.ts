// The switch accepts an SA only for a destination it has seen (its
// neighbour table learns from ARP, neighbour discovery and traffic). A VM
// that has not talked to its peer yet would be refused with
// `destination-unknown`; rather than send the peer anything in plaintext
// to be seen, the agent asks the network who has the peer's address (an ARP
// request from the VM's NIC): the peer's answer teaches the switch where
// it is. IPv4 only: for IPv6 the switch learns from the VM's own neighbour
// discovery, which the first packet triggers anyway.

import { ipv4FromString, macFromString, setMac, BROADCAST_MAC } from '../wire/bytes.js';
import { ETHERNET_HEADER_LEN, EtherType } from '../wire/ethernet.js';
import { ArpOperation, emitArp, ARP_LEN } from '../wire/arp.js';
import { set16 } from '../wire/bytes.js';
import { native, IoMode } from '../io/native/index.js';

/** An Ethernet ARP request "who has `target`? tell `senderIp`" from `senderMac`, broadcast. */
export function arpRequestFrame(senderMac: string, senderIp: string, target: string): Uint8Array {
  const sha = macFromString(senderMac);
  const spa = ipv4FromString(senderIp);
  const tpa = ipv4FromString(target);
  if (sha === null || spa === null || tpa === null) throw new RangeError(`ARP request needs a MAC and IPv4 addresses (${senderMac}, ${senderIp}, ${target})`);
  const f = new Uint8Array(ETHERNET_HEADER_LEN + ARP_LEN);
  setMac(f, 0, BROADCAST_MAC);
  setMac(f, 6, sha);
  set16(f, 12, EtherType.ARP);
  emitArp({ operation: ArpOperation.Request, sha, spa, tha: 0, tpa }, f, ETHERNET_HEADER_LEN);
  return f;
}

/** Send one frame on `device` through a packet socket (set-up path: opened and closed per call). */
export function sendFrame(device: string, frame: Uint8Array): boolean {
  const shim = native();
  const fd = shim.packetOpen(device, 0, 0, 0);
  try {
    const r = shim.writeBatch(fd, frame, new Int32Array(1), 0, new Int32Array([0]), new Int32Array([frame.length]), new Int32Array([-1]), 1, IoMode.PACKET);
    return r === 1;
  } finally {
    shim.close(fd);
  }
}
