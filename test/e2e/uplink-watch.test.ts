// The uplink's feature watch (af-packet.ts) runs four times a second for the
// life of the daemon: it must allocate nothing while the NIC's features stay
// as they are, and still see a change (`ethtool -K dev tso off`) at the next
// look. Real AF_PACKET socket on a veth pair in the root namespace.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { BufferPool } from '../../src/packet/pool.js';
import { Switch } from '../../src/switch/switch.js';
import type { Port } from '../../src/switch/port.js';
import { AfPacketBackend } from '../../src/io/af-packet.js';
import { nativeAvailable } from '../../src/io/native/index.js';
import { leastBytesAllocatedDuring } from '../util/alloc.js';
import { hasCommand, inCI, isRoot, runPrefix } from '../util/env.js';

const runnable = isRoot() && hasCommand('ip') && hasCommand('ethtool') && nativeAvailable();
const why = 'needs root, iproute2, ethtool and the native shim';
if (!runnable && inCI) throw new Error(`cannot run in CI: ${why}`);

const dev = `${runPrefix('w')}a`;
const sh = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
};

before(() => {
  if (!runnable) return;
  sh('ip', ['link', 'add', dev, 'type', 'veth', 'peer', 'name', `${dev}p`]);
  sh('ip', ['link', 'set', dev, 'up']);
});

after(() => {
  if (!runnable) return;
  spawnSync('ip', ['link', 'del', dev]);
  assert.equal(spawnSync('ip', ['link', 'show', dev]).status !== 0, true, `${dev} left behind`);
});

test('the uplink feature watch allocates nothing while the features stay, and sees them change', { skip: !runnable && why }, async () => {
  const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 128 }, { bufferSize: 66560, count: 4 }], scratchBytes: 1 << 20 });
  const sw = new Switch({ pool });
  // A watch interval of an hour: the test drives the watch itself.
  const be = AfPacketBackend.open({ ifname: dev, pool, watchMs: 3_600_000 });
  try {
    const port = sw.addPort({ name: 'up', kind: 'external' }, be);
    const look = () => (be as unknown as { refresh(s: Switch, p: Port): void }).refresh(sw, port);
    assert.equal(be.capabilities.lso.v4, true, 'a veth does TSO');
    for (let i = 0; i < 50; i++) look();
    const r = await leastBytesAllocatedDuring(() => { for (let i = 0; i < 2000; i++) look(); }, ['/src/io/', '/src/offload/']);
    assert.ok(r.bytes < 4096, `${r.bytes} B allocated by 2000 looks at unchanged features: ${r.top.join('; ')}`);

    sh('ethtool', ['-K', dev, 'tso', 'off']);
    look();
    assert.equal(be.capabilities.lso.v4, false, 'TSO off reached the capability map at the next look');
    assert.equal(sw.port('up').deviceCaps.lso.v4, false, 'and the switch');
    sh('ethtool', ['-K', dev, 'tso', 'on']);
    look();
    assert.equal(be.capabilities.lso.v4, true, 'TSO back on');
  } finally {
    be.close();
  }
});
