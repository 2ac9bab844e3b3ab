// The data path allocates nothing per packet: switching, learning, offload
// resolution, software segmentation and delivery run a long burst without a
// single garbage collection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../../../src/packet/pool.js';
import { Batch } from '../../../src/packet/batch.js';
import { Switch } from '../../../src/switch/switch.js';
import type { OutputQueue, PortBackend } from '../../../src/switch/port.js';
import { noOffloads } from '../../../src/offload/capabilities.js';
import { gcCountDuring } from '../../util/alloc.js';
import { guestCaps, nicCaps, tcpFrame, tso, MAC } from '../../util/topology.js';

class CountingBackend implements PortBackend {
  frames = 0;
  constructor(readonly capabilities = guestCaps()) {}
  transmit(q: OutputQueue): number {
    this.frames += q.count;
    return q.count;
  }
}

test('switching super-frames to a pass-through VM, a legacy NIC and a TSO-less uplink allocates nothing', async () => {
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 1024 }, { bufferSize: 66560, count: 16 }] });
  const sw = new Switch({ pool });
  const vm1 = sw.addPort({ name: 'vm1', kind: 'synthetic' }, new CountingBackend());
  const vmBe = new CountingBackend();
  sw.addPort({ name: 'vm2', kind: 'synthetic' }, vmBe);
  const legBe = new CountingBackend(noOffloads());
  sw.addPort({ name: 'legacy', kind: 'legacy' }, legBe);
  const upBe = new CountingBackend(nicCaps({ tso: false }));
  sw.addPort({ name: 'peer', kind: 'external' }, upBe);
  const frame = tcpFrame('vm1', 'vm2', 30000);
  const bcast = tcpFrame('vm1', 'vm2', 30000, { dstMac: 0xffffffffffff });
  void MAC;
  const batch = new Batch(8);
  const prep = tso();
  const burst = (n: number, f: Uint8Array) => {
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < 4; k++) {
        const p = pool.take(f.length)!;
        p.write(f);
        prep(p);
        batch.push(p);
      }
      sw.receive(vm1, batch);
    }
  };
  burst(200, bcast); // warm up: flood to all three kinds of destination
  burst(200, frame);
  const gcs = await gcCountDuring(() => { burst(1000, bcast); burst(1000, frame); });
  assert.equal(gcs, 0, `${gcs} garbage collections while switching 8000 super-frames`);
  assert.equal(pool.inUse, 0);
  assert.ok(legBe.frames > 1000 && upBe.frames > 1000 && vmBe.frames > 1000);
});
