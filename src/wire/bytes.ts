// Big-endian field access on byte arrays, and the number forms vswitch uses
// for addresses: a MAC is a 48-bit integer (exact in a double), an IPv4
// address an unsigned 32-bit integer. Neither allocates.

export function get16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

export function set16(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 8;
  b[o + 1] = v;
}

export function get32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

export function set32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

export function getMac(b: Uint8Array, o: number): number {
  return get16(b, o) * 0x100000000 + get32(b, o + 2);
}

/**
 * The low 32 bits of the MAC at `b[o..o+6]`, as a signed integer (its high 16
 * bits are `get16(b, o)`). The data path compares MACs as these two small
 * integers: a whole MAC is a 48-bit number, which V8 boxes when it crosses a call.
 */
export function getMacLo(b: Uint8Array, o: number): number {
  return (b[o + 2]! << 24) | (b[o + 3]! << 16) | (b[o + 4]! << 8) | b[o + 5]!;
}

/** The MAC (48-bit number) from its high 16 bits and its low 32 bits, signed as getMacLo gives them. */
export function macFromHiLo(hi: number, lo: number): number {
  return hi * 0x100000000 + (lo >>> 0);
}

export function setMac(b: Uint8Array, o: number, mac: number): void {
  set16(b, o, Math.floor(mac / 0x100000000));
  set32(b, o + 2, mac >>> 0);
}

export const BROADCAST_MAC = 0xffffffffffff;

/** Group (multicast or broadcast) bit: least significant bit of the first octet. */
export function isMulticastMac(mac: number): boolean {
  return (Math.floor(mac / 0x10000000000) & 1) === 1;
}

export function macToString(mac: number): string {
  const hex = mac.toString(16).padStart(12, '0');
  return hex.replace(/(..)(?!$)/g, '$1:');
}

/** Parses "aa:bb:cc:dd:ee:ff" (or '-' separated); null if malformed. */
export function macFromString(s: string): number | null {
  const m = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(s);
  if (m === null) return null;
  return parseInt(m.slice(1).join(''), 16);
}

export function ipv4ToString(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`;
}

/** Parses dotted-quad IPv4; null if malformed. */
export function ipv4FromString(s: string): number | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let a = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    a = a * 256 + n;
  }
  return a;
}

/** Parses an IPv6 address (RFC 4291 text forms, incl. "::" and embedded IPv4); null if malformed. */
export function ipv6FromString(s: string): Uint8Array | null {
  let text = s;
  const out = new Uint8Array(16);
  let tail4: number | null = null;
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    tail4 = ipv4FromString(text.slice(lastColon + 1));
    if (tail4 === null) return null;
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const groups = (h: string) => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const total = head.length + tail.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return null;
  const words = [...head, ...new Array<string>(8 - total).fill('0'), ...tail];
  for (let i = 0; i < 8; i++) {
    const w = words[i]!;
    if (!/^[0-9a-f]{1,4}$/i.test(w)) return null;
    set16(out, i * 2, parseInt(w, 16));
  }
  if (tail4 !== null) set32(out, 12, tail4);
  return out;
}

/** RFC 5952 canonical text form. */
export function ipv6ToString(b: Uint8Array, o = 0): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(get16(b, o + i * 2));
  // Longest run of two or more zero words becomes "::" (first one on ties).
  let bestStart = -1, bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(w);
  return `${hex(w.slice(0, bestStart))}::${hex(w.slice(bestStart + bestLen))}`;
}
