// What the agent asks of the VM's own system: iproute2 commands (routes,
// links, XFRM), run synchronously — they are set-up steps, never per packet.

import { spawnSync } from 'node:child_process';

export class CommandFailed extends Error {
  constructor(readonly argv: string[], readonly stderr: string) {
    super(`${argv.join(' ')}: ${stderr.trim() || 'failed'}`);
  }
}

/** Runs a command; a Runner is injected so unit tests can record instead. */
export type Runner = (argv: string[]) => { ok: boolean; stdout: string; stderr: string };

export const runCommand: Runner = (argv) => {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 10_000 });
  if (r.error) return { ok: false, stdout: '', stderr: r.error.message };
  return { ok: r.status === 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
};

export function must(run: Runner, argv: string[]): string {
  const r = run(argv);
  if (!r.ok) throw new CommandFailed(argv, r.stderr || r.stdout);
  return r.stdout;
}

export interface LinkInfo {
  name: string;
  ifindex: number;
  mtu: number;
  mac: string;
}

/** A network device of this namespace (`ip -j link show dev NAME`), or null if there is none. */
export function linkInfo(run: Runner, name: string): LinkInfo | null {
  const r = run(['ip', '-j', 'link', 'show', 'dev', name]);
  if (!r.ok) return null;
  try {
    const [l] = JSON.parse(r.stdout) as { ifname: string; ifindex: number; mtu: number; address?: string }[];
    if (l === undefined) return null;
    return { name: l.ifname, ifindex: l.ifindex, mtu: l.mtu, mac: l.address ?? '' };
  } catch {
    return null;
  }
}

export interface RouteInfo {
  dev: string;
  gateway?: string;
}

/** How the kernel would send to `ip` (`ip -j route get`), or null. */
export function routeTo(run: Runner, ip: string): RouteInfo | null {
  const r = run(['ip', '-j', ...(ip.includes(':') ? ['-6'] : ['-4']), 'route', 'get', ip]);
  if (!r.ok) return null;
  try {
    const [x] = JSON.parse(r.stdout) as { dev?: string; gateway?: string }[];
    if (x?.dev === undefined) return null;
    return x.gateway !== undefined ? { dev: x.dev, gateway: x.gateway } : { dev: x.dev };
  } catch {
    return null;
  }
}

/** The device the kernel would send to `ip` through, or null. */
export function deviceFor(run: Runner, ip: string): string | null {
  return routeTo(run, ip)?.dev ?? null;
}

/** `198.18.0.1` → `198.18.0.1/32`; a prefix stays as it is. */
export function hostPrefix(ip: string): string {
  return ip.includes('/') ? ip : `${ip}/${ip.includes(':') ? 128 : 32}`;
}
