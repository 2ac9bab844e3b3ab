// Internet checksum (RFC 1071), incremental update (RFC 1624) and the
// IPv4/IPv6 pseudo-headers used by TCP, UDP and ICMPv6.
//
// Sums here are "partial sums": 16-bit one's-complement sums, folded to
// 0..0xffff and NOT complemented. A checksum field holds ~sum. Partial sums
// compose: sum(a ++ b) = add(sum(a), sum(b)) when a has even length.
//
// Large regions are summed by an accelerated kernel when the bytes live in a
// memory that one is registered for (see checksum-simd.ts: WebAssembly SIMD
// over the packet memory); everything else uses the portable loop below.

/** A summing kernel bound to one ArrayBuffer (or SharedArrayBuffer). */
export interface ChecksumKernel {
  readonly buffer: ArrayBufferLike;
  /**
   * One's-complement sum of the 16-bit words starting at byte address `addr`
   * of `buffer`, pairing bytes as (addr, addr+1), (addr+2, addr+3), ...,
   * with the words read LITTLE-endian, folded to 16 bits. A trailing odd
   * byte counts as the low byte of a word.
   */
  sumLE(addr: number, len: number): number;
  /** sumLE of [src, src+len) while copying it to dst (non-overlapping). */
  copySumLE(src: number, len: number, dst: number): number;
  /** memmove within the buffer. */
  copy(dst: number, src: number, len: number): void;
}

const kernels: ChecksumKernel[] = [];
/** Below this many bytes the call into a kernel costs more than it saves. */
let kernelThreshold = 16;

export function registerChecksumKernel(kernel: ChecksumKernel): void {
  if (!kernels.includes(kernel)) kernels.push(kernel);
  lastArray = null;
}

export function unregisterChecksumKernel(kernel: ChecksumKernel): void {
  const i = kernels.indexOf(kernel);
  if (i >= 0) kernels.splice(i, 1);
  lastArray = null;
}

/** For benchmarks and tests: regions shorter than this use the portable loop. */
export function setChecksumKernelThreshold(bytes: number): void {
  kernelThreshold = bytes;
}

function kernelFor(buffer: ArrayBufferLike): ChecksumKernel | null {
  for (let i = 0; i < kernels.length; i++) {
    const k = kernels[i]!;
    if (k.buffer === buffer) return k;
  }
  return null;
}

// Reading `.buffer` and `.byteOffset` of a view over WebAssembly or shared
// memory costs more than summing a short region; packets all share one view
// of the packet memory, so remember the last array seen and its kernel.
let lastArray: Uint8Array | null = null;
let lastKernel: ChecksumKernel | null = null;
let lastByteOffset = 0;

function lookup(buf: Uint8Array): ChecksumKernel | null {
  if (buf !== lastArray) {
    lastArray = buf;
    lastKernel = kernelFor(buf.buffer);
    lastByteOffset = buf.byteOffset;
  }
  return lastKernel;
}

/** Fold a non-negative sum (< 2^53) to 16 bits with end-around carry. */
export function fold(sum: number): number {
  // Two rounds suffice below 2^32; loop for anything larger.
  while (sum > 0xffff) {
    sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  }
  return sum;
}

/** One's-complement addition of two partial sums. */
export function addSums(a: number, b: number): number {
  const s = a + b;
  return (s & 0xffff) + (s >>> 16);
}

function swap16(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8);
}

/**
 * Partial sum of `len` bytes of `buf` from `off`, big-endian words as the
 * Internet checksum defines them, folded to 16 bits, plus `initial`.
 * Never reads outside [off, off+len); the caller guarantees that range is in
 * `buf` (wire views check lengths before they call this).
 */
export function sum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let s: number;
  if (len >= kernelThreshold && kernels.length > 0) {
    const k = lookup(buf);
    if (k !== null) {
      s = swap16(k.sumLE(lastByteOffset + off, len));
      return addSums(s, initial);
    }
  }
  s = len >= 64 ? sumWide(buf, off, len) : sumBytes(buf, off, len);
  return addSums(s, initial);
}

/**
 * Copy `len` bytes of `buf` from `src` to `dst` (absolute offsets, regions
 * must not overlap) and return their partial sum plus `initial`: one pass
 * over packet memory where a kernel is registered.
 */
export function copySum(buf: Uint8Array, dst: number, src: number, len: number, initial = 0): number {
  if (len >= kernelThreshold && kernels.length > 0) {
    const k = lookup(buf);
    if (k !== null) {
      return addSums(swap16(k.copySumLE(lastByteOffset + src, len, lastByteOffset + dst)), initial);
    }
  }
  buf.copyWithin(dst, src, src + len);
  return sum(buf, dst, len, initial);
}

/**
 * Copy within one buffer (memmove). Uses the kernel's memory.copy for packet
 * memory: V8's copyWithin on shared memory runs at half of memcpy speed.
 */
export function copyBytes(buf: Uint8Array, dst: number, src: number, len: number): void {
  if (len >= 64 && kernels.length > 0) {
    const k = lookup(buf);
    if (k !== null) {
      k.copy(lastByteOffset + dst, lastByteOffset + src, len);
      return;
    }
  }
  buf.copyWithin(dst, src, src + len);
}

/** Simple loop for short regions; big-endian words, folded. */
function sumBytes(buf: Uint8Array, off: number, len: number): number {
  let s = 0;
  const end = off + (len & ~1);
  for (let i = off; i < end; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (len & 1) s += buf[off + len - 1]! << 8;
  return fold(s);
}

/**
 * Word-at-a-time loop: 32-bit little-endian loads from a 4-aligned address,
 * four accumulators. Odd start addresses use RFC 1071's byte-order
 * independence: summing with the other byte pairing yields the swapped sum.
 */
function sumWide(buf: Uint8Array, off: number, len: number): number {
  const addr = buf.byteOffset + off;
  if (addr & 1) {
    // First byte is the high byte of word 0; the rest is summed with pairs
    // shifted by one, which is the byte-swapped sum.
    const rest = sumWide2(buf, off + 1, len - 1);
    return addSums(buf[off]! << 8, swap16(rest));
  }
  return sumWide2(buf, off, len);
}

// One 32-bit view per backing buffer, cached, so the portable path
// allocates nothing per call either.
let u32Buffer: ArrayBufferLike | null = null;
let u32View: Uint32Array<ArrayBufferLike> = new Uint32Array(0);

function wordsOf(buffer: ArrayBufferLike): Uint32Array {
  if (buffer !== u32Buffer) {
    u32Buffer = buffer;
    u32View = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
  }
  return u32View;
}

/** Precondition: buf.byteOffset + off is even. */
function sumWide2(buf: Uint8Array, off: number, len: number): number {
  let s = 0;
  let i = off;
  const end = off + len;
  if ((buf.byteOffset + i) & 2 && len >= 2) {
    s += (buf[i]! << 8) | buf[i + 1]!;
    i += 2;
  }
  const words = (end - i) >>> 2;
  if (words > 0) {
    const u32 = wordsOf(buf.buffer);
    let w = (buf.byteOffset + i) >>> 2;
    const wEnd = w + words;
    const w4 = w + (words & ~3);
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    // Each accumulator gains < 2^17 per step; folding every 4096 steps keeps
    // them far below 2^31, in V8's small-integer range.
    while (w < w4) {
      const stop = Math.min(w4, w + 4096 * 4);
      for (; w < stop; w += 4) {
        const x0 = u32[w]!, x1 = u32[w + 1]!, x2 = u32[w + 2]!, x3 = u32[w + 3]!;
        a0 += (x0 & 0xffff) + (x0 >>> 16);
        a1 += (x1 & 0xffff) + (x1 >>> 16);
        a2 += (x2 & 0xffff) + (x2 >>> 16);
        a3 += (x3 & 0xffff) + (x3 >>> 16);
      }
      a0 = fold(a0 + a1 + a2 + a3);
      a1 = a2 = a3 = 0;
    }
    for (; w < wEnd; w++) {
      const x = u32[w]!;
      a0 += (x & 0xffff) + (x >>> 16);
    }
    // Little-endian loads pair the bytes the right way round but swap them.
    s += swap16(fold(a0));
    i += words << 2;
  }
  for (; i + 1 < end; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) s += buf[i]! << 8;
  return fold(s);
}

/** The checksum field value for a region: ~sum, never mangled. */
export function checksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return ~sum(buf, off, len, initial) & 0xffff;
}

/** Complement of a partial sum, as stored in a checksum field. */
export function finish(partial: number): number {
  return ~partial & 0xffff;
}

/**
 * RFC 1624 eqn. 3: new checksum field after a 16-bit word changes from
 * `oldWord` to `newWord`, given the old checksum field `oldCsum`.
 * HC' = ~(~HC + ~m + m')
 */
export function updateChecksum16(oldCsum: number, oldWord: number, newWord: number): number {
  let s = (~oldCsum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** RFC 1624 for a 32-bit field (e.g. a TCP sequence number or IPv4 address). */
export function updateChecksum32(oldCsum: number, oldWord: number, newWord: number): number {
  const c = updateChecksum16(oldCsum, oldWord >>> 16, newWord >>> 16);
  return updateChecksum16(c, oldWord & 0xffff, newWord & 0xffff);
}

/**
 * Partial sum of the IPv4 pseudo-header (RFC 793 §3.1 / RFC 768): source and
 * destination addresses read from `buf` at `srcOff`/`dstOff` (4 bytes each),
 * zero, protocol, and the upper-layer length.
 */
export function pseudoHeaderSumV4(
  buf: Uint8Array, srcOff: number, dstOff: number, protocol: number, length: number,
): number {
  const s =
    ((buf[srcOff]! << 8) | buf[srcOff + 1]!) + ((buf[srcOff + 2]! << 8) | buf[srcOff + 3]!) +
    ((buf[dstOff]! << 8) | buf[dstOff + 1]!) + ((buf[dstOff + 2]! << 8) | buf[dstOff + 3]!) +
    protocol + (length & 0xffff) + Math.floor(length / 0x10000);
  return fold(s);
}

/**
 * Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1): source and
 * destination addresses (16 bytes each), 32-bit upper-layer length, next header.
 */
export function pseudoHeaderSumV6(
  buf: Uint8Array, srcOff: number, dstOff: number, nextHeader: number, length: number,
): number {
  let s = nextHeader + (length & 0xffff) + Math.floor(length / 0x10000);
  for (let i = 0; i < 16; i += 2) {
    s += (buf[srcOff + i]! << 8) | buf[srcOff + i + 1]!;
    s += (buf[dstOff + i]! << 8) | buf[dstOff + i + 1]!;
  }
  return fold(s);
}
