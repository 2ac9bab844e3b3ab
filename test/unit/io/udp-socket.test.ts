// The shim's UDP sockets for QEMU `-netdev dgram` ports, without QEMU: two
// sockets connected to each other on loopback carry frames in batches, in
// order and whole; a connected socket hears only its peer; and an ICMP error
// (the peer's port closed: a VM not running) is not reported to JavaScript as
// a dead fd — it once set the port down.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { IoMode, native, nativeAvailable, PollEvent } from '../../../src/io/native/index.js';
import { freeUdpPort, inCI } from '../../util/env.js';

if (!nativeAvailable() && inCI) throw new Error('the native shim is not built');
const skip = !nativeAvailable() && 'the native shim is not built';


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Frame k: 60 + 37k bytes, every byte a function of k and its position. */
function frame(k: number): Uint8Array {
  const f = new Uint8Array(60 + 37 * k);
  for (let i = 0; i < f.length; i++) f[i] = (k * 29 + i * 7) & 0xff;
  return f;
}

for (const [type, host] of [['udp4', '127.0.0.1'], ['udp6', '::1']] as const) {
  test(`${type}: frames in batches both ways, in order and whole; strangers are not heard`, { skip }, async () => {
    const n = native();
    const pa = await freeUdpPort(type, host);
    const pb = await freeUdpPort(type, host);
    const a = n.udpOpen(host, pa, host, pb, 1 << 20);
    const b = n.udpOpen(host, pb, host, pa, 1 << 20);
    const mem = new Uint8Array(1 << 16);
    try {
      const count = 5;
      const hdr = new Int32Array(count), offs = new Int32Array(count), lens = new Int32Array(count), tcis = new Int32Array(count).fill(-1);
      let at = 0;
      for (let k = 0; k < count; k++) {
        const f = frame(k);
        mem.set(f, at);
        offs[k] = at;
        lens[k] = f.length;
        at += f.length;
      }
      assert.equal(n.writeBatch(a, mem, hdr, 0, offs, lens, tcis, count, IoMode.PACKET), count, 'one sendmmsg, every frame');
      // A stranger writes to b's port: a connected socket does not hear it.
      const stranger = createSocket(type);
      await new Promise<void>((r) => stranger.send(Buffer.from('not from the VM'), pb, host, () => r()));
      stranger.close();
      await sleep(50);
      const rOffs = new Int32Array(8), caps = new Int32Array(8).fill(4096), rLens = new Int32Array(8), rTcis = new Int32Array(8);
      for (let k = 0; k < 8; k++) rOffs[k] = 32768 + k * 4096;
      const got = n.readBatch(b, mem, rOffs, caps, rLens, rTcis, 8, IoMode.PACKET);
      assert.equal(got, count, 'the frames, and nothing else');
      for (let k = 0; k < count; k++) {
        assert.equal(rLens[k], frame(k).length);
        assert.deepEqual(mem.subarray(rOffs[k]!, rOffs[k]! + rLens[k]!), frame(k), `frame ${k} whole and in order`);
        assert.equal(rTcis[k], -1);
      }
    } finally {
      n.close(a);
      n.close(b);
    }
  });
}

test('a send to a closed port (the VM not running) is not a dead fd: the poll stays quiet and reading goes on', { skip }, async () => {
  const n = native();
  const pa = await freeUdpPort('udp4', '127.0.0.1');
  const pb = await freeUdpPort('udp4', '127.0.0.1');
  const a = n.udpOpen('127.0.0.1', pa, '127.0.0.1', pb, 0);
  const statuses: number[] = [];
  const poll = n.pollStart(a, PollEvent.READABLE, (status) => statuses.push(status));
  const mem = new Uint8Array(4096);
  try {
    const one = (len: number) => n.writeBatch(a, mem, new Int32Array(1), 0, new Int32Array([0]), new Int32Array([len]), new Int32Array([-1]), 1, IoMode.PACKET);
    assert.equal(one(64), 1, 'the datagram went out (nobody listens on the other end)');
    await sleep(100); // the ICMP port-unreachable comes back: POLLERR on the socket
    assert.deepEqual(statuses.filter((s) => s < 0), [], 'no error reached JavaScript');
    // The port is still polled: a frame from the peer arrives as usual.
    const b = n.udpOpen('127.0.0.1', pb, '127.0.0.1', pa, 0);
    try {
      mem.fill(7, 0, 100);
      assert.equal(n.writeBatch(b, mem, new Int32Array(1), 0, new Int32Array([0]), new Int32Array([100]), new Int32Array([-1]), 1, IoMode.PACKET), 1);
      await sleep(100);
      assert.ok(statuses.filter((s) => s === 0).length >= 1, 'the poll saw the frame');
      const lens = new Int32Array(1);
      assert.equal(n.readBatch(a, mem, new Int32Array([1024]), new Int32Array([2048]), lens, new Int32Array(1), 1, IoMode.PACKET), 1);
      assert.equal(lens[0], 100);
    } finally {
      n.close(b);
    }
  } finally {
    n.pollStop(poll);
    n.close(a);
  }
});
