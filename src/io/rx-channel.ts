// The main thread's side of a port queue's reads on an I/O worker (see
// io-worker.ts): an RxChannel keeps the worker supplied with empty pool
// buffers through the fill ring and takes the frames it read from the rx
// ring. What a frame means (virtio header, VLAN, the pipeline) is decided
// here, on the main thread, by the backend's `deliver` callback.

import type { BufferPool } from '../packet/pool.js';
import type { Packet } from '../packet/packet.js';
import { native, PollEvent, type NativeShim, type PollHandle } from './native/index.js';
import { SpscRing } from './ring.js';
import { FILL_WIDTH, RX_WIDTH, nextChannelId, txPressure, wakeIfStalled, type IoWorker, type RxSpec } from './workers.js';

export interface RxSink {
  /**
   * One frame the worker read into `p` (`total` bytes including the virtio
   * header in front of `p.off`; -1: longer than the buffer). Returns true
   * when it kept the buffer (handed it to the switch), false when the buffer
   * may be read into again.
   */
  frame(p: Packet, total: number, tci: number): boolean;
  /** The frames of this wake-up are all in: run the switch on them. */
  flush(): void;
}

export class RxChannel {
  readonly spec: RxSpec;
  private readonly fill: SpscRing;
  private readonly rx: SpscRing;
  private readonly shim: NativeShim;
  private readonly poll: PollHandle;
  /** Buffers the worker holds: in the fill ring or read and not yet taken. */
  private outstanding = 0;
  private closed = false;
  private paused = false;
  private retry: ReturnType<typeof setTimeout> | null = null;
  private scheduled = false;
  /** Frames taken from the worker. */
  frames = 0;

  /**
   * `depth` buffers of `frameRoom` bytes (plus `hdrLen` for the virtio header
   * in front) are kept with the worker; `rounds` × 64 frames at most per turn
   * of the event loop, so other ports get theirs.
   */
  constructor(
    readonly worker: IoWorker, private readonly pool: BufferPool, fd: number, mode: number,
    private readonly hdrLen: number, private readonly frameRoom: number, private readonly sink: RxSink,
    private readonly depth = 64, private readonly rounds = 4, onFatal?: (errno: number) => void,
  ) {
    this.shim = native();
    let capacity = 2;
    while (capacity < depth) capacity *= 2;
    const mem = pool.memory;
    const fillOff = mem.alloc(SpscRing.bytes(capacity, FILL_WIDTH), 64);
    const rxOff = mem.alloc(SpscRing.bytes(capacity, RX_WIDTH), 64);
    this.spec = { kind: 'rx', id: nextChannelId(), fd, mode, capacity, fillOff, rxOff, bell: this.shim.eventfdOpen(), rxBell: this.shim.eventfdOpen() };
    this.fill = new SpscRing(mem.buffer, fillOff, capacity, FILL_WIDTH);
    this.rx = new SpscRing(mem.buffer, rxOff, capacity, RX_WIDTH);
    this.topUp();
    // Asleep from the start: the worker rings for the first frames.
    this.rx.sleep();
    this.poll = this.shim.pollStart(this.spec.rxBell, PollEvent.READABLE, () => {
      this.shim.eventfdDrain(this.spec.rxBell);
      this.take();
    });
    worker.add(this.spec, onFatal);
  }

  /** Give the worker empty buffers until it holds `depth`; true if it does. */
  private topUp(): boolean {
    const fill = this.fill;
    let n = 0;
    while (this.outstanding + n < this.depth && n < fill.space()) {
      const p = this.pool.take(this.frameRoom);
      if (p === null) break;
      this.put(n++, p);
    }
    if (n > 0) {
      fill.publish(n);
      this.outstanding += n;
    }
    return this.outstanding >= this.depth;
  }

  /** Write the fill record for `p` as the k-th after those already published: read into it from its virtio header on. */
  private put(k: number, p: Packet): void {
    const ints = this.fill.ints;
    const at = this.fill.slotFor(k);
    ints[at] = p.index;
    ints[at + 1] = p.off - this.hdrLen;
    ints[at + 2] = p.tailroom + this.hdrLen;
  }

  /** Give `p` back to the worker to read into again. */
  private refill(p: Packet): void {
    this.put(0, p);
    this.fill.publish(1);
    this.outstanding++;
  }

  private readonly resume = (): void => {
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
    if (!this.paused) return;
    this.paused = false;
    this.take();
  };

  /** Take what the worker read (called on its doorbell, and again while more waits). */
  private take(): void {
    if (this.closed) return;
    if (txPressure.congested > 0) {
      // A transmit side is behind: leave the frames with the worker (its rx ring
      // fills and it stops reading) until the writers catch up.
      if (!this.paused) {
        this.paused = true;
        txPressure.waiters.add(this.resume);
        this.retry = setTimeout(this.resume, 2);
      }
      return;
    }
    const rx = this.rx;
    const ints = rx.ints;
    const packets = this.pool.packets;
    let took = 0;
    for (let round = 0; round < this.rounds; round++) {
      let n = rx.available();
      if (n === 0) break;
      if (n > 64) n = 64;
      for (let k = 0; k < n; k++) {
        const at = rx.slotAt(k);
        const p = packets[ints[at]!]!;
        this.outstanding--;
        if (!this.sink.frame(p, ints[at + 1]!, ints[at + 2]!)) this.refill(p);
      }
      rx.consume(n);
      took += n;
      this.sink.flush();
      this.topUp();
      this.wake();
    }
    this.frames += took;
    if (this.outstanding < this.depth && this.retry === null && !this.topUp()) {
      // The pool is dry: try again shortly (buffers come back as packets leave).
      this.retry = setTimeout(() => { this.retry = null; this.topUp(); this.wake(); }, 1);
    }
    // More than a turn's worth, or some arrived while going to sleep: go on
    // after other ports and timers had their turn.
    if ((rx.available() > 0 || !rx.sleep()) && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.again);
    }
  }

  private readonly again = (): void => {
    this.scheduled = false;
    this.take();
  };

  /** The worker waits for buffers or room: ring it. */
  private wake(): void {
    wakeIfStalled(this.fill, this.shim, this.spec.bell);
  }

  /** Stop: the worker lets go, then every buffer it held returns to the pool and `then` runs. */
  close(then: () => void): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
    txPressure.waiters.delete(this.resume);
    this.worker.remove(this.spec, () => {
      const packets = this.pool.packets;
      this.fill.forEachUnconsumed((slot) => packets[this.fill.ints[slot]!]!.release());
      this.rx.forEachUnconsumed((slot) => packets[this.rx.ints[slot]!]!.release());
      this.outstanding = 0;
      this.shim.pollStop(this.poll);
      this.shim.close(this.spec.bell);
      this.shim.close(this.spec.rxBell);
      then();
    });
  }
}
