// The uplink's device set down and up again (an administrator's `ip link set
// dev eth0 down/up`, a driver reset) is not the end of the port: the packet
// socket reports ENETDOWN once, as a poll error, and receives again when the
// device is back. Only a device that is gone for good sets the port down —
// and the daemon goes on serving the other ports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Lab } from '../util/lab.js';
import { hasCommand, inCI, isRoot } from '../util/env.js';

const runnable = isRoot() && hasCommand('ip') && hasCommand('ping');
const why = 'needs root, iproute2 and ping';
if (!runnable && inCI) throw new Error(`cannot run in CI: ${why}`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function portUp(lab: Lab, name: string): Promise<boolean> {
  const r = await lab.api.call<{ ports: { name: string; up: boolean }[] }>('GET', '/v1/ports');
  return r.ports.find((p) => p.name === name)!.up;
}

test('the uplink set down and up again carries traffic again; deleted, its port goes down and the others carry on', { skip: !runnable && why, timeout: 90_000 }, async () => {
  const lab = await Lab.start({ nodes: ['vm1', 'vm2', 'phys'] });
  try {
    assert.equal(lab.ping('vm1', 'phys').status, 0, 'before');
    for (let flap = 1; flap <= 2; flap++) {
      lab.exec('host', ['ip', 'link', 'set', lab.dev('phys'), 'down']);
      await sleep(400);
      assert.notEqual(lab.ping('vm1', 'phys', false, 1).status, 0, `flap ${flap}: nothing gets through while the device is down`);
      lab.exec('host', ['ip', 'link', 'set', lab.dev('phys'), 'up']);
      let ok = false;
      for (let i = 0; i < 10 && !ok; i++) {
        await sleep(300);
        ok = lab.ping('vm1', 'phys', false, 1).status === 0;
      }
      assert.ok(ok, `flap ${flap}: traffic again after the device came back`);
      assert.equal(await portUp(lab, 'phys'), true, `flap ${flap}: the port stayed up`);
    }
    assert.doesNotMatch(lab.stderr, /port endpoint failed/, 'no port was given up');

    lab.exec('host', ['ip', 'link', 'del', lab.dev('phys')]);
    let down = false;
    for (let i = 0; i < 20 && !down; i++) {
      await sleep(100);
      down = !(await portUp(lab, 'phys'));
    }
    assert.ok(down, 'the port of a deleted device is set down (within a feature-watch interval or so)');
    assert.match(lab.stderr, /port endpoint failed; port set down.*"port":"phys"/);
    assert.equal(lab.ping('vm1', 'vm2').status, 0, 'the other ports carry on');
  } finally {
    await lab.stop();
  }
  assert.deepEqual(lab.leftovers(), [], 'namespaces or devices left behind');
});
