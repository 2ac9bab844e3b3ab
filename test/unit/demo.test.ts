// The README's demo command must keep working. Here it runs on the in-memory
// backend (what it does without root, so this test runs anywhere); the live
// run in namespaces is test/e2e/demo.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDemoArgs } from '../../src/cli/demo-args.js';
import { Ui } from '../../src/cli/demo-ui.js';
import { delta, dominantPath, pathText, tookPath, type PathDelta } from '../../src/cli/demo-topology.js';
import { isRoot, hasCommand } from '../util/env.js';

const dist = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const demo = resolve(dist, 'src/cli/demo.js');

function runDemo(args: string[], asNobody = false) {
  const cmd = asNobody ? 'setpriv' : process.execPath;
  const argv = asNobody ? ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, demo, ...args] : [demo, ...args];
  return spawnSync(cmd, argv, { encoding: 'utf8', timeout: 120_000, env: { ...process.env, FORCE_COLOR: '0' } });
}

test('the demo runs to the end on the in-memory backend with all checks passed (quick)', () => {
  const r = runDemo(['--quick', '--memory']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const out = r.stdout;
  assert.match(out, /\nall checks passed \(\d+ checks, [\d.]+ s\)\n$/);
  assert.doesNotMatch(out, /✗/);
  // The table of decisions: one line per pair, the path the switch took.
  assert.match(out, /vm1 → vm2 +[\d.]+ Gbit\/s +pass-through \(/);
  assert.match(out, /vm1 → host +[\d.]+ Gbit\/s +pass-through \(/);
  assert.match(out, /vm1 → legacy +[\d.]+ Gbit\/s +software segmentation \(switch did [\d.]+[kM]? segments\/s, checksums computed, charged to vm1: [\d.]+% CPU\)/);
  assert.match(out, /vm1 → uplink +[\d.]+ Gbit\/s +hardware \(/);
  assert.match(out, /vm2 → legacy +[\d.]+ Gbit\/s +software segmentation/);
  // The TSO flip: hardware, software with the NIC finishing checksums, hardware again.
  assert.match(out, /TSO on +[\d.]+ Gbit\/s +hardware/);
  assert.match(out, /TSO off +[\d.]+ Gbit\/s +software segmentation \(.*checksums left to the NIC/);
  assert.match(out, /TSO on again +[\d.]+ Gbit\/s +hardware/);
  // The capability map and what a guest would see.
  assert.match(out, /legacy +legacy +advertised +off +off +off +off +off/);
  assert.match(out, /vm1 +tx-checksumming: on {2}tcp-segmentation-offload: on/);
  // The offline engine section is still there, with the kernel's golden vectors.
  assert.match(out, /✓ \d+\/\d+ kernel .* cases identical/);
  // Not a terminal: plain lines, no escape sequences.
  assert.doesNotMatch(out, /\x1b\[/);
});

test('without root the demo says so and runs the in-memory scenario', (t) => {
  let r;
  if (!isRoot()) {
    r = runDemo(['--quick', '--no-engines']);
  } else {
    // As root: drop to nobody, as a user without sudo would run it.
    let readable = true;
    try { accessSync(demo, constants.R_OK); } catch { readable = false; }
    if (!hasCommand('setpriv') || !readable) { t.skip('needs setpriv to run as nobody'); return; }
    r = runDemo(['--quick', '--no-engines'], true);
    if (r.status !== 0 && /Permission denied|EACCES/.test(r.stderr)) { t.skip(`nobody cannot read the build: ${r.stderr.trim()}`); return; }
  }
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^not root: the live demo needs root/m);
  assert.match(r.stdout, /in-memory backend/);
  assert.match(r.stdout, /all checks passed/);
});

test('--engines runs only the offline engine checks; a bad option is a usage error (exit 2)', () => {
  const r = runDemo(['--quick', '--engines']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /kernel .* cases identical/);
  assert.doesNotMatch(r.stdout, /vm1 → vm2/);
  const bad = runDemo(['--frobnicate']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown option --frobnicate/);
});

test('command line: --quick, --memory, --engines, --prefix; `vswitch demo -- --quick` too', () => {
  assert.deepEqual(parseDemoArgs(['demo', '--', '--quick', '--prefix', 'vdab12']), { quick: true, memory: false, engines: 'yes', help: false, prefix: 'vdab12' });
  assert.equal(parseDemoArgs(['--engines']).engines, 'only');
  assert.equal(parseDemoArgs(['--no-engines', '--memory']).memory, true);
  assert.throws(() => parseDemoArgs(['--prefix', 'much-too-long-a-prefix']), /--prefix needs/);
  assert.throws(() => parseDemoArgs(['--prefix']), /--prefix needs/);
});

test('a failed check makes the verdict fail and is named in the last line', () => {
  let text = '';
  const ui = new Ui({ tty: false, write: (s) => { text += s; } });
  ui.check(true, 'one');
  ui.check(false, 'vm1 → legacy: software segmentation', 'hardware 3');
  assert.equal(ui.summary(1.5), false);
  assert.match(text, /✗ vm1 → legacy: software segmentation — hardware 3/);
  assert.match(text, /\n1 of 2 checks failed: vm1 → legacy: software segmentation\n$/);
  const ok = new Ui({ tty: false, write: () => {} });
  ok.check(true, 'x');
  assert.equal(ok.summary(0), true);
});

test('which path a flow took, from the destination port\'s counter deltas', () => {
  const zero = { txBytes: 0, offload: { hardware: 0, passThrough: 0, software: 0, segments: 0 }, charged: { packets: 0, bytes: 0, cpuNs: 0, segments: 0, checksums: 0, throttled: 0 } };
  const at = (o: Partial<PathDelta>) => ({ ...zero, txBytes: o.txBytes ?? 0,
    offload: { hardware: o.hardware ?? 0, passThrough: o.passThrough ?? 0, software: o.software ?? 0, segments: o.segments ?? 0 },
    charged: { ...zero.charged, cpuNs: o.chargedCpuNs ?? 0, checksums: o.chargedChecksums ?? 0 } });
  const legacy = delta(zero, at({ software: 3000, segments: 120000, txBytes: 1.8e8 }), zero, at({ chargedCpuNs: 1.2e8, chargedChecksums: 120000 }), 1);
  assert.equal(dominantPath(legacy), 'software segmentation');
  assert.ok(tookPath(legacy, 'software segmentation'));
  assert.ok(!tookPath(legacy, 'hardware'));
  assert.equal(pathText(legacy, 'vm1'), 'software segmentation (switch did 120k segments/s, checksums computed, charged to vm1: 12% CPU)');
  // TSO off with checksum offload still on: a few small frames still go "hardware"; the flow is software.
  const flipped = delta(zero, at({ hardware: 1, software: 3439, segments: 150214 }), zero, zero, 1.2);
  assert.ok(tookPath(flipped, 'software segmentation'));
  // Half and half is not "the path the flow took".
  assert.ok(!tookPath(delta(zero, at({ hardware: 50, software: 50, segments: 2000 }), zero, zero, 1), 'hardware'));
  assert.ok(!tookPath(delta(zero, zero, zero, zero, 1), 'pass-through'), 'no frames is no path');
  assert.equal(dominantPath(delta(zero, at({ passThrough: 9 }), zero, zero, 1)), 'pass-through');
});
