// The legacy port for a QEMU VM: the VM's emulated NIC (e1000, rtl8139, …)
// reaches the switch through QEMU's `-netdev stream` socket. On that stream
// every Ethernet frame travels as a 4-byte big-endian length followed by the
// frame (QEMU net/stream.c sends `htonl(size)` then the bytes; net/net.c
// net_fill_rstate reassembles the same on receive), with no virtio header:
// nothing but plain frames, so the port is a legacy port and is never
// offered offloads. The emulated NIC does its own segmentation and checksums
// inside QEMU, so what arrives here is always complete, MTU-sized frames.
//
// Either end may be the server: by default vswitch listens on a unix socket
// and QEMU connects (`server=off`); in `connect` mode QEMU listens
// (`server=on`) and vswitch connects, retrying until it is there. One VM per
// port: a second connection while one is up is refused. A VM that goes away
// (shut down, killed, restarted) is just a disconnect — the port stays, its
// frames count as transmit errors meanwhile, and the next connection picks up.
//
// The stream is untrusted: a length of 0 or beyond any frame a port could
// carry means the peer is not speaking this framing (or is hostile), so the
// frame is counted as a malformed receive drop and the connection is reset.
//
// Copies, not allocations: each socket chunk is copied once into a staging
// area in packet memory and the frames are moved from there into pool buffers
// with the packet memory's own copy (WebAssembly memory.copy), so receiving
// costs no JavaScript object per frame; transmit assembles the length-prefixed
// frames of a whole output batch the same way and hands the socket one Buffer.

import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { lstatSync, unlinkSync } from 'node:fs';
import { Batch } from '../packet/batch.js';
import type { Packet } from '../packet/packet.js';
import type { PacketMemory } from '../packet/memory.js';
import { copyBytes } from '../wire/checksum.js';
import { noOffloads, type OffloadCapabilities } from '../offload/capabilities.js';
import type { OutputQueue, Port, PortBackend } from '../switch/port.js';
import type { Switch } from '../switch/switch.js';

/** A unix socket path, or a TCP address. */
export type QemuAddress = { path: string } | { host: string; port: number };

export interface QemuSocketOptions {
  address: QemuAddress;
  /**
   * `listen` (default): vswitch is the server and QEMU connects
   * (`-netdev stream,server=off,…`). `connect`: QEMU is the server
   * (`server=on`) and vswitch connects, and reconnects after a disconnect.
   */
  mode?: 'listen' | 'connect';
  /**
   * Largest length the stream may announce before it is taken for garbage
   * and the connection reset (default 65 535, and never more than a pool
   * buffer holds). Frames above the port's MTU but within this limit are
   * left to the switch, which drops them as `oversize`.
   */
  maxFrame?: number;
  /** Frames per receive batch handed to the switch (default 64). */
  batch?: number;
  /** Transmit backlog on the socket above which frames are dropped (default 4 MiB). */
  highWaterBytes?: number;
  /** connect mode: ms before the first retry (default 200); doubles on each failure up to maxRetryMs. */
  retryMs?: number;
  /** connect mode: longest wait between attempts (default 5000 ms). */
  maxRetryMs?: number;
}

export interface QemuSocketStats {
  connects: number;
  disconnects: number;
  /** Connections refused because the port already had its VM. */
  refused: number;
  /** Connections reset because of a bad length. */
  resets: number;
  framesIn: number;
  bytesIn: number;
  framesOut: number;
  bytesOut: number;
  /** Largest frame sent to the VM, tag included (the legacy guarantee: never above MTU + 18). */
  maxFrameOut: number;
  /** Frames not sent: no VM connected. */
  txNotConnected: number;
  /** Frames not sent: the VM is not reading fast enough. */
  txBackpressure: number;
  /** Frames not sent: above the port's MTU (the switch should never hand us one). */
  txOversize: number;
  lastError: string;
}

export type QemuLinkState = 'listening' | 'connected' | 'disconnected';

/** Largest length a stream frame may announce by default (an IP packet's limit plus headers is above this only for garbage). */
export const QEMU_MAX_FRAME = 65535;

const RX_STAGE = 64 * 1024;
const TX_STAGE = 72 * 1024;

/**
 * Staging areas in packet memory, one pair per memory, shared by every QEMU
 * port on it: socket callbacks never run inside one another, and transmit
 * never re-enters itself, so one area each way is enough.
 */
interface Stage { rx: number; tx: number }
const stages = new WeakMap<PacketMemory, Stage>();
function stageFor(mem: PacketMemory): Stage {
  let s = stages.get(mem);
  if (s === undefined) {
    s = { rx: mem.alloc(RX_STAGE), tx: mem.alloc(TX_STAGE) };
    stages.set(mem, s);
  }
  return s;
}

// Receive parser states.
const LENGTH = 0;
const FRAME = 1;
const SKIP = 2;

export class QemuSocketBackend implements PortBackend {
  readonly capabilities: OffloadCapabilities = noOffloads();
  readonly address: QemuAddress;
  readonly mode: 'listen' | 'connect';
  readonly stats: QemuSocketStats = {
    connects: 0, disconnects: 0, refused: 0, resets: 0, framesIn: 0, bytesIn: 0, framesOut: 0, bytesOut: 0,
    maxFrameOut: 0, txNotConnected: 0, txBackpressure: 0, txOversize: 0, lastError: '',
  };
  /** Link changes (for logs and tests). */
  onState: ((state: QemuLinkState, detail?: string) => void) | null = null;
  /** The endpoint cannot work at all (e.g. the socket path is taken); the port stays, without a VM. */
  onFatal: ((error: Error) => void) | null = null;

  private readonly maxFrameOpt: number;
  private readonly highWater: number;
  private readonly retryMs: number;
  private readonly maxRetryMs: number;
  private retryDelay: number;
  private readonly rx: Batch;
  private sw: Switch | null = null;
  private port: Port | null = null;
  private server: Server | null = null;
  private conn: Socket | null = null;
  private retry: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  private createdPath: string | null = null;
  private waiters: Array<() => void> = [];
  private listeningP: Promise<void> | null = null;

  // Packet memory, its staging areas, and a Buffer view of it for the final copy out.
  private mem: Uint8Array | null = null;
  private memBuf: Buffer | null = null;
  private rxStage = 0;
  private txStage = 0;
  private maxFrame = QEMU_MAX_FRAME;

  // Receive reassembly, across chunks.
  private state = LENGTH;
  private lenGot = 0;
  /** A length prefix cut by a chunk boundary (a typed array: no boxed numbers on the object). */
  private readonly lenBuf = new Uint8Array(4);
  private cur: Packet | null = null;
  private curGot = 0;
  private skipLeft = 0;

  constructor(opts: QemuSocketOptions) {
    this.address = opts.address;
    this.mode = opts.mode ?? 'listen';
    this.maxFrameOpt = opts.maxFrame ?? QEMU_MAX_FRAME;
    this.highWater = opts.highWaterBytes ?? 4 << 20;
    this.retryMs = opts.retryMs ?? 200;
    this.maxRetryMs = Math.max(this.retryMs, opts.maxRetryMs ?? 5000);
    this.retryDelay = this.retryMs;
    this.rx = new Batch(opts.batch ?? 64);
  }

  get connected(): boolean {
    return this.conn !== null;
  }

  /**
   * Start: listen (the socket file exists when this returns) or start
   * connecting, and deliver what the VM sends to `sw` as `port`. Errors
   * later on (a taken path, a refused connection) are reported through
   * onFatal / stats, never thrown at the event loop.
   */
  attach(sw: Switch, port: Port): void {
    if (this.sw !== null) throw new Error(`qemu port ${port.name}: attached already`);
    if (this.closed) throw new Error(`qemu port ${port.name}: closed`);
    this.sw = sw;
    this.port = port;
    const memory = sw.pool.memory;
    const stage = stageFor(memory);
    this.mem = sw.pool.bytes;
    this.memBuf = Buffer.from(this.mem.buffer, this.mem.byteOffset, this.mem.byteLength);
    this.rxStage = stage.rx;
    this.txStage = stage.tx;
    this.maxFrame = Math.min(this.maxFrameOpt, sw.pool.maxFrameLen);
    if (this.mode === 'listen') this.listen();
    else this.dial();
  }

  /** Resolves once the server listens (listen mode) or immediately (connect mode); rejects if listening failed. */
  listening(): Promise<void> {
    return this.listeningP ?? Promise.resolve();
  }

  /** Resolves when a VM is connected (now, or the next time one connects). */
  whenConnected(): Promise<void> {
    if (this.conn !== null) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  // --- connections ---------------------------------------------------------

  private listen(): void {
    const server = createServer({ allowHalfOpen: false }, (sock) => this.onConnection(sock));
    this.server = server;
    this.listeningP = new Promise<void>((resolve, reject) => {
      server.once('listening', () => {
        this.onState?.('listening');
        resolve();
      });
      server.on('error', (e) => {
        this.stats.lastError = e.message;
        reject(e);
        this.onFatal?.(e);
      });
    });
    // Nobody may be awaiting it; the failure is reported through onFatal.
    this.listeningP.catch(() => {});
    const a = this.address;
    if ('path' in a) {
      removeStaleSocket(a.path);
      server.listen(a.path);
      this.createdPath = a.path;
    } else {
      server.listen(a.port, a.host);
    }
  }

  private dial(): void {
    if (this.closed) return;
    this.retry = null;
    const a = this.address;
    const sock = 'path' in a ? createConnection({ path: a.path }) : createConnection({ host: a.host, port: a.port });
    let up = false;
    sock.once('connect', () => {
      up = true;
      this.adopt(sock);
    });
    sock.on('error', (e) => {
      this.stats.lastError = e.message;
    });
    sock.once('close', () => {
      if (!up) this.scheduleDial();
    });
  }

  private scheduleDial(): void {
    if (this.closed || this.mode !== 'connect' || this.retry !== null) return;
    this.retry = setTimeout(() => this.dial(), this.retryDelay);
    this.retry.unref?.();
    this.retryDelay = Math.min(this.retryDelay * 2, this.maxRetryMs);
  }

  private onConnection(sock: Socket): void {
    if (this.closed || this.conn !== null) {
      this.stats.refused++;
      sock.destroy();
      return;
    }
    this.adopt(sock);
  }

  private adopt(sock: Socket): void {
    if (this.closed) {
      sock.destroy();
      return;
    }
    this.conn = sock;
    this.resetParser();
    this.retryDelay = this.retryMs;
    this.stats.connects++;
    if (!('path' in this.address)) sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => this.onData(sock, chunk));
    sock.on('error', (e) => {
      this.stats.lastError = e.message;
    });
    sock.once('close', () => this.onClose(sock));
    this.onState?.('connected');
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private onClose(sock: Socket): void {
    if (this.conn !== sock) return;
    this.conn = null;
    this.stats.disconnects++;
    this.dropPartial(!this.closed);
    if (!this.closed) {
      this.onState?.('disconnected');
      this.scheduleDial();
    }
  }

  /** The peer broke the framing: count it and start over on a new connection. */
  private resetConnection(sock: Socket, why: string): void {
    this.stats.resets++;
    this.stats.lastError = why;
    if (this.conn === sock) {
      this.conn = null;
      this.stats.disconnects++;
      this.dropPartial(false);
      this.onState?.('disconnected', why);
      this.scheduleDial();
    }
    sock.destroy();
  }

  // --- receive -------------------------------------------------------------

  private resetParser(): void {
    this.state = LENGTH;
    this.lenGot = 0;
    this.curGot = 0;
    this.skipLeft = 0;
  }

  /** Forget a half-received frame; a truncated frame the peer sent counts as a malformed drop. */
  private dropPartial(count: boolean): void {
    const p = this.cur;
    if (p !== null) {
      if (count && this.sw !== null && this.port !== null) this.sw.countReceiveDrop(this.port, this.curGot, 'malformed');
      p.release();
      this.cur = null;
    }
    this.resetParser();
  }

  private onData(sock: Socket, chunk: Buffer): void {
    if (this.conn !== sock || this.sw === null || this.port === null) return;
    const mem = this.mem!;
    const n = chunk.length;
    let ok = true;
    // Whole chunks go to the stage in one copy; only a chunk larger than it is cut.
    for (let at = 0; at < n && ok; at += RX_STAGE) {
      const len = Math.min(RX_STAGE, n - at);
      mem.set(at === 0 && len === n ? chunk : chunk.subarray(at, at + len), this.rxStage);
      ok = this.parse(this.rxStage, len);
    }
    if (this.rx.count > 0) this.sw.receive(this.port, this.rx);
    if (!ok) this.resetConnection(sock, 'bad frame length');
  }

  /** Consume `len` staged bytes at `at`. False when the stream broke the framing. */
  private parse(at: number, len: number): boolean {
    const mem = this.mem!;
    const sw = this.sw!;
    const port = this.port!;
    const end = at + len;
    let i = at;
    while (i < end) {
      const state = this.state;
      if (state === LENGTH) {
        let flen: number;
        if (this.lenGot === 0 && end - i >= 4) {
          flen = ((mem[i]! << 24) >>> 0) + (mem[i + 1]! << 16) + (mem[i + 2]! << 8) + mem[i + 3]!;
          i += 4;
        } else {
          const lb = this.lenBuf;
          lb[this.lenGot++] = mem[i++]!;
          if (this.lenGot < 4) continue;
          flen = ((lb[0]! << 24) >>> 0) + (lb[1]! << 16) + (lb[2]! << 8) + lb[3]!;
          this.lenGot = 0;
        }
        if (flen === 0 || flen > this.maxFrame) {
          sw.countReceiveDrop(port, flen, 'malformed');
          return false;
        }
        const p = sw.pool.take(flen);
        if (p === null) {
          sw.countReceiveDrop(port, flen, 'pool-exhausted');
          this.skipLeft = flen;
          this.state = SKIP;
          continue;
        }
        p.setLength(flen);
        this.cur = p;
        this.curGot = 0;
        this.state = FRAME;
      } else if (state === FRAME) {
        const p = this.cur!;
        const take = Math.min(p.len - this.curGot, end - i);
        copyBytes(mem, p.off + this.curGot, i, take);
        this.curGot += take;
        i += take;
        if (this.curGot === p.len) {
          this.cur = null;
          this.state = LENGTH;
          this.stats.framesIn++;
          this.stats.bytesIn += p.len;
          this.rx.push(p);
          if (this.rx.full) sw.receive(port, this.rx);
        }
      } else {
        const take = Math.min(this.skipLeft, end - i);
        this.skipLeft -= take;
        i += take;
        if (this.skipLeft === 0) this.state = LENGTH;
      }
    }
    return true;
  }

  // --- transmit ------------------------------------------------------------

  transmit(q: OutputQueue, port: Port): number {
    const sock = this.conn;
    const count = q.count;
    if (sock === null || this.closed || this.mem === null) {
      this.stats.txNotConnected += count;
      return 0;
    }
    if (sock.writableLength > this.highWater) {
      this.stats.txBackpressure += count;
      return 0;
    }
    const pkts = q.batch.packets;
    const tcis = q.tci;
    const limit = port.mtu + 14;
    let total = 0;
    for (let i = 0; i < count; i++) {
      const p = pkts[i]!;
      if (p.len > limit) continue;
      total += 4 + p.len + (tcis[i]! >= 0 ? 4 : 0);
    }
    if (total === 0) {
      this.stats.txOversize += count;
      return 0;
    }
    const mem = this.mem;
    const memBuf = this.memBuf!;
    const stage = this.txStage;
    const out = Buffer.allocUnsafe(total);
    let outPos = 0;
    let s = 0;
    let sent = 0;
    for (let i = 0; i < count; i++) {
      const p = pkts[i]!;
      const len = p.len;
      if (len > limit) {
        this.stats.txOversize++;
        continue;
      }
      const tci = tcis[i]!;
      const wire = tci >= 0 ? len + 4 : len;
      if (s + 4 + wire > TX_STAGE) {
        memBuf.copy(out, outPos, stage, stage + s);
        outPos += s;
        s = 0;
      }
      const at = stage + s;
      mem[at] = wire >>> 24;
      mem[at + 1] = (wire >>> 16) & 0xff;
      mem[at + 2] = (wire >>> 8) & 0xff;
      mem[at + 3] = wire & 0xff;
      if (tci >= 0) {
        copyBytes(mem, at + 4, p.off, 12);
        mem[at + 16] = 0x81;
        mem[at + 17] = 0x00;
        mem[at + 18] = (tci >>> 8) & 0xff;
        mem[at + 19] = tci & 0xff;
        copyBytes(mem, at + 20, p.off + 12, len - 12);
      } else {
        copyBytes(mem, at + 4, p.off, len);
      }
      s += 4 + wire;
      sent++;
      this.stats.framesOut++;
      this.stats.bytesOut += wire;
      if (wire > this.stats.maxFrameOut) this.stats.maxFrameOut = wire;
    }
    if (s > 0) memBuf.copy(out, outPos, stage, stage + s);
    sock.write(out);
    return sent;
  }

  // --- shutdown ------------------------------------------------------------

  /** Close the connection and the server, and remove the socket file. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
    const c = this.conn;
    this.conn = null;
    if (c !== null) c.destroy();
    this.dropPartial(false);
    if (this.server !== null) {
      this.server.close();
      this.server = null;
    }
    if (this.createdPath !== null) {
      removeStaleSocket(this.createdPath);
      this.createdPath = null;
    }
  }
}

/** Remove a socket file left by an earlier run; refuse to touch anything that is not a socket. */
function removeStaleSocket(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket`);
  try {
    unlinkSync(path);
  } catch {
    // gone meanwhile
  }
}
