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
import { parseConfig, readConfigText, type LoadedConfig } from './config.js';
import { createLogger, type Logger } from './log.js';
import { listen } from './api.js';
import type { StateFile } from './dataplane.js';
import { startDataPlane, type DataPlaneHost, type Watchdog } from './dataplane-host.js';
import { STAT_STATE, statFields } from './procfs.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A killed process its parent has not reaped yet is a zombie: dead for our purposes.
  const f = statFields(`/proc/${pid}/stat`);
  return f !== null && f[STAT_STATE] !== 'Z';
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
  /** Where the data plane runs: a thread of its own (its Node threadId) or the main thread (0). */
  dataPlaneThread: number;
  stop(): Promise<void>;
  /** Resolves once the daemon stopped: null after a clean stop, the reason when the data plane died. */
  stopped: Promise<string | null>;
}

export interface DaemonOptions {
  /** Log here instead of stderr as configured. */
  log?: Logger;
  /** The data-plane thread's script (tests put a failing one in). */
  dataPlaneEntry?: URL;
  /** How the main thread watches the data-plane thread (tests shorten it). */
  watchdog?: Watchdog;
}

export async function startDaemon(configPath: string, opts: DaemonOptions = {}): Promise<DaemonHandle> {
  // Checked here, on the main thread, before anything starts: a bad file says file, line and what.
  const configText = readConfigText(configPath);
  const cfg: LoadedConfig = parseConfig(configText, configPath);
  const s = cfg.settings;
  const log = opts.log ?? createLogger({ level: s.logLevel, format: s.logFormat, base: { switch: s.name } });
  mkdirSync(s.stateDir, { recursive: true });
  mkdirSync(dirname(s.socket), { recursive: true });
  const stateFile = join(s.stateDir, `${s.name}.state.json`);
  recoverPrevious(stateFile, log);
  const loopback = s.listen !== null ? { address: s.listen, token: loadOrMakeToken(s.tokenFile), tokenFile: s.tokenFile } : null;

  let servers: Server[] = [];
  let resolveStopped!: (why: string | null) => void;
  const stopped = new Promise<string | null>((r) => { resolveStopped = r; });
  let stopping = false;
  let plane: DataPlaneHost | null = null;
  const stop = async (why: string | null = null) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down');
    for (const srv of servers) {
      srv.closeAllConnections?.();
      srv.close();
    }
    if (plane !== null) await plane.stop();
    if (why !== null) {
      // The data plane could not clean up after itself: do what a restart would (namespaces from the state file).
      recoverPrevious(stateFile, log);
    }
    rmSync(stateFile, { force: true });
    rmSync(s.socket, { force: true });
    log.info(why === null ? 'stopped: every device and namespace removed' : 'stopped after the data plane died', why === null ? {} : { error: why });
    resolveStopped(why);
  };
  try {
    plane = await startDataPlane({ configPath, configText, stateFile, startedAt: Date.now(), mode: s.dataPlane }, log, () => void stop(), opts.dataPlaneEntry, opts.watchdog);
  } catch (e) {
    rmSync(stateFile, { force: true });
    throw e;
  }
  plane.onDeath = (why) => {
    log.error('the data-plane thread died; stopping (ports and namespaces are removed)', { error: why });
    void stop(why);
  };
  try {
    servers = await listen(plane, log, s.socket, loopback);
  } catch (e) {
    await stop();
    throw new Error(`management API: cannot listen on ${s.socket}${s.listen ? ` / ${s.listen}` : ''}: ${(e as Error).message}`);
  }
  log.info('vswitch running', { ports: cfg.ports.length, socket: s.socket, dataPlane: s.dataPlane, ...(s.listen ? { listen: s.listen, tokenFile: s.tokenFile } : {}), pid: process.pid });
  return { dataPlaneThread: plane.threadId, stop: () => stop(), stopped };
}
