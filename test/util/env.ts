// Preconditions of end-to-end tests. Locally, a test that cannot run here is
// skipped (and reported as skipped); under CI=true it fails instead, so a
// missing tool or missing root can never pass as a green run.
import type { TestContext } from 'node:test';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export const inCI = process.env['CI'] === 'true' || process.env['CI'] === '1';

/** Returns true when the test may proceed; otherwise skips it (locally) or throws (CI). */
export function need(t: TestContext, ok: boolean, what: string): boolean {
  if (ok) return true;
  if (inCI) throw new Error(`cannot run in CI: ${what}`);
  t.skip(what);
  return false;
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export function hasCommand(cmd: string): boolean {
  if (cmd.startsWith('/')) return existsSync(cmd);
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** A short per-run name prefix for namespaces and devices (interface names are ≤ 15 chars). */
export function runPrefix(tag: string): string {
  return `${tag}${(process.pid % 100000).toString(36)}${Math.floor(Math.random() * 36 * 36).toString(36)}`;
}

export { linkNames, netnsList } from '../../src/cli/subprocess.js';

/** A UDP port on `host` that nobody uses right now (bound to port 0 and let go). */
export async function freeUdpPort(type: 'udp4' | 'udp6' = 'udp4', host = '127.0.0.1'): Promise<number> {
  const { createSocket } = await import('node:dgram');
  const s = createSocket(type);
  await new Promise<void>((r) => s.bind(0, host, r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
