// The receiver's anti-replay window (RFC 4303 §3.4.3), 32-bit sequence
// numbers (no ESN). A packet is checked before its ICV is verified (cheap
// rejection, no state change) and the window moves only after the ICV
// verified, so forged packets can neither be accepted nor shift the window.
//
// The window is a bitmap indexed by sequence number modulo its capacity (a
// power of two ≥ the window size, ≥ 32): advancing clears the bits of the
// numbers that enter the window instead of shifting the whole map, so a
// 1024-bit window costs the same per packet as a 32-bit one.

import { DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW, type ReplayState } from './sa.js';

/** Outcome of `check`: 'zero' is sequence number 0, never valid without ESN (§2.2). */
export type ReplayVerdict = 'ok' | 'replay' | 'too-old' | 'zero';

const MAX_SEQ = 0xffffffff;

export class ReplayWindow {
  /** Window size in packets; 0 disables anti-replay (every number is 'ok'). */
  readonly size: number;
  private topSeq = 0;
  private readonly words: Uint32Array;
  /** Capacity in bits minus one. */
  private readonly mask: number;

  constructor(size = DEFAULT_REPLAY_WINDOW) {
    if (!Number.isInteger(size) || size < 0 || size > MAX_REPLAY_WINDOW) {
      throw new RangeError(`replay window ${size} is not an integer in 0..${MAX_REPLAY_WINDOW}`);
    }
    this.size = size;
    let cap = 32;
    while (cap < size) cap *= 2;
    this.words = new Uint32Array(cap / 32);
    this.mask = cap - 1;
  }

  /** Highest sequence number accepted so far (0: none yet). */
  get top(): number {
    return this.topSeq;
  }

  /** Whether `seq` may be accepted. Changes nothing. */
  check(seq: number): ReplayVerdict {
    if (this.size === 0) return 'ok';
    if (seq === 0) return 'zero';
    const top = this.topSeq;
    if (seq > top) return 'ok';
    if (top - seq >= this.size) return 'too-old';
    const b = seq & this.mask;
    return ((this.words[b >>> 5]! >>> (b & 31)) & 1) !== 0 ? 'replay' : 'ok';
  }

  /**
   * Record `seq` as received: call once its ICV verified (and `check` said
   * 'ok'). Numbers that are too old or zero are ignored.
   */
  update(seq: number): void {
    if (seq === 0 || seq > MAX_SEQ) return;
    const top = this.topSeq;
    if (this.size === 0) {
      if (seq > top) this.topSeq = seq;
      return;
    }
    if (seq > top) {
      this.clearRange(top + 1, seq);
      this.topSeq = seq;
    } else if (top - seq >= this.size) {
      return;
    }
    const b = seq & this.mask;
    this.words[b >>> 5]! |= 1 << (b & 31);
  }

  /** Clear the bits of numbers from..to (inclusive), which are entering the window. */
  private clearRange(from: number, to: number): void {
    const words = this.words;
    const mask = this.mask;
    if (to - from >= mask) {
      words.fill(0);
      return;
    }
    let s = from;
    while (s <= to) {
      const b = s & mask;
      if ((b & 31) === 0 && to - s >= 31) {
        words[b >>> 5] = 0;
        s += 32;
      } else {
        words[b >>> 5]! &= ~(1 << (b & 31));
        s++;
      }
    }
  }

  /** Whether `seq` was received (within the window). */
  private has(seq: number): boolean {
    const b = seq & this.mask;
    return ((this.words[b >>> 5]! >>> (b & 31)) & 1) !== 0;
  }

  /**
   * The window in the upload format of sa.ts: bit i of the bitmap is
   * sequence number top - i; 32-bit words, each written little-endian, as hex.
   * Allocates (control plane).
   */
  state(): ReplayState {
    const n = Math.ceil(this.size / 32);
    const bytes = new Uint8Array(n * 4);
    const top = this.topSeq;
    for (let i = 0; i < this.size && top - i >= 1; i++) {
      if (this.has(top - i)) bytes[(i >>> 3)]! |= 1 << (i & 7);
    }
    return { top, bitmap: toHex(bytes), size: this.size };
  }

  /** A window continuing from `s` (e.g. one the VM handed back). Throws on malformed state. */
  static fromState(s: ReplayState): ReplayWindow {
    const w = new ReplayWindow(s.size);
    if (!Number.isInteger(s.top) || s.top < 0 || s.top > MAX_SEQ) {
      throw new RangeError(`replay state top ${s.top} is not a 32-bit sequence number`);
    }
    const n = Math.ceil(s.size / 32);
    const bytes = fromHex(s.bitmap);
    if (bytes === null || bytes.length !== n * 4) {
      throw new RangeError(`replay state bitmap must be ${n * 8} hex digits for a window of ${s.size}`);
    }
    w.topSeq = s.top;
    for (let i = 0; i < n * 32; i++) {
      if (((bytes[i >>> 3]! >>> (i & 7)) & 1) === 0) continue;
      if (i >= s.size || s.top - i < 1) {
        throw new RangeError(`replay state marks sequence number ${s.top - i} (bit ${i}), outside the window`);
      }
      const b = (s.top - i) & w.mask;
      w.words[b >>> 5]! |= 1 << (b & 31);
    }
    return w;
  }
}

const HEX = '0123456789abcdef';

function toHex(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += HEX[b[i]! >>> 4]! + HEX[b[i]! & 15]!;
  return s;
}

function fromHex(s: string): Uint8Array | null {
  if (typeof s !== 'string' || s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) return null;
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}
