// How the demo talks to the person watching: headings, checks that count
// towards the final verdict, long steps with progress, and lines that
// refresh in place on a terminal (plain, whole lines when the output is a
// file or a pipe, so logs and tests read the same story).

import { performance } from 'node:perf_hooks';

export interface UiOptions {
  /** Refresh in place and use colours (default: stdout is a terminal). */
  tty?: boolean;
  write?: (s: string) => void;
}

/** A step failed and was reported already; what depended on it is skipped. */
export class StepFailed extends Error {
  constructor(readonly step: string, override readonly cause: unknown) {
    super(`${step}: ${(cause as Error)?.message ?? String(cause)}`);
  }
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export class Ui {
  readonly tty: boolean;
  private readonly write: (s: string) => void;
  /** What failed, in order: the summary names them. */
  readonly failures: string[] = [];
  checks = 0;
  private liveOpen = false;
  private sectionNo = 0;
  private silenced = false;

  constructor(opts: UiOptions = {}) {
    this.tty = opts.tty ?? process.stdout.isTTY === true;
    const out = opts.write ?? ((s: string) => { process.stdout.write(s); });
    this.write = (s) => { if (!this.silenced) out(s); };
    this.direct = out;
  }

  private readonly direct: (s: string) => void;

  /** From now on only `urgent` lines show (the demo is being interrupted; its other work is moot). */
  silence(): void {
    if (this.liveOpen) this.direct('\n');
    this.liveOpen = false;
    this.silenced = true;
  }

  urgent(s: string): void {
    this.direct(`${s}\n`);
  }

  bold = (s: string): string => (this.tty ? `\x1b[1m${s}\x1b[0m` : s);
  dim = (s: string): string => (this.tty ? `\x1b[2m${s}\x1b[0m` : s);
  green = (s: string): string => (this.tty ? `\x1b[32m${s}\x1b[0m` : s);
  red = (s: string): string => (this.tty ? `\x1b[31m${s}\x1b[0m` : s);
  yellow = (s: string): string => (this.tty ? `\x1b[33m${s}\x1b[0m` : s);

  say(s = ''): void {
    this.closeLive();
    this.write(`${s}\n`);
  }

  heading(s: string): void {
    this.say();
    this.say(this.bold(s));
  }

  /** "3. Title": sections are numbered in the order they run. */
  section(title: string): void {
    this.heading(`${++this.sectionNo}. ${title}`);
  }

  /** A check: counts towards the verdict; a failure is named in the summary. */
  check(ok: boolean, what: string, why?: string): boolean {
    this.checks++;
    this.say(`   ${ok ? this.green('✓') : this.red('✗')} ${what}${!ok && why !== undefined ? ` — ${why}` : ''}`);
    if (!ok) this.failures.push(what);
    return ok;
  }

  /** A failure that is not a yes/no check (a step that threw, an interruption). */
  fail(what: string, why: string): void {
    this.check(false, what, why);
  }

  /** Show `text` on the current line, replacing what was there (terminal only; elsewhere nothing). */
  live(text: string): void {
    if (!this.tty) return;
    const c = process.stdout.columns;
    const cols = typeof c === 'number' && c > 20 ? c : 160;
    this.write(`\r\x1b[K${clip(text, cols - 1)}`);
    this.liveOpen = true;
  }

  /** End a live line with its final text (printed as a plain line when not on a terminal). */
  settle(text: string): void {
    if (this.tty) this.write(`\r\x1b[K${text}\n`);
    else this.write(`${text}\n`);
    this.liveOpen = false;
  }

  private closeLive(): void {
    if (this.liveOpen) {
      this.write('\n');
      this.liveOpen = false;
    }
  }

  /**
   * A long step: "starting vswitch…" with a spinner and the time so far on a
   * terminal, then ✓ and how long it took, or ✗ and why (and the error is
   * rethrown: what depends on the step cannot go on).
   */
  async step<T>(title: string, fn: () => Promise<T> | T, done?: (v: T) => string): Promise<T> {
    this.closeLive();
    const t0 = performance.now();
    const secs = () => ((performance.now() - t0) / 1000).toFixed(1);
    let timer: ReturnType<typeof setInterval> | null = null;
    if (this.tty) {
      let i = 0;
      const draw = () => this.write(`\r\x1b[K   ${SPINNER[i++ % SPINNER.length]} ${title}… ${this.dim(`${secs()} s`)}`);
      draw();
      timer = setInterval(draw, 100);
    } else {
      this.write(`   ${title}… `);
    }
    const finish = (ok: boolean, text: string) => {
      if (timer !== null) clearInterval(timer);
      const mark = ok ? this.green('✓') : this.red('✗');
      this.write(this.tty ? `\r\x1b[K   ${mark} ${title} ${text}\n` : `${mark} ${text}\n`);
    };
    try {
      const v = await fn();
      this.checks++;
      const extra = done !== undefined ? done(v) : '';
      finish(true, `${this.dim(`(${secs()} s)`)}${extra ? ` ${extra}` : ''}`);
      return v;
    } catch (e) {
      this.checks++;
      this.failures.push(title);
      finish(false, `failed: ${(e as Error).message}`);
      throw new StepFailed(title, e);
    }
  }

  /** The last line: "all checks passed" or what failed. */
  summary(seconds: number): boolean {
    this.say();
    if (this.failures.length === 0) {
      this.say(this.green(`all checks passed (${this.checks} checks, ${seconds.toFixed(1)} s)`));
      return true;
    }
    this.say(this.red(`${this.failures.length} of ${this.checks} checks failed: ${this.failures.join('; ')}`));
    return false;
  }
}

function clip(s: string, width: number): string {
  // Escape sequences take no columns; count only what shows.
  let shown = 0;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\x1b') {
      const end = s.indexOf('m', i);
      if (end > 0) { out += s.slice(i, end + 1); i = end; continue; }
    }
    if (shown >= width) { out += '\x1b[0m'; break; }
    out += s[i];
    shown++;
  }
  return out;
}

// --- numbers as people read them ------------------------------------------------------

export function gbits(bitsPerSecond: number): string {
  if (bitsPerSecond >= 1e9) return `${(bitsPerSecond / 1e9).toFixed(1)} Gbit/s`;
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(0)} Mbit/s`;
  return `${(bitsPerSecond / 1e3).toFixed(0)} kbit/s`;
}

export function count(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${Math.round(n / 1e3)}k`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n));
}

export function percent(x: number): string {
  return x >= 10 ? `${Math.round(x)}%` : `${x.toFixed(1)}%`;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
