// Live: give real TAPs the flags toTunOffloadFlags computes for a few
// capability sets, read `ethtool -k` from the running kernel, and require
// exactly what linuxFeaturesForTunFlags says the guest sees — and nothing else
// changed. Uses test/vectors/translate/tun-ethtool.py (TAPs named with a
// per-run prefix; a TAP disappears with its fd, and the script checks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasCommand, isRoot, need, runPrefix } from '../util/env.js';
import {
  ethtoolOn, linuxFeaturesForTunFlags, toTunOffloadFlags, tunOffloadRefusal,
} from '../../src/offload/translate/linux.js';
import {
  noOffloads, segmentationAll, segmentationNone, type OffloadCapabilities, vnicOffloads,
} from '../../src/offload/capabilities.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const script = join(root, 'test/vectors/translate/tun-ethtool.py');

interface Live {
  kernel: string;
  baseline: Record<string, string>;
  cases: Array<{ flags: number; error: string | null; features: Record<string, string> | null }>;
}

function links(prefix: string): string[] {
  const r = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  return r.stdout.split('\n').map((l) => (l.split(':')[1] ?? '').trim().split('@')[0]!).filter((n) => n.startsWith(prefix));
}


const sets: Array<[string, OffloadCapabilities, { ecn?: boolean }]> = [
  ['nothing (legacy-like)', noOffloads(), {}],
  ['vNIC advertisement', vnicOffloads(), {}],
  ['vNIC advertisement without ECN', vnicOffloads(), { ecn: false }],
  ['checksum only', { ...vnicOffloads(), lso: segmentationNone(), uso: segmentationNone() }, {}],
  ['IPv4 TSO only', { ...vnicOffloads(), lso: { ...segmentationAll(), v6: false }, uso: segmentationNone() }, {}],
  ['IPv6 TSO and USO', { ...vnicOffloads(), lso: { ...segmentationAll(), v4: false } }, {}],
];

test('a TAP given toTunOffloadFlags(caps) shows the guest exactly linuxFeaturesForTunFlags', { timeout: 60_000 }, (t) => {
  if (!need(t, isRoot(), 'needs root (TUNSETIFF on /dev/net/tun)')) return;
  if (!need(t, hasCommand('/usr/bin/python3'), 'needs Debian python3 at /usr/bin/python3')) return;
  if (!need(t, hasCommand('ethtool'), 'needs ethtool')) return;
  if (!need(t, hasCommand('ip'), 'needs iproute2')) return;
  const prefix = runPrefix('vtt');
  const flags = sets.map(([, caps, opts]) => toTunOffloadFlags(caps, opts));
  // and two the kernel must refuse, as the model says
  const refused = [0x21, 0x02];
  try {
    const r = spawnSync('/usr/bin/python3', [script, '--flags', [...flags, ...refused].map((f) => `0x${f.toString(16)}`).join(','), '--prefix', prefix],
      { encoding: 'utf8', timeout: 50_000 });
    assert.equal(r.status, 0, `tun-ethtool.py failed:\n${r.stdout}\n${r.stderr}`);
    const live = JSON.parse(r.stdout) as Live;
    assert.equal(live.cases.length, flags.length + refused.length);
    const wrong: string[] = [];
    sets.forEach(([name], i) => {
      const c = live.cases[i]!;
      const expect = linuxFeaturesForTunFlags(flags[i]!);
      if (expect === null || c.error !== null || c.features === null) {
        wrong.push(`${name}: flags 0x${flags[i]!.toString(16)} → ${c.error ?? 'accepted'}, model ${expect === null ? 'refuses' : 'accepts'}`);
        return;
      }
      for (const [k, v] of Object.entries(expect)) {
        if (ethtoolOn(c.features[k]) !== v) wrong.push(`${name}: ${k} is "${c.features[k]}", expected ${v ? 'on' : 'off'}`);
      }
      for (const [k, v] of Object.entries(c.features)) {
        if (!(k in expect) && v !== live.baseline[k]) wrong.push(`${name}: ${k} changed to "${v}" (not modelled)`);
      }
    });
    refused.forEach((f, j) => {
      const c = live.cases[flags.length + j]!;
      assert.notEqual(tunOffloadRefusal(f), null);
      if (c.error !== 'EINVAL') wrong.push(`0x${f.toString(16)}: kernel ${c.error ?? 'accepted'}, model refuses`);
    });
    assert.deepEqual(wrong, []);
    t.diagnostic(`kernel ${live.kernel}; flags ${flags.map((f) => `0x${f.toString(16)}`).join(' ')}`);
  } finally {
    assert.deepEqual(links(prefix), [], 'TAPs left behind');
  }
});
