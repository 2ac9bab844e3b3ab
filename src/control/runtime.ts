// The running switch: packet memory and pool, the switch core, the real
// endpoints behind each port, the guests' network namespaces where the
// switch made them, and the timers (MAC aging, budgets). Everything it
// creates it removes again on stop(), and stop() is safe to call on a
// half-built runtime. A port that fails to come up is reported and left out;
// it never takes the others down.

import { spawnSync } from 'node:child_process';
import { BufferPool, type SizeClassSpec } from '../packet/pool.js';
import { Switch } from '../switch/switch.js';
import type { Port, PortConfig, PortKind, PortBackend } from '../switch/port.js';
import { macToString } from '../wire/bytes.js';
import { TapBackend } from '../io/tap.js';
import { AfPacketBackend } from '../io/af-packet.js';
import { QemuSocketBackend } from '../io/qemu.js';
import { QemuDgramBackend, type UdpEndpoint } from '../io/qemu-dgram.js';
import { FdBackend } from '../io/fd-backend.js';
import { IoWorker } from '../io/workers.js';
import { DEFAULT_WORKER_PORTS, DEFAULT_WORKER_READS } from './config.js';
import { native, nativeAvailable } from '../io/native/index.js';
import type { IpsecOffload } from '../offload/capabilities.js';

export interface GuestSpec {
  /** Network namespace the guest side of the TAP goes into ("the VM"). */
  namespace: string;
  /** Create the namespace (and delete it on stop). */
  create?: boolean;
  /** Addresses for the guest interface, CIDR (e.g. 198.18.0.1/24, 2001:db8::1/64). */
  addresses?: string[];
  /** Guest interface MAC (default: the kernel's random one). */
  mac?: string;
}

/**
 * A TAP's txqueuelen unless configured: the frames a guest may have queued
 * towards the switch per queue. The kernel's default (1000: 5 ms of 64-byte
 * frames at 200 kpps) overflows whenever the switch's thread waits a
 * scheduler slice on a busy host; 4096 measured ~10 % more small datagrams
 * delivered under overload on the 2-core bench machine (docs/benchmarks.md).
 */
export const TAP_TX_QUEUE_LEN = 4096;

export interface PortSpec extends Omit<PortConfig, 'kind'> {
  kind: PortKind;
  /**
   * synthetic/host/legacy: the TAP device name (created); external: the NIC
   * or veth to bind. Default: the port name.
   */
  device?: string;
  /** synthetic/legacy: where the guest end lives. host: addresses on the root namespace side. */
  guest?: GuestSpec;
  /** host ports: addresses for the host's TAP in the root namespace. */
  addresses?: string[];
  /** external ports: vswitch's ESP engine is this uplink's IPsec offload (see AfPacketOptions.espEngine). */
  ipsecEngine?: IpsecOffload;
  /** synthetic/host ports: TAP queues (IFF_MULTI_QUEUE), default 1. */
  queues?: number;
  /** TAP ports: the TAP's txqueuelen — frames the guest may queue towards the switch per queue (default TAP_TX_QUEUE_LEN). */
  txQueueLen?: number;
  /** legacy ports: a QEMU VM's `-netdev stream` socket instead of a TAP. */
  qemu?: { socket: string; mode?: 'listen' | 'connect' } | { dgram: { local: UdpEndpoint; remote: UdpEndpoint } };
}

export interface RuntimeOptions {
  pool?: { classes?: SizeClassSpec[] };
  macAgingMs?: number;
  /** ms between housekeeping ticks (MAC aging, budgets); default 100. */
  tickMs?: number;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
  /** I/O worker threads (0: everything on the main thread). Port queues are spread over them. */
  ioWorkers?: number;
  /** Whether the workers read their queues too or only write them (the main thread reads); default as in the config. */
  workerReads?: boolean;
  /** The kinds of port whose queues go to workers; default as in the config. */
  workerPorts?: PortKind[];
}

/** Real-sized defaults: 32 K MTU buffers (64 MiB), 1 K super-frame buffers (66 MiB). */
export const RUNTIME_POOL: SizeClassSpec[] = [
  { bufferSize: 2048, count: 32768 },
  { bufferSize: 65536 + 1024, count: 1024 },
];

export class CommandError extends Error {}

/** Run `ip` (or another tool) and throw with its stderr when it fails. */
export function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw new CommandError(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new CommandError(`${cmd} ${args.join(' ')}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/** What the runtime needs of a backend beyond PortBackend. */
interface AttachableBackend extends PortBackend {
  attach(sw: Switch, port: Port): void;
  close(): void;
  onFatal: ((why: never) => void) | null;
}

interface Attached {
  port: Port;
  backend: PortBackend;
  spec: PortSpec;
  /** Namespace this runtime created for the port's guest. */
  createdNamespace?: string;
}

export class Runtime {
  readonly pool: BufferPool;
  readonly sw: Switch;
  private readonly attached = new Map<string, Attached>();
  private tickTimer: ReturnType<typeof setInterval> | null = null;
  private readonly log: NonNullable<RuntimeOptions['log']>;
  private stopped = false;
  private readonly ioWorkers: IoWorker[] = [];
  private readonly workerReads: boolean;
  private readonly workerPorts: ReadonlySet<PortKind>;

  /** The I/O workers as configured, and the port queues each holds. */
  workersView(): { count: number; reads: boolean; portKinds: PortKind[]; threads: { threadId: number; tid: number; queues: number }[] } {
    return {
      count: this.ioWorkers.length,
      reads: this.workerReads,
      portKinds: [...this.workerPorts],
      threads: this.ioWorkers.map((w) => ({ threadId: w.thread.threadId, tid: w.tid, queues: w.channels })),
    };
  }

  constructor(opts: RuntimeOptions = {}) {
    // Scratch for the backends: virtio header areas, and each transmit channel's rings (~200 KiB per queue).
    this.pool = new BufferPool({ classes: opts.pool?.classes ?? RUNTIME_POOL, scratchBytes: 64 << 20 });
    const shim = nativeAvailable() ? native() : null;
    this.sw = new Switch({
      pool: this.pool,
      ...(opts.macAgingMs !== undefined ? { macAgingMs: opts.macAgingMs } : {}),
      ...(shim !== null ? { fillClockNs: (o: Float64Array) => shim.clockNs(o) } : {}),
    });
    this.log = opts.log ?? (() => {});
    this.workerReads = opts.workerReads ?? DEFAULT_WORKER_READS;
    this.workerPorts = new Set(opts.workerPorts ?? DEFAULT_WORKER_PORTS);
    for (let i = 0; i < (opts.ioWorkers ?? 0); i++) {
      const w = new IoWorker(this.pool);
      const threadId = w.thread.threadId;
      w.onDeath = (why) => this.log('error', 'I/O worker thread died; the ports it served are set down', { threadId, error: why });
      this.ioWorkers.push(w);
    }
    this.tickTimer = setInterval(() => this.sw.tick(), opts.tickMs ?? 100);
    this.tickTimer.unref?.();
    this.sw.events.on('mac-move', (e) => this.log('info', 'MAC moved', { mac: macToString(e.mac), vlan: e.vlan, from: e.from, to: e.to }));
    this.sw.events.on('capabilities', (e) => this.log('info', 'uplink capabilities changed', { port: e.port }));
  }

  ports(): Attached[] {
    return [...this.attached.values()];
  }

  backendOf(name: string): PortBackend | undefined {
    return this.attached.get(name)?.backend;
  }

  /** Bring a port up: its endpoint, its guest side, and its place in the switch. */
  addPort(spec: PortSpec): Port {
    if (this.stopped) throw new Error('runtime stopped');
    if (this.attached.has(spec.name)) throw new Error(`port ${spec.name} exists already`);
    const device = spec.device ?? spec.name;
    if (device.length > 15) throw new Error(`port ${spec.name}: device name ${device} is longer than 15 characters`);
    let backend: AttachableBackend | null = null;
    let created: string | undefined;
    try {
      if (spec.kind === 'legacy' && spec.qemu !== undefined) {
        backend = 'dgram' in spec.qemu
          ? QemuDgramBackend.open({ ...spec.qemu.dgram, pool: this.pool })
          : new QemuSocketBackend({ address: { path: spec.qemu.socket }, mode: spec.qemu.mode ?? 'listen' });
      } else if (spec.kind === 'external') {
        sh('ip', ['link', 'set', 'dev', device, 'up']);
        backend = AfPacketBackend.open({ ifname: device, pool: this.pool, ...(spec.ipsecEngine ? { espEngine: spec.ipsecEngine } : {}) });
      } else {
        const tap = TapBackend.open({ ifname: device, vnetHdr: spec.kind !== 'legacy', pool: this.pool, ...(spec.queues !== undefined ? { queues: spec.queues } : {}) });
        backend = tap;
        sh('ip', ['link', 'set', 'dev', tap.ifname, 'txqueuelen', String(spec.txQueueLen ?? TAP_TX_QUEUE_LEN)]);
        const mtu = String(spec.mtu ?? 1500);
        if (spec.kind === 'host' || spec.guest === undefined) {
          sh('ip', ['link', 'set', 'dev', tap.ifname, 'mtu', mtu, 'up']);
          for (const a of spec.addresses ?? []) sh('ip', ['addr', 'add', a, 'dev', tap.ifname, ...(a.includes(':') ? ['nodad'] : [])]);
        } else {
          const g = spec.guest;
          if (g.create) {
            sh('ip', ['netns', 'add', g.namespace]);
            created = g.namespace;
          }
          sh('ip', ['link', 'set', 'dev', tap.ifname, 'netns', g.namespace]);
          const inNs = (...args: string[]) => sh('ip', ['-n', g.namespace, ...args]);
          if (g.mac !== undefined) inNs('link', 'set', 'dev', tap.ifname, 'address', g.mac);
          inNs('link', 'set', 'dev', tap.ifname, 'mtu', mtu, 'up');
          inNs('link', 'set', 'dev', 'lo', 'up');
          for (const a of g.addresses ?? []) inNs('addr', 'add', a, 'dev', tap.ifname, ...(a.includes(':') ? ['nodad'] : []));
        }
      }
      if (backend instanceof FdBackend && this.ioWorkers.length > 0 && this.workerPorts.has(spec.kind)) {
        // Each queue goes to the least busy worker: a multi-queue port spreads over them.
        const queues = backend instanceof TapBackend ? backend.queueBackends() : [backend];
        for (const q of queues) q.useIoWorker(this.ioWorkers.reduce((a, b) => (b.channels < a.channels ? b : a)), this.workerReads);
      }
      const { device: _d, guest: _g, addresses: _a, ipsecEngine: _i, qemu: _q, queues: _n, txQueueLen: _t, ...cfg } = spec;
      const port = this.sw.addPort(cfg, backend);
      backend.onFatal = (why: unknown) => {
        this.log('error', 'port endpoint failed; port set down', { port: spec.name, error: String(why) });
        if (this.sw.findPort(spec.name) !== undefined) this.sw.setPortUp(spec.name, false);
      };
      backend.attach(this.sw, port);
      const entry: Attached = { port, backend, spec };
      if (created !== undefined) entry.createdNamespace = created;
      this.attached.set(spec.name, entry);
      this.log('info', 'port added', { port: spec.name, kind: spec.kind, device });
      return port;
    } catch (e) {
      backend?.close();
      if (created !== undefined) spawnSync('ip', ['netns', 'del', created]);
      throw e;
    }
  }

  /** Namespaces this runtime made (and will remove): what a crash would leave behind. */
  createdNamespaces(): string[] {
    return this.ports().flatMap((a) => (a.createdNamespace !== undefined ? [a.createdNamespace] : []));
  }

  /** Change the MTU of a port's device (the guest side, in its namespace). */
  setDeviceMtu(name: string, mtu: number): void {
    this.setLink(name, 'mtu', mtu);
  }

  /** Change a TAP port's txqueuelen (its ring of frames towards the switch). */
  setTxQueueLen(name: string, n: number): void {
    this.setLink(name, 'txqueuelen', n);
  }

  private setLink(name: string, key: string, value: number): void {
    const a = this.attached.get(name);
    if (a === undefined) throw new Error(`no port ${name}`);
    const b = a.backend;
    // A QEMU port has no device of ours: its MTU is the switch's limit (Port.mtu) and the VM's own setting.
    if (!(b instanceof TapBackend || b instanceof AfPacketBackend)) return;
    const ns = a.spec.kind !== 'host' ? a.spec.guest?.namespace : undefined;
    sh('ip', [...(ns !== undefined ? ['-n', ns] : []), 'link', 'set', 'dev', b.ifname, key, String(value)]);
  }

  /** Take a port out without disturbing the others. */
  removePort(name: string): void {
    const a = this.attached.get(name);
    if (a === undefined) throw new Error(`no port ${name}`);
    this.attached.delete(name);
    this.sw.removePort(name); // closes the backend
    if (a.createdNamespace !== undefined) spawnSync('ip', ['netns', 'del', a.createdNamespace]);
    this.log('info', 'port removed', { port: name });
  }

  /** Stop: close every endpoint, remove what this runtime created. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    for (const name of [...this.attached.keys()]) {
      try {
        this.removePort(name);
      } catch (e) {
        this.log('warn', 'port removal failed', { port: name, error: String(e) });
      }
    }
    // The workers go too; channels still waiting for them are abandoned (their fds closed).
    for (const w of this.ioWorkers) w.terminate();
  }
}
