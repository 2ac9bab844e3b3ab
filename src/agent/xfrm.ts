// Local IPsec through the guest kernel's own XFRM (`ip xfrm state/policy`):
// what the agent uses when the VM's kernel has ESP (esp4/esp6, gcm). An
// uploaded SA continues where the switch left off: the outbound sequence
// counter (`replay-oseq`, the last number used) and the inbound window's top
// (`replay-seq`). iproute2 cannot set the window's bitmap, so numbers below
// the top that the switch had already accepted could be accepted once more
// by the kernel: at most the window's size of packets, only replays of
// packets that really were sent. Without ESN, as the switch's engine.

import type { ReplayState, SaDirection, SecurityAssociation } from '../offload/ipsec/sa.js';
import { DEFAULT_REPLAY_WINDOW } from '../offload/ipsec/sa.js';
import { bytesToHex } from './sa-file.js';
import { hostPrefix, must, type Runner } from './system.js';

export interface LocalIpsec {
  readonly how: 'xfrm' | 'userspace';
  /** Install an SA in the VM: from the SA file, or uploaded by the switch (with its replay window). Throws with the reason. */
  install(sa: SecurityAssociation, replay?: ReplayState): void;
  /** Remove one SA (and its policy / route). */
  remove(direction: SaDirection, spi: number): void;
  /** Remove everything this installer put in place. */
  close(): void;
  stats(): Record<string, unknown>;
}

const AEAD = 'rfc4106(gcm(aes))';

/**
 * The selector prefixes of an SA's policy: the SA's selector, and where it
 * says nothing the SA's own endpoints (in either mode, as the switch's engine
 * reads an SA: a tunnel for other hosts' traffic must name it).
 */
export function policySelector(sa: SecurityAssociation): { src: string; dst: string } {
  const any = sa.src.includes(':') ? '::/0' : '0.0.0.0/0';
  const sel = sa.selector ?? {};
  const norm = (p: string | undefined, host: string) => (p === undefined ? hostPrefix(host) : p === 'any' || p === '*' ? any : hostPrefix(p));
  return { src: norm(sel.src, sa.src), dst: norm(sel.dst, sa.dst) };
}

/** `ip xfrm state add …` for an SA; `replay` / `sa.seq` set where the counters continue from. */
export function xfrmStateArgs(sa: SecurityAssociation, reqid: number, replay?: ReplayState): string[] {
  const a = ['ip', 'xfrm', 'state', 'add', 'src', sa.src, 'dst', sa.dst, 'proto', 'esp', 'spi', `0x${sa.spi.toString(16).padStart(8, '0')}`,
    'reqid', String(reqid), 'mode', sa.mode];
  if (sa.direction === 'in') {
    a.push('replay-window', String(replay?.size ?? sa.replayWindow ?? DEFAULT_REPLAY_WINDOW));
    if (replay !== undefined && replay.top > 0) a.push('replay-seq', `0x${replay.top.toString(16)}`);
  } else if (sa.seq !== undefined && sa.seq > 1) {
    // The kernel keeps the last number sent; the next packet gets oseq + 1.
    a.push('replay-oseq', `0x${(sa.seq - 1).toString(16)}`);
  }
  a.push('aead', AEAD, `0x${bytesToHex(sa.key)}${bytesToHex(sa.salt)}`, '128');
  return a;
}

/** `ip xfrm policy add …` for an SA: dir out for outbound, dir in (and fwd for a tunnel) for inbound. */
export function xfrmPolicyArgs(sa: SecurityAssociation, reqid: number, dir: 'out' | 'in' | 'fwd'): string[] {
  const sel = policySelector(sa);
  const a = ['ip', 'xfrm', 'policy', 'add', 'src', sel.src, 'dst', sel.dst];
  const s = sa.selector;
  if (s?.protocol !== undefined) {
    a.push('proto', String(s.protocol));
    if (s.srcPort !== undefined) a.push('sport', String(s.srcPort));
    if (s.dstPort !== undefined) a.push('dport', String(s.dstPort));
  }
  a.push('dir', dir, 'tmpl', 'src', sa.src, 'dst', sa.dst, 'proto', 'esp', 'reqid', String(reqid), 'mode', sa.mode);
  return a;
}

function policyDeleteArgs(add: string[]): string[] {
  // Everything up to and including `dir X` names the policy.
  const i = add.indexOf('dir');
  return ['ip', 'xfrm', 'policy', 'delete', ...add.slice(4, i + 2)];
}

/**
 * Whether the kernel here can do ESP with AES-GCM: add a throw-away state
 * (documentation addresses, random SPI) and delete it again. On this
 * project's build host it fails ("Requested AEAD algorithm not found" /
 * "Requested type not found"); Debian's kernel in a VM has it.
 */
export function probeXfrm(run: Runner): { ok: boolean; why: string } {
  const spi = `0x${(0x7f000000 + Math.floor(Math.random() * 0xffffff)).toString(16)}`;
  const add = run(['ip', 'xfrm', 'state', 'add', 'src', '198.18.255.254', 'dst', '198.18.255.253', 'proto', 'esp', 'spi', spi,
    'mode', 'transport', 'aead', AEAD, `0x${'00'.repeat(20)}`, '128']);
  if (!add.ok) return { ok: false, why: (add.stderr || add.stdout).trim() || 'ip xfrm state add failed' };
  run(['ip', 'xfrm', 'state', 'delete', 'src', '198.18.255.254', 'dst', '198.18.255.253', 'proto', 'esp', 'spi', spi]);
  return { ok: true, why: 'kernel ESP with rfc4106(gcm(aes)) works' };
}

interface Installed {
  sa: SecurityAssociation;
  policies: string[][];
}

export class XfrmIpsec implements LocalIpsec {
  readonly how = 'xfrm' as const;
  private readonly installed = new Map<string, Installed>();
  private nextReqid: number;

  constructor(private readonly run: Runner, reqidBase = 0x5600) {
    this.nextReqid = reqidBase;
  }

  install(sa: SecurityAssociation, replay?: ReplayState): void {
    const k = `${sa.direction}/${sa.spi}`;
    if (this.installed.has(k)) throw new Error(`${sa.direction}bound SA 0x${sa.spi.toString(16)} is installed already`);
    const reqid = this.nextReqid++;
    must(this.run, xfrmStateArgs(sa, reqid, replay));
    const dirs: ('out' | 'in' | 'fwd')[] = sa.direction === 'out' ? ['out'] : sa.mode === 'tunnel' ? ['in', 'fwd'] : ['in'];
    const policies: string[][] = [];
    try {
      for (const d of dirs) {
        const p = xfrmPolicyArgs(sa, reqid, d);
        must(this.run, p);
        policies.push(p);
      }
    } catch (e) {
      for (const p of policies) this.run(policyDeleteArgs(p));
      this.run(this.stateDeleteArgs(sa));
      throw e;
    }
    this.installed.set(k, { sa, policies });
  }

  private stateDeleteArgs(sa: SecurityAssociation): string[] {
    return ['ip', 'xfrm', 'state', 'delete', 'src', sa.src, 'dst', sa.dst, 'proto', 'esp', 'spi', `0x${sa.spi.toString(16).padStart(8, '0')}`];
  }

  remove(direction: SaDirection, spi: number): void {
    const k = `${direction}/${spi}`;
    const i = this.installed.get(k);
    if (i === undefined) return;
    this.installed.delete(k);
    for (const p of i.policies) this.run(policyDeleteArgs(p));
    this.run(this.stateDeleteArgs(i.sa));
  }

  close(): void {
    for (const i of [...this.installed.values()]) this.remove(i.sa.direction, i.sa.spi);
  }

  stats(): Record<string, unknown> {
    return { how: 'xfrm', sas: [...this.installed.values()].map((i) => ({ direction: i.sa.direction, spi: i.sa.spi })) };
  }
}
