// `vswitch ports`: the DEVICE column says where a port's frames go — its TAP
// or NIC, or for a QEMU VM its socket or UDP addresses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatPorts } from '../../../src/cli/format.js';

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
