// Property checks every wire view gets: parse∘emit is the identity, and no
// input — random bytes, or a valid header cut short or with bytes changed —
// makes wrap or a getter throw or read outside the bytes it was given.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { WireError } from '../../src/wire/error.js';
import { strictBytes, wrapStrict } from './strict-bytes.js';

// Show the failing assertion in the test report, not only as an Error cause.
fc.configureGlobal({ ...fc.readConfigureGlobal(), includeErrorInReport: true });

/**
 * A deep copy with ordinary prototypes: fc.record builds null-prototype
 * objects, which deepStrictEqual tells apart from the parsers' literals.
 */
export function plain<T>(x: T): T {
  if (Array.isArray(x)) return x.map(plain) as T;
  if (x instanceof Uint8Array || x === null || typeof x !== 'object') return x;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(x)) out[k] = plain(v);
  return out as T;
}

interface Wrappable {
  wrap(buf: Uint8Array, off: number, len: number): WireError | null;
}

export interface RoundTrip<R, V extends Wrappable> {
  arb: fc.Arbitrary<R>;
  make: () => V;
  emit: (r: R, buf: Uint8Array, off: number) => number;
  reprLen: (r: R) => number;
  parse: (v: V) => R;
  /** Bytes the view needs after the header to wrap (a payload its length fields announce). */
  after?: (r: R) => number;
  numRuns?: number;
}

/**
 * Emits each generated repr at a random offset of a buffer full of random
 * bytes, wraps a view over exactly the emitted bytes (strict outside them:
 * the view may not look at its neighbours), parses and compares.
 */
export function checkRoundTrip<R, V extends Wrappable>(t: RoundTrip<R, V>): void {
  fc.assert(
    fc.property(t.arb, fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 0xffffffff }), (r, off, seed) => {
      const n = t.reprLen(r);
      const total = n + (t.after?.(r) ?? 0);
      const buf = new Uint8Array(off + total + 5);
      let x = seed | 1;
      for (let i = 0; i < buf.length; i++) {
        x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
        buf[i] = x;
      }
      const written = t.emit(r, buf, off);
      assert.equal(written, n, 'emit returns the repr length');
      const v = t.make();
      const e = v.wrap(strictBytes(buf, off, off + total), off, total);
      assert.equal(e, null, 'emitted header wraps');
      assert.deepStrictEqual(plain(t.parse(v)), plain(r));
    }),
    { numRuns: t.numRuns ?? 300 },
  );
}

/** Random bytes of up to `maxLength`: never a throw, only null or a WireError. */
export function checkRandomBytes(make: () => Wrappable, maxLength = 128, numRuns = 1000): void {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength }), (bytes) => { wrapStrict(make, bytes); }),
    { numRuns },
  );
}

/**
 * Valid encodings (from `valid`), cut at every possible length and with a
 * few random bytes overwritten: never a throw, never an out-of-bounds read.
 * Cut below `minLen` (the fixed header) must be an error.
 */
export function checkDamagedInputs(make: () => Wrappable, valid: fc.Arbitrary<Uint8Array>, minLen: number,
  numRuns = 500): void {
  fc.assert(
    fc.property(
      valid, fc.nat(),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      (bytes, cut, changes) => {
        const b = bytes.slice(0, cut % (bytes.length + 1));
        for (const [i, v] of changes) if (b.length > 0) b[i % b.length] = v;
        const { error } = wrapStrict(make, b);
        if (b.length < minLen) assert.notEqual(error, null, `${b.length} bytes cannot hold the header`);
      },
    ),
    { numRuns },
  );
}

/** Emits a generated repr (plus `after` zero bytes) into a fresh array. */
export function encoded<R>(arb: fc.Arbitrary<R>, emit: (r: R, buf: Uint8Array, off: number) => number,
  reprLen: (r: R) => number, after: (r: R) => number = () => 0): fc.Arbitrary<Uint8Array> {
  return arb.map((r) => {
    const buf = new Uint8Array(reprLen(r) + after(r));
    emit(r, buf, 0);
    return buf;
  });
}
