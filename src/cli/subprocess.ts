// Child processes for the live demo, the benchmark harness and the tests'
// labs: commands run without blocking the event loop (spinners, live lines
// and timers keep going), a daemon stopped the way an operator stops it, and
// the machine's namespaces and devices, for sweeping up after a run.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Run a command to its end; never throws (code -1: it could not start or
 * timed out, which stderr then says). `onSpawn` sees the child first (to
 * track it for cleanup).
 */
export function run(cmd: string, args: string[], timeoutMs = 30_000, env?: NodeJS.ProcessEnv, onSpawn?: (c: ChildProcess) => void): Promise<RunResult> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(env !== undefined ? { env } : {}) });
    onSpawn?.(c);
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    c.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const t = setTimeout(() => { stderr += `\n(timed out after ${timeoutMs} ms)`; c.kill('SIGKILL'); }, timeoutMs);
    c.once('error', (e) => { clearTimeout(t); resolve({ code: -1, stdout, stderr: e.message }); });
    c.once('close', (code) => { clearTimeout(t); resolve({ code: code ?? -1, stdout, stderr }); });
  });
}

/** `run`, throwing with the command and its error output if it fails; resolves with its stdout. */
export async function must(cmd: string, args: string[], timeoutMs = 30_000, env?: NodeJS.ProcessEnv, onSpawn?: (c: ChildProcess) => void): Promise<string> {
  const r = await run(cmd, args, timeoutMs, env, onSpawn);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
  return r.stdout;
}

/** The network namespaces on this machine (`ip netns list`). */
export function netnsList(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return (r.stdout ?? '').split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.length > 0);
}

/** The network devices of the root namespace (`ip -o link show`), without their `@peer` part. */
export function linkNames(): string[] {
  const r = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  return (r.stdout ?? '').split('\n').map((l) => l.split(': ')[1]?.split('@')[0]).filter((n): n is string => n !== undefined && n.length > 0);
}

/**
 * Stop a vswitch daemon as an operator does — `shutdown()` (POST
 * /v1/shutdown) — then SIGTERM at half the timeout and SIGKILL at the end if
 * it is still there. Resolves with its exit code (null: killed).
 */
export async function stopDaemon(child: ChildProcess, shutdown: () => Promise<unknown>, timeoutMs: number): Promise<number | null> {
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    await shutdown();
  } catch {
    child.kill('SIGTERM');
  }
  const t1 = setTimeout(() => child.kill('SIGTERM'), timeoutMs / 2);
  const t2 = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await exited;
  clearTimeout(t1);
  clearTimeout(t2);
  return code;
}
