// Which queue a frame takes: a hash of what identifies its flow (addresses,
// protocol, ports), so every packet of a flow keeps its order on one queue.
// Reads fixed offsets of untagged IPv4/IPv6 frames; anything else hashes by
// its MAC addresses. Not cryptographic: the guest chooses its own flows anyway.

import { get16, get32 } from '../wire/bytes.js';

function mix(h: number, x: number): number {
  h = Math.imul(h ^ x, 0x9e3779b1);
  return (h ^ (h >>> 15)) >>> 0;
}

export function flowHash(b: Uint8Array, off: number, len: number): number {
  let h = 0x811c9dc5;
  const type = len >= 14 ? get16(b, off + 12) : 0;
  if (type === 0x0800 && len >= 34) {
    const ihl = (b[off + 14]! & 0x0f) * 4;
    h = mix(h, get32(b, off + 26));
    h = mix(h, get32(b, off + 30));
    h = mix(h, b[off + 23]!);
    const l4 = off + 14 + ihl;
    if ((b[off + 23] === 6 || b[off + 23] === 17) && l4 + 4 <= off + len) h = mix(h, get32(b, l4));
    return h;
  }
  if (type === 0x86dd && len >= 54) {
    for (let i = 0; i < 32; i += 4) h = mix(h, get32(b, off + 22 + i));
    const nh = b[off + 20]!;
    h = mix(h, nh);
    if ((nh === 6 || nh === 17) && len >= 58) h = mix(h, get32(b, off + 54));
    return h;
  }
  if (len >= 12) {
    h = mix(h, get32(b, off));
    h = mix(h, get32(b, off + 4));
    h = mix(h, get32(b, off + 8));
  }
  return h;
}
