// The main thread's side of a port queue's writes on an I/O worker (see
// io-worker.ts): a TxChannel queues packets by buffer index into a ring the
// worker drains, and takes the buffers back — releasing them to the pool,
// which only the main thread touches — from the completion ring.

import type { BufferPool } from '../packet/pool.js';
import type { Packet } from '../packet/packet.js';
import type { OutputQueue, Port } from '../switch/port.js';
import { Drop } from '../switch/counters.js';
import { native, PollEvent, type NativeShim, type PollHandle } from './native/index.js';
import { SpscRing } from './ring.js';
import { DONE_WIDTH, TX_WIDTH, nextChannelId, txPressure, wakeIfStalled, type IoWorker, type TxSpec } from './workers.js';

export class TxChannel {
  readonly spec: TxSpec;
  private readonly tx: SpscRing;
  private readonly done: SpscRing;
  private readonly shim: NativeShim;
  private readonly donePoll: PollHandle;
  /** Virtio header area per TX slot (16 bytes each) in packet memory. */
  private readonly hdrBase: number;
  private port: Port | null = null;
  private closed = false;
  /** Frames the worker could not send (write errors), for the backend's stats. */
  failed = 0;
  private congested = false;
  /** Packets queued for the worker and not yet handed back. */
  private inFlight = 0;
  /** The worker died or the fd failed there: nothing is queued any more. */
  private dead = false;

  constructor(readonly worker: IoWorker, private readonly pool: BufferPool, fd: number, mode: number, hdrLen: number, onFatal?: (errno: number) => void, capacity = 4096) {
    this.shim = native();
    const mem = pool.memory;
    const txOff = mem.alloc(SpscRing.bytes(capacity, TX_WIDTH), 64);
    const doneOff = mem.alloc(SpscRing.bytes(capacity, DONE_WIDTH), 64);
    this.hdrBase = hdrLen > 0 ? mem.alloc(capacity * 16, 16) : 0;
    this.spec = {
      kind: 'tx', id: nextChannelId(), fd, mode, hdrLen, capacity, txOff, doneOff,
      bell: this.shim.eventfdOpen(), doneBell: this.shim.eventfdOpen(),
    };
    this.tx = new SpscRing(mem.buffer, txOff, capacity, TX_WIDTH);
    this.done = new SpscRing(mem.buffer, doneOff, capacity, DONE_WIDTH);
    this.donePoll = this.shim.pollStart(this.spec.doneBell, PollEvent.READABLE, () => {
      this.shim.eventfdDrain(this.spec.doneBell);
      this.reap();
    });
    worker.add(this.spec, (errno) => {
      // The worker is gone or the fd failed there: nothing more goes to it, and
      // its ring no longer holds the receivers back.
      this.dead = true;
      this.uncongest();
      onFatal?.(errno);
    });
  }

  attach(port: Port): void {
    this.port = port;
  }

  /**
   * Nothing of this queue is with the worker: every frame queued so far has
   * been written and handed back. Only then may the main thread write to the
   * fd itself without overtaking a frame the worker still holds.
   */
  idle(): boolean {
    if (this.inFlight > 0 && !this.dead) this.reap();
    return this.inFlight === 0 && !this.closed && !this.dead;
  }

  /**
   * Queue the output for the worker; `header(p, at, tci)` writes the virtio
   * header for packet p at byte offset `at`. Returns how many were queued;
   * each queued packet is held (retained) until the worker is done with it.
   */
  enqueue(q: OutputQueue, header: ((p: Packet, at: number, tci: number) => void) | null): number {
    if (this.closed || this.dead) return 0;
    const n = Math.min(q.count, this.tx.space());
    const ints = this.tx.ints;
    const hdrLen = this.spec.hdrLen;
    for (let k = 0; k < n; k++) {
      const p = q.batch.packets[k]!;
      const tci = q.tci[k]!;
      const at = this.tx.slotFor(k);
      const slotIndex = (at - 4) / TX_WIDTH;
      const hdrOff = this.hdrBase + slotIndex * 16;
      if (hdrLen > 0 && header !== null) header(p, hdrOff, tci);
      p.retain();
      ints[at] = p.index;
      ints[at + 1] = p.off;
      ints[at + 2] = p.len;
      ints[at + 3] = tci;
      ints[at + 4] = hdrOff;
    }
    this.inFlight += n;
    if (n > 0 && this.tx.publish(n)) this.shim.eventfdRing(this.spec.bell);
    // Take back what the worker is done with; have it ring for the rest.
    this.reap();
    if (!this.congested && this.tx.space() < this.spec.capacity / 4) {
      this.congested = true;
      txPressure.congested++;
    }
    return n;
  }

  /**
   * Take finished buffers back. While some are still with the worker, leave
   * the completion ring's "asleep" flag up, so the worker rings doneBell when
   * it hands more back: without that, buffers (and the congestion mark that
   * pauses every receiver) would wait for the next enqueue — which a paused
   * switch never makes.
   */
  private reap(): void {
    const done = this.done;
    const ints = done.ints;
    const packets = this.pool.packets;
    for (;;) {
      const n = done.available();
      if (n > 0) {
        let bad = 0;
        for (let k = 0; k < n; k++) {
          const at = done.slotAt(k);
          const p = packets[ints[at]!]!;
          if (ints[at + 1] === 0) {
            bad++;
            if (this.port !== null) {
              const c = this.port.counters;
              c.txPackets--;
              c.txBytes -= p.len;
              c.txDrops[Drop['tx-error']]!++;
            }
          }
          p.release();
        }
        done.consume(n);
        this.failed += bad;
        this.inFlight -= n;
      }
      if (this.inFlight === 0 || this.closed || done.sleep()) break;
    }
    if (this.congested && this.tx.space() > (this.spec.capacity * 3) / 4) {
      this.congested = false;
      txPressure.congested--;
      txPressure.resume();
    }
    // The worker may be waiting for room to report more.
    wakeIfStalled(this.tx, this.shim, this.spec.bell);
  }

  private uncongest(): void {
    if (!this.congested) return;
    this.congested = false;
    txPressure.congested--;
    txPressure.resume();
  }

  /** Stop: the worker lets go, then the remaining buffers come back and `then` runs (close the fd there). */
  close(then: () => void): void {
    if (this.closed) return;
    this.closed = true;
    this.uncongest();
    this.worker.remove(this.spec, () => {
      this.reap();
      // Whatever the worker never took is ours again.
      this.tx.forEachUnconsumed((slot) => this.pool.packets[this.tx.ints[slot]!]!.release());
      this.shim.pollStop(this.donePoll);
      this.shim.close(this.spec.bell);
      this.shim.close(this.spec.doneBell);
      then();
    });
  }
}
