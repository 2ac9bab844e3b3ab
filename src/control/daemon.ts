// `vswitch run --config switch.yaml`: the daemon. Loads and checks the
// configuration (nothing starts from a bad file), cleans up after a previous
// run that crashed, brings every port up (all or nothing), serves the
// management API, and on SIGINT/SIGTERM (or POST /v1/shutdown) removes every
// device and namespace it created.

import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Server } from 'node:http';
import { loadConfig, type ConfigYaml, type LoadedConfig, type PortYaml } from './config.js';
import { Runtime } from './runtime.js';
import { createLogger, type Logger } from './log.js';
import { listen, type ApiContext } from './api.js';
import { GuestApi } from './guest-api.js';
import { nodeAead } from '../io/aead-node.js';
import { nativeAeadIfAvailable } from '../io/aead-native.js';
import { parse as parseYaml } from 'yaml';

interface StateFile {
  pid: number;
  name: string;
  startedAt: string;
  socket: string;
  namespaces: string[];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed process its parent has not reaped yet is a zombie: dead for our purposes.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** A previous run of this switch that died without cleaning up: remove what it made. */
export function recoverPrevious(stateFile: string, log: Logger): void {
  if (!existsSync(stateFile)) return;
  let prev: StateFile;
  try {
    prev = JSON.parse(readFileSync(stateFile, 'utf8')) as StateFile;
  } catch {
    log.warn('unreadable state file from a previous run; ignoring it', { stateFile });
    rmSync(stateFile, { force: true });
    return;
  }
  if (prev.pid !== process.pid && alive(prev.pid)) {
    throw new Error(`vswitch "${prev.name}" is already running (pid ${prev.pid}, socket ${prev.socket})`);
  }
  for (const ns of prev.namespaces) {
    const r = spawnSync('ip', ['netns', 'del', ns], { encoding: 'utf8' });
    log.info('removed namespace left by a previous run', { namespace: ns, ok: r.status === 0 });
  }
  rmSync(stateFile, { force: true });
  if (existsSync(prev.socket)) rmSync(prev.socket, { force: true });
  log.warn('recovered from a previous run that did not shut down cleanly', { pid: prev.pid, namespaces: prev.namespaces.length });
}

/**
 * The loopback API's bearer token: the token file's, kept across restarts so
 * that a monitoring client set up once keeps working, or a new random one
 * written there with mode 0600 (only root can read it).
 */
export function loadOrMakeToken(file: string): string {
  if (existsSync(file)) {
    const mode = statSync(file).mode & 0o777;
    if ((mode & 0o077) !== 0) throw new Error(`${file}: the API token must be readable by its owner only (mode ${mode.toString(8)}; chmod 600 it)`);
    const t = readFileSync(file, 'utf8').trim();
    if (!/^[A-Za-z0-9._~+/-]{32,}$/.test(t)) throw new Error(`${file}: not an API token (one line of 32 or more characters from A-Z a-z 0-9 . _ ~ + / -)`);
    return t;
  }
  mkdirSync(dirname(file), { recursive: true });
  const t = randomBytes(32).toString('hex');
  writeFileSync(file, `${t}\n`, { mode: 0o600, flag: 'wx' });
  return t;
}

export interface DaemonHandle {
  ctx: ApiContext;
  stop(): Promise<void>;
  stopped: Promise<void>;
}

export async function startDaemon(configPath: string, logOverride?: Logger): Promise<DaemonHandle> {
  const cfg: LoadedConfig = loadConfig(configPath);
  const s = cfg.settings;
  const log = logOverride ?? createLogger({ level: s.logLevel, format: s.logFormat, base: { switch: s.name } });
  mkdirSync(s.stateDir, { recursive: true });
  mkdirSync(dirname(s.socket), { recursive: true });
  const stateFile = join(s.stateDir, `${s.name}.state.json`);
  recoverPrevious(stateFile, log);

  const yaml = parseYaml(readFileSync(configPath, 'utf8')) as ConfigYaml;
  const rt = new Runtime({ macAgingMs: s.macAgingMs, ioWorkers: s.workers, workerReads: s.workerReads, workerPorts: s.workerPorts, log: (level, msg, fields) => log[level](msg, fields) });
  // IPsec task offload: vswitch's ESP engine serves uplinks configured with `ipsec:`; its AES-GCM
  // runs in the native shim with a context per SA (node:crypto, ~4× slower, if the shim is missing).
  rt.sw.enableIpsec(nativeAeadIfAvailable() ?? nodeAead);
  const guest = new GuestApi(rt.sw, join(s.stateDir, `${s.name}.guest`), log);
  const saveState = () => {
    const st: StateFile = { pid: process.pid, name: s.name, startedAt: new Date().toISOString(), socket: s.socket, namespaces: rt.createdNamespaces() };
    writeFileSync(stateFile, JSON.stringify(st, null, 1));
  };
  saveState();
  const portYaml = new Map<string, PortYaml>();
  try {
    cfg.ports.forEach((spec, i) => {
      try {
        rt.addPort(spec);
      } catch (e) {
        throw new Error(`port ${spec.name} (${configPath}, ports[${i}]): ${(e as Error).message}`);
      }
      portYaml.set(spec.name, yaml.ports[i]!);
      saveState();
    });
  } catch (e) {
    rt.stop();
    rmSync(stateFile, { force: true });
    throw e;
  }

  let servers: Server[] = [];
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => { resolveStopped = r; });
  let stopping = false;
  const stop = async () => {
    if (stopping) return stopped;
    stopping = true;
    log.info('shutting down');
    for (const srv of servers) {
      srv.closeAllConnections?.();
      srv.close();
    }
    guest.closeAll();
    rt.stop();
    rmSync(stateFile, { force: true });
    rmSync(s.socket, { force: true });
    log.info('stopped: every device and namespace removed');
    resolveStopped();
    return stopped;
  };
  const ctx: ApiContext = { rt, log, name: s.name, startedAt: Date.now(), portYaml, shutdown: () => void stop(), saveState, guest };
  try {
    for (const p of rt.sw.listPorts()) await guest.open(p);
    const loopback = s.listen !== null ? { address: s.listen, token: loadOrMakeToken(s.tokenFile), tokenFile: s.tokenFile } : null;
    servers = await listen(ctx, s.socket, loopback);
  } catch (e) {
    await stop();
    throw new Error(`management API: cannot listen on ${s.socket}${s.listen ? ` / ${s.listen}` : ''}: ${(e as Error).message}`);
  }
  log.info('vswitch running', { ports: cfg.ports.length, socket: s.socket, ...(s.listen ? { listen: s.listen, tokenFile: s.tokenFile } : {}), pid: process.pid });
  return { ctx, stop, stopped };
}
