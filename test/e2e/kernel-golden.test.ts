// Live golden test: have this machine's kernel segment the vector super-frames
// right now (scripts/kernel-gso-vectors.py, in throw-away namespaces) and
// require our engine to match every segment byte for byte. This guards
// against the committed vectors going stale and against a kernel that
// behaves differently from the one that made them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compareCase, loadGolden } from '../util/golden.js';
import { hasCommand, isRoot, need, netnsList, runPrefix } from '../util/env.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

test('the running kernel segments the vector super-frames exactly as vswitch does', { timeout: 300_000 }, (t) => {
  if (!need(t, isRoot(), 'needs root (network namespaces, AF_PACKET)')) return;
  if (!need(t, hasCommand('/usr/bin/python3'), 'needs Debian python3 at /usr/bin/python3')) return;
  if (!need(t, hasCommand('ip'), 'needs iproute2')) return;
  const dir = mkdtempSync(join(tmpdir(), 'vswitch-golden-'));
  const prefix = runPrefix('vsg');
  try {
    const out = join(dir, 'live.json');
    const r = spawnSync('/usr/bin/python3', [join(root, 'scripts/kernel-gso-vectors.py'), '--out', out, '--prefix', prefix],
      { encoding: 'utf8', timeout: 280_000 });
    assert.equal(r.status, 0, `generator failed:\n${r.stdout}\n${r.stderr}`);
    const live = loadGolden(out);
    const committed = loadGolden(join(root, 'test/vectors/kernel-gso.json'));
    assert.equal(live.cases.length, committed.cases.length, 'every committed case was captured live');
    const failures: string[] = [];
    for (const c of live.cases) {
      const d = compareCase(c);
      if (d.length > 0) failures.push(`${c.name}/${c.mode}: ${d.join('; ')}`);
    }
    assert.deepEqual(failures, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    const left = netnsList().filter((n) => n.startsWith(prefix));
    assert.deepEqual(left, [], 'the generator left namespaces behind');
  }
});
