// The README's demo command must keep working: run it (quick mode) and
// require every one of its checks to pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

test('demo runs to the end with all checks passed', () => {
  const r = spawnSync(process.execPath, [resolve(dist, 'src/cli/demo.js'), '--quick'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /all checks passed/);
  assert.doesNotMatch(r.stdout, /✗/);
  assert.match(r.stdout, /\d+\/\d+ kernel .* cases identical/);
});
