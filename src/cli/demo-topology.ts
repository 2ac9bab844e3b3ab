// The demo's small data centre, and the real one built from it:
//
//   vm1     synthetic vNIC: TAP with virtio-net header, guest in namespace <p>-vm1   198.19.K.1  2001:db8:19:K::1
//   vm2     synthetic vNIC, guest in <p>-vm2                                          198.19.K.2  2001:db8:19:K::2
//   host    host vNIC: TAP with virtio-net header, the root namespace's own stack     198.19.K.3  2001:db8:19:K::3
//   legacy  legacy NIC: TAP without virtio-net header, guest in <p>-legacy            198.19.K.4  2001:db8:19:K::4
//   uplink  external: AF_PACKET on veth <p>up; its far end <p>pp is "the physical
//           network", namespace <p>-phys                                              198.19.K.5  2001:db8:19:K::5
//
// The switch itself is run the way an operator runs it: a YAML file and
// `vswitch run --config FILE` as a child process, driven through its
// management API. The switch creates the guests' namespaces and TAPs from
// its configuration (and removes them when it stops); the demo makes only
// the "physical network" (a namespace and a veth pair). Every name carries a
// per-run prefix, and everything with that prefix is removed at the end —
// also after a failure, on Ctrl-C, or when the process exits.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import type { PortKind } from '../switch/port.js';
import type { StatsSnapshot } from './format.js';
import { Client } from './client.js';
import { linkNames, must, netnsList, run, stopDaemon, type RunResult } from './subprocess.js';

export { run, type RunResult };

// --- the scenario, shared by the live and the in-memory runs ------------------------------

export type DemoNode = 'vm1' | 'vm2' | 'host' | 'legacy' | 'uplink';

export interface NodeInfo {
  name: DemoNode;
  kind: PortKind;
  num: number;
  /** Device-name suffix (after the prefix; interface names are ≤ 15 characters). */
  dev: string;
  what: string;
}

export const NODES: readonly NodeInfo[] = [
  { name: 'vm1', kind: 'synthetic', num: 1, dev: 'vm1', what: 'VM on a synthetic vNIC (TAP with virtio-net header)' },
  { name: 'vm2', kind: 'synthetic', num: 2, dev: 'vm2', what: 'VM on a synthetic vNIC' },
  { name: 'host', kind: 'host', num: 3, dev: 'host', what: 'host vNIC (the root namespace\'s own stack)' },
  { name: 'legacy', kind: 'legacy', num: 4, dev: 'leg', what: 'legacy VM (emulated NIC: TAP without virtio-net header)' },
  { name: 'uplink', kind: 'external', num: 5, dev: 'up', what: 'uplink (AF_PACKET on a veth) to the "physical network"' },
];

export const node = (n: DemoNode): NodeInfo => NODES.find((x) => x.name === n)!;

export type Path = 'pass-through' | 'hardware' | 'software segmentation' | 'software checksum' | 'none';

export interface Flow {
  from: DemoNode;
  to: DemoNode;
  /** The path the switch must choose for the flow's super-frames. */
  expect: Path;
  why: string;
}

/** One TCP stream per pair, each alone on the switch. */
export const FLOWS: readonly Flow[] = [
  { from: 'vm1', to: 'vm2', expect: 'pass-through', why: 'vm2\'s guest takes super-frames whole' },
  { from: 'vm1', to: 'host', expect: 'pass-through', why: 'so does the host\'s stack' },
  { from: 'vm1', to: 'legacy', expect: 'software segmentation', why: 'an emulated NIC takes only MTU frames with finished checksums' },
  { from: 'vm1', to: 'uplink', expect: 'hardware', why: 'the uplink does TSO itself' },
];

/** The flow that runs while the uplink's TSO goes off and on again. */
export const FLIP_FLOW = { from: 'vm2', to: 'uplink' } as const;

// --- what a flow did, from two counter snapshots -------------------------------------------

export interface PathDelta {
  seconds: number;
  /** Decisions for frames sent out of the destination port. */
  hardware: number;
  passThrough: number;
  software: number;
  /** Segments the switch made for the destination. */
  segments: number;
  /** Bytes the destination port sent (what got through the switch). */
  txBytes: number;
  /** Software work charged to the sender. */
  chargedCpuNs: number;
  chargedChecksums: number;
}

type Counters = Pick<StatsSnapshot, 'txBytes' | 'offload' | 'charged'>;

export function delta(destBefore: Counters, destAfter: Counters, srcBefore: Counters, srcAfter: Counters, seconds: number): PathDelta {
  return {
    seconds,
    hardware: destAfter.offload.hardware - destBefore.offload.hardware,
    passThrough: destAfter.offload.passThrough - destBefore.offload.passThrough,
    software: destAfter.offload.software - destBefore.offload.software,
    segments: destAfter.offload.segments - destBefore.offload.segments,
    txBytes: destAfter.txBytes - destBefore.txBytes,
    chargedCpuNs: srcAfter.charged.cpuNs - srcBefore.charged.cpuNs,
    chargedChecksums: srcAfter.charged.checksums - srcBefore.charged.checksums,
  };
}

/** The path most of the flow's offloaded frames took. */
export function dominantPath(d: PathDelta): Path {
  const m = Math.max(d.hardware, d.passThrough, d.software);
  if (m === 0) return 'none';
  if (m === d.passThrough) return 'pass-through';
  if (m === d.hardware) return 'hardware';
  return d.segments > 0 ? 'software segmentation' : 'software checksum';
}

/** The expected path took (nearly) all of it: ≥ 95 % of the offloaded frames, and at least one. */
export function tookPath(d: PathDelta, expect: Path): boolean {
  const total = d.hardware + d.passThrough + d.software;
  const n = expect === 'pass-through' ? d.passThrough : expect === 'hardware' ? d.hardware
    : expect === 'software segmentation' ? (d.segments > 0 ? d.software : 0) : expect === 'software checksum' ? d.software : 0;
  return n > 0 && n >= 0.95 * total;
}

function rate(n: number, s: number): string {
  const r = s > 0 ? n / s : 0;
  if (r >= 1e6) return `${(r / 1e6).toFixed(1)}M`;
  if (r >= 1e4) return `${Math.round(r / 1e3)}k`;
  if (r >= 1e3) return `${(r / 1e3).toFixed(1)}k`;
  return String(Math.round(r));
}

/** "software segmentation (switch did 85k segments/s, charged to vm1: 12% CPU)" */
export function pathText(d: PathDelta, from: string): string {
  const p = dominantPath(d);
  const cpu = d.seconds > 0 ? (d.chargedCpuNs / (d.seconds * 1e9)) * 100 : 0;
  const cpuText = cpu >= 10 ? `${Math.round(cpu)}%` : `${cpu.toFixed(1)}%`;
  switch (p) {
    case 'pass-through':
      return `pass-through (${rate(d.passThrough, d.seconds)} super-frames/s delivered whole, nothing segmented)`;
    case 'hardware':
      return `hardware (${rate(d.hardware, d.seconds)} super-frames/s handed to the NIC with their metadata)`;
    case 'software segmentation':
      return `software segmentation (switch did ${rate(d.segments, d.seconds)} segments/s, ` +
        `${d.chargedChecksums > 0 ? 'checksums computed' : 'checksums left to the NIC'}, charged to ${from}: ${cpuText} CPU)`;
    case 'software checksum':
      return `software checksum (${rate(d.software, d.seconds)} frames/s, charged to ${from}: ${cpuText} CPU)`;
    default:
      return 'no offload asked for';
  }
}

/** The `ethtool -k` features that say what a guest may hand the switch. */
export const ETHTOOL_KEYS = ['tx-checksumming', 'tcp-segmentation-offload', 'tx-udp-segmentation'] as const;

/** "tx-checksumming: on  tcp-segmentation-offload: on  tx-udp-segmentation: on" */
export function ethtoolLine(features: Record<string, string | boolean>): string {
  return ETHTOOL_KEYS.map((k) => {
    const v = features[k];
    const on = typeof v === 'boolean' ? v : v !== undefined && /^on\b/.test(v);
    return `${k}: ${v === undefined ? '?' : on ? 'on' : 'off'}`;
  }).join('  ');
}

export function flowLabel(from: string, to: string): string {
  return `${from} → ${to}`.padEnd(15);
}

// --- the real thing: namespaces, a veth, the daemon ------------------------------------

const distCli = dirname(fileURLToPath(import.meta.url));

/**
 * A per-run prefix: short (device names are ≤ 15 characters), different each
 * run, and always 8 characters, so one run's prefix is never the start of
 * another's (the sweep removes every device that starts with it).
 */
export function makePrefix(): string {
  const pid = (process.pid % 46656).toString(36).padStart(3, '0');
  const rnd = Math.floor(Math.random() * 46656).toString(36).padStart(3, '0');
  return `vd${pid}${rnd}`;
}

/** A /24 in 198.19.0.0/16 that nothing in the root namespace uses yet. */
function freeSubnet(): number {
  for (let i = 0; i < 32; i++) {
    const k = 1 + Math.floor(Math.random() * 254);
    const r = spawnSync('ip', ['-o', 'addr', 'show', 'to', `198.19.${k}.0/24`], { encoding: 'utf8' });
    if ((r.stdout ?? '').trim() === '') return k;
  }
  return 1 + Math.floor(Math.random() * 254);
}

const live = new Set<DemoTopology>();
process.on('exit', () => { for (const t of live) t.destroy(); });

export class DemoTopology {
  readonly prefix: string;
  readonly subnet: number;
  readonly dir: string;
  readonly configPath: string;
  readonly socket: string;
  readonly logPath: string;
  readonly api: Client;
  private daemon: ChildProcess | null = null;
  private readonly spawned = new Set<ChildProcess>();
  private physBuilt = false;

  constructor(opts: { prefix?: string } = {}) {
    this.prefix = opts.prefix ?? makePrefix();
    this.subnet = freeSubnet();
    this.dir = mkdtempSync(join(tmpdir(), `${this.prefix}-`));
    this.configPath = join(this.dir, 'switch.yaml');
    this.socket = join(this.dir, `${this.prefix}.sock`);
    this.logPath = join(this.dir, 'vswitch.log');
    this.api = new Client(this.socket);
    live.add(this);
  }

  /** Where a node's own stack lives: its namespace (null: the root namespace). */
  namespace(n: DemoNode): string | null {
    if (n === 'host') return null;
    return `${this.prefix}-${n === 'uplink' ? 'phys' : n}`;
  }

  /** The switch-side device of a node's port. */
  device(n: DemoNode): string {
    return `${this.prefix}${node(n).dev}`;
  }

  /** The interface a node's own stack uses (the uplink's: the far end of the veth). */
  guestDevice(n: DemoNode): string {
    return n === 'uplink' ? `${this.prefix}pp` : this.device(n);
  }

  ip4(n: DemoNode): string {
    return `198.19.${this.subnet}.${node(n).num}`;
  }

  ip6(n: DemoNode): string {
    return `2001:db8:19:${this.subnet.toString(16)}::${node(n).num}`;
  }

  /** The "physical network": a namespace behind a veth pair whose root end becomes the uplink. */
  async buildPhysicalNetwork(): Promise<void> {
    const ns = this.namespace('uplink')!;
    const up = this.device('uplink');
    const far = this.guestDevice('uplink');
    await must('ip', ['netns', 'add', ns]);
    this.physBuilt = true;
    await must('ip', ['link', 'add', up, 'type', 'veth', 'peer', 'name', far, 'netns', ns]);
    // The root end is a switch port, not an interface of the host's stack.
    await run('sysctl', ['-qw', `net.ipv6.conf.${up}.disable_ipv6=1`]);
    await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await must('ip', ['-n', ns, 'link', 'set', far, 'up']);
    await must('ip', ['-n', ns, 'addr', 'add', `${this.ip4('uplink')}/24`, 'dev', far]);
    await must('ip', ['-n', ns, 'addr', 'add', `${this.ip6('uplink')}/64`, 'dev', far, 'nodad']);
  }

  /** The switch's configuration, as an operator would write it. */
  configText(): string {
    const ports = NODES.map((n) => {
      const addrs = [`${this.ip4(n.name)}/24`, `${this.ip6(n.name)}/64`];
      const base = { name: n.name, kind: n.kind, device: this.device(n.name) };
      if (n.kind === 'external') return base;
      if (n.kind === 'host') return { ...base, addresses: addrs };
      return { ...base, guest: { namespace: this.namespace(n.name)!, create: true, addresses: addrs } };
    });
    return `# vswitch demo (run ${this.prefix}): written by the demo, removed when it ends.\n` +
      toYaml({ switch: { name: this.prefix, stateDir: this.dir, log: { level: 'info', format: 'text' } }, ports });
  }

  writeConfig(): string {
    writeFileSync(this.configPath, this.configText());
    return this.configPath;
  }

  /** `vswitch run --config FILE` as a child process; resolves once its API answers. */
  async startSwitch(timeoutMs = 20_000): Promise<number> {
    const child = spawn(process.execPath, [join(distCli, 'main.js'), 'run', '--config', this.configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.daemon = child;
    let log = '';
    const keep = (d: Buffer) => {
      log += d.toString();
      try { writeFileSync(this.logPath, log); } catch { /* the directory may be gone already */ }
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`vswitch exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${log.trim().split('\n').slice(-8).join('\n')}`);
      }
      // Ready when it says so and answers (a stale socket file cannot answer for it).
      if (/vswitch running/.test(log)) {
        try {
          await this.api.call('GET', '/v1/switch');
          return child.pid ?? 0;
        } catch { /* not yet */ }
      }
      if (Date.now() > deadline) throw new Error(`vswitch did not answer on ${this.socket} within ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  get switchRunning(): boolean {
    return this.daemon !== null && this.daemon.exitCode === null && this.daemon.signalCode === null;
  }

  /** The daemon's log so far (its last lines, for a failure report). */
  logTail(lines = 12): string {
    try {
      return readFileSync(this.logPath, 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** Run a command where node `n`'s stack lives. */
  exec(n: DemoNode, cmd: string[], timeoutMs = 30_000): Promise<RunResult> {
    const ns = this.namespace(n);
    return ns === null ? run(cmd[0]!, cmd.slice(1), timeoutMs) : run('ip', ['netns', 'exec', ns, ...cmd], timeoutMs);
  }

  /** Start a long-running command where node `n`'s stack lives (stopped by teardown if still running). */
  spawnIn(n: DemoNode, cmd: string[]): ChildProcess {
    const ns = this.namespace(n);
    const c = ns === null ? spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.spawned.add(c);
    c.once('exit', () => this.spawned.delete(c));
    return c;
  }

  /** Counters of every port, by name (GET /v1/stats). */
  async stats(): Promise<Record<string, StatsSnapshot>> {
    const r = await this.api.call<{ ports: StatsSnapshot[] }>('GET', '/v1/stats');
    return Object.fromEntries(r.ports.map((p) => [p.name, p]));
  }

  /**
   * Stop the switch the way an operator does (`vswitch stop`: POST
   * /v1/shutdown) and wait for it to exit; signals if it does not. Resolves
   * with its exit code (null if it had to be killed or was not running).
   */
  async stopSwitch(timeoutMs = 8000): Promise<number | null> {
    const child = this.daemon;
    if (child === null) return null;
    if (!this.switchRunning) return child.exitCode;
    return stopDaemon(child, () => this.api.call('POST', '/v1/shutdown'), timeoutMs);
  }

  /** Everything in order: processes, the switch (it removes what it made), the physical network, and a sweep. */
  async teardown(): Promise<{ switchExit: number | null }> {
    for (const c of this.spawned) c.kill('SIGKILL');
    const switchExit = await this.stopSwitch();
    if (this.physBuilt) await run('ip', ['netns', 'del', this.namespace('uplink')!]);
    this.destroy();
    return { switchExit };
  }

  /** Synchronous, best-effort removal of everything with the prefix (exit handlers, signals). */
  destroy(): void {
    for (const c of this.spawned) c.kill('SIGKILL');
    if (this.switchRunning) this.daemon!.kill('SIGKILL');
    for (const ns of netnsList()) if (ns.startsWith(`${this.prefix}-`)) spawnSync('ip', ['netns', 'del', ns]);
    for (const l of linkNames()) if (l.startsWith(this.prefix)) spawnSync('ip', ['link', 'del', l]);
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }

  /** What of this run is still on the machine (nothing, after teardown). */
  leftovers(): string[] {
    return [
      ...netnsList().filter((n) => n.startsWith(`${this.prefix}-`)).map((n) => `namespace ${n}`),
      ...linkNames().filter((l) => l.startsWith(this.prefix)).map((l) => `device ${l}`),
    ];
  }
}
