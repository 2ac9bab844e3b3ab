// An end-to-end lab: real network namespaces as VMs, a "physical network"
// namespace behind a veth uplink, and vswitch running as its own process
// (`vswitch run --config`, so the tests can block on commands without
// stalling the switch), driven through its management API.
//
//   vm1  (synthetic, TAP + vnet header, namespace)   198.18.K.1   2001:db8:K::1
//   vm2  (synthetic)                                 198.18.K.2   2001:db8:K::2
//   host (host vNIC, TAP in the root namespace)      198.18.K.3   2001:db8:K::3
//   leg  (legacy, TAP without vnet header)           198.18.K.4   2001:db8:K::4
//   phys (external: AF_PACKET on a veth; far end in a namespace) 198.18.K.5 2001:db8:K::5
//
// Every name carries a per-run prefix; stop() removes everything, and so do
// the process's exit and signal handlers if a test dies half-way.

import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { linkNames, netnsList, runPrefix } from './env.js';
import { Client } from '../../src/cli/client.js';

const distRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export type LabNode = 'vm1' | 'vm2' | 'host' | 'leg' | 'phys';
const HOST_NUM: Record<LabNode, number> = { vm1: 1, vm2: 2, host: 3, leg: 4, phys: 5 };

export interface LabOptions {
  /** Which nodes to build (default all). */
  nodes?: LabNode[];
  /** Extra per-port settings merged into the daemon spec (by node). */
  portOverrides?: Partial<Record<LabNode, Record<string, unknown>>>;
  /** ethtool -K settings applied to the uplink veth (root end) before the switch starts. */
  uplinkFeatures?: string[];
  /** Extra arguments for the switch's node process (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /** I/O worker threads of the switch (switch.workers), and whether they read too (switch.workerReads). */
  workers?: number;
  workerReads?: boolean;
  /** switch.workerPorts: the kinds of port whose queues go to workers. */
  workerPorts?: string[];
  /** switch.api settings besides the socket (e.g. listen, tokenFile). */
  api?: Record<string, unknown>;
  /** switch.dataPlane: the pipeline on a thread of its own (default) or on the main thread. */
  dataPlane?: 'thread' | 'main';
}

const live = new Set<Lab>();
function cleanupAll(): void {
  for (const l of live) l.destroy();
}
process.on('exit', cleanupAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    cleanupAll();
    process.exit(130);
  });
}

function run(cmd: string, args: string[], opts: { input?: string; timeout?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: opts.timeout ?? 60_000, input: opts.input, maxBuffer: 64 << 20 });
}

function must(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
  return r.stdout;
}

export class Lab {
  readonly prefix: string;
  readonly subnet: number;
  readonly dir: string;
  readonly nodes: LabNode[];
  private child: ChildProcess | null = null;
  /** The running switch's management API. */
  api!: Client;
  stderr = '';

  private constructor(opts: LabOptions) {
    this.prefix = runPrefix('vs');
    this.subnet = 10 + Math.floor(Math.random() * 240);
    this.dir = mkdtempSync(join(tmpdir(), `${this.prefix}-`));
    this.nodes = opts.nodes ?? ['vm1', 'vm2', 'host', 'leg', 'phys'];
    live.add(this);
  }

  ns(n: LabNode): string {
    return `${this.prefix}-${n}`;
  }

  dev(n: LabNode): string {
    return `${this.prefix}${n}`;
  }

  /** The uplink's far end, inside the phys namespace. */
  get physDev(): string {
    return `${this.prefix}pp`;
  }

  ip4(n: LabNode): string {
    return `198.18.${this.subnet}.${HOST_NUM[n]}`;
  }

  ip6(n: LabNode): string {
    return `2001:db8:${this.subnet.toString(16)}::${HOST_NUM[n]}`;
  }

  static async start(opts: LabOptions = {}): Promise<Lab> {
    const lab = new Lab(opts);
    try {
      await lab.build(opts);
      return lab;
    } catch (e) {
      lab.destroy();
      throw e;
    }
  }

  private async build(opts: LabOptions): Promise<void> {
    const ports: Record<string, unknown>[] = [];
    const cidr4 = (n: LabNode) => `${this.ip4(n)}/24`;
    const cidr6 = (n: LabNode) => `${this.ip6(n)}/64`;
    const over = (n: LabNode) => opts.portOverrides?.[n] ?? {};
    for (const n of this.nodes) {
      if (n === 'phys') {
        must('ip', ['netns', 'add', this.ns('phys')]);
        must('ip', ['link', 'add', this.dev('phys'), 'type', 'veth', 'peer', 'name', this.physDev, 'netns', this.ns('phys')]);
        // Nothing of the root namespace's own stack on the uplink: it is a switch port.
        run('sysctl', ['-qw', `net.ipv6.conf.${this.dev('phys')}.disable_ipv6=1`]);
        const inNs = (...a: string[]) => must('ip', ['-n', this.ns('phys'), ...a]);
        inNs('link', 'set', 'lo', 'up');
        inNs('link', 'set', this.physDev, 'up');
        inNs('addr', 'add', cidr4('phys'), 'dev', this.physDev);
        inNs('addr', 'add', cidr6('phys'), 'dev', this.physDev, 'nodad');
        if (opts.uplinkFeatures !== undefined) must('ethtool', ['-K', this.dev('phys'), ...opts.uplinkFeatures]);
        ports.push({ name: 'phys', kind: 'external', device: this.dev('phys'), ...over(n) });
      } else if (n === 'host') {
        ports.push({ name: 'host', kind: 'host', device: this.dev('host'), addresses: [cidr4('host'), cidr6('host')], ...over(n) });
      } else {
        ports.push({
          name: n, kind: n === 'leg' ? 'legacy' : 'synthetic', device: this.dev(n),
          guest: { namespace: this.ns(n), create: true, addresses: [cidr4(n), cidr6(n)] }, ...over(n),
        });
      }
    }
    const configPath = join(this.dir, 'switch.yaml');
    // The switch settings a test chose; the others keep their defaults.
    const chosen = { workers: opts.workers, workerReads: opts.workerReads, workerPorts: opts.workerPorts, api: opts.api, dataPlane: opts.dataPlane };
    const given = Object.fromEntries(Object.entries(chosen).filter(([, v]) => v !== undefined));
    writeFileSync(configPath, toYaml({
      switch: { name: this.prefix, stateDir: this.dir, log: { level: 'info', format: 'json' }, ...given },
      ports,
    }));
    this.api = new Client(join(this.dir, `${this.prefix}.sock`));
    const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), join(distRoot, 'src/cli/main.js'), 'run', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    child.stdout!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    const exited = new Promise<never>((_, rej) => child.once('exit', (code) => rej(new Error(`vswitch exited (${code}) before it was ready:\n${this.stderr}`))));
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await Promise.race([this.api.call('GET', '/v1/switch'), exited]);
        break;
      } catch (e) {
        if (child.exitCode !== null || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Counters of every port, by name (the API's /v1/stats). */
  async stats(): Promise<Record<string, Record<string, any>>> {
    const r = await this.api.call<{ ports: Record<string, any>[] }>('GET', '/v1/stats');
    return Object.fromEntries(r.ports.map((p) => [p['name'] as string, p]));
  }

  /** Capability map by port name (the API's /v1/caps). */
  async caps(): Promise<Record<string, Record<string, any>>> {
    const r = await this.api.call<{ ports: Record<string, any>[] }>('GET', '/v1/caps');
    return Object.fromEntries(r.ports.map((p) => [p['name'] as string, p]));
  }

  /** Run a command in node `n`'s namespace (host: the root namespace). */
  exec(n: LabNode, cmd: string[], opts: { input?: string; timeout?: number } = {}): SpawnSyncReturns<string> {
    if (n === 'host') return run(cmd[0]!, cmd.slice(1), opts);
    return run('ip', ['netns', 'exec', this.ns(n), ...cmd], opts);
  }

  /** Start a long-running command in a namespace; the caller must kill it (stop() does too). */
  spawnIn(n: LabNode, cmd: string[]): ChildProcess {
    const c = n === 'host' ? spawn(cmd[0]!, cmd.slice(1), { stdio: 'pipe' }) : spawn('ip', ['netns', 'exec', this.ns(n), ...cmd], { stdio: 'pipe' });
    this.spawned.push(c);
    return c;
  }

  private spawned: ChildProcess[] = [];

  ping(from: LabNode, to: LabNode, v6 = false, count = 3): SpawnSyncReturns<string> {
    return this.exec(from, ['ping', v6 ? '-6' : '-4', '-c', String(count), '-i', '0.2', '-W', '2', v6 ? this.ip6(to) : this.ip4(to)]);
  }

  /** Stop the switch and remove every namespace and device of this lab. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child !== null && child.exitCode === null) {
      const exited = new Promise<void>((res) => child.once('exit', () => res()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    this.destroy();
  }

  /** Synchronous best-effort removal of everything (also from exit handlers). */
  destroy(): void {
    for (const c of this.spawned) if (c.exitCode === null) c.kill('SIGKILL');
    if (this.child !== null && this.child.exitCode === null) this.child.kill('SIGKILL');
    for (const ns of netnsList()) if (ns.startsWith(this.prefix)) run('ip', ['netns', 'del', ns]);
    for (const name of linkNames()) if (name.startsWith(this.prefix)) run('ip', ['link', 'del', name]);
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }

  /** What is left of this lab on the machine (should be nothing after stop). */
  leftovers(): string[] {
    return [...netnsList(), ...linkNames()].filter((n) => n.startsWith(this.prefix));
  }
}
