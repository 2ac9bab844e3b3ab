// An interactive tiny VM: boots like tiny-vm.ts's bootVm, but instead of
// running one script to the end, the VM serves shell commands sent to it
// over its serial console, so a test can interleave work inside the VM with
// work on the host (configure, then traffic from outside, then read the VM's
// counters).
//
// The VM side is SERVE_SCRIPT (put it at the end of the initramfs script): it
// turns off the console's echo, prints VSQ-READY and reads lines from the
// console. A command travels base64-encoded, in PART lines (the console's line
// discipline takes at most 4 KiB a line) and a RUN <id> line; its output is
// framed by VSQ-BEGIN <id> and VSQ-END <id> <status> lines. QUIT ends the
// loop, and the /init then powers off.
//
// QEMU can be started inside a network namespace (`wrap: ['ip', 'netns',
// 'exec', ns]`, e.g. for a TAP there); `ip netns exec` execs QEMU, so the
// process we kill is QEMU itself. TCG only, never KVM (qemuArgs).

import { spawn, type ChildProcess } from 'node:child_process';
import { qemuArgs, QEMU, type BootOptions } from './tiny-vm.js';

/** The VM end of the session (busybox sh): serve commands from the console until QUIT. */
export const SERVE_SCRIPT = `
stty -echo 2>/dev/null
echo VSQ-READY
rm -f /tmp/vsq.b64
while read -r line; do
  case "$line" in
    QUIT) break ;;
    PART\\ *) echo "\${line#PART }" >> /tmp/vsq.b64 ;;
    RUN\\ *)
      id=\${line#RUN }
      base64 -d /tmp/vsq.b64 > /tmp/vsq.sh 2>/dev/null
      rm -f /tmp/vsq.b64
      echo "VSQ-BEGIN $id"
      sh /tmp/vsq.sh < /dev/null 2>&1
      echo "VSQ-END $id $?"
      ;;
  esac
done
echo VSQ-QUIT
`;

export interface SessionOptions extends Omit<BootOptions, 'marker' | 'timeoutMs'> {
  /** Command prefix for QEMU, e.g. ['ip', 'netns', 'exec', ns]. */
  wrap?: string[];
}

export interface ShellResult {
  status: number;
  out: string;
}

/** QEMUs started here and still running: killed if the test process exits. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

interface Waiter {
  re: RegExp;
  from: number;
  resolve: (m: { line: number; match: RegExpExecArray }) => void;
}

export class VmSession {
  readonly child: ChildProcess;
  readonly args: string[];
  readonly lines: string[] = [];
  serial = '';
  stderr = '';
  /** From spawning QEMU to the /init's first line (VSQ-BOOTED). */
  bootMs: number | null = null;
  /** From spawning QEMU to VSQ-READY (modules loaded, the script's set-up done). */
  readyMs: number | null = null;
  private readonly t0 = Date.now();
  private pending = '';
  private next = 1;
  private waiters: Waiter[] = [];
  private exitInfo: { code: number | null; signal: string | null } | null = null;
  private readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** Serial lines as they arrive (e.g. to show them on failure). */
  onLine: ((line: string) => void) | undefined;

  private constructor(o: SessionOptions) {
    this.args = qemuArgs(o);
    const [cmd, ...rest] = [...(o.wrap ?? []), QEMU, ...this.args];
    this.child = spawn(cmd!, rest, { stdio: ['pipe', 'pipe', 'pipe'] });
    running.add(this.child);
    this.onLine = o.onLine;
    this.child.stdout!.setEncoding('utf8');
    this.child.stderr!.setEncoding('utf8');
    this.child.stdout!.on('data', (s: string) => this.feed(s));
    this.child.stderr!.on('data', (s: string) => { this.stderr += s; });
    this.child.stdin!.on('error', () => { /* QEMU gone: reported by exit */ });
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        running.delete(this.child);
        this.exitInfo = { code, signal };
        for (const w of this.waiters) w.resolve({ line: -1, match: null as unknown as RegExpExecArray });
        this.waiters = [];
        resolve(this.exitInfo);
      });
      this.child.once('error', (e) => {
        this.stderr += `spawn: ${e.message}\n`;
        running.delete(this.child);
        this.exitInfo = { code: null, signal: null };
        resolve(this.exitInfo);
      });
    });
  }

  static start(o: SessionOptions): VmSession {
    return new VmSession(o);
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  private feed(s: string): void {
    const text = s.replace(/\r/g, '');
    this.serial += text;
    this.pending += text;
    let nl: number;
    while ((nl = this.pending.indexOf('\n')) >= 0) {
      const line = this.pending.slice(0, nl);
      this.pending = this.pending.slice(nl + 1);
      const n = this.lines.push(line) - 1;
      if (this.bootMs === null && line.includes('VSQ-BOOTED')) this.bootMs = Date.now() - this.t0;
      if (this.readyMs === null && line.includes('VSQ-READY')) this.readyMs = Date.now() - this.t0;
      this.onLine?.(line);
      for (const w of [...this.waiters]) {
        if (n < w.from) continue;
        const m = w.re.exec(line);
        if (m !== null) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve({ line: n, match: m });
        }
      }
    }
  }

  /** The first serial line at index ≥ `from` matching `re` (throws on timeout or when QEMU exits). */
  async waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<{ line: number; match: RegExpExecArray }> {
    for (let i = from; i < this.lines.length; i++) {
      const m = re.exec(this.lines[i]!);
      if (m !== null) return { line: i, match: m };
    }
    if (!this.running) throw new Error(`QEMU exited (${JSON.stringify(this.exitInfo)}) before ${re}:\n${this.tail()}`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const r = await new Promise<{ line: number; match: RegExpExecArray } | 'timeout'>((resolve) => {
        this.waiters.push({ re, from, resolve });
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      if (r === 'timeout') throw new Error(`no ${re} on the VM's console within ${timeoutMs} ms:\n${this.tail()}`);
      if (r.line < 0) throw new Error(`QEMU exited (${JSON.stringify(this.exitInfo)}) before ${re}:\n${this.tail()}\n${this.stderr}`);
      return r;
    } finally {
      clearTimeout(timer);
      this.waiters = this.waiters.filter((w) => w.re !== re);
    }
  }

  /** Run a busybox sh script in the VM: its exit status and what it printed (stdout and stderr). */
  async sh(script: string, timeoutMs = 60_000): Promise<ShellResult> {
    const id = this.next++;
    const b64 = Buffer.from(script).toString('base64');
    let input = '';
    for (let i = 0; i < b64.length; i += 1024) input += `PART ${b64.slice(i, i + 1024)}\n`;
    input += `RUN ${id}\n`;
    const from = this.lines.length;
    this.child.stdin!.write(input);
    const begin = await this.waitFor(new RegExp(`^VSQ-BEGIN ${id}$`), timeoutMs, from);
    const end = await this.waitFor(new RegExp(`^VSQ-END ${id} (\\d+)$`), timeoutMs, begin.line + 1);
    return { status: Number(end.match[1]), out: this.lines.slice(begin.line + 1, end.line).join('\n') };
  }

  /** Like sh(), but throws when the script fails. */
  async must(script: string, timeoutMs = 60_000): Promise<string> {
    const r = await this.sh(script, timeoutMs);
    if (r.status !== 0) throw new Error(`in the VM, exit ${r.status}:\n${script}\n--- output:\n${r.out}`);
    return r.out;
  }

  /** End the command loop, let the VM power off (QEMU killed after `graceMs`). */
  async quit(graceMs = 10_000): Promise<{ code: number | null; signal: string | null }> {
    if (this.running) {
      this.child.stdin!.write('QUIT\n');
      const t = setTimeout(() => this.kill(), graceMs);
      try {
        return await this.exited;
      } finally {
        clearTimeout(t);
      }
    }
    return this.exited;
  }

  /** Kill QEMU now (idempotent); resolves when it is gone. */
  async kill(): Promise<void> {
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
  }

  get elapsedMs(): number {
    return Date.now() - this.t0;
  }

  /** The last lines of the console, for error messages. */
  tail(n = 40): string {
    return [...this.lines.slice(-n), this.pending].join('\n');
  }
}
