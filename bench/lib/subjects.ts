// The switches under test, each built from the same kind of guests: network
// namespaces with one interface each, IPv4 in 198.18.0.0/15, the same
// defaults (no IPv6, offloads as the attachment gives them).
//
//   wire      two namespaces on a direct veth pair
//   bridge    a Linux bridge with veth ports (a TAP needs a userspace reader
//             to carry traffic; the bridge's own ports are veths)
//   ovs / ovs-tso
//             Open vSwitch, userspace datapath (datapath_type=netdev), ports
//             type=tap moved into the namespaces; other_config:userspace-tso-enable
//             false / true (read at start, so one ovs-vswitchd per setting, each with
//             its own database, run dir and sockets under a temp dir)
//   vswitch A vm1, vm2 (synthetic: TAP + vnet header), leg (legacy TAP), up
//             (external: AF_PACKET on a veth with `ethtool -K up tso off`)
//   vswitch B vm1, up (external, TSO on, `ipsec: {}`): the hardware path, and the
//             IPsec offload row (SAs offloaded through vm1's guest API)

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { Client } from '../../src/cli/client.js';
import type { StatsSnapshot } from '../../src/cli/format.js';
import type { ProbeSnapshot } from '../gc-probe.js';
import { must, onCleanup, run, runIn, sleep, trackDir } from './proc.js';
import { stopDaemon } from '../../src/cli/subprocess.js';
import { reachable } from './measure.js';

export const distRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const MAIN = join(distRoot, 'src/cli/main.js');
const PROBE = join(distRoot, 'bench/gc-probe.js');

export type Scenario = 'tcp1' | 'tcp4' | 'udp64' | 'rtt' | 'esp64' | 'esp1400' | 'plain64' | 'plain1400';

export type RowId = 'wire' | 'bridge' | 'ovs' | 'ovs-tso' | 'vs-vm' | 'vs-uplink-hw' | 'vs-uplink-sw' | 'vs-legacy' | 'vs-ipsec';

export const ROW_ORDER: RowId[] = ['wire', 'bridge', 'ovs', 'ovs-tso', 'vs-vm', 'vs-uplink-hw', 'vs-uplink-sw', 'vs-legacy', 'vs-ipsec'];

export interface Row {
  id: RowId;
  label: string;
  kind: 'reference' | 'vswitch';
  srcNs: string;
  /** The sender's interface inside srcNs. */
  srcDev: string;
  dstNs: string;
  dstDev: string;
  dstAddr: string;
  scenarios: Scenario[];
  /** The switch process (CPU from /proc); null: the kernel does the switching. */
  pid: number | null;
  daemon?: VswitchDaemon;
  /** vswitch: the ports whose counters say which offload path a flow took. */
  path?: { src: string; dst: string; expect: string };
  notes: string[];
}

export interface Subject {
  name: string;
  start(): Promise<Row[]>;
  stop(): Promise<void>;
}

/** The /24 each subject uses: 198.18.<base + i>.0/24. */
const net = (i: number, host: number) => `198.18.${200 + i}.${host}`;

async function addNs(ns: string): Promise<void> {
  await must('ip', ['netns', 'add', ns]);
  await guestDefaults(ns);
}

/** The same guest defaults everywhere: lo up, no IPv6 chatter. */
async function guestDefaults(ns: string): Promise<void> {
  await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  await runIn(ns, ['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
}

async function addrUp(ns: string, dev: string, cidr: string): Promise<void> {
  await must('ip', ['-n', ns, 'addr', 'add', cidr, 'dev', dev]);
  await must('ip', ['-n', ns, 'link', 'set', dev, 'up']);
}

/** Whether TSO is on for a device, as its own stack sees it (`ethtool -k`). */
export async function tsoState(ns: string, dev: string): Promise<string> {
  const r = await runIn(ns, ['ethtool', '-k', dev]);
  const m = /tcp-segmentation-offload: (\w+)/.exec(r.stdout);
  return m === null ? '?' : m[1]!;
}

// --- wire --------------------------------------------------------------------------------

export class Wire implements Subject {
  readonly name = 'wire';
  constructor(private readonly p: string, private readonly i: number) {}

  async start(): Promise<Row[]> {
    const a = `${this.p}-wa`, b = `${this.p}-wb`;
    await addNs(a);
    await addNs(b);
    await must('ip', ['link', 'add', `${this.p}wa`, 'type', 'veth', 'peer', 'name', `${this.p}wb`, 'netns', b]);
    await must('ip', ['link', 'set', `${this.p}wa`, 'netns', a]);
    await addrUp(a, `${this.p}wa`, `${net(this.i, 1)}/24`);
    await addrUp(b, `${this.p}wb`, `${net(this.i, 2)}/24`);
    return [{
      id: 'wire', label: 'wire: veth pair', kind: 'reference', srcNs: a, srcDev: `${this.p}wa`, dstNs: b, dstDev: `${this.p}wb`,
      dstAddr: net(this.i, 2), scenarios: ['tcp1', 'tcp4', 'udp64', 'rtt'], pid: null, notes: [],
    }];
  }

  async stop(): Promise<void> {
    await run('ip', ['netns', 'del', `${this.p}-wa`]);
    await run('ip', ['netns', 'del', `${this.p}-wb`]);
  }
}

// --- Linux bridge ---------------------------------------------------------------------------

export class Bridge implements Subject {
  readonly name = 'bridge';
  constructor(private readonly p: string, private readonly i: number) {}

  async start(): Promise<Row[]> {
    const br = `${this.p}l`;
    await must('ip', ['link', 'add', br, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    await run('sysctl', ['-qw', `net.ipv6.conf.${br}.disable_ipv6=1`]);
    await must('ip', ['link', 'set', br, 'up']);
    for (const [side, host] of [['a', 1], ['b', 2]] as const) {
      const ns = `${this.p}-l${side}`;
      await addNs(ns);
      const root = `${this.p}l${side}0`, guest = `${this.p}l${side}1`;
      await must('ip', ['link', 'add', root, 'type', 'veth', 'peer', 'name', guest, 'netns', ns]);
      await run('sysctl', ['-qw', `net.ipv6.conf.${root}.disable_ipv6=1`]);
      await must('ip', ['link', 'set', root, 'master', br]);
      await must('ip', ['link', 'set', root, 'up']);
      await addrUp(ns, guest, `${net(this.i, host)}/24`);
    }
    return [{
      id: 'bridge', label: 'Linux bridge (veth ports)', kind: 'reference', srcNs: `${this.p}-la`, srcDev: `${this.p}la1`,
      dstNs: `${this.p}-lb`, dstDev: `${this.p}lb1`, dstAddr: net(this.i, 2), scenarios: ['tcp1', 'tcp4', 'udp64', 'rtt'], pid: null,
      notes: ['a TAP only carries traffic while a userspace program holds it, so the kernel bridge\'s ports are veths'],
    }];
  }

  async stop(): Promise<void> {
    await run('ip', ['netns', 'del', `${this.p}-la`]);
    await run('ip', ['netns', 'del', `${this.p}-lb`]);
    await run('ip', ['link', 'del', `${this.p}l`]);
  }
}

// --- Open vSwitch, userspace datapath --------------------------------------------------------

export const OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

export class Ovs implements Subject {
  readonly name: string;
  private readonly tag: string;
  private dir = '';
  private ovsdb: ChildProcess | null = null;
  private vswitchd: ChildProcess | null = null;
  /** The ovs-vsctl commands that built it, for the record. */
  readonly commands: string[] = [];

  constructor(private readonly p: string, private readonly i: number, private readonly tso: boolean) {
    this.tag = tso ? 't' : 'o';
    this.name = tso ? 'ovs-tso' : 'ovs';
  }

  private get br(): string {
    return `${this.p}${this.tag}`;
  }

  private get env(): NodeJS.ProcessEnv {
    return { ...process.env, OVS_RUNDIR: this.dir, OVS_LOGDIR: this.dir, OVS_DBDIR: this.dir, OVS_SYSCONFDIR: this.dir };
  }

  private note(cmd: string, args: string[]): void {
    this.commands.push(`${cmd} ${args.join(' ')}`.split(this.dir).join('$D'));
  }

  private async vsctl(...args: string[]): Promise<string> {
    this.note('ovs-vsctl', [`--db=unix:${this.dir}/db.sock`, ...args]);
    return must('ovs-vsctl', [`--db=unix:${this.dir}/db.sock`, '--timeout=20', ...args], 30_000, this.env);
  }

  /** ovs-vswitchd runs in a namespace of its own: the netdev datapath makes a TAP named "ovs-netdev", and two would collide. */
  private get swNs(): string {
    return `${this.p}-${this.tag}s`;
  }

  private daemon(cmd: string, args: string[], ns: string | null = null): ChildProcess {
    const [c0, a0] = ns === null ? [cmd, args] : ['ip', ['netns', 'exec', ns, cmd, ...args]];
    this.note(c0, [...a0, '&']);
    const c = spawn(c0, a0, { stdio: ['ignore', 'ignore', 'pipe'], env: this.env });
    let err = '';
    c.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    c.once('exit', (code, sig) => { if (code !== 0 && sig === null) process.stderr.write(`${cmd} exited ${code}: ${err.trim().slice(-300)}\n`); });
    return c;
  }

  async start(): Promise<Row[]> {
    this.dir = mkdtempSync(join(tmpdir(), `${this.p}-${this.name}-`));
    trackDir(this.dir);
    const d = this.dir;
    onCleanup(() => this.killSync());
    this.commands.push('D=$(mktemp -d); export OVS_RUNDIR=$D OVS_LOGDIR=$D OVS_DBDIR=$D OVS_SYSCONFDIR=$D');
    this.note('ovsdb-tool', ['create', `${d}/conf.db`, OVS_SCHEMA]);
    await must('ovsdb-tool', ['create', `${d}/conf.db`, OVS_SCHEMA]);
    this.ovsdb = this.daemon('ovsdb-server', [`${d}/conf.db`, `--remote=punix:${d}/db.sock`, `--unixctl=${d}/ovsdb-server.ctl`,
      `--pidfile=${d}/ovsdb-server.pid`, `--log-file=${d}/ovsdb-server.log`, '--no-chdir']);
    for (let t = 0; !existsSync(`${d}/db.sock`); t++) {
      if (t > 100 || this.ovsdb.exitCode !== null) throw new Error(`ovsdb-server did not start (${d}/ovsdb-server.log)`);
      await sleep(50);
    }
    await this.vsctl('--no-wait', 'init');
    // Read once when ovs-vswitchd starts: set it before.
    await this.vsctl('--no-wait', 'set', 'Open_vSwitch', '.', `other_config:userspace-tso-enable=${this.tso}`);
    await addNs(this.swNs);
    this.note('ip', ['netns', 'add', this.swNs]);
    this.vswitchd = this.daemon('ovs-vswitchd', [`unix:${d}/db.sock`, `--unixctl=${d}/ovs-vswitchd.ctl`,
      `--pidfile=${d}/ovs-vswitchd.pid`, `--log-file=${d}/ovs-vswitchd.log`, '--no-chdir'], this.swNs);
    await this.vsctl('add-br', this.br, '--', 'set', 'bridge', this.br, 'datapath_type=netdev');
    for (const [side, host] of [['a', 1], ['b', 2]] as const) {
      const ns = `${this.p}-${this.tag}${side}`;
      const tap = `${this.p}${this.tag}${side}`;
      await addNs(ns);
      await this.vsctl('add-port', this.br, tap, '--', 'set', 'interface', tap, 'type=tap');
      await must('ip', ['-n', this.swNs, 'link', 'set', tap, 'netns', ns]);
      this.note('ip', ['-n', this.swNs, 'link', 'set', tap, 'netns', ns]);
      await addrUp(ns, tap, `${net(this.i, host)}/24`);
    }
    const log = readFileSync(`${d}/ovs-vswitchd.log`, 'utf8');
    const tsoOn = /Userspace TCP Segmentation Offloading support enabled/.test(log);
    if (tsoOn !== this.tso) throw new Error(`ovs-vswitchd did not take userspace-tso-enable=${this.tso} (log: ${d}/ovs-vswitchd.log)`);
    return [{
      id: this.tso ? 'ovs-tso' : 'ovs', label: `OVS userspace, TSO ${this.tso ? 'on' : 'off'} (tap ports)`, kind: 'reference',
      srcNs: `${this.p}-${this.tag}a`, srcDev: `${this.p}${this.tag}a`, dstNs: `${this.p}-${this.tag}b`, dstDev: `${this.p}${this.tag}b`,
      dstAddr: net(this.i, 2), scenarios: ['tcp1', 'tcp4', 'udp64', 'rtt'], pid: this.vswitchd.pid ?? null,
      notes: [`datapath_type=netdev, userspace-tso-enable=${this.tso}, ports type=tap moved into the guests' namespaces (ovs-vswitchd itself runs in a namespace of its own, ${this.swNs}, so that two instances' datapath TAPs do not collide)`],
    }];
  }

  async stop(): Promise<void> {
    if (this.dir === '') return;
    const env = this.env;
    const db = `--db=unix:${this.dir}/db.sock`;
    this.commands.push('# afterwards:');
    if (this.vswitchd !== null && this.vswitchd.exitCode === null) {
      this.note('ovs-vsctl', [db, 'del-br', this.br]);
      await run('ovs-vsctl', [db, '--timeout=10', 'del-br', this.br], 15_000, env);
      this.note('ovs-appctl', ['-t', `${this.dir}/ovs-vswitchd.ctl`, 'exit', '--cleanup']);
      await run('ovs-appctl', ['-t', `${this.dir}/ovs-vswitchd.ctl`, 'exit', '--cleanup'], 10_000, env);
    }
    if (this.ovsdb !== null && this.ovsdb.exitCode === null) {
      this.note('ovs-appctl', ['-t', `${this.dir}/ovsdb-server.ctl`, 'exit']);
      await run('ovs-appctl', ['-t', `${this.dir}/ovsdb-server.ctl`, 'exit'], 10_000, env);
    }
    await waitExit(this.vswitchd, 5000);
    await waitExit(this.ovsdb, 5000);
    await run('ip', ['netns', 'del', `${this.p}-${this.tag}a`]);
    await run('ip', ['netns', 'del', `${this.p}-${this.tag}b`]);
    await run('ip', ['netns', 'del', this.swNs]);
  }

  private killSync(): void {
    if (this.vswitchd !== null && this.vswitchd.exitCode === null) {
      spawnSync('ovs-vsctl', [`--db=unix:${this.dir}/db.sock`, '--timeout=5', 'del-br', this.br], { env: this.env, timeout: 8000 });
      this.vswitchd.kill('SIGKILL');
    }
    if (this.ovsdb !== null && this.ovsdb.exitCode === null) this.ovsdb.kill('SIGKILL');
  }
}

async function waitExit(c: ChildProcess | null, ms: number): Promise<void> {
  if (c === null || c.exitCode !== null || c.signalCode !== null) return;
  const done = new Promise<void>((r) => c.once('exit', () => r()));
  const t = setTimeout(() => c.kill('SIGKILL'), ms);
  await done;
  clearTimeout(t);
}

// --- vswitch ------------------------------------------------------------------------------

export interface DaemonOptions {
  /** Extra node options before the script (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /** Load bench/gc-probe.js into the daemon (GC counts, heap after a full GC on request). */
  probe?: boolean;
  /** Extra keys for the config's `switch:` section (e.g. workers). */
  settings?: Record<string, unknown>;
  /** `queues:` on the synthetic ports (multi-queue TAPs). */
  queues?: number;
  /** `uro:` on the vNIC ports (default: the configuration's, on). */
  uro?: boolean;
}

/** `vswitch run --config FILE` as a child process, driven through its API. */
export class VswitchDaemon {
  readonly dir: string;
  readonly api: Client;
  private child: ChildProcess | null = null;
  private log = '';
  private readonly probeFile: string;
  private lastSeq = 0;

  constructor(readonly name: string, private readonly ports: Record<string, unknown>[], private readonly opts: DaemonOptions = {}) {
    this.dir = mkdtempSync(join(tmpdir(), `${name}-`));
    trackDir(this.dir);
    this.api = new Client(join(this.dir, `${name}.sock`));
    this.probeFile = join(this.dir, 'probe.json');
    onCleanup(() => { if (this.running) this.child!.kill('SIGKILL'); });
  }

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  get configPath(): string {
    return join(this.dir, 'switch.yaml');
  }

  logTail(n = 10): string {
    return this.log.trim().split('\n').slice(-n).join('\n');
  }

  async start(): Promise<void> {
    const q = this.opts.queues;
    const uro = this.opts.uro;
    const vnic = (p: Record<string, unknown>) => p['kind'] === 'synthetic' || p['kind'] === 'host';
    writeFileSync(this.configPath, toYaml({
      switch: { name: this.name, stateDir: this.dir, log: { level: 'warn', format: 'text' }, ...(this.opts.settings ?? {}) },
      ports: this.ports.map((p) => ({
        ...p,
        ...(q !== undefined && p['kind'] === 'synthetic' ? { queues: q } : {}),
        ...(uro !== undefined && vnic(p) ? { uro } : {}),
      })),
    }));
    const args = [...(this.opts.nodeArgs ?? [])];
    if (this.opts.probe === true) args.push('--expose-gc', '--import', pathToFileURL(PROBE).href);
    args.push(MAIN, 'run', '--config', this.configPath);
    const env = this.opts.probe === true ? { ...process.env, VSWITCH_BENCH_PROBE: this.probeFile } : process.env;
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.child = child;
    const keep = (d: Buffer) => { this.log = (this.log + d.toString()).slice(-20_000); };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (!this.running) throw new Error(`vswitch ${this.name} exited before it was ready:\n${this.logTail()}`);
      try {
        const sw = await this.api.call<{ dataPlane?: { threadId: number } }>('GET', '/v1/switch');
        this.pipelineThread = sw.dataPlane?.threadId ?? 0;
        return;
      } catch { /* not yet */ }
      if (Date.now() > deadline) throw new Error(`vswitch ${this.name} did not answer within 20 s:\n${this.logTail()}`);
      await sleep(50);
    }
  }

  /** The probe's counters, after which it forces a full GC and adds the heap that survived (null without the probe). */
  async snapshot(): Promise<ProbeSnapshot | null> {
    if (this.opts.probe !== true || !this.running) return null;
    process.kill(this.child!.pid!, 'SIGUSR2');
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      try {
        const s = JSON.parse(readFileSync(this.probeFile, 'utf8')) as ProbeSnapshot;
        if (s.seq > this.lastSeq) {
          this.lastSeq = s.seq;
          return s;
        }
      } catch { /* not written yet */ }
      await sleep(20);
    }
    return null;
  }

  async stats(): Promise<Record<string, StatsSnapshot>> {
    const r = await this.api.call<{ ports: StatsSnapshot[] }>('GET', '/v1/stats');
    return Object.fromEntries(r.ports.map((p) => [p.name, p]));
  }

  /** Stop as an operator does (POST /v1/shutdown); signals if it does not go. Resolves with its exit code. */
  async stop(timeoutMs = 15_000): Promise<number | null> {
    const child = this.child;
    if (child === null || !this.running) return child?.exitCode ?? null;
    return stopDaemon(child, () => this.api.call('POST', '/v1/shutdown'), timeoutMs);
  }

  /** Node's threadId of the thread that runs the pipeline (the data-plane thread; 0: the main thread). */
  pipelineThread = 0;

  /**
   * The .cpuprofile of the pipeline's thread, of those the daemon wrote on
   * exit (with --cpu-prof --cpu-prof-dir=<dir>, one per thread, named
   * CPU.<date>.<time>.<pid>.<threadId>.<seq>.cpuprofile).
   */
  profileIn(dir: string): string | null {
    if (!existsSync(dir)) return null;
    const f = readdirSync(dir).filter((n) => n.endsWith('.cpuprofile') && n.split('.')[4] === String(this.pipelineThread));
    return f.length === 0 ? null : join(dir, f[0]!);
  }

  cleanupDir(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A veth whose root end becomes a vswitch uplink and whose far end is "the physical network" (a namespace). */
async function physicalNetwork(ns: string, up: string, far: string, cidrs: string[], mtu?: number): Promise<void> {
  await addNs(ns);
  await must('ip', ['link', 'add', up, 'type', 'veth', 'peer', 'name', far, 'netns', ns]);
  await run('sysctl', ['-qw', `net.ipv6.conf.${up}.disable_ipv6=1`]);
  if (mtu !== undefined) {
    await must('ip', ['link', 'set', up, 'mtu', String(mtu)]);
    await must('ip', ['-n', ns, 'link', 'set', far, 'mtu', String(mtu)]);
  }
  for (const c of cidrs) await must('ip', ['-n', ns, 'addr', 'add', c, 'dev', far]);
  await must('ip', ['-n', ns, 'link', 'set', far, 'up']);
}

const vnic = (name: string, kind: 'synthetic' | 'legacy', device: string, ns: string, addr: string) =>
  ({ name, kind, device, guest: { namespace: ns, create: true, addresses: [`${addr}/24`] } });

/** vswitch A: VM→VM (pass-through), VM→uplink with the uplink's TSO off, VM→legacy. */
export class VswitchA implements Subject {
  readonly name = 'vswitch-a';
  daemon: VswitchDaemon | null = null;

  constructor(p: string, private readonly i: number, private readonly opts: DaemonOptions = { probe: true }, private readonly sw = `${p}a`) {}

  ns(n: 'vm1' | 'vm2' | 'leg' | 'phys'): string {
    return `${this.sw}-${n}`;
  }

  dev(n: 'vm1' | 'vm2' | 'leg' | 'up' | 'pp'): string {
    return `${this.sw}${n}`;
  }

  addr(n: 'vm1' | 'vm2' | 'leg' | 'phys'): string {
    return net(this.i, { vm1: 1, vm2: 2, leg: 4, phys: 5 }[n]);
  }

  async start(): Promise<Row[]> {
    await physicalNetwork(this.ns('phys'), this.dev('up'), this.dev('pp'), [`${this.addr('phys')}/24`]);
    // "The user disabled the offload": the switch must segment for this uplink.
    await must('ethtool', ['-K', this.dev('up'), 'tso', 'off']);
    const d = new VswitchDaemon(this.sw, [
      vnic('vm1', 'synthetic', this.dev('vm1'), this.ns('vm1'), this.addr('vm1')),
      vnic('vm2', 'synthetic', this.dev('vm2'), this.ns('vm2'), this.addr('vm2')),
      vnic('leg', 'legacy', this.dev('leg'), this.ns('leg'), this.addr('leg')),
      { name: 'up', kind: 'external', device: this.dev('up') },
    ], this.opts);
    this.daemon = d;
    await d.start();
    for (const n of ['vm1', 'vm2', 'leg'] as const) await guestDefaults(this.ns(n));
    const base = { kind: 'vswitch' as const, srcNs: this.ns('vm1'), srcDev: this.dev('vm1'), pid: d.pid, daemon: d, scenarios: ['tcp1', 'tcp4', 'udp64', 'rtt'] as Scenario[] };
    return [
      { ...base, id: 'vs-vm', label: 'vswitch VM→VM (pass-through)', dstNs: this.ns('vm2'), dstDev: this.dev('vm2'), dstAddr: this.addr('vm2'),
        path: { src: 'vm1', dst: 'vm2', expect: 'pass-through' }, notes: ['synthetic ports: TAP + vnet header in each namespace'] },
      { ...base, id: 'vs-uplink-sw', label: 'vswitch VM→uplink, TSO off (software)', dstNs: this.ns('phys'), dstDev: this.dev('pp'), dstAddr: this.addr('phys'),
        path: { src: 'vm1', dst: 'up', expect: 'software' }, notes: [`external port: AF_PACKET on veth ${this.dev('up')} after \`ethtool -K ${this.dev('up')} tso off\``] },
      { ...base, id: 'vs-legacy', label: 'vswitch VM→legacy (software)', dstNs: this.ns('leg'), dstDev: this.dev('leg'), dstAddr: this.addr('leg'),
        path: { src: 'vm1', dst: 'leg', expect: 'software' }, notes: ['legacy port: TAP without vnet header'] },
    ];
  }

  async stop(): Promise<void> {
    if (this.daemon !== null) await this.daemon.stop();
    await run('ip', ['netns', 'del', this.ns('phys')]);
    this.daemon?.cleanupDir();
  }
}

export interface IpsecSetup {
  /** Linux XFRM in the "physical network" can terminate ESP (kernel with ESP and GCM). */
  xfrm: boolean;
  why: string;
}

/** vswitch B: VM→uplink with TSO on (hardware path), and the IPsec offload row. */
export class VswitchB implements Subject {
  readonly name = 'vswitch-b';
  daemon: VswitchDaemon | null = null;
  ipsec: IpsecSetup | null = null;

  private readonly sw: string;

  constructor(p: string, private readonly i: number, private readonly opts: DaemonOptions = { probe: true }, private readonly withIpsec = true) {
    this.sw = `${p}b`;
  }

  ns(n: 'vm1' | 'phys'): string {
    return `${this.sw}-${n}`;
  }

  dev(n: 'vm1' | 'up' | 'pp'): string {
    return `${this.sw}${n}`;
  }

  addr(n: 'vm1' | 'phys' | 'esp'): string {
    return net(this.i, { vm1: 1, phys: 5, esp: 6 }[n]);
  }

  async start(): Promise<Row[]> {
    // Room on the wire for ESP around a full-size packet (the guest's MTU stays 1500).
    await physicalNetwork(this.ns('phys'), this.dev('up'), this.dev('pp'), [`${this.addr('phys')}/24`, `${this.addr('esp')}/24`], 1600);
    const d = new VswitchDaemon(this.sw, [
      vnic('vm1', 'synthetic', this.dev('vm1'), this.ns('vm1'), this.addr('vm1')),
      { name: 'up', kind: 'external', device: this.dev('up'), mtu: 1600, ...(this.withIpsec ? { ipsec: {} } : {}) },
    ], this.opts);
    this.daemon = d;
    await d.start();
    await guestDefaults(this.ns('vm1'));
    const base = { kind: 'vswitch' as const, srcNs: this.ns('vm1'), srcDev: this.dev('vm1'), dstNs: this.ns('phys'), dstDev: this.dev('pp'), pid: d.pid, daemon: d };
    const rows: Row[] = [{
      ...base, id: 'vs-uplink-hw', label: 'vswitch VM→uplink, TSO on (hardware)', dstAddr: this.addr('phys'),
      scenarios: ['tcp1', 'tcp4', 'udp64', 'rtt'], path: { src: 'vm1', dst: 'up', expect: 'hardware' },
      notes: [`external port: AF_PACKET on veth ${this.dev('up')}, TSO on: super-frames go down with their metadata`],
    }];
    if (!this.withIpsec) return rows;
    try {
      this.ipsec = await this.offloadSas();
      rows[0]!.scenarios.push('plain64', 'plain1400');
      rows.push({
        ...base, id: 'vs-ipsec', label: 'vswitch VM→uplink, IPsec offload (ESP in the switch)', dstAddr: this.addr('esp'),
        scenarios: this.ipsec.xfrm ? ['tcp1', 'tcp4', 'udp64', 'rtt', 'esp64', 'esp1400'] : ['esp64', 'esp1400'],
        notes: [this.ipsec.why],
      });
    } catch (e) {
      rows.push({ ...base, id: 'vs-ipsec', label: 'vswitch VM→uplink, IPsec offload (ESP in the switch)', dstAddr: this.addr('esp'), scenarios: [],
        notes: [`skipped: ${(e as Error).message}`] });
    }
    return rows;
  }

  /**
   * vm1's agent offloads an outbound and an inbound SA (AES-GCM-128,
   * transport mode) for 198.18.x.6 through its guest API. If the kernel can
   * do ESP, the "physical network" gets the same SAs in XFRM and the row runs
   * every scenario; if not, nothing there can decrypt, so the outbound SA is
   * limited to UDP (the iperf3 control connection stays plain) and the row
   * measures one-way encryption only (ESP packets arriving at the far NIC).
   */
  private async offloadSas(): Promise<IpsecSetup> {
    const vm = this.addr('vm1'), peer = this.addr('esp');
    if (!(await reachable(this.ns('vm1'), peer))) throw new Error(`${peer} not reachable through the switch before IPsec`);
    const keyOut = '5a'.repeat(16), saltOut = '0a0b0c0d', keyIn = 'a5'.repeat(16), saltIn = 'd0c0b0a0';
    const spiOut = 0x5101, spiIn = 0x5102;
    const phys = this.ns('phys');
    const x1 = await run('ip', ['-n', phys, 'xfrm', 'state', 'add', 'src', vm, 'dst', peer, 'proto', 'esp', 'spi', String(spiOut), 'mode', 'transport',
      'aead', 'rfc4106(gcm(aes))', `0x${keyOut}${saltOut}`, '128']);
    let xfrm = x1.code === 0;
    let why: string;
    if (xfrm) {
      await must('ip', ['-n', phys, 'xfrm', 'state', 'add', 'src', peer, 'dst', vm, 'proto', 'esp', 'spi', String(spiIn), 'mode', 'transport',
        'aead', 'rfc4106(gcm(aes))', `0x${keyIn}${saltIn}`, '128']);
      await must('ip', ['-n', phys, 'xfrm', 'policy', 'add', 'src', `${peer}/32`, 'dst', `${vm}/32`, 'dir', 'out', 'tmpl', 'src', peer, 'dst', vm, 'proto', 'esp', 'mode', 'transport']);
      await must('ip', ['-n', phys, 'xfrm', 'policy', 'add', 'src', `${vm}/32`, 'dst', `${peer}/32`, 'dir', 'in', 'tmpl', 'src', vm, 'dst', peer, 'proto', 'esp', 'mode', 'transport']);
      why = 'SAs offloaded through vm1\'s guest API; the far end is Linux XFRM (rfc4106(gcm(aes)))';
    } else {
      why = `one-way only: this kernel cannot terminate ESP (\`ip xfrm state add … rfc4106(gcm(aes))\`: ${x1.stderr.trim() || 'failed'}), ` +
        'so the outbound SA covers UDP only and the row counts ESP packets arriving at the far NIC; TCP and ping need a peer that decrypts';
    }
    const tokFile = join(this.daemon!.dir, `${this.sw}.guest`, 'vm1.token');
    const sock = join(this.daemon!.dir, `${this.sw}.guest`, 'vm1.sock');
    const token = readFileSync(tokFile, 'utf8').trim();
    const sa = (spi: number, direction: 'in' | 'out', key: string, salt: string, src: string, dst: string, selector?: object) =>
      ({ spi, direction, mode: 'transport', algorithm: 'aes-gcm-128', key, salt, src, dst, ...(selector !== undefined ? { selector } : {}) });
    await guestCall(sock, token, 'POST', '/v1/guest/sas', sa(spiOut, 'out', keyOut, saltOut, vm, peer, xfrm ? undefined : { protocol: 17 }));
    await guestCall(sock, token, 'POST', '/v1/guest/sas', sa(spiIn, 'in', keyIn, saltIn, peer, vm));
    if (xfrm && !(await reachable(this.ns('vm1'), peer))) {
      xfrm = false;
      throw new Error('ping through the offloaded SAs and Linux XFRM got no answer');
    }
    return { xfrm, why };
  }

  /** Packets the switch encrypted with vm1's outbound SA so far. */
  async espPackets(): Promise<number> {
    const r = await this.daemon!.api.call<{ sas: { direction: string; counters: { packets: number } }[] }>('GET', '/v1/sas');
    return r.sas.filter((s) => s.direction === 'out').reduce((a, s) => a + s.counters.packets, 0);
  }

  async stop(): Promise<void> {
    if (this.daemon !== null) await this.daemon.stop();
    await run('ip', ['netns', 'del', this.ns('phys')]);
    this.daemon?.cleanupDir();
  }
}

/** A call to a vNIC's guest API (its own socket, bearer token). */
async function guestCall(socket: string, token: string, method: string, path: string, body?: unknown): Promise<unknown> {
  const { request } = await import('node:http');
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? '' : JSON.stringify(body);
    const req = request({
      socketPath: socket, method, path,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString(); });
      res.on('end', () => {
        if ((res.statusCode ?? 500) >= 400) reject(new Error(`guest API ${method} ${path}: ${res.statusCode} ${text.trim()}`));
        else resolve(text.length > 0 ? JSON.parse(text) : {});
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}
