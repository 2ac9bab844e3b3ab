// The README's first command, live: `./demo.sh --quick` as root builds the
// data centre in namespaces, runs the real daemon on it, sends real traffic,
// flips the uplink's TSO, and removes everything — and a Ctrl-C half-way
// removes everything too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasCommand, isRoot, linkNames, need, netnsList } from '../util/env.js';

const demo = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli/demo.js');
const runnable = isRoot() && ['ip', 'ping', 'ethtool', 'iperf3'].every(hasCommand);
const why = 'needs root, iproute2, ping, ethtool and iperf3';

/** 2-8 characters: device names are the prefix plus up to 4. */
const prefix = () => `vt${Math.floor(Math.random() * 36 ** 5).toString(36).padStart(5, '0')}`;

/** Namespaces, devices and temporary directories with the prefix. */
function leftovers(p: string): string[] {
  const links = linkNames().filter((n) => n.startsWith(p));
  const dirs = readdirSync(tmpdir()).filter((d) => d.startsWith(`${p}-`));
  const procs = spawnSync('pgrep', ['-f', `${p}-`], { encoding: 'utf8' }).stdout.trim();
  return [...netnsList().filter((n) => n.startsWith(p)), ...links, ...dirs.map((d) => `${tmpdir()}/${d}`), ...(procs ? [`processes ${procs}`] : [])];
}

test('the live demo (--quick) passes every check and leaves nothing behind', { timeout: 180_000 }, (t) => {
  if (!need(t, runnable, why)) return;
  const p = prefix();
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [demo, '--quick', '--prefix', p], { encoding: 'utf8', timeout: 170_000 });
  const out = r.stdout;
  assert.equal(r.status, 0, out + r.stderr);
  assert.match(out, /\nall checks passed \(\d+ checks, [\d.]+ s\)\n$/);
  assert.doesNotMatch(out, /✗/);
  assert.match(out, new RegExp(`run prefix ${p}\\)`));
  // Real traffic, and the path the switch took for each pair.
  assert.match(out, /vm1 → vm2 +[\d.]+ [GM]bit\/s +pass-through \(/);
  assert.match(out, /vm1 → legacy +[\d.]+ [GM]bit\/s +software segmentation \(switch did [\d.]+[kM]? segments\/s, checksums computed, charged to vm1: [\d.]+% CPU\)/);
  assert.match(out, /vm1 → uplink +[\d.]+ [GM]bit\/s +hardware \(/);
  // The uplink's TSO off and on under a running flow.
  assert.match(out, /ethtool -K \S+up tso off +→ the switch saw it after/);
  assert.match(out, /TSO off +[\d.]+ [GM]bit\/s +software segmentation/);
  assert.match(out, /TSO on again +[\d.]+ [GM]bit\/s +hardware/);
  // What each guest's kernel shows.
  assert.match(out, /legacy +tx-checksumming: off {2}tcp-segmentation-offload: off/);
  assert.match(out, /✓ nothing with prefix \S+ is left/);
  assert.deepEqual(leftovers(p), []);
  t.diagnostic(`demo --quick took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});

test('Ctrl-C in the middle of the live demo: it stops, removes everything, exits 130', { timeout: 120_000 }, async (t) => {
  if (!need(t, runnable, why)) return;
  const p = prefix();
  // Its own process group, signalled as a terminal's Ctrl-C is: the daemon and iperf3 get it too.
  const c = spawn(process.execPath, [demo, '--quick', '--prefix', p], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  c.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((res) => c.once('exit', (code) => res(code)));
  try {
    const deadline = Date.now() + 60_000;
    while (!/vm1 → vm2 .*Gbit/.test(out) && c.exitCode === null && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
    assert.match(out, /vm1 → vm2/, 'the demo got to its traffic');
    process.kill(-c.pid!, 'SIGINT');
    assert.equal(await exited, 130, out);
    assert.match(out, /SIGINT: stopping the demo/);
    assert.match(out, new RegExp(`cleaned up: nothing with prefix ${p} is left`));
    assert.deepEqual(leftovers(p), []);
  } finally {
    if (c.exitCode === null) process.kill(-c.pid!, 'SIGKILL');
    for (const ns of netnsList()) if (ns.startsWith(p)) spawnSync('ip', ['netns', 'del', ns]);
  }
});
