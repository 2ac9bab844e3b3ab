// The out-of-bounds detector the wire tests rely on must itself catch reads
// one byte too far, or every "never reads out of bounds" test passes vacuously.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EMPTY, type WireError } from '../../../src/wire/error.js';
import { sum } from '../../../src/wire/checksum.js';
import { OutOfBoundsAccess, exerciseView, getterNames, strictBytes, wrapStrict } from '../../util/strict-bytes.js';

test('strict bytes throw on any index outside the range, read or write', () => {
  const s = strictBytes(new Uint8Array([1, 2, 3, 4]));
  assert.deepStrictEqual([s[0], s[3], s.length], [1, 4, 4]);
  for (const i of [-1, 4, 1.5, 100]) {
    assert.throws(() => s[i], OutOfBoundsAccess, `read ${i}`);
    assert.throws(() => { s[i] = 0; }, OutOfBoundsAccess, `write ${i}`);
  }
  const w = strictBytes(new Uint8Array(8), 2, 6);
  assert.throws(() => w[1], OutOfBoundsAccess);
  assert.throws(() => w[6], OutOfBoundsAccess);
  w[5] = 9;
  // Methods and properties still work on the real array.
  assert.deepStrictEqual([w.slice(4, 6), w.byteOffset, w.buffer.byteLength], [new Uint8Array([0, 9]), 0, 8]);
  w.set([7], 2);
  assert.equal(w[2], 7);
  // sum() works on it (its wide loop reads the backing buffer directly).
  assert.equal(sum(strictBytes(new Uint8Array(100).fill(1)), 0, 100), 50 * 0x0101);
});

// A view with the classic bug: wrap checks 4 bytes, a getter reads a fifth.
class OffByOneView {
  buf: Uint8Array = EMPTY;
  off = 0;
  len = 0;
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (len < 4) return 'truncated';
    this.buf = buf; this.off = off; this.len = len;
    return null;
  }
  get first(): number { return this.buf[this.off]!; }
  get fifth(): number { return this.buf[this.off + 4]!; }
}

class ThrowingWrap {
  wrap(buf: Uint8Array): WireError | null {
    if (buf[0] === 0xff) throw new Error('bug');
    return null;
  }
}

test('the view checks catch an off-by-one getter and a throwing wrap', () => {
  assert.deepStrictEqual(getterNames(new OffByOneView()), ['first', 'fifth']);
  assert.doesNotThrow(() => wrapStrict(() => new OffByOneView(), new Uint8Array(5)));
  assert.throws(() => wrapStrict(() => new OffByOneView(), new Uint8Array(4)), /read outside the bytes/);
  assert.equal(wrapStrict(() => new OffByOneView(), new Uint8Array(3)).error, 'truncated');
  assert.throws(() => wrapStrict(() => new ThrowingWrap(), new Uint8Array([0xff])), /wrap threw/);
  const v = new OffByOneView();
  v.wrap(new Uint8Array([1, 2, 3, 4, 5]), 0, 5);
  assert.deepStrictEqual(exerciseView(v), { first: 1, fifth: 5 });
});
