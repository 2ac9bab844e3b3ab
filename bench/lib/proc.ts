// Processes, namespaces and devices for the switch benchmark, and their
// removal. Everything the benchmark makes is named with one per-run prefix
// and registered here, so that a normal end, a failure, Ctrl-C or an exit
// half-way all leave the machine as it was.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { linkNames, must as mustCommand, netnsList, run as runCommand, type RunResult } from '../../src/cli/subprocess.js';

export { linkNames, netnsList };

export type { RunResult } from '../../src/cli/subprocess.js';
import { STAT_STIME, STAT_UTIME, statFields } from '../../src/control/procfs.js';

/** Run a command to its end without blocking the event loop; never throws (code -1: could not start or timed out). */
export function run(cmd: string, args: string[], timeoutMs = 30_000, env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return runCommand(cmd, args, timeoutMs, env, track);
}

/** Run, and throw with the command and its error output if it fails. */
export function must(cmd: string, args: string[], timeoutMs = 30_000, env?: NodeJS.ProcessEnv): Promise<string> {
  return mustCommand(cmd, args, timeoutMs, env, track);
}

/** `ip netns exec NS cmd...` (NS null: the root namespace). */
export function inNs(ns: string | null, cmd: string[]): [string, string[]] {
  return ns === null ? [cmd[0]!, cmd.slice(1)] : ['ip', ['netns', 'exec', ns, ...cmd]];
}

export function runIn(ns: string | null, cmd: string[], timeoutMs = 30_000): Promise<RunResult> {
  const [c, a] = inNs(ns, cmd);
  return run(c, a, timeoutMs);
}

export function mustIn(ns: string | null, cmd: string[], timeoutMs = 30_000): Promise<string> {
  const [c, a] = inNs(ns, cmd);
  return must(c, a, timeoutMs);
}

/** A long-running child, killed by cleanup if still running. */
export function spawnIn(ns: string | null, cmd: string[], env?: NodeJS.ProcessEnv): ChildProcess {
  const [c, a] = inNs(ns, cmd);
  const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'], ...(env !== undefined ? { env } : {}) });
  track(child);
  return child;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// --- cleanup ---------------------------------------------------------------------------

const children = new Set<ChildProcess>();
const hooks: (() => void)[] = [];
const dirs = new Set<string>();
let prefix = '';

function track(c: ChildProcess): void {
  children.add(c);
  c.once('exit', () => children.delete(c));
}

/** Everything named with this prefix is swept at the end. */
export function setPrefix(p: string): void {
  prefix = p;
}

export function trackDir(d: string): void {
  dirs.add(d);
}

/** A synchronous last-resort cleanup step (runs before the sweep, newest first). */
export function onCleanup(f: () => void): void {
  hooks.push(f);
}

/** What of this run is still on the machine. */
export function leftovers(): string[] {
  if (prefix === '') return [];
  return [
    ...netnsList().filter((n) => n.startsWith(prefix)).map((n) => `namespace ${n}`),
    ...linkNames().filter((l) => l.startsWith(prefix)).map((l) => `device ${l}`),
  ];
}

let cleaned = false;

/** Synchronous, idempotent, best effort: hooks, child processes, namespaces and devices with the prefix, temp dirs. */
export function cleanupSync(): void {
  if (cleaned) return;
  cleaned = true;
  for (const h of hooks.splice(0).reverse()) {
    try { h(); } catch { /* keep going */ }
  }
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (prefix !== '') {
    for (const ns of netnsList()) if (ns.startsWith(prefix)) spawnSync('ip', ['netns', 'del', ns]);
    for (const l of linkNames()) if (l.startsWith(prefix)) spawnSync('ip', ['link', 'del', l]);
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

export function installCleanupHandlers(): void {
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      console.error(`\n${sig}: cleaning up ...`);
      cleanupSync();
      process.exit(130);
    });
  }
  process.on('uncaughtException', (e) => {
    console.error(e);
    cleanupSync();
    process.exit(1);
  });
  process.on('unhandledRejection', (e) => {
    console.error(e);
    cleanupSync();
    process.exit(1);
  });
}

// --- /proc ------------------------------------------------------------------------------

let clkTck = 0;

/** utime and stime of a process (all its threads), in seconds; null if it is gone. */
export function cpuSeconds(pid: number): { user: number; sys: number } | null {
  if (clkTck === 0) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    clkTck = Number((r.stdout ?? '').trim()) || 100;
  }
  const f = statFields(`/proc/${pid}/stat`);
  return f === null ? null : { user: Number(f[STAT_UTIME]) / clkTck, sys: Number(f[STAT_STIME]) / clkTck };
}

/** Resident set size in bytes; null if the process is gone. */
export function rssBytes(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? null : Number(m[1]) * 1024;
  } catch {
    return null;
  }
}
