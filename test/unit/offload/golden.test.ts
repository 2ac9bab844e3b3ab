// Our software GSO against the Linux kernel's, byte for byte, on vectors the
// kernel produced (scripts/kernel-gso-vectors.py; test/e2e re-captures them live).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compareCase, loadGolden } from '../../util/golden.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
const golden = loadGolden(resolve(root, 'test/vectors/kernel-gso.json'));

test('the committed vectors cover TCPv4, TCPv6 and USO in both checksum modes', () => {
  const names = new Set(golden.cases.map((c) => `${c.name.split('-')[0]}/${c.mode}`));
  for (const k of ['tcp4/full', 'tcp4/partial', 'tcp6/full', 'tcp6/partial', 'udp4/full', 'udp4/partial', 'udp6/full', 'udp6/partial']) {
    assert.ok(names.has(k), `no ${k} case`);
  }
  assert.ok(golden.cases.some((c) => c.name.includes('vlan')));
  assert.ok(golden.cases.some((c) => c.name.includes('qinq')));
});

for (const c of golden.cases) {
  test(`kernel ${golden.kernel}: ${c.name} (${c.mode})`, () => {
    assert.deepEqual(compareCase(c), []);
  });
}
