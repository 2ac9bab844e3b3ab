// The Internet checksum's hot loop as a hand-assembled WebAssembly SIMD
// function, bound to the memory that holds packet buffers, so checksums over
// pooled packets run without copying (DESIGN.md §7: plain JS reaches ~0.06×
// memcpy, SIMD gets to the same order as memcpy).
//
// The module is written out instruction by instruction below; the comments
// give the WebAssembly text form. Its exports:
//
//   (func $sumLE (param $p i32) (param $n i32) (result i32))
//     the folded one's-complement sum of little-endian 16-bit words in
//     memory[p .. p+n); the caller swaps bytes to get the network-order sum;
//   (func $copySumLE (param $p i32) (param $n i32) (param $d i32) (result i32))
//     the same, while copying memory[p .. p+n) to d (regions must not overlap);
//   (func $copy (param $d i32) (param $s i32) (param $n i32))
//     memory.copy, which on shared memory is far faster than
//     TypedArray.copyWithin (V8 copies shared buffers with atomic-safe loops).

import type { ChecksumKernel } from './checksum.js';

// --- a minimal encoder -----------------------------------------------------

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

function str(s: string): number[] {
  const bytes = Array.from(s, (c) => c.charCodeAt(0));
  return [...uleb(bytes.length), ...bytes];
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function vec(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

// Value types and opcodes used (WebAssembly core spec 2.0 §5.4, SIMD §5.4.8).
const I32 = 0x7f, I64 = 0x7e, V128 = 0x7b, VOID = 0x40;
const op = {
  block: 0x02, loop: 0x03, if: 0x04, end: 0x0b, br: 0x0c, brIf: 0x0d, select: 0x1b,
  localGet: 0x20, localSet: 0x21, localTee: 0x22,
  i32Load8U: 0x2d, i32Load16U: 0x2f, i32Store8: 0x3a, i32Store16: 0x3b,
  i32Const: 0x41, i64Const: 0x42,
  i32LtU: 0x49,
  i32Add: 0x6a, i32Sub: 0x6b, i32And: 0x71,
  i64Add: 0x7c, i64And: 0x83, i64ShrU: 0x88,
  i32WrapI64: 0xa7, i64ExtendI32U: 0xad,
} as const;
const SIMD = 0xfd;
const simd = {
  v128Load: 0x00, v128Store: 0x0b, v128Const: 0x0c, i64x2ExtractLane: 0x1d,
  i32x4ExtaddPairwiseI16x8U: 0x7f, i32x4Add: 0xae,
  i64x2ExtendLowI32x4U: 0xc9, i64x2ExtendHighI32x4U: 0xca, i64x2Add: 0xce,
} as const;

const get = (i: number) => [op.localGet, i];
const set = (i: number) => [op.localSet, i];
const tee = (i: number) => [op.localTee, i];
const i32c = (n: number) => [op.i32Const, ...sleb(n)];
const i64c = (n: number) => [op.i64Const, ...sleb(n)];
const s = (o: number) => [SIMD, ...uleb(o)];
// memarg: alignment exponent, offset
const v128Load = (offset: number) => [...s(simd.v128Load), 0, ...uleb(offset)];
const v128Store = (offset: number) => [...s(simd.v128Store), 0, ...uleb(offset)];
const v128Zero = () => [...s(simd.v128Const), ...new Array<number>(16).fill(0)];

/** Chunk of input whose lane sums cannot overflow 32 bits: each 64-byte
 *  step adds < 2^17 to a lane, and 2^14 steps stay below 2^31. */
const CHUNK = 1 << 20;

/**
 * The summing loop. Without copy: (func (param $p i32) (param $n i32) (result i32)).
 * With copy: (func (param $p i32) (param $n i32) (param $d i32) (result i32)),
 * which also stores every byte it reads at $d: one pass for "copy this
 * payload and tell me its checksum".
 */
function sumBody(withCopy: boolean): number[] {
  // Params: 0 p, 1 n, [2 d]; then locals.
  const P = 0, N = 1, D = 2;
  const base = withCopy ? 3 : 2;
  const END = base, CHUNK_END = base + 1, REM = base + 2, DELTA = base + 3, W = base + 4;
  const ACC = base + 5, A0 = base + 6, T = base + 10;
  const code: number[] = [];
  const emit = (...parts: number[][]) => { for (const p of parts) code.push(...p); };
  /** Push the destination address for the current p (p + delta). */
  const dst = () => [...get(P), ...get(DELTA), op.i32Add];
  /** Stack: [addr?] v -> accumulate v into A_k, storing it first when copying. */
  const step = (k: number, offset: number) => {
    if (withCopy) {
      emit(dst(), get(P), v128Load(offset), tee(T), v128Store(offset));
      emit(get(A0 + k), get(T), s(simd.i32x4ExtaddPairwiseI16x8U), s(simd.i32x4Add), set(A0 + k));
    } else {
      emit(get(A0 + k), get(P), v128Load(offset), s(simd.i32x4ExtaddPairwiseI16x8U), s(simd.i32x4Add), set(A0 + k));
    }
  };

  // acc = 0; end = p + n; delta = d - p
  emit(i64c(0), set(ACC), get(P), get(N), [op.i32Add], set(END));
  if (withCopy) emit(get(D), get(P), [op.i32Sub], set(DELTA));

  // Main loop, 64 bytes a step in four independent accumulators, chunked.
  emit([op.block, VOID], [op.loop, VOID]);
  //   rem = end - p; if (rem < 64) break
  emit(get(END), get(P), [op.i32Sub], tee(REM), i32c(64), [op.i32LtU], [op.brIf, 1]);
  //   chunkEnd = p + (min(rem, CHUNK) & ~63)
  emit(get(REM), i32c(CHUNK), get(REM), i32c(CHUNK), [op.i32LtU], [op.select],
    i32c(-64), [op.i32And], get(P), [op.i32Add], set(CHUNK_END));
  for (let k = 0; k < 4; k++) emit(v128Zero(), set(A0 + k));
  emit([op.loop, VOID]);
  for (let k = 0; k < 4; k++) step(k, 16 * k);
  //   p += 64; continue while p < chunkEnd
  emit(get(P), i32c(64), [op.i32Add], tee(P), get(CHUNK_END), [op.i32LtU], [op.brIf, 0], [op.end]);
  // Widen the four accumulators into i64x2 and add both lanes to acc.
  emit(get(A0), s(simd.i64x2ExtendLowI32x4U), get(A0), s(simd.i64x2ExtendHighI32x4U), s(simd.i64x2Add));
  for (let k = 1; k < 4; k++) {
    emit(get(A0 + k), s(simd.i64x2ExtendLowI32x4U), s(simd.i64x2Add));
    emit(get(A0 + k), s(simd.i64x2ExtendHighI32x4U), s(simd.i64x2Add));
  }
  emit(tee(A0), s(simd.i64x2ExtractLane), [0], get(A0), s(simd.i64x2ExtractLane), [1], [op.i64Add],
    get(ACC), [op.i64Add], set(ACC));
  emit([op.br, 0], [op.end], [op.end]);

  // 16 bytes a step for the remainder (at most 3 steps).
  emit(v128Zero(), set(A0));
  emit([op.block, VOID], [op.loop, VOID]);
  emit(get(END), get(P), [op.i32Sub], i32c(16), [op.i32LtU], [op.brIf, 1]);
  step(0, 0);
  emit(get(P), i32c(16), [op.i32Add], set(P), [op.br, 0], [op.end], [op.end]);
  emit(get(A0), s(simd.i64x2ExtendLowI32x4U), get(A0), s(simd.i64x2ExtendHighI32x4U), s(simd.i64x2Add),
    tee(A0), s(simd.i64x2ExtractLane), [0], get(A0), s(simd.i64x2ExtractLane), [1], [op.i64Add],
    get(ACC), [op.i64Add], set(ACC));

  // 2 bytes a step.
  emit([op.block, VOID], [op.loop, VOID]);
  emit(get(END), get(P), [op.i32Sub], i32c(2), [op.i32LtU], [op.brIf, 1]);
  if (withCopy) {
    emit(dst(), get(P), [op.i32Load16U, 0, 0], tee(W), [op.i32Store16, 0, 0]);
    emit(get(ACC), get(W), [op.i64ExtendI32U], [op.i64Add], set(ACC));
  } else {
    emit(get(ACC), get(P), [op.i32Load16U, 0, 0], [op.i64ExtendI32U], [op.i64Add], set(ACC));
  }
  emit(get(P), i32c(2), [op.i32Add], set(P), [op.br, 0], [op.end], [op.end]);

  // A trailing odd byte is the low byte of a little-endian word.
  emit(get(P), get(END), [op.i32LtU], [op.if, VOID]);
  if (withCopy) {
    emit(dst(), get(P), [op.i32Load8U, 0, 0], tee(W), [op.i32Store8, 0, 0]);
    emit(get(ACC), get(W), [op.i64ExtendI32U], [op.i64Add], set(ACC), [op.end]);
  } else {
    emit(get(ACC), get(P), [op.i32Load8U, 0, 0], [op.i64ExtendI32U], [op.i64Add], set(ACC), [op.end]);
  }

  // Fold to 16 bits: acc = (acc & 0xffff) + (acc >> 16), four times.
  for (let k = 0; k < 4; k++) {
    emit(get(ACC), i64c(0xffff), [op.i64And], get(ACC), i64c(16), [op.i64ShrU], [op.i64Add], set(ACC));
  }
  emit(get(ACC), [op.i32WrapI64], [op.end]);

  // end, chunkEnd, rem, delta, w: i32; acc: i64; a0..a3, t: v128
  const locals = vec([[5, I32], [1, I64], [5, V128]]);
  const fn = [...locals, ...code];
  return [...uleb(fn.length), ...fn];
}

/** (func $copy (param $d i32) (param $s i32) (param $n i32) memory.copy) */
function copyBody(): number[] {
  const fn = [0, ...get(0), ...get(1), ...get(2), 0xfc, ...uleb(10), 0, 0, op.end];
  return [...uleb(fn.length), ...fn];
}

/** The module's bytes, importing `env.memory` with the given limits. */
export function checksumModuleBytes(shared: boolean): Uint8Array {
  // Shared memories must declare a maximum; 65536 pages (4 GiB) accepts any.
  const limits = shared ? [0x03, ...uleb(1), ...uleb(65536)] : [0x00, ...uleb(1)];
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([
      [0x60, 2, I32, I32, 1, I32],          // 0: (p, n) -> sum
      [0x60, 3, I32, I32, I32, 1, I32],     // 1: (p, n, d) -> sum
      [0x60, 3, I32, I32, I32, 0],          // 2: (d, s, n) -> ()
    ])),
    ...section(2, vec([[...str('env'), ...str('memory'), 0x02, ...limits]])),
    ...section(3, vec([[0], [1], [2]])),
    ...section(7, vec([
      [...str('sumLE'), 0x00, 0],
      [...str('copySumLE'), 0x00, 1],
      [...str('copy'), 0x00, 2],
    ])),
    ...section(10, vec([sumBody(false), sumBody(true), copyBody()])),
  ];
  return new Uint8Array(bytes);
}

let simdSupport: boolean | null = null;

/** Whether this engine validates the SIMD module (Node ≥ 16.4 does). */
export function simdAvailable(): boolean {
  if (simdSupport === null) {
    try {
      simdSupport = typeof WebAssembly === 'object' && WebAssembly.validate(checksumModuleBytes(false));
    } catch {
      simdSupport = false;
    }
  }
  return simdSupport === true;
}

const modules = new Map<boolean, WebAssembly.Module>();

/**
 * A checksum kernel over `memory`, or null where WebAssembly SIMD is not
 * available (callers then use the portable loop). The memory must not grow
 * while buffers are in use: growing replaces its ArrayBuffer.
 */
export function simdChecksumKernel(memory: WebAssembly.Memory): ChecksumKernel | null {
  if (!simdAvailable()) return null;
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  let mod = modules.get(shared);
  if (mod === undefined) {
    mod = new WebAssembly.Module(checksumModuleBytes(shared));
    modules.set(shared, mod);
  }
  const instance = new WebAssembly.Instance(mod, { env: { memory } });
  const x = instance.exports;
  return {
    buffer: memory.buffer,
    sumLE: x['sumLE'] as (p: number, n: number) => number,
    copySumLE: x['copySumLE'] as (p: number, n: number, d: number) => number,
    copy: x['copy'] as (d: number, s: number, n: number) => void,
  };
}
