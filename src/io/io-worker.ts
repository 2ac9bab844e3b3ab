// An I/O worker: a thread with its own event loop that owns the reading and
// writing of some port queues. The switch's pipeline stays on the main
// thread, which alone takes and gives pool buffers; the two exchange them by
// index through lock-free rings in the shared packet memory (ring.ts):
//
//   transmit: main → tx ring (buffer, offset, length, 802.1Q tag, virtio
//     header offset) → the worker writes them in batches (writev / sendmmsg)
//     straight from packet memory → completion ring (buffer, sent?) → main
//     releases them. The kernel's receive work for those frames (a guest's
//     TCP stack runs in the writer's context) happens here, on another core.
//   receive: main → fill ring (empty buffers) → the worker reads frames into
//     them in batches (read / recvmmsg) → rx ring (buffer, length, tag) →
//     main decodes the virtio header and runs the pipeline.
//
// A side that cannot go on (ring full, no buffers) raises the ring's STALLED
// flag and the other side rings the doorbell (an eventfd) once it made room;
// a consumer about to sleep raises ASLEEP and the producer rings only then.
//
// Messages from the main thread: {add: ChannelSpec} and {remove: id}; the
// worker answers {removed: id} once it will not touch that channel again,
// and {fatal: id, errno} if a channel's fd failed for good.

import { parentPort, workerData } from 'node:worker_threads';
import { native, Errno, PollEvent, type PollHandle } from './native/index.js';
import { SpscRing } from './ring.js';
import { TX_WIDTH, DONE_WIDTH, STALLED, FILL_WIDTH, RX_WIDTH, type ChannelSpec, type RxSpec, type TxSpec } from './workers.js';

interface TxChannel {
  spec: TxSpec;
  tx: SpscRing;
  done: SpscRing;
  bell: PollHandle;
  out: PollHandle | null;
}

interface RxChannel {
  spec: RxSpec;
  fill: SpscRing;
  rx: SpscRing;
  bell: PollHandle;
  /** Polls the fd for frames while reading is possible (null: waiting for the main thread, or failed). */
  in: PollHandle | null;
  failed: boolean;
}

const shim = native();
const buffer = (workerData as { buffer: SharedArrayBuffer }).buffer;
const mem = new Uint8Array(buffer);
const txChannels = new Map<number, TxChannel>();
const rxChannels = new Map<number, RxChannel>();
const BATCH = 64;
const offs = new Int32Array(BATCH);
const lens = new Int32Array(BATCH);
const tcis = new Int32Array(BATCH);
const hdrs = new Int32Array(BATCH);
const caps = new Int32Array(BATCH);

function drainTx(ch: TxChannel): void {
  const { tx, done, spec } = ch;
  const ints = tx.ints;
  for (;;) {
    let n = tx.available();
    if (n === 0) {
      if (tx.sleep()) return;
      continue;
    }
    if (n > BATCH) n = BATCH;
    if (done.space() < n) {
      // The main thread has not taken its buffers back yet: wait for it to ring.
      Atomics.store(ints, STALLED, 1);
      if (done.space() < n) return;
      Atomics.store(ints, STALLED, 0);
    }
    for (let k = 0; k < n; k++) {
      const at = tx.slotAt(k);
      offs[k] = ints[at + 1]!;
      lens[k] = ints[at + 2]!;
      tcis[k] = ints[at + 3]!;
      hdrs[k] = ints[at + 4]!;
    }
    const r = shim.writeBatch(spec.fd, mem, hdrs, spec.hdrLen, offs, lens, tcis, n, spec.mode);
    if (r === -Errno.EAGAIN || r === -Errno.ENOBUFS) {
      // The device is full: wait until it can take more, keep the packets.
      if (ch.out === null) ch.out = shim.pollStart(spec.fd, PollEvent.WRITABLE, () => { stopOut(ch); drainTx(ch); });
      return;
    }
    const sent = r < 0 ? 0 : r;
    const dints = done.ints;
    for (let k = 0; k < n; k++) {
      const at = done.slotFor(k);
      dints[at] = ints[tx.slotAt(k)]!;
      dints[at + 1] = k < sent ? 1 : 0;
    }
    tx.consume(n);
    if (done.publish(n)) shim.eventfdRing(spec.doneBell);
  }
}

function stopOut(ch: TxChannel): void {
  if (ch.out !== null) shim.pollStop(ch.out);
  ch.out = null;
}

/** Read frames into the buffers the main thread gave, until the fd is empty or buffers or room run out. */
function drainRx(ch: RxChannel): void {
  const { fill, rx, spec } = ch;
  const fints = fill.ints;
  const rints = rx.ints;
  for (;;) {
    let n = fill.available();
    const room = rx.space();
    if (room < n) n = room;
    if (n > BATCH) n = BATCH;
    if (n === 0) {
      // No empty buffer, or no room to hand frames over: stop polling the fd
      // (it would stay readable) until the main thread rings.
      Atomics.store(fints, STALLED, 1);
      if (Math.min(fill.available(), rx.space()) === 0) {
        stopIn(ch);
        return;
      }
      Atomics.store(fints, STALLED, 0);
      continue;
    }
    for (let k = 0; k < n; k++) {
      const at = fill.slotAt(k);
      offs[k] = fints[at + 1]!;
      caps[k] = fints[at + 2]!;
    }
    const got = shim.readBatch(spec.fd, mem, offs, caps, lens, tcis, n, spec.mode);
    if (got <= 0) {
      if (got < 0 && -got !== Errno.EAGAIN && -got !== Errno.EINTR) {
        const errno = -got;
        if (errno === Errno.EBADFD || errno === Errno.EIO || errno === Errno.ENXIO) {
          ch.failed = true;
          stopIn(ch);
          parentPort!.postMessage({ fatal: spec.id, errno });
          return;
        }
      }
      startIn(ch);
      return;
    }
    for (let k = 0; k < got; k++) {
      const at = rx.slotFor(k);
      rints[at] = fints[fill.slotAt(k)]!;
      rints[at + 1] = lens[k]!;
      rints[at + 2] = tcis[k]!;
    }
    fill.consume(got);
    if (rx.publish(got)) shim.eventfdRing(spec.rxBell);
    if (got < n) {
      startIn(ch);
      return;
    }
  }
}

function startIn(ch: RxChannel): void {
  if (ch.in === null && !ch.failed) ch.in = shim.pollStart(ch.spec.fd, PollEvent.READABLE, () => drainRx(ch));
}

function stopIn(ch: RxChannel): void {
  if (ch.in !== null) shim.pollStop(ch.in);
  ch.in = null;
}

/** Poll a doorbell eventfd: drain it, then run `fn`. */
function onBell(fd: number, fn: () => void): PollHandle {
  return shim.pollStart(fd, PollEvent.READABLE, () => {
    shim.eventfdDrain(fd);
    fn();
  });
}

// Tell the main side this thread's kernel id (its CPU time is in /proc/self/task/TID/stat).
parentPort!.postMessage({ tid: shim.gettid() });

parentPort!.on('message', (m: { add?: ChannelSpec; remove?: number }) => {
  if (m.add !== undefined) {
    const spec = m.add;
    if (spec.kind === 'tx') {
      const ch: TxChannel = {
        spec,
        tx: new SpscRing(buffer, spec.txOff, spec.capacity, TX_WIDTH),
        done: new SpscRing(buffer, spec.doneOff, spec.capacity, DONE_WIDTH),
        bell: onBell(spec.bell, () => drainTx(ch)),
        out: null,
      };
      txChannels.set(spec.id, ch);
      drainTx(ch);
    } else {
      const ch: RxChannel = {
        spec,
        fill: new SpscRing(buffer, spec.fillOff, spec.capacity, FILL_WIDTH),
        rx: new SpscRing(buffer, spec.rxOff, spec.capacity, RX_WIDTH),
        bell: onBell(spec.bell, () => {
          Atomics.store(ch.fill.ints, STALLED, 0);
          drainRx(ch);
        }),
        in: null,
        failed: false,
      };
      rxChannels.set(spec.id, ch);
      drainRx(ch);
    }
  } else if (m.remove !== undefined) {
    const tx = txChannels.get(m.remove);
    if (tx !== undefined) {
      shim.pollStop(tx.bell);
      stopOut(tx);
      txChannels.delete(m.remove);
    }
    const rx = rxChannels.get(m.remove);
    if (rx !== undefined) {
      shim.pollStop(rx.bell);
      stopIn(rx);
      rxChannels.delete(m.remove);
    }
    parentPort!.postMessage({ removed: m.remove });
  }
});
