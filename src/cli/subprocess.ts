// Child processes for the live demo and the benchmark harness: commands run
// without blocking the event loop (spinners, live lines and timers keep
// going), and a daemon stopped the way an operator stops it.

import { spawn, type ChildProcess } from 'node:child_process';

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
