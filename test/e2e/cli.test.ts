// The operator's view: `vswitch` commands against a running daemon with real
// namespaces, exit codes a shell can rely on, ports added and removed while
// traffic flows, clean shutdown and recovery after a crash.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { Lab } from '../util/lab.js';
import { hasCommand, inCI, isRoot, netnsList, runPrefix } from '../util/env.js';
import { readCapture } from '../../src/io/pcap-read.js';

const cli = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const runnable = isRoot() && hasCommand('ip') && hasCommand('ping');
const why = 'needs root, iproute2 and ping';
if (!runnable && inCI) throw new Error(`cannot run in CI: ${why}`);

function vswitch(args: string[], socket?: string): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [cli, ...args, ...(socket !== undefined ? ['--socket', socket] : [])], { encoding: 'utf8', timeout: 30_000 });
}

function json<T = Record<string, any>>(args: string[], socket: string): T {
  const r = vswitch([...args, '--json'], socket);
  assert.equal(r.status, 0, `vswitch ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

let lab: Lab;
let sock: string;

before(async () => {
  if (!runnable) return;
  lab = await Lab.start({ nodes: ['vm1', 'vm2', 'phys'] });
  sock = lab.api.socket;
});

after(async () => {
  if (!runnable) return;
  await lab.stop();
  assert.deepEqual(lab.leftovers(), []);
});

test('show, caps, stats and macs, as tables and as JSON', { skip: !runnable && why }, () => {
  assert.equal(lab.ping('vm1', 'vm2').status, 0);
  const show = vswitch(['show'], sock);
  assert.equal(show.status, 0, show.stderr);
  assert.match(show.stdout, /^PORT\s+KIND\s+DEVICE\s+STATE/);
  assert.match(show.stdout, /vm1\s+synthetic/);
  const ports = json<{ ports: { name: string; kind: string; up: boolean; namespace: string }[] }>(['show'], sock).ports;
  assert.deepEqual(ports.map((p) => p.name).sort(), ['phys', 'vm1', 'vm2']);
  assert.equal(ports.find((p) => p.name === 'vm1')!.namespace, lab.ns('vm1'));

  const caps = json<{ ports: any[] }>(['caps'], sock).ports;
  const vm1 = caps.find((p) => p.name === 'vm1');
  assert.equal(vm1.advertised.lso.v4, true);
  assert.ok(vm1.views.linux && vm1.views.virtio && vm1.views.ndis, 'Linux, virtio and NDIS views');
  assert.match(vswitch(['caps', 'phys'], sock).stdout, /NIC can do/);

  const stats = json<{ ports: any[] }>(['stats'], sock).ports;
  const s1 = stats.find((p) => p.name === 'vm1');
  assert.ok(s1.rxPackets > 0 && s1.forwarded > 0);
  assert.match(vswitch(['stats', 'vm2'], sock).stdout, /vm2\s+synthetic/);
  const macs = json<{ entries: { port: string }[] }>(['macs'], sock).entries;
  assert.ok(macs.some((e) => e.port === 'vm1') && macs.some((e) => e.port === 'vm2'));

  const status = vswitch(['status'], sock);
  assert.equal(status.status, 0, status.stderr);
  assert.match(status.stdout, /^switch\s+\S+, pid \d+, up \d+\S*( \d+s)?, 3 ports$/m);
  assert.match(status.stdout, /^data plane\s+its own thread \(threadId \d+\), answering \(last answer \d+\.\d s ago\)$/m);
  assert.match(status.stdout, /^I\/O workers\s+1 \(write legacy, external queues\): thread \d+ holds 1$/m);
  const st = json<{ health: { dataPlane: string }; switch: { ports: number } }>(['status'], sock);
  assert.equal(st.health.dataPlane, 'ok');
  assert.equal(st.switch.ports, 3);
});

test('stats --watch prints rates until stopped', { skip: !runnable && why }, async () => {
  const c = spawn(process.execPath, [cli, 'stats', '--watch', '--interval', '0.3', '--json', '--socket', sock]);
  let out = '';
  c.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  await new Promise((r) => setTimeout(r, 1200));
  c.kill('SIGINT');
  const lines = out.trim().split('\n').filter((l) => l.length > 0);
  assert.ok(lines.length >= 2, `watch printed ${lines.length} snapshots`);
  assert.ok(Array.isArray(JSON.parse(lines[0]!).ports));
});

test('trace: stage by stage, and per destination why (pass-through for a VM, software or hardware for the uplink)', { skip: !runnable && why }, () => {
  const t = json<{ stages: any[]; destinations: any[]; outcome: string }>(['trace', '--in', 'vm1', '--src', `${lab.ip4('vm1')}:40000`, '--dst', `${lab.ip4('vm2')}:5201`,
    '--len', '30000', '--tso', '1448', '--dst-mac', 'ff:ff:ff:ff:ff:ff'], sock);
  assert.equal(t.outcome, 'forwarded');
  assert.deepEqual(t.stages.map((s) => s.stage), ['validate', 'ingress', 'forward']);
  const by = Object.fromEntries(t.destinations.map((d) => [d.port, d]));
  assert.equal(by['vm2'].offload, 'pass-through');
  assert.ok(['hardware', 'software'].includes(by['phys'].offload));
  const human = vswitch(['trace', '--in', 'vm1', '--src', lab.ip4('vm1'), '--dst', lab.ip4('vm2'), '--len', '100'], sock);
  assert.equal(human.status, 0, human.stderr);
  assert.match(human.stdout, /outcome: forwarded/);
});

test('capture writes pcapng with the port\'s traffic and its offload metadata', { skip: !runnable && why }, async () => {
  const file = join(lab.dir, 'vm2.pcapng');
  const cap = spawn(process.execPath, [cli, 'capture', 'vm2', '-w', file, '-c', '6', '--seconds', '10', '--socket', sock]);
  const done = new Promise<number>((r) => cap.once('exit', (c) => r(c ?? -1)));
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(lab.ping('vm1', 'vm2', false, 4).status, 0);
  assert.equal(await done, 0);
  const frames = readCapture(readFileSync(file));
  assert.ok(frames.length >= 6, `captured ${frames.length}`);
  assert.ok(frames.every((f) => f.comment?.startsWith('vswitch: dir=')));
  if (hasCommand('tshark')) {
    const r = spawnSync('tshark', ['-r', file, '-T', 'fields', '-e', 'icmp.type'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\b8\b/);
  }
});

test('capture ended with Ctrl-C: the daemon ends it cleanly — whole blocks, interface statistics, a file tshark reads without complaint', { skip: !runnable && why }, async () => {
  const file = join(lab.dir, 'vm2-int.pcapng');
  const cap = spawn(process.execPath, [cli, 'capture', 'vm2', '-w', file, '--socket', sock]);
  let err = '';
  cap.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const done = new Promise<number>((r) => cap.once('exit', (c) => r(c ?? -1)));
  await new Promise((r) => setTimeout(r, 400));
  // Large pings, still going when Ctrl-C comes: the cut falls among packets.
  const ping = lab.spawnIn('vm1', ['ping', '-c', '200', '-i', '0.01', '-s', '8000', lab.ip4('vm2')]);
  await new Promise((r) => setTimeout(r, 700));
  cap.kill('SIGINT');
  assert.equal(await done, 0, err);
  ping.kill();
  assert.match(err, /written to/);
  assert.doesNotMatch(err, /cut off/, 'the daemon ended the stream itself');
  const b = readFileSync(file);
  const types: number[] = [];
  for (let o = 0; o < b.length;) {
    const len = b.readUInt32LE(o + 4);
    assert.ok(len >= 12 && o + len <= b.length, `block at ${o} of length ${len} runs past the end (${b.length} B)`);
    types.push(b.readUInt32LE(o));
    o += len;
  }
  assert.ok(types.filter((t) => t === 6).length > 4, 'packets were captured');
  assert.equal(types.at(-1), 5, 'the capture ends with an Interface Statistics Block');
  if (hasCommand('tshark')) {
    const r = spawnSync('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.len'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /cut short|appears to be damaged/);
  }
  // The port can be captured again at once: the daemon unhooked the old capture.
  const again = await lab.api.stream('/v1/ports/vm2/capture?seconds=0.2');
  again.resume();
  await new Promise((r) => again.once('end', r));
  await assert.rejects(lab.api.call('DELETE', '/v1/ports/vm2/capture'), /not being captured/);
});

test('ports added, changed and removed at run time without disturbing the others', { skip: !runnable && why, timeout: 120_000 }, async () => {
  // A ping between vm1 and vm2 runs the whole time: it must lose nothing.
  const ping = lab.spawnIn('vm1', ['ping', '-c', '40', '-i', '0.1', lab.ip4('vm2')]);
  let pingOut = '';
  ping.stdout!.on('data', (d: Buffer) => { pingOut += d.toString(); });
  const pingDone = new Promise<number>((r) => ping.once('exit', (c) => r(c ?? -1)));
  const ns3 = `${lab.prefix}-vm3`;
  const add = vswitch(['port', 'add', '--yaml', toYaml({
    name: 'vm3', kind: 'synthetic', device: `${lab.prefix}vm3`, guest: { namespace: ns3, create: true, addresses: [`198.18.${lab.subnet}.7/24`] },
  })], sock);
  assert.equal(add.status, 0, add.stderr);
  assert.equal(spawnSync('ip', ['netns', 'exec', ns3, 'ping', '-c', '2', '-i', '0.2', '-W', '2', lab.ip4('vm1')]).status, 0, 'the new port works');
  const set = vswitch(['port', 'set', 'vm3', 'mtu=9000', 'passThrough=false', 'offloads.lso=false'], sock);
  assert.equal(set.status, 0, set.stderr);
  const p3 = json<{ ports: any[] }>(['show'], sock).ports.find((p) => p.name === 'vm3');
  assert.equal(p3.mtu, 9000);
  assert.equal(p3.passThrough, false);
  assert.match(spawnSync('ip', ['-n', ns3, 'link', 'show', `${lab.prefix}vm3`], { encoding: 'utf8' }).stdout, /mtu 9000/);
  const caps3 = json<{ ports: any[] }>(['caps'], sock).ports.find((p) => p.name === 'vm3');
  assert.equal(caps3.advertised.lso.v4, false, 're-advertised without LSO');
  assert.match(spawnSync('ip', ['netns', 'exec', ns3, 'ethtool', '-k', `${lab.prefix}vm3`], { encoding: 'utf8' }).stdout, /tcp-segmentation-offload: off/);
  const del = vswitch(['port', 'del', 'vm3'], sock);
  assert.equal(del.status, 0, del.stderr);
  assert.ok(!netnsList().includes(ns3), 'the namespace the port created is gone');
  assert.equal(await pingDone, 0);
  assert.match(pingOut, / 0% packet loss/);
});

test('exit codes: usage 2, daemon said no 1, daemon unreachable 3; messages say what is wrong', { skip: !runnable && why }, () => {
  const unknown = vswitch(['frobnicate'], sock);
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
  assert.equal(vswitch(['trace'], sock).status, 2);
  assert.equal(vswitch(['show', '--bogus-option'], sock).status, 2);
  const nosuch = vswitch(['port', 'del', 'nosuch'], sock);
  assert.equal(nosuch.status, 1);
  assert.match(nosuch.stderr, /no port nosuch/);
  const dup = vswitch(['port', 'add', '--yaml', '{name: vm1, kind: synthetic}'], sock);
  assert.equal(dup.status, 1);
  assert.match(dup.stderr, /exists already/);
  const badPort = vswitch(['port', 'add', '--yaml', '{name: x, kind: synthetic, mtu: 1}'], sock);
  assert.equal(badPort.status, 1);
  assert.match(badPort.stderr, /mtu: must be >= 68/);
  const gone = vswitch(['show'], '/nonexistent/vswitch.sock');
  assert.equal(gone.status, 3);
  assert.match(gone.stderr, /cannot reach vswitch at \/nonexistent\/vswitch.sock/);
  assert.equal(vswitch(['--help']).status, 0);
});

test('a bad configuration file: exit 2, file:line:column for every problem, nothing started', { skip: !runnable && why }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'vscli-'));
  const f = join(dir, 'bad.yaml');
  const prefix = runPrefix('vb');
  writeFileSync(f, `switch: { name: ${prefix}, stateDir: ${dir} }\nports:\n  - name: a\n    kind: synthetic\n    guest: { namespace: ${prefix}-a, create: true }\n  - name: b\n    kind: sideways\n`);
  const r = vswitch(['run', '--config', f]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, new RegExp(`${f.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:7:11: ports\\[1\\]\\.kind: must be one of`));
  assert.ok(!netnsList().some((n) => n.startsWith(prefix)), 'nothing was created');
  assert.equal(vswitch(['check', '--config', f]).status, 2);
  rmSync(dir, { recursive: true, force: true });
});

test('a port that cannot come up stops the whole start, and everything made so far is removed', { skip: !runnable && why }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'vscli-'));
  const prefix = runPrefix('vh');
  const f = join(dir, 'sw.yaml');
  writeFileSync(f, toYaml({
    switch: { name: prefix, stateDir: dir },
    ports: [
      { name: 'a', kind: 'synthetic', device: `${prefix}a`, guest: { namespace: `${prefix}-a`, create: true } },
      { name: 'up', kind: 'external', device: `${prefix}nodev` },
    ],
  }));
  const r = vswitch(['run', '--config', f]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /port up .*ports\[1\]/);
  assert.ok(!netnsList().some((n) => n.startsWith(prefix)));
  assert.ok(!existsSync(join(dir, `${prefix}.state.json`)));
  rmSync(dir, { recursive: true, force: true });
});

test('after a crash (kill -9) the next start removes what the dead one left, and stop leaves nothing', { skip: !runnable && why, timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vscli-'));
  const prefix = runPrefix('vc');
  const f = join(dir, 'sw.yaml');
  writeFileSync(f, toYaml({
    switch: { name: prefix, stateDir: dir },
    ports: [{ name: 'a', kind: 'synthetic', device: `${prefix}a`, guest: { namespace: `${prefix}-a`, create: true, addresses: ['198.18.250.1/24'] } }],
  }));
  const socket = join(dir, `${prefix}.sock`);
  const children: ReturnType<typeof spawn>[] = [];
  const start = async () => {
    const c = spawn(process.execPath, [cli, 'run', '--config', f], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(c);
    let err = '';
    c.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    // Ready when it logs so (the API answering could still be the dead one's stale socket file).
    for (let i = 0; i < 100 && !/vswitch running/.test(err); i++) await new Promise((r) => setTimeout(r, 100));
    return { c, err: () => err };
  };
  try {
    const first = await start();
    assert.ok(netnsList().includes(`${prefix}-a`));
    first.c.kill('SIGKILL');
    await new Promise((r) => first.c.once('exit', r));
    assert.ok(netnsList().includes(`${prefix}-a`), 'a crash leaves the namespace behind');
    const second = await start();
    assert.equal(vswitch(['show'], socket).status, 0, `restart failed: ${second.err()}`);
    assert.match(second.err(), /recovered from a previous run/);
    assert.equal(vswitch(['stop'], socket).status, 0);
    await new Promise((r) => second.c.once('exit', r));
    assert.equal(second.c.exitCode, 0);
    assert.ok(!netnsList().some((n) => n.startsWith(prefix)), 'nothing left after stop');
    assert.ok(!existsSync(socket) && !existsSync(join(dir, `${prefix}.state.json`)));
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', `${prefix}-a`]);
    rmSync(dir, { recursive: true, force: true });
  }
});
