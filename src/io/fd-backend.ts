// What the TAP and AF_PACKET backends share: an O_NONBLOCK file descriptor
// polled in Node's event loop (uv_poll through the native shim), drained in
// batches straight into pool buffers, and written in batches with the
// virtio_net_hdr and any 802.1Q tag gathered in by the kernel (writev /
// sendmmsg), so a frame is never copied on its way through.
//
// Receive: each read slot is a super-frame-sized pool buffer; the frame
// lands at the packet's offset, its virtio header in the headroom before it.
// Frames that fit an MTU-sized buffer are copied into one (cheap next to the
// syscall) so the large slot can be reused; super-frames are handed over as
// they are and the slot gets a fresh buffer.

import type { BufferPool } from '../packet/pool.js';
import type { Packet } from '../packet/packet.js';
import { Batch } from '../packet/batch.js';
import { decodeVnetHeader, encodeVnetHeader, type VnetSource } from '../packet/vnet.js';
import { copyBytes } from '../wire/checksum.js';
import type { OffloadCapabilities } from '../offload/capabilities.js';
import type { OutputQueue, Port, PortBackend } from '../switch/port.js';
import type { Switch } from '../switch/switch.js';
import { Errno, native, PollEvent, type NativeShim, type PollHandle } from './native/index.js';
import { TxChannel } from './tx-channel.js';
import { RxChannel } from './rx-channel.js';
import { txPressure, type IoWorker } from './workers.js';

export interface FdBackendOptions {
  fd: number;
  /** IoMode: 0 read()/writev() (TAP), 1 recvmmsg()/sendmmsg() (packet socket). */
  mode: number;
  /** virtio_net_hdr bytes before each frame: 0 (plain frames) or 10/12. */
  vnetHdr: number;
  /** Whose header it is: a guest's (untrusted) or the host kernel's. */
  source: VnetSource;
  pool: BufferPool;
  /** Largest frame a read may return (super-frames: 65 550). */
  maxFrame: number;
  /** Frames per read batch (default 64). */
  batch?: number;
  /** Drain at most this many batches per wake-up before yielding to other fds (default 4). */
  rounds?: number;
  /** Offer DATA_VALID to the reader of our writes (a guest: yes; a NIC on transmit: no). */
  dataValidOut: boolean;
}

export interface FdBackendStats {
  /** Read calls that returned frames, and frames read. */
  reads: number;
  framesRead: number;
  /** Frames longer than a read slot (dropped). */
  truncated: number;
  /** Receive errors other than "nothing to read". */
  readErrors: number;
  lastReadError: number;
  writeErrors: number;
  lastWriteError: number;
}

/**
 * A transmit worker buys parallelism for bulk output (software segmentation's
 * dozens of frames, 64 KiB super-frames) at the price of waking another
 * thread, which on a VM with idle vCPUs costs tens of microseconds per
 * hand-off. Output this small, for a queue the worker holds nothing of, is
 * written by the main thread directly — like a kernel qdisc's bypass when it
 * is empty: a ping or an ACK does not wait for a wake-up, and nothing can
 * overtake a frame the worker still has.
 */
export const BYPASS_FRAMES = 4;
export const BYPASS_BYTES = 4096;

export abstract class FdBackend implements PortBackend {
  abstract capabilities: OffloadCapabilities;
  readonly fd: number;
  protected readonly shim: NativeShim;
  protected readonly pool: BufferPool;
  private readonly mode: number;
  private readonly hdr: number;
  private readonly source: VnetSource;
  private readonly slotFrame: number;
  private readonly n: number;
  private readonly rounds: number;
  private readonly dataValidOut: boolean;
  private readonly slots: (Packet | null)[];
  private readonly offs: Int32Array;
  private readonly caps: Int32Array;
  private readonly lens: Int32Array;
  private readonly tcis: Int32Array;
  private readonly rx: Batch;
  private readonly txHdr: Int32Array;
  private readonly txOff: Int32Array;
  private readonly txLen: Int32Array;
  private readonly txTci: Int32Array;
  private readonly hdrScratch: number;
  private poll: PollHandle | null = null;
  private sw: Switch | null = null;
  private port: Port | null = null;
  private closed = false;
  readonly stats: FdBackendStats = { reads: 0, framesRead: 0, truncated: 0, readErrors: 0, lastReadError: 0, writeErrors: 0, lastWriteError: 0 };
  /** With a transmit worker: frames handed to it, and frames the main thread wrote itself (see BYPASS_FRAMES). */
  txViaWorker = 0;
  txBypass = 0;
  /** Called once when the fd fails for good (e.g. the device went away). */
  onFatal: ((errno: number) => void) | null = null;
  /** Writes go through a transmit worker thread when set (useIoWorker). */
  private txc: TxChannel | null = null;
  /** Reads go through the worker too (made on attach). */
  private rxc: RxChannel | null = null;
  private ioWorker: IoWorker | null = null;
  private workerReads = false;
  private readonly writeHeader = (p: Packet, at: number, tci: number): void => {
    encodeVnetHeader(p.meta, this.pool.bytes, at, this.hdr, this.dataValidOut, tci >= 0 ? 4 : 0);
  };

  constructor(o: FdBackendOptions) {
    this.shim = native();
    this.fd = o.fd;
    this.pool = o.pool;
    this.mode = o.mode;
    this.hdr = o.vnetHdr;
    this.source = o.source;
    this.slotFrame = Math.min(o.maxFrame, o.pool.maxFrameLen);
    this.n = o.batch ?? 64;
    this.rounds = o.rounds ?? 4;
    this.dataValidOut = o.dataValidOut;
    this.slots = new Array<Packet | null>(this.n).fill(null);
    this.offs = new Int32Array(this.n);
    this.caps = new Int32Array(this.n);
    this.lens = new Int32Array(this.n);
    this.tcis = new Int32Array(this.n);
    this.rx = new Batch(this.n);
    // Transmit queues are at most a switch batch; room for 256 to be safe.
    const txMax = 256;
    this.txHdr = new Int32Array(txMax);
    this.txOff = new Int32Array(txMax);
    this.txLen = new Int32Array(txMax);
    this.txTci = new Int32Array(txMax);
    this.hdrScratch = this.hdr > 0 ? o.pool.memory.alloc(txMax * 16, 16) : 0;
    for (let i = 0; i < txMax; i++) this.txHdr[i] = this.hdrScratch + i * 16;
  }

  /** Hand this queue's writes, and its reads unless `reads` is false, to an I/O worker thread (before attach). */
  useIoWorker(worker: IoWorker, reads = true): void {
    if (this.txc === null) this.txc = new TxChannel(worker, this.pool, this.fd, this.mode, this.hdr, (errno) => this.fatal(errno));
    this.ioWorker = worker;
    this.workerReads = reads;
  }

  get worker(): IoWorker | null {
    return this.ioWorker;
  }

  /** Reads through the worker, if they go there (its `frames` counter). */
  get rxChannel(): RxChannel | null {
    return this.rxc;
  }

  /** Start delivering received frames to `sw` as `port`. */
  attach(sw: Switch, port: Port): void {
    this.sw = sw;
    this.port = port;
    this.txc?.attach(port);
    if (this.ioWorker !== null && this.workerReads) {
      const sink = {
        frame: (p: Packet, total: number, tci: number): boolean => {
          this.stats.framesRead++;
          return this.frame(p, total, tci, p.tailroom + this.hdr, sw, port);
        },
        flush: (): void => {
          this.stats.reads++;
          if (this.rx.count > 0) sw.receive(port, this.rx);
        },
      };
      this.rxc = new RxChannel(this.ioWorker, this.pool, this.fd, this.mode, this.hdr, this.slotFrame, sink, this.n, this.rounds, (errno) => this.fatal(errno));
      return;
    }
    for (let i = 0; i < this.n; i++) this.fillSlot(i);
    this.poll = this.shim.pollStart(this.fd, PollEvent.READABLE, (status) => this.onReadable(status));
  }

  private fillSlot(i: number): boolean {
    const p = this.pool.take(this.slotFrame);
    this.slots[i] = p;
    if (p === null) {
      this.caps[i] = 0;
      return false;
    }
    this.offs[i] = p.off - this.hdr;
    this.caps[i] = p.tailroom + this.hdr;
    return true;
  }

  /** Receive paused for transmit backpressure (see txPressure). */
  private paused = false;
  private readonly unpause = (): void => {
    if (!this.paused) return;
    this.paused = false;
    if (this.poll !== null && !this.closed) this.shim.pollUpdate(this.poll, PollEvent.READABLE);
  };

  private onReadable(status: number): void {
    if (this.closed || this.sw === null || this.port === null) return;
    if (status < 0) return this.fatal(-status);
    if (txPressure.congested > 0 && this.poll !== null) {
      // A transmit worker is behind: wait for it (at most a couple of milliseconds).
      this.paused = true;
      this.shim.pollUpdate(this.poll, 0);
      txPressure.waiters.add(this.unpause);
      setTimeout(this.unpause, 2);
      return;
    }
    const sw = this.sw;
    const port = this.port;
    const mem = this.pool.bytes;
    for (let round = 0; round < this.rounds; round++) {
      // Slots whose buffer could not be refilled (pool dry) end the usable range.
      let usable = 0;
      while (usable < this.n && this.slots[usable] !== null) usable++;
      if (usable === 0 && !this.fillSlot(0)) return;
      if (usable === 0) usable = 1;
      const got = this.shim.readBatch(this.fd, mem, this.offs, this.caps, this.lens, this.tcis, usable, this.mode);
      if (got <= 0) {
        if (got < 0 && -got !== Errno.EAGAIN && -got !== Errno.EINTR) {
          this.stats.readErrors++;
          this.stats.lastReadError = -got;
          if (-got === Errno.EBADFD || -got === Errno.EIO || -got === Errno.ENXIO) this.fatal(-got);
        }
        return;
      }
      this.stats.reads++;
      this.stats.framesRead += got;
      for (let i = 0; i < got; i++) this.take(i, sw, port);
      if (this.rx.count > 0) sw.receive(port, this.rx);
      if (got < usable) return;
    }
  }

  /** Turn slot i's read into a packet in the receive batch. */
  private take(i: number, sw: Switch, port: Port): void {
    if (this.frame(this.slots[i]!, this.lens[i]!, this.tcis[i]!, this.caps[i]!, sw, port)) this.fillSlot(i);
  }

  /**
   * A frame read into `slot` (`total` bytes with the virtio header; < 0: it
   * did not fit `room`): into the receive batch, copied into a small buffer
   * or as the slot's buffer itself. True when the slot's buffer was handed
   * over (the slot needs a new one).
   */
  private frame(slot: Packet, total: number, tci: number, room: number, sw: Switch, port: Port): boolean {
    if (total < 0) {
      this.stats.truncated++;
      sw.countReceiveDrop(port, room, 'oversize');
      return false;
    }
    const len = total - this.hdr;
    if (len < 14) {
      sw.countReceiveDrop(port, Math.max(0, len), 'malformed');
      return false;
    }
    const mem = slot.buf;
    const meta = slot.meta;
    meta.reset();
    if (this.hdr > 0) {
      const e = decodeVnetHeader(mem, slot.off - this.hdr, this.hdr, mem, slot.off, len, meta, this.source);
      if (e !== null) {
        sw.countReceiveDrop(port, len, 'vnet-header', e);
        return false;
      }
    }
    if (tci >= 0) {
      meta.vlanPresent = true;
      meta.vlanTci = tci & 0xffff;
    }
    const small = len <= 2048 - this.pool.headroom ? this.pool.take(len) : null;
    if (small !== null) {
      small.setLength(len);
      copyBytes(mem, small.off, slot.off, len);
      small.meta.copyFrom(meta);
      this.rx.push(small);
      return false;
    }
    // Hand the slot's buffer over.
    slot.setLength(len);
    this.rx.push(slot);
    return true;
  }

  transmit(q: OutputQueue, _port: Port): number {
    if (this.closed) return 0;
    if (this.txc !== null) {
      if (!this.small(q) || !this.txc.idle()) {
        const queued = this.txc.enqueue(q, this.hdr > 0 ? this.writeHeader : null);
        this.txViaWorker += queued;
        return queued;
      }
      const sent = this.write(q);
      this.txBypass += sent;
      return sent;
    }
    return this.write(q);
  }

  private small(q: OutputQueue): boolean {
    if (q.count > BYPASS_FRAMES) return false;
    let bytes = 0;
    for (let i = 0; i < q.count; i++) bytes += q.batch.packets[i]!.len;
    return bytes <= BYPASS_BYTES;
  }

  private write(q: OutputQueue): number {
    const n = Math.min(q.count, this.txOff.length);
    const mem = this.pool.bytes;
    const hdr = this.hdr;
    for (let i = 0; i < n; i++) {
      const p = q.batch.packets[i]!;
      const tci = q.tci[i]!;
      if (hdr > 0) encodeVnetHeader(p.meta, mem, this.txHdr[i]!, hdr, this.dataValidOut, tci >= 0 ? 4 : 0);
      this.txOff[i] = p.off;
      this.txLen[i] = p.len;
      this.txTci[i] = tci;
    }
    const r = this.shim.writeBatch(this.fd, mem, this.txHdr, hdr, this.txOff, this.txLen, this.txTci, n, this.mode);
    if (r < 0) {
      this.stats.writeErrors++;
      this.stats.lastWriteError = -r;
      return 0;
    }
    return r;
  }

  protected fatal(errno: number): void {
    if (this.poll !== null) this.shim.pollStop(this.poll);
    this.poll = null;
    this.onFatal?.(errno);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.poll !== null) this.shim.pollStop(this.poll);
    this.poll = null;
    // With an I/O worker, the fd closes once the worker has let go of both channels.
    const txc = this.txc;
    const closeTx = () => (txc !== null ? txc.close(() => this.shim.close(this.fd)) : this.shim.close(this.fd));
    if (this.rxc !== null) this.rxc.close(closeTx);
    else closeTx();
    for (let i = 0; i < this.n; i++) {
      const p = this.slots[i];
      if (p !== null && p !== undefined) p.release();
      this.slots[i] = null;
    }
  }
}
