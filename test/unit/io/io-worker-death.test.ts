// An I/O worker thread that dies of an exception (a bug) must not take the
// daemon with it: Node rethrows a worker's uncaught exception in the parent
// unless someone listens. The ports it served are failed (set down by the
// runtime), its transmit ring stops holding receivers back, and removing the
// port afterwards still closes the fd. The endpoint here is a UDP socket (a
// QEMU dgram port), so no root is needed; the crash is real: a channel whose
// rings lie outside the shared memory makes the thread throw.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fstatSync } from 'node:fs';
import { BufferPool } from '../../../src/packet/pool.js';
import { Switch } from '../../../src/switch/switch.js';
import { IoWorker, txPressure } from '../../../src/io/workers.js';
import { QemuDgramBackend } from '../../../src/io/qemu-dgram.js';
import { nativeAvailable } from '../../../src/io/native/index.js';
import { freeUdpPort, inCI } from '../../util/env.js';

if (!nativeAvailable() && inCI) throw new Error('the native shim is not built');


test('a worker thread that throws: the process lives, its ports are failed, removal still closes them', { timeout: 20_000, skip: !nativeAvailable() && 'the native shim is not built' }, async () => {
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 512 }, { bufferSize: 66560, count: 72 }], scratchBytes: 4 << 20 });
  const sw = new Switch({ pool });
  const worker = new IoWorker(pool);
  const deaths: string[] = [];
  worker.onDeath = (why) => deaths.push(why);
  const be = QemuDgramBackend.open({ local: { host: '127.0.0.1', port: await freeUdpPort() }, remote: { host: '127.0.0.1', port: await freeUdpPort() }, pool });
  be.useIoWorker(worker, true);
  const fatals: number[] = [];
  be.onFatal = (errno) => fatals.push(errno);
  const port = sw.addPort({ name: 'vm', kind: 'legacy' }, be);
  be.attach(sw, port);
  const exited = new Promise<number>((r) => worker.thread.once('exit', r));

  // A channel whose rings lie far outside the packet memory: the thread throws a RangeError.
  worker.thread.postMessage({ add: { kind: 'tx', id: 1e6, fd: -1, mode: 0, hdrLen: 0, capacity: 4096, txOff: 1 << 30, doneOff: 1 << 30, bell: -1, doneBell: -1 } });
  await exited;
  await new Promise((r) => setImmediate(r));

  assert.equal(deaths.length, 1, 'the death was reported once');
  assert.match(deaths[0]!, /RangeError|Error/, `with the thread's exception: ${deaths[0]}`);
  assert.equal(fatals.length >= 1, true, 'the port\'s channels were failed (the runtime sets the port down)');
  assert.equal(txPressure.congested, 0, 'no receiver is held back by the dead worker\'s ring');
  // Nothing more goes to the dead thread; removing the port completes and closes the fd.
  sw.removePort('vm');
  be.close();
  await new Promise((r) => setTimeout(r, 50));
  assert.throws(() => fstatSync(be.fd), /EBADF/, 'the socket was closed although its worker is gone');
  assert.equal(pool.inUse, 0, 'the buffers the dead thread held (its fill ring) came back with the port');
});
