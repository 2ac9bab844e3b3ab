// The live demo (root): the small data centre of demo-topology.ts in network
// namespaces, vswitch running on it as its own process, real kernels sending
// real TCP through it. What it shows comes from where an operator would look:
// GET /v1/stats and /v1/caps (`vswitch stats`, `vswitch caps`), iperf3, and
// each guest's own `ethtool -k`.

import { spawnSync, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { parseEthtoolK, ethtoolOn } from '../offload/translate/linux.js';
import { formatCaps, formatPorts, type StatsSnapshot } from './format.js';
import { StepFailed, gbits, sleep, type Ui } from './demo-ui.js';
import {
  DemoTopology, ETHTOOL_KEYS, FLIP_FLOW, FLOWS, NODES, delta, ethtoolLine, flowLabel, pathText, run, tookPath,
  type DemoNode, type PathDelta,
} from './demo-topology.js';

export interface LiveOptions {
  quick: boolean;
  prefix?: string;
}

const TOOLS: [string, string][] = [['ip', 'iproute2'], ['ping', 'iputils-ping'], ['ethtool', 'ethtool'], ['iperf3', 'iperf3']];

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

const indent = (text: string, by = '   ') => text.replace(/\n$/, '').split('\n').map((l) => `${by}${l}`).join('\n');

interface CapsPort {
  name: string;
  kind: string;
  device: { lso: { v4: boolean; v6: boolean } };
  advertised: { lso: { v4: boolean; v6: boolean } };
  views: { linux: { ethtool: Record<string, boolean> } } | null;
  tunFlags: number | null;
}

async function caps(topo: DemoTopology): Promise<Record<string, CapsPort>> {
  const r = await topo.api.call<{ ports: CapsPort[] }>('GET', '/v1/caps');
  return Object.fromEntries(r.ports.map((p) => [p.name, p]));
}

/** What `node`'s kernel says about its interface (`ethtool -k`, in its namespace). */
async function guestEthtool(topo: DemoTopology, n: DemoNode, onSwitchSide = false): Promise<Record<string, string>> {
  const dev = onSwitchSide ? topo.device(n) : topo.guestDevice(n);
  const r = onSwitchSide ? await run('ethtool', ['-k', dev]) : await topo.exec(n, ['ethtool', '-k', dev]);
  if (r.code !== 0) throw new Error(`ethtool -k ${dev}: ${r.stderr.trim()}`);
  return parseEthtoolK(r.stdout);
}

// --- one iperf3 stream ------------------------------------------------------------------------

interface IperfResult {
  ok: boolean;
  bitsPerSecond: number;
  bytes: number;
  retransmits: number | null;
  error: string;
}

class IperfFlow {
  private out = '';
  private err = '';
  readonly exited: Promise<number>;
  done = false;

  private constructor(private readonly server: ChildProcess, readonly client: ChildProcess) {
    client.stdout!.on('data', (d: Buffer) => { this.out += d.toString(); });
    client.stderr!.on('data', (d: Buffer) => { this.err += d.toString(); });
    this.exited = new Promise((r) => client.once('exit', (c) => { this.done = true; r(c ?? -1); }));
  }

  /** A one-shot iperf3 server where `to` lives, then a client where `from` lives, sending for `seconds`. */
  static async start(topo: DemoTopology, from: DemoNode, to: DemoNode, seconds: number): Promise<IperfFlow> {
    const port = String(20000 + Math.floor(Math.random() * 20000));
    const server = topo.spawnIn(to, ['iperf3', '-s', '-1', '-B', topo.ip4(to), '-p', port, '--forceflush']);
    await new Promise<void>((resolve) => {
      let text = '';
      const t = setTimeout(resolve, 3000);
      server.stdout!.on('data', (d: Buffer) => {
        text += d.toString();
        if (/listening/i.test(text)) { clearTimeout(t); resolve(); }
      });
      server.once('exit', () => { clearTimeout(t); resolve(); });
    });
    const client = topo.spawnIn(from, ['iperf3', '-c', topo.ip4(to), '-p', port, '-t', String(seconds), '-J']);
    const f = new IperfFlow(server, client);
    // A flow that cannot connect must not hang the demo.
    const guard = setTimeout(() => client.kill('SIGKILL'), (seconds + 15) * 1000);
    void f.exited.then(() => clearTimeout(guard));
    return f;
  }

  async result(): Promise<IperfResult> {
    const code = await this.exited;
    if (this.server.exitCode === null) {
      const gone = new Promise((r) => this.server.once('exit', r));
      const t = setTimeout(() => this.server.kill('SIGKILL'), 2000);
      await gone;
      clearTimeout(t);
    }
    try {
      const j = JSON.parse(this.out) as { error?: string; end?: { sum_received?: { bits_per_second: number; bytes: number }; sum_sent?: { retransmits?: number } } };
      const rcv = j.end?.sum_received;
      return {
        ok: code === 0 && j.error === undefined && rcv !== undefined && rcv.bytes > 0,
        bitsPerSecond: rcv?.bits_per_second ?? 0,
        bytes: rcv?.bytes ?? 0,
        retransmits: j.end?.sum_sent?.retransmits ?? null,
        error: j.error ?? (code !== 0 ? `iperf3 exited ${code}` : ''),
      };
    } catch {
      return { ok: false, bitsPerSecond: 0, bytes: 0, retransmits: null, error: `iperf3 exited ${code}: ${(this.err || this.out).trim().slice(0, 200)}` };
    }
  }
}

/**
 * Watch a running flow through GET /v1/stats for `ms` (or until it ends):
 * the line refreshes with the last interval's rate and path; the result is
 * the whole window's.
 */
async function watch(topo: DemoTopology, ui: Ui, label: string, from: DemoNode, to: DemoNode, ms: number, flow: IperfFlow | null, sampleMs: number): Promise<PathDelta> {
  const first = await topo.stats();
  const t0 = performance.now();
  let prev = first;
  let prevT = t0;
  while (performance.now() - t0 < ms && !(flow?.done ?? false)) {
    const wait = Math.min(sampleMs, ms - (performance.now() - t0));
    await (flow !== null ? Promise.race([flow.exited, sleep(wait)]) : sleep(wait));
    const now = await topo.stats();
    const t = performance.now();
    const d = delta(prev[to]!, now[to]!, prev[from]!, now[from]!, (t - prevT) / 1000);
    if (d.seconds > 0.05) {
      ui.live(`   ${label} ${gbits((d.txBytes * 8) / d.seconds).padStart(12)}  ${pathText(d, from)} ${ui.dim(`${((t - t0) / 1000).toFixed(1)} s`)}`);
      prev = now;
      prevT = t;
    }
  }
  const last = await topo.stats();
  return delta(first[to]!, last[to]!, first[from]!, last[from]!, (performance.now() - t0) / 1000);
}

// --- the scenario --------------------------------------------------------------------------------

export async function runLive(ui: Ui, opts: LiveOptions): Promise<void> {
  const flowSeconds = opts.quick ? 1.5 : 5;
  const phaseMs = opts.quick ? 1200 : 3500;
  const sampleMs = opts.quick ? 250 : 500;

  const missing = TOOLS.filter(([cmd]) => !hasCommand(cmd));
  if (missing.length > 0) {
    ui.section('Installing what the demo needs');
    const pkgs = missing.map(([, pkg]) => pkg);
    try {
      await ui.step(`installing ${pkgs.join(', ')} (apt-get)`, async () => {
        const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
        const u = await run('apt-get', ['update', '-qq'], 300_000, env);
        if (u.code !== 0) throw new Error(`apt-get update: ${u.stderr.trim().split('\n').pop() ?? ''}`);
        const i = await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], 600_000, env);
        if (i.code !== 0) throw new Error(`apt-get install: ${i.stderr.trim().split('\n').pop() ?? ''}`);
        const still = missing.filter(([cmd]) => !hasCommand(cmd)).map(([cmd]) => cmd);
        if (still.length > 0) throw new Error(`still missing after the install: ${still.join(', ')}`);
      });
    } catch {
      return; // reported; nothing live can run without them
    }
  }

  const topo = new DemoTopology(opts.prefix !== undefined ? { prefix: opts.prefix } : {});
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    ui.silence();
    ui.urgent(`\n${sig}: stopping the demo, removing what it made…`);
    void (async () => {
      const hard = setTimeout(() => { topo.destroy(); process.exit(130); }, 12_000);
      await topo.teardown().catch(() => topo.destroy());
      const left = topo.leftovers();
      ui.urgent(left.length === 0 ? `cleaned up: nothing with prefix ${topo.prefix} is left` : `left behind: ${left.join(', ')}`);
      ui.urgent('interrupted: demo not completed');
      clearTimeout(hard);
      process.exit(130);
    })();
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, onSignal);

  try {
    await scenario(ui, topo, { flowSeconds, phaseMs, sampleMs, quick: opts.quick });
  } catch (e) {
    if (!(e instanceof StepFailed)) ui.fail('the live demo', (e as Error).message);
    // (A switch that did not start has said why in the step's failure already.)
    const tail = topo.switchRunning ? topo.logTail() : '';
    if (tail !== '') {
      ui.say(ui.dim('   the switch\'s last log lines:'));
      ui.say(ui.dim(indent(tail, '     ')));
    }
  } finally {
    if (!interrupted) await cleanup(ui, topo);
    for (const s of signals) process.off(s, onSignal);
  }
}

interface Timing {
  flowSeconds: number;
  phaseMs: number;
  sampleMs: number;
  quick: boolean;
}

async function scenario(ui: Ui, topo: DemoTopology, t: Timing): Promise<void> {
  // 1. Build it and start the switch.
  ui.section(`A small data centre in network namespaces (run prefix ${topo.prefix})`);
  for (const n of NODES) {
    const where = n.name === 'host' ? 'root namespace' : `namespace ${topo.namespace(n.name)}`;
    ui.say(ui.dim(`   ${n.name.padEnd(7)} ${n.what}; ${where}, ${topo.ip4(n.name)}, ${topo.ip6(n.name)}`));
  }
  await ui.step('building namespaces (the "physical network" behind the uplink veth)', () => topo.buildPhysicalNetwork());
  await ui.step('writing the switch configuration', () => topo.writeConfig(), (p) => p);
  const pid = await ui.step('starting vswitch', () => topo.startSwitch(), (p) => ui.dim(`vswitch run --config switch.yaml → pid ${p}, API ${topo.socket}`));
  void pid;
  const ports = await topo.api.call<{ ports: Record<string, unknown>[] }>('GET', '/v1/ports');
  ui.say(ui.dim('   $ vswitch show'));
  ui.say(indent(formatPorts(ports.ports)));
  ui.check(ports.ports.length === NODES.length && ports.ports.every((p) => p['up'] === true), `all ${NODES.length} ports up`);

  // 2. Reachability.
  ui.section('Everyone reaches everyone (ping, IPv4 and IPv6, through the switch)');
  const pairs: [DemoNode, DemoNode][] = [['vm1', 'vm2'], ['vm1', 'host'], ['vm1', 'legacy'], ['vm1', 'uplink'], ['vm2', 'legacy'], ['host', 'uplink']];
  const pings = await Promise.all(pairs.flatMap(([a, b]) => [false, true].map(async (v6) => {
    const r = await topo.exec(a, ['ping', v6 ? '-6' : '-4', '-c', '2', '-i', '0.2', '-W', '2', v6 ? topo.ip6(b) : topo.ip4(b)], 15_000);
    const rtt = /= [\d.]+\/([\d.]+)\//.exec(r.stdout)?.[1];
    return { a, b, v6, ok: r.code === 0, rtt: rtt !== undefined ? `${rtt} ms` : 'no reply' };
  })));
  for (const [a, b] of pairs) {
    const [v4, v6] = [pings.find((p) => p.a === a && p.b === b && !p.v6)!, pings.find((p) => p.a === a && p.b === b && p.v6)!];
    ui.check(v4.ok && v6.ok, `${`${a} ⇄ ${b}`.padEnd(16)} IPv4 ${v4.rtt.padEnd(10)} IPv6 ${v6.rtt}`);
  }

  // 3. The capability map.
  ui.section('The capability map: what the uplink can do, what each vNIC was advertised');
  const c = await caps(topo);
  ui.say(ui.dim('   $ vswitch caps'));
  ui.say(indent(formatCaps(Object.values(c) as unknown as Record<string, unknown>[])));
  ui.say(ui.dim('   and what each guest\'s own kernel shows (ethtool -k, inside its namespace):'));
  for (const n of ['vm1', 'vm2', 'host', 'legacy'] as const) {
    const k = await guestEthtool(topo, n);
    ui.say(`     ${n.padEnd(7)} ${ethtoolLine(k)}`);
    const views = c[n]?.views;
    if (views !== null && views !== undefined) {
      const wrong = Object.entries(views.linux.ethtool).filter(([name, on]) => k[name] !== undefined && ethtoolOn(k[name]) !== on).map(([name]) => name);
      ui.check(wrong.length === 0, `${n}: the guest's ethtool -k is exactly what the switch advertised (TUNSETOFFLOAD 0x${(c[n]!.tunFlags ?? 0).toString(16)})`, `differs in ${wrong.join(', ')}`);
    } else {
      ui.check(ETHTOOL_KEYS.every((key) => !ethtoolOn(k[key])), `${n}: the legacy guest is offered no offloads at all`);
    }
  }
  const nic = await guestEthtool(topo, 'uplink', true);
  ui.say(`     ${'uplink'.padEnd(7)} ${ethtoolLine(nic)}  ${ui.dim(`(the NIC ${topo.device('uplink')}, read by the switch)`)}`);
  ui.check(c['uplink']!.device.lso.v4 === ethtoolOn(nic['tx-tcp-segmentation']), 'the capability map has the uplink\'s TSO as ethtool shows it');

  // 4. Traffic.
  ui.section(`Traffic: one TCP stream per pair (iperf3, ${t.flowSeconds} s each), the path it takes`);
  ui.say(ui.dim('   throughput: iperf3 at the receiver; path: the destination port\'s counters in GET /v1/stats'));
  for (const f of FLOWS) {
    const label = flowLabel(f.from, f.to);
    let flow: IperfFlow;
    try {
      flow = await IperfFlow.start(topo, f.from, f.to, t.flowSeconds);
    } catch (e) {
      ui.fail(`${f.from} → ${f.to}`, (e as Error).message);
      continue;
    }
    const d = await watch(topo, ui, label, f.from, f.to, Infinity, flow, t.sampleMs);
    const r = await flow.result();
    ui.settle(`   ${label} ${(r.ok ? gbits(r.bitsPerSecond) : 'failed').padStart(12)}  ${pathText(d, f.from)}`);
    ui.check(r.ok, `${f.from} → ${f.to}: iperf3 completed (${(r.bytes / 1e6).toFixed(0)} MB, ${r.retransmits ?? '?'} retransmits)`, r.error);
    ui.check(tookPath(d, f.expect), `${f.from} → ${f.to}: ${f.expect}, as it should: ${f.why}`,
      `hardware ${d.hardware}, pass-through ${d.passThrough}, software ${d.software} (${d.segments} segments)`);
    if (f.expect === 'software segmentation') {
      ui.check(d.chargedCpuNs > 0 && d.chargedChecksums > 0, `${f.from} → ${f.to}: the work is charged to ${f.from}, the port that asked for it (${(d.chargedCpuNs / 1e6).toFixed(0)} ms of CPU, ${d.chargedChecksums} checksums)`);
    }
  }
  const s = await topo.stats();
  const unbalanced = Object.values(s).filter((p: StatsSnapshot) =>
    p.rxPackets !== p.forwarded + Object.values(p.rxDrops).reduce((x, y) => x + y, 0) + p.pending).map((p) => p.name);
  ui.check(unbalanced.length === 0, 'every port: received = forwarded + dropped (by reason) + pending', unbalanced.join(', '));

  // 5. The uplink loses TSO and gets it back.
  await flip(ui, topo, t);
}

async function flip(ui: Ui, topo: DemoTopology, t: Timing): Promise<void> {
  const { from, to } = FLIP_FLOW;
  const dev = topo.device('uplink');
  ui.section(`The uplink loses TSO and gets it back, while ${from} → ${to} runs`);
  const label = (s: string) => s.padEnd(15);
  // Three phases, two flips (each seen within a watch interval), and a margin.
  const flow = await IperfFlow.start(topo, from, to, (3 * t.phaseMs) / 1000 + 1.5);
  let restored = false;
  try {
    await sleep(300); // past slow start
    const phase = async (name: string) => {
      const d = await watch(topo, ui, label(name), from, to, t.phaseMs, flow, t.sampleMs);
      ui.settle(`   ${label(name)} ${gbits((d.txBytes * 8) / d.seconds).padStart(12)}  ${pathText(d, from)}`);
      return d;
    };
    const setTso = async (on: boolean) => {
      const t0 = performance.now();
      const r = await run('ethtool', ['-K', dev, 'tso', on ? 'on' : 'off']);
      if (r.code !== 0) throw new Error(`ethtool -K ${dev} tso ${on ? 'on' : 'off'}: ${r.stderr.trim()}`);
      let c = await caps(topo);
      while (c[to]!.device.lso.v4 !== on && performance.now() - t0 < 3000) {
        await sleep(25);
        c = await caps(topo);
      }
      const seen = c[to]!.device.lso.v4 === on;
      const k = await guestEthtool(topo, from);
      ui.say(`   ${ui.dim('$')} ethtool -K ${dev} tso ${on ? 'on ' : 'off'}  → ${seen ? `the switch saw it after ${((performance.now() - t0) / 1000).toFixed(2)} s: uplink LSO ${on ? 'on' : 'off'}` : 'the switch did not see it'}; ` +
        `${from} is still advertised LSO (${from}'s ethtool -k: tcp-segmentation-offload: ${ethtoolOn(k['tcp-segmentation-offload']) ? 'on' : 'off'})`);
      ui.check(seen && c[from]!.advertised.lso.v4 && ethtoolOn(k['tcp-segmentation-offload']),
        `TSO ${on ? 'on' : 'off'} reached the capability map; the guest's offloads did not change`);
    };
    const a = await phase('TSO on');
    await setTso(false);
    const b = await phase('TSO off');
    await setTso(true);
    restored = true;
    const c = await phase('TSO on again');
    const r = await flow.result();
    ui.check(tookPath(a, 'hardware'), 'TSO on: super-frames handed to the NIC (hardware)', `hardware ${a.hardware}, software ${a.software}`);
    // (The NIC still does checksums: a small frame that asks only for one still goes "hardware".)
    ui.check(tookPath(b, 'software segmentation'), `TSO off: the switch segmented the super-frames in software (${b.segments} segments), the NIC still finishing checksums`,
      `hardware ${b.hardware}, software ${b.software}, segments ${b.segments}`);
    ui.check(tookPath(c, 'hardware'), 'TSO on again: back to hardware', `hardware ${c.hardware}, software ${c.software}`);
    ui.check(r.ok, `the connection survived both changes (iperf3 completed: ${gbits(r.bitsPerSecond)} average, ${r.retransmits ?? '?'} retransmits)`, r.error);
  } finally {
    if (!restored) await run('ethtool', ['-K', dev, 'tso', 'on']);
    flow.client.kill('SIGKILL');
  }
}

async function cleanup(ui: Ui, topo: DemoTopology): Promise<void> {
  ui.section('Cleaning up');
  try {
    if (topo.switchRunning) {
      const code = await ui.step('stopping vswitch (vswitch stop)', () => topo.stopSwitch(), (c) => ui.dim(`exit ${c}`));
      const own = topo.leftovers().filter((l) => !l.includes(`${topo.prefix}-phys`) && !l.endsWith(` ${topo.device('uplink')}`));
      ui.check(code === 0 && own.length === 0, 'vswitch exited 0 and removed the namespaces and TAPs it made', `exit ${code}; left: ${own.join(', ')}`);
    }
    await ui.step('removing the physical network and the temporary files', () => topo.teardown());
  } catch {
    topo.destroy();
  }
  const left = topo.leftovers();
  ui.check(left.length === 0, `nothing with prefix ${topo.prefix} is left (namespaces, devices, the daemon)`, left.join(', '));
}
