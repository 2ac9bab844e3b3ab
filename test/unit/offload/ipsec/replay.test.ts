// The anti-replay window (RFC 4303 §3.4.3) against the simplest possible
// model — a Set of every number accepted and the highest one — over
// in-order, reordered, duplicated, too-old and far-jumping sequences, near 0
// and near 2^32, for windows of 32, 64, 1024 and odd sizes; and the
// hand-over format (ReplayState) both ways.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ReplayWindow, type ReplayVerdict } from '../../../../src/offload/ipsec/replay.js';
import { MAX_REPLAY_WINDOW, type ReplayState } from '../../../../src/offload/ipsec/sa.js';

class SetModel {
  readonly seen = new Set<number>();
  top = 0;
  constructor(readonly size: number) {}
  check(s: number): ReplayVerdict {
    if (this.size === 0) return 'ok';
    if (s === 0) return 'zero';
    if (s > this.top) return 'ok';
    if (this.top - s >= this.size) return 'too-old';
    return this.seen.has(s) ? 'replay' : 'ok';
  }
  update(s: number): void {
    if (s === 0) return;
    if (this.size > 0 && s <= this.top && this.top - s >= this.size) return;
    this.seen.add(s);
    if (s > this.top) this.top = s;
  }
  /** The bitmap of sa.ts's ReplayState, from the model. */
  bitmap(): string {
    const n = Math.ceil(this.size / 32);
    const b = new Uint8Array(n * 4);
    for (let i = 0; i < this.size; i++) if (this.top - i >= 1 && this.seen.has(this.top - i)) b[i >>> 3]! |= 1 << (i & 7);
    return Buffer.from(b).toString('hex');
  }
}

interface Window {
  check(s: number): ReplayVerdict;
  update(s: number): void;
  state(): ReplayState;
}

/** One step: a sequence number relative to the current top, and whether its ICV "verified". */
type Step = { kind: 'next' | 'jump' | 'back' | 'edge' | 'dup' | 'zero'; n: number; authentic: boolean };

const stepArb = (size: number): fc.Arbitrary<Step> => fc.record({
  kind: fc.constantFrom('next', 'next', 'jump', 'back', 'back', 'edge', 'dup', 'zero') as fc.Arbitrary<Step['kind']>,
  n: fc.integer({ min: 0, max: Math.max(2 * size, 70) + 3000 }),
  authentic: fc.boolean(),
});

function seqFor(step: Step, top: number, size: number, last: number): number {
  let s: number;
  switch (step.kind) {
    case 'next': s = top + 1 + (step.n % 4); break;
    case 'jump': s = top + 1 + step.n; break;
    case 'back': s = top - (step.n % (size + 8)); break;
    case 'edge': s = top - size + (step.n % 3); break; // just outside, on, just inside the left edge
    case 'dup': s = last; break;
    case 'zero': s = 0; break;
  }
  return Math.min(0xffffffff, Math.max(0, s));
}

/** Runs `steps` on `w` and the model; returns a description of the first disagreement. */
function disagreement(w: Window, size: number, start: number, steps: readonly Step[]): string | null {
  const m = new SetModel(size);
  if (start > 0) { w.update(start); m.update(start); }
  let last = start;
  for (const [i, st] of steps.entries()) {
    const s = seqFor(st, m.top, size, last);
    const got = w.check(s);
    const want = m.check(s);
    if (got !== want) return `step ${i}: check(${s}) = ${got}, model ${want} (top ${m.top})`;
    if (want === 'ok' && st.authentic) { w.update(s); m.update(s); last = s; }
    if (i % 16 === 15) {
      const st2 = w.state();
      if (st2.top !== m.top || st2.bitmap !== m.bitmap()) return `step ${i}: state ${JSON.stringify(st2)}, model top ${m.top} ${m.bitmap()}`;
    }
  }
  const st = w.state();
  if (st.top !== m.top || st.bitmap !== m.bitmap() || st.size !== size) return `end: state ${JSON.stringify(st)}, model ${m.top} ${m.bitmap()}`;
  return null;
}

const startArb = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 0xffffffff - 6000, max: 0xffffffff - 1 }),
  fc.integer({ min: 0x7fffff00, max: 0x80000100 }));

for (const size of [32, 64, 1024, 1, 100, 0]) {
  test(`window of ${size}: agrees with a Set model on ordered, reordered, duplicated and old numbers`, () => {
    fc.assert(fc.property(startArb, fc.array(stepArb(size), { minLength: 1, maxLength: 300 }), (start, steps) => {
      const d = disagreement(new ReplayWindow(size), size, start, steps);
      assert.equal(d, null, d ?? '');
    }), { numRuns: size === 1024 ? 150 : 300 });
  });
}

test('the model comparison catches a window that is off by one at its left edge (the property can fail)', () => {
  class OffByOne extends ReplayWindow {
    override check(s: number): ReplayVerdict {
      const v = super.check(s);
      return v === 'too-old' && this.top - s === this.size ? 'ok' : v;
    }
  }
  const r = fc.check(fc.property(startArb, fc.array(stepArb(64), { minLength: 1, maxLength: 200 }), (start, steps) =>
    disagreement(new OffByOne(64), 64, start, steps) === null), { numRuns: 300 });
  assert.equal(r.failed, true, 'an off-by-one window went unnoticed');
});

test('check changes nothing; update only after it (forged packets cannot move the window)', () => {
  const w = new ReplayWindow(64);
  for (let s = 1; s <= 10; s++) assert.equal(w.check(s), 'ok');
  assert.equal(w.top, 0, 'check moved the window');
  w.update(1000);
  assert.equal(w.check(1000), 'replay');
  assert.equal(w.check(937), 'ok');
  assert.equal(w.check(936), 'too-old');
  assert.equal(w.check(0), 'zero');
  w.update(936); // too old: ignored
  assert.equal(w.check(936), 'too-old');
  w.update(937);
  assert.equal(w.check(937), 'replay');
  assert.equal(w.check(1001), 'ok');
  assert.equal(w.check(0xffffffff), 'ok');
  w.update(0xffffffff);
  assert.equal(w.check(0xffffffff), 'replay');
  assert.equal(w.check(0xffffffff - 63), 'ok');
  assert.equal(w.check(0xffffffff - 64), 'too-old');
  assert.equal(w.check(1000), 'too-old');
});

test('a disabled window (0) accepts everything, still tracking the top', () => {
  const w = new ReplayWindow(0);
  w.update(5);
  assert.equal(w.check(5), 'ok');
  assert.equal(w.check(0), 'ok');
  assert.equal(w.top, 5);
  assert.deepEqual(w.state(), { top: 5, bitmap: '', size: 0 });
});

test('state: bit i is top - i, 32-bit words little-endian, as hex', () => {
  const w = new ReplayWindow(64);
  for (const s of [100, 99, 92, 68, 37]) w.update(s);
  // 100 → bit 0, 99 → bit 1, 92 → bit 8, 68 → bit 32 (word 1, bit 0), 37 → bit 63 (word 1, bit 31).
  assert.deepEqual(w.state(), { top: 100, bitmap: '03010000' + '01000080', size: 64 });
  const v = ReplayWindow.fromState({ top: 100, bitmap: '03010000' + '01000080', size: 64 });
  for (const s of [100, 99, 92, 68, 37]) assert.equal(v.check(s), 'replay');
  for (const s of [98, 93, 69, 38]) assert.equal(v.check(s), 'ok');
  assert.equal(v.check(36), 'too-old');
  assert.deepEqual(new ReplayWindow(1024).state(), { top: 0, bitmap: '0'.repeat(256), size: 1024 });
});

test('fromState continues exactly where state() left off', () => {
  fc.assert(fc.property(fc.constantFrom(32, 64, 1024, 200), startArb, fc.array(stepArb(64), { maxLength: 200 }),
    fc.array(fc.integer({ min: -1100, max: 1100 }), { maxLength: 100 }), (size, start, steps, probes) => {
      const a = new ReplayWindow(size);
      disagreement(a, size, start, steps);
      const b = ReplayWindow.fromState(a.state());
      assert.deepEqual(b.state(), a.state());
      for (const d of probes) {
        const s = Math.max(0, Math.min(0xffffffff, a.top + d));
        assert.equal(b.check(s), a.check(s), `check(${s})`);
        if (a.check(s) === 'ok') { a.update(s); b.update(s); }
      }
    }), { numRuns: 200 });
});

test('bad sizes and malformed states are refused with the reason', () => {
  assert.throws(() => new ReplayWindow(MAX_REPLAY_WINDOW + 1), /0\.\.1024/);
  assert.throws(() => new ReplayWindow(-1), RangeError);
  assert.throws(() => new ReplayWindow(2.5), RangeError);
  assert.throws(() => ReplayWindow.fromState({ top: 10, bitmap: '00', size: 64 }), /16 hex digits/);
  assert.throws(() => ReplayWindow.fromState({ top: 10, bitmap: 'zz000000', size: 32 }), /hex/);
  assert.throws(() => ReplayWindow.fromState({ top: 2 ** 32, bitmap: '00000000', size: 32 }), /32-bit/);
  // Bit 10 of top 5 would be sequence number -5.
  assert.throws(() => ReplayWindow.fromState({ top: 5, bitmap: '00040000', size: 32 }), /outside the window/);
  // Bit 40 of a 40-bit window is outside it.
  assert.throws(() => ReplayWindow.fromState({ top: 500, bitmap: '00000000' + '00010000', size: 40 }), /outside the window/);
});
