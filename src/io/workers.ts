// I/O worker threads, the main thread's side: each owns the reading and
// writing of some port queues (channels), exchanging packets with the main
// thread — which runs the pipeline and alone touches the buffer pool —
// through lock-free rings in the shared packet memory (ring.ts), never
// through a message per packet. See io-worker.ts for the thread itself,
// tx-channel.ts and rx-channel.ts for the two kinds of channel.

import { Worker } from 'node:worker_threads';
import type { BufferPool } from '../packet/pool.js';
import { Errno, type NativeShim } from './native/index.js';
import type { SpscRing } from './ring.js';

/** TX record: buffer index, frame offset, length, TCI (-1 none), virtio header offset, spare. */
export const TX_WIDTH = 6;
/** Completion record: buffer index, 1 sent / 0 failed. */
export const DONE_WIDTH = 2;
/** Int in the TX ring's header: the worker waits for completion-ring space. */
export const STALLED = 3;

/** What every channel tells the worker: its fd, its rings' size, its doorbell. */
interface SpecCommon {
  id: number;
  fd: number;
  /** IoMode of the fd: 0 read/writev, 1 recvmmsg/sendmmsg. */
  mode: number;
  /** Slots in each of its rings. */
  capacity: number;
  /** eventfd main → worker. */
  bell: number;
}

export interface TxSpec extends SpecCommon {
  kind: 'tx';
  /** virtio_net_hdr bytes before each frame (0: none). */
  hdrLen: number;
  /** Byte offsets of the rings in the shared packet memory. */
  txOff: number;
  doneOff: number;
  /** eventfd worker → main: buffers handed back. */
  doneBell: number;
}

/** Fill record (main → worker): buffer index, where the read goes (virtio header first), room there. */
export const FILL_WIDTH = 3;
/** Receive record (worker → main): buffer index, bytes read (-1: longer than the room), TCI (-1 none). */
export const RX_WIDTH = 3;

export interface RxSpec extends SpecCommon {
  kind: 'rx';
  /** Byte offsets of the rings in the shared packet memory. */
  fillOff: number;
  rxOff: number;
  /** eventfd worker → main: frames read (the main → worker bell: buffers given, room made). */
  rxBell: number;
}

export type ChannelSpec = TxSpec | RxSpec;

let nextId = 1;
export const nextChannelId = (): number => nextId++;

/**
 * Backpressure from transmit workers to receive: while some channel is more
 * than 3/4 full, receivers pause (briefly) instead of reading frames that
 * would be dropped at a full ring — a worker that cannot keep up slows the
 * switch down rather than making TCP retransmit.
 */
export const txPressure = {
  congested: 0,
  waiters: new Set<() => void>(),
  resume(): void {
    if (this.congested > 0) return;
    const w = [...this.waiters];
    this.waiters.clear();
    for (const f of w) f();
  },
};

/**
 * The worker raised `ring`'s STALLED flag (it waits for buffers or room):
 * lower it and ring the worker's doorbell `bell`.
 */
export function wakeIfStalled(ring: SpscRing, shim: NativeShim, bell: number): void {
  if (Atomics.load(ring.ints, STALLED) === 1) {
    Atomics.store(ring.ints, STALLED, 0);
    shim.eventfdRing(bell);
  }
}

/** One worker thread and the channels it serves. */
export class IoWorker {
  readonly thread: Worker;
  private readonly waiting = new Map<number, () => void>();
  private readonly fatal = new Map<number, (errno: number) => void>();
  channels = 0;
  private gone = false;
  /** Told when the thread dies unasked (an exception in it): its channels' ports are set down, the daemon goes on. */
  onDeath: ((why: string) => void) | null = null;
  /** The thread's kernel thread id, once it has said (0 until then). */
  tid = 0;
  private lastError: Error | null = null;

  constructor(readonly pool: BufferPool) {
    const buffer = pool.memory.buffer;
    if (!(buffer instanceof SharedArrayBuffer)) throw new Error('I/O workers need shared packet memory');
    this.thread = new Worker(new URL('./io-worker.js', import.meta.url), { workerData: { buffer } });
    this.thread.unref();
    this.thread.on('message', (m: { removed?: number; fatal?: number; errno?: number; tid?: number }) => {
      if (m.tid !== undefined) {
        this.tid = m.tid;
      } else if (m.removed !== undefined) {
        this.waiting.get(m.removed)?.();
        this.waiting.delete(m.removed);
      } else if (m.fatal !== undefined) {
        this.fatal.get(m.fatal)?.(m.errno ?? 0);
      }
    });
    // Without a listener, an exception in the thread would be rethrown here and end the daemon.
    this.thread.on('error', (e: Error) => { this.lastError = e; });
    this.thread.on('exit', (code: number) => {
      if (this.gone) return;
      this.gone = true;
      this.onDeath?.(this.lastError !== null ? String(this.lastError.stack ?? this.lastError) : `exit code ${code}`);
      // Every channel it served has lost its reader or writer: fail them (their ports go down)...
      const failed = [...this.fatal.values()];
      this.fatal.clear();
      for (const f of failed) f(Errno.EIO);
      // ...and whatever waited for it to let go of a channel need not wait.
      this.releaseWaiting();
    });
  }

  /** Hand a channel to the thread; `onFatal` runs if its fd fails for good there. */
  add(spec: ChannelSpec, onFatal?: (errno: number) => void): void {
    if (spec.kind === 'tx') this.channels++;
    if (onFatal !== undefined) this.fatal.set(spec.id, onFatal);
    this.thread.postMessage({ add: spec });
  }

  /** Ask the worker to let go of a channel; `then` runs once it has (at once if the worker is gone). */
  remove(spec: ChannelSpec, then: () => void): void {
    const id = spec.id;
    if (spec.kind === 'tx') this.channels--;
    this.fatal.delete(id);
    if (this.gone) {
      then();
      return;
    }
    this.waiting.set(id, then);
    this.thread.postMessage({ remove: id });
  }

  /** Stop the thread; channels still waiting for it finish their cleanup now. */
  terminate(): void {
    if (this.gone) return;
    this.gone = true;
    void this.thread.terminate().then(() => this.releaseWaiting());
  }

  /** The thread is gone: every channel removal waiting for it finishes now. */
  private releaseWaiting(): void {
    const w = [...this.waiting.values()];
    this.waiting.clear();
    for (const f of w) f();
  }
}

