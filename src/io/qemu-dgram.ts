// QEMU's `-netdev dgram` NIC on a legacy port: the VM's emulated NIC sends
// each Ethernet frame as one UDP datagram to an address vswitch listens on,
// and receives frames as datagrams sent to its own address. Plain frames, no
// header, no offloads — a legacy port's contract. The socket is connected to
// the VM's address, so it hears nobody else. With a VM not (yet) running,
// frames to it are lost as UDP loses them (the kernel's ICMP error comes back
// after the send, and the native poller takes it instead of calling the fd
// dead; a send that meets it counts as a write error), and the port carries on
// when the VM comes up. Reads and writes are batched (recvmmsg/sendmmsg), on an
// I/O worker like any other legacy port's.
//
//   qemu-system-x86_64 … -netdev dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=VM_PORT,\
//                          remote.type=inet,remote.host=127.0.0.1,remote.port=SWITCH_PORT -device e1000,netdev=n0

import type { BufferPool } from '../packet/pool.js';
import { noOffloads, type OffloadCapabilities } from '../offload/capabilities.js';
import { FdBackend } from './fd-backend.js';
import { IoMode, native } from './native/index.js';

export interface UdpEndpoint {
  /** An IPv4 or IPv6 address literal. */
  host: string;
  port: number;
}

export interface QemuDgramOptions {
  /** Where vswitch receives the VM's frames (QEMU's `remote.*`). */
  local: UdpEndpoint;
  /** Where the VM receives (QEMU's `local.*`). */
  remote: UdpEndpoint;
  pool: BufferPool;
  batch?: number;
}

/** Socket buffers: a burst of MTU frames to a VM that reads them a little later. */
const SOCKET_BUFFER = 4 << 20;

export class QemuDgramBackend extends FdBackend {
  readonly capabilities: OffloadCapabilities = noOffloads();
  readonly local: UdpEndpoint;
  readonly remote: UdpEndpoint;

  static open(o: QemuDgramOptions): QemuDgramBackend {
    const shim = native();
    const fd = shim.udpOpen(o.local.host, o.local.port, o.remote.host, o.remote.port, SOCKET_BUFFER);
    try {
      return new QemuDgramBackend(fd, o);
    } catch (e) {
      shim.close(fd);
      throw e;
    }
  }

  private constructor(fd: number, o: QemuDgramOptions) {
    super({
      fd, mode: IoMode.PACKET, vnetHdr: 0, source: 'guest', pool: o.pool, maxFrame: 65550,
      ...(o.batch !== undefined ? { batch: o.batch } : {}), dataValidOut: false,
    });
    this.local = o.local;
    this.remote = o.remote;
  }
}

/** "HOST:PORT" with HOST an IPv4 literal or a bracketed IPv6 one; null if it is not. */
export function parseUdpEndpoint(text: string): UdpEndpoint | null {
  const m = /^(?:(\d{1,3}(?:\.\d{1,3}){3})|\[([0-9A-Fa-f:.]+)\]):(\d{1,5})$/.exec(text);
  if (m === null) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  if (m[1] !== undefined) {
    if (m[1].split('.').some((o) => Number(o) > 255)) return null;
    return { host: m[1], port };
  }
  const h = m[2]!;
  // Shape only; the kernel's parser (inet_pton) has the last word when the socket is made.
  if (!h.includes(':') || (h.match(/::/g) ?? []).length > 1) return null;
  return { host: h, port };
}
