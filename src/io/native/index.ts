// The native shim (vswitch.c), loaded once. Its build is part of
// `npm install` (node-gyp, from binding.gyp at the repository root).

import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const TapFlag = { VNET_HDR: 1, MULTI_QUEUE: 2, TUN: 4 } as const;
export const PacketFlag = { IGNORE_OUTGOING: 1, AUXDATA: 2 } as const;
export const PollEvent = { READABLE: 1, WRITABLE: 2 } as const;
export const IoMode = { FD: 0, PACKET: 1 } as const;

export interface PollHandle { readonly __poll: unique symbol }
export interface AeadHandle { readonly __aead: unique symbol }

export interface NativeShim {
  tapOpen(name: string, flags: number, vnetHdrSize: number): [fd: number, name: string];
  tapSetOffload(fd: number, tunFlags: number): void;
  packetOpen(ifname: string, vnetHdrSize: number, rcvbuf: number, flags: number): number;
  /** out = [packets, drops] since the last call (the kernel resets them). */
  packetStats(fd: number, out: Uint32Array): void;
  ethtoolFeatures(ifname: string): [name: string, active: boolean, fixed: boolean][];
  /** A UDP socket bound to local and connected to remote (IP literals), O_NONBLOCK; bufBytes > 0 forces its buffers. */
  udpOpen(localHost: string, localPort: number, remoteHost: string, remotePort: number, bufBytes: number): number;
  /** The features' active bits into `out` (bit i of word i/32), allocating nothing; returns how many features there are. */
  ethtoolActive(ifname: string, out: Uint32Array): number;
  ifIndex(name: string): number;
  close(fd: number): number;
  rawOpen(family: 4 | 6, protocol: number, device: string, rcvbuf?: number): number;
  eventfdOpen(): number;
  /** The calling thread's kernel thread id (for its CPU time in /proc/self/task/TID/stat). */
  gettid(): number;
  /** out[0] = CLOCK_MONOTONIC in ns (written, not returned: nothing allocated). */
  clockNs(out: Float64Array): void;
  aeadNew(key: Uint8Array): AeadHandle;
  aeadSeal(h: AeadHandle, nonce: Uint8Array, aad: Uint8Array, buf: Uint8Array, off: number, len: number, tag: Uint8Array, tagOff: number): void;
  aeadOpen(h: AeadHandle, nonce: Uint8Array, aad: Uint8Array, buf: Uint8Array, off: number, len: number, tag: Uint8Array, tagOff: number): boolean;
  eventfdRing(fd: number): number;
  eventfdDrain(fd: number): number;
  sendTo(fd: number, buf: Uint8Array, off: number, len: number, address: string): number;
  readBatch(fd: number, mem: Uint8Array, offs: Int32Array, caps: Int32Array, lens: Int32Array, tcis: Int32Array, max: number, mode: number): number;
  writeBatch(fd: number, mem: Uint8Array, hdrOffs: Int32Array, hdrLen: number, offs: Int32Array, lens: Int32Array, tcis: Int32Array, count: number, mode: number): number;
  pollStart(fd: number, events: number, cb: (status: number, events: number) => void): PollHandle;
  pollStop(h: PollHandle): void;
  pollUpdate(h: PollHandle, events: number): void;
}

let shim: NativeShim | null = null;

/** Where node-gyp puts the addon, relative to this file in dist/src/io/native/. */
function addonPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return resolve(here, '../../../../build/Release/vswitch_native.node');
}

export function nativeAvailable(): boolean {
  return existsSync(addonPath());
}

/** The shim; throws a message saying how to get it when it was not built. */
export function native(): NativeShim {
  if (shim !== null) return shim;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new Error(`vswitch native addon not built (${path} missing): run \`npm install\` or \`npm run build:native\`; ` +
      'it needs make, a C compiler (gcc) and the Node.js headers (Debian: build-essential; nodedir set in npm config)');
  }
  const require = createRequire(import.meta.url);
  shim = require(path) as NativeShim;
  return shim;
}

/** errno names for the negative returns of readBatch/writeBatch. */
export const Errno = { EAGAIN: 11, EINTR: 4, ENOBUFS: 105, ENETDOWN: 100, EIO: 5, EBADFD: 77, ENXIO: 6, ENODEV: 19 } as const;
