// `vswitch ports`: the DEVICE column says where a port's frames go — its TAP
// or NIC, or for a QEMU VM its socket or UDP addresses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatPorts, formatStatus } from '../../../src/cli/format.js';

test('the ports table names a QEMU port\'s socket or UDP addresses instead of a device', () => {
  const base = { up: true, mtu: 1500, vlan: { mode: 'access', vlan: 1 }, namespace: null, passThrough: null, macsLearned: 0 };
  const out = formatPorts([
    { ...base, name: 'vm1', kind: 'synthetic', device: 'tap-vm1', namespace: 'vm1', passThrough: true },
    { ...base, name: 'pxe', kind: 'legacy', device: 'pxe', qemu: { dgram: { local: '127.0.0.1:40001', remote: '127.0.0.1:40002' } } },
    { ...base, name: 'old', kind: 'legacy', device: 'old', qemu: { socket: '/run/vswitch/old.sock' } },
  ]);
  const line = (name: string) => out.split('\n').find((l) => l.startsWith(name)) ?? '';
  assert.match(line('vm1'), /tap-vm1/);
  assert.match(line('pxe'), /qemu udp 127\.0\.0\.1:40001 ⇄ 127\.0\.0\.1:40002/);
  assert.match(line('old'), /qemu \/run\/vswitch\/old\.sock/);
});

test('status: the switch, the data plane and whether it answers, workers, buffers, MAC table', () => {
  const sw = {
    name: 'dc1', pid: 42, uptimeSeconds: 3725, ports: 4,
    dataPlane: { mode: 'thread', threadId: 1 },
    workers: { count: 1, reads: false, portKinds: ['legacy', 'external'], threads: [{ threadId: 2, queues: 2 }] },
    pool: { inUse: 256, capacity: 33792, simdChecksum: true, classes: [{ peak: 2 }, { peak: 320 }] },
    macTable: { entries: 4, capacity: 16384, agingMs: 300000 },
    threads: [{ role: 'main', threadId: 0, cpuSeconds: 0.12 }, { role: 'data-plane', threadId: 1, cpuSeconds: 12.34 }, { role: 'io', threadId: 2, cpuSeconds: null }],
  };
  assert.equal(formatStatus(sw, { dataPlane: 'ok', answeredMsAgo: 412 }), [
    'switch       dc1, pid 42, up 1h 2m, 4 ports',
    'data plane   its own thread (threadId 1), answering (last answer 0.4 s ago)',
    'I/O workers  1 (write legacy, external queues): thread 2 holds 2',
    'buffers      256 of 33792 in use (peak 322), SIMD checksum on',
    'MAC table    4 of 16384 entries, aging 300 s',
    'CPU          main 0.1 s, data plane 12.3 s, I/O 2 ? (since start)',
    '',
  ].join('\n'));
  const main = formatStatus({ ...sw, dataPlane: { mode: 'main', threadId: 0 }, workers: { count: 0, reads: false, portKinds: [], threads: [] } }, { dataPlane: 'ok', answeredMsAgo: 0 });
  assert.match(main, /^data plane   on the main thread$/m);
  assert.match(main, /^I\/O workers  none \(the data plane does all I\/O\)$/m);
});
