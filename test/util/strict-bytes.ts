// Out-of-bounds detection for wire views. A typed array answers `undefined`
// for an index past its end, and the `!` in `buf[i]!` hides that from the
// compiler, so a view that reads one byte too far computes garbage silently.
// Over a strict buffer the same read throws, and a test sees it.
import assert from 'node:assert/strict';
import type { WireError } from '../../src/wire/error.js';

/** Thrown by a strict buffer on an index outside [lo, hi). */
export class OutOfBoundsAccess extends RangeError {}

function isCanonicalNumericString(p: string): boolean {
  return p === '-0' || String(Number(p)) === p;
}

/**
 * `bytes` behind a Proxy that throws OutOfBoundsAccess on any numeric index
 * (read or write) outside [lo, hi) — by default the whole array. Everything
 * else (length, buffer, byteOffset, methods) is forwarded to the real array,
 * so `sum()`'s word-at-a-time path, which reads `buf.buffer` directly, still
 * works; it is the one access this cannot watch.
 */
export function strictBytes(bytes: Uint8Array, lo = 0, hi = bytes.length): Uint8Array {
  const check = (p: string): number => {
    const i = Number(p);
    if (!Number.isInteger(i) || Object.is(i, -0) || i < lo || i >= hi) {
      throw new OutOfBoundsAccess(`index ${p} outside [${lo}, ${hi})`);
    }
    return i;
  };
  return new Proxy(bytes, {
    get(t, prop) {
      if (typeof prop === 'string' && isCanonicalNumericString(prop)) return t[check(prop)];
      const v: unknown = Reflect.get(t, prop, t);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
    set(t, prop, value) {
      if (typeof prop === 'string' && isCanonicalNumericString(prop)) {
        t[check(prop)] = value as number;
        return true;
      }
      return Reflect.set(t, prop, value, t);
    },
    has(t, prop) {
      if (typeof prop === 'string' && isCanonicalNumericString(prop)) check(prop);
      return Reflect.has(t, prop);
    },
  });
}

/** Every WireError reason, checked against the type in both directions. */
export const WIRE_ERRORS = [
  'truncated', 'bad-length', 'bad-header-length', 'bad-version', 'bad-option',
  'bad-type', 'too-many-tags', 'unsupported',
] as const satisfies readonly WireError[];
type Unlisted = Exclude<WireError, (typeof WIRE_ERRORS)[number]>;
const everyReasonListed: [Unlisted] extends [never] ? true : Unlisted = true;
void everyReasonListed;

export function assertWireResult(e: unknown): asserts e is WireError | null {
  if (e === null) return;
  assert.ok((WIRE_ERRORS as readonly unknown[]).includes(e), `not a WireError: ${String(e)}`);
}

/** Names of the getters on a view's class (and its base classes). */
export function getterNames(view: object): string[] {
  const names: string[] = [];
  for (let p = Object.getPrototypeOf(view) as object | null; p !== null && p !== Object.prototype;
    p = Object.getPrototypeOf(p) as object | null) {
    for (const [name, d] of Object.entries(Object.getOwnPropertyDescriptors(p))) {
      if (d.get !== undefined && !names.includes(name)) names.push(name);
    }
  }
  return names;
}

/**
 * Calls every getter of `view`, then every method that takes no arguments
 * (verifyChecksum(), fillChecksum(), ...), except `skip`. Returns what the
 * getters returned, for tests that compare them.
 */
export function exerciseView(view: object, skip: readonly string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const rec = view as Record<string, unknown>;
  for (const name of getterNames(view)) {
    if (!skip.includes(name)) out[name] = rec[name];
  }
  for (let p = Object.getPrototypeOf(view) as object | null; p !== null && p !== Object.prototype;
    p = Object.getPrototypeOf(p) as object | null) {
    for (const [name, d] of Object.entries(Object.getOwnPropertyDescriptors(p))) {
      if (name === 'constructor' || skip.includes(name)) continue;
      if (typeof d.value === 'function' && (d.value as () => unknown).length === 0) {
        (d.value as () => unknown).call(view);
      }
    }
  }
  return out;
}

interface Wrappable {
  wrap(buf: Uint8Array, off: number, len: number): WireError | null;
}

/**
 * Wraps a fresh view over a strict copy of `bytes` (off 0, len = length).
 * The result must be null or a WireError; on success every getter and
 * no-argument method must stay inside the bytes. Returns wrap's answer and
 * the view (bound to the strict buffer) for further checks.
 */
export function wrapStrict<V extends Wrappable>(make: () => V, bytes: Uint8Array, skip: readonly string[] = []):
  { error: WireError | null; view: V } {
  const view = make();
  const strict = strictBytes(bytes.slice());
  let error: WireError | null;
  try {
    error = view.wrap(strict, 0, bytes.length);
  } catch (e) {
    assert.fail(`wrap threw on ${hex(bytes)}: ${String(e)}`);
  }
  assertWireResult(error);
  if (error === null) {
    try {
      exerciseView(view, skip);
    } catch (e) {
      assert.fail(`a getter read outside the bytes after a successful wrap of ${hex(bytes)}: ${String(e)}`);
    }
  }
  return { error, view };
}

export function hex(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += b[i]!.toString(16).padStart(2, '0');
  return s;
}

export function fromHex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  if (clean.length % 2 !== 0 || /[^0-9a-f]/i.test(clean)) throw new Error(`bad hex: ${s}`);
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}
