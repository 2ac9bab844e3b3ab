// The transmit worker: a thread with its own event loop that owns the
// writing side of some ports. The switch (main thread) puts packets for
// those ports into a ring per port — buffer index, offset, length, 802.1Q
// tag, where its virtio header is — and rings the worker's doorbell if it
// sleeps; the worker writes them in batches (writev / sendmmsg) straight from
// the shared packet memory and hands the buffer indices back through a
// completion ring. The kernel's receive work for those frames (a guest's
// TCP stack runs in the writer's context) happens here, on another core.
//
// Messages from the main thread: {add: ChannelSpec} and {remove: id}; the
// worker answers {removed: id} once it will not touch that channel again.

import { parentPort, workerData } from 'node:worker_threads';
import { native, Errno, PollEvent, type PollHandle } from './native/index.js';
import { SpscRing } from './ring.js';
import { TX_WIDTH, DONE_WIDTH, STALLED, type ChannelSpec } from './tx-channel.js';

interface Channel {
  spec: ChannelSpec;
  tx: SpscRing;
  done: SpscRing;
  bell: PollHandle;
  out: PollHandle | null;
}

const shim = native();
const buffer = (workerData as { buffer: SharedArrayBuffer }).buffer;
const mem = new Uint8Array(buffer);
const channels = new Map<number, Channel>();
const BATCH = 64;
const offs = new Int32Array(BATCH);
const lens = new Int32Array(BATCH);
const tcis = new Int32Array(BATCH);
const hdrs = new Int32Array(BATCH);

function drain(ch: Channel): void {
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
      if (ch.out === null) ch.out = shim.pollStart(spec.fd, PollEvent.WRITABLE, () => { stopOut(ch); drain(ch); });
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

function stopOut(ch: Channel): void {
  if (ch.out !== null) shim.pollStop(ch.out);
  ch.out = null;
}

parentPort!.on('message', (m: { add?: ChannelSpec; remove?: number; wake?: number }) => {
  if (m.add !== undefined) {
    const spec = m.add;
    const ch: Channel = {
      spec,
      tx: new SpscRing(buffer, spec.txOff, spec.capacity, TX_WIDTH),
      done: new SpscRing(buffer, spec.doneOff, spec.capacity, DONE_WIDTH),
      bell: shim.pollStart(spec.bell, PollEvent.READABLE, () => {
        shim.eventfdDrain(spec.bell);
        drain(ch);
      }),
      out: null,
    };
    channels.set(spec.id, ch);
    drain(ch);
  } else if (m.remove !== undefined) {
    const ch = channels.get(m.remove);
    if (ch !== undefined) {
      shim.pollStop(ch.bell);
      stopOut(ch);
      channels.delete(m.remove);
    }
    parentPort!.postMessage({ removed: m.remove });
  }
});
