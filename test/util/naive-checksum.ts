// A deliberately plain Internet checksum, sharing no code with
// src/wire/checksum.ts, to check it and the views' fill methods against.

/** One's-complement sum of big-endian 16-bit words over `bytes`, folded (RFC 1071 §4.1, in full). */
export function naiveSum(bytes: ArrayLike<number>, off = 0, len = bytes.length - off): number {
  let s = 0;
  for (let i = 0; i < len; i += 2) {
    const hi = bytes[off + i]!;
    const lo = i + 1 < len ? bytes[off + i + 1]! : 0;
    s += hi * 256 + lo;
    while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 65536);
  }
  return s;
}

/**
 * The checksum a transport header should carry: ~sum over a pseudo-header
 * built byte by byte (addresses of `addrLen` bytes at srcOff/dstOff, zero,
 * protocol, length — RFC 768 / RFC 8200 §8.1 layouts give the same sum) and
 * the segment with its checksum field at `csumOff` taken as zero.
 */
export function naiveChecksum(buf: Uint8Array, srcOff: number, dstOff: number, addrLen: number, protocol: number,
  segOff: number, segLen: number, csumOff: number): number {
  const bytes: number[] = [];
  for (let i = 0; i < addrLen; i++) bytes.push(buf[srcOff + i]!);
  for (let i = 0; i < addrLen; i++) bytes.push(buf[dstOff + i]!);
  if (addrLen === 4) {
    bytes.push(0, protocol, (segLen >>> 8) & 0xff, segLen & 0xff);
  } else {
    bytes.push(segLen >>> 24, (segLen >>> 16) & 0xff, (segLen >>> 8) & 0xff, segLen & 0xff, 0, 0, 0, protocol);
  }
  for (let i = 0; i < segLen; i++) {
    const at = segOff + i;
    bytes.push(at === csumOff || at === csumOff + 1 ? 0 : buf[at]!);
  }
  return 0xffff - naiveSum(bytes);
}
