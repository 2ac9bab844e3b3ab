// MAC learning table: (VLAN, MAC) → port, with aging and static entries.
// Open addressing with linear probing in typed arrays, so lookups and
// learning on the data path allocate nothing; deletion shifts entries back
// instead of leaving tombstones, so probe chains stay short under churn.

import { get16, getMacLo, macFromHiLo } from '../wire/bytes.js';

export const LearnResult = {
  /** A new entry was made. */
  NEW: 0,
  /** Known on the same port; its age was reset. */
  REFRESHED: 1,
  /** Known on another port: moved (see `movedFrom`). */
  MOVED: 2,
  /** A static entry names another port: the frame claims a MAC it may not. */
  STATIC_CONFLICT: 3,
  /** No room (the table is at its load limit): not learned, the MAC keeps being flooded to. */
  FULL: 4,
} as const;
export type LearnResult = (typeof LearnResult)[keyof typeof LearnResult];

export interface MacEntry {
  vlan: number;
  mac: number;
  port: number;
  isStatic: boolean;
  /** Milliseconds since the entry was last seen (0 for static entries). */
  ageMs: number;
}

const EMPTY = -1;

/** A MAC (48-bit number) as its high 16 bits and its low 32 bits, signed. */
const macHi = (mac: number): number => Math.floor(mac / 0x100000000) & 0xffff;
const macLo = (mac: number): number => (mac % 0x100000000) | 0;

export class MacTable {
  private readonly mask: number;
  private readonly macHi: Uint16Array;
  /** The low 32 bits as a signed integer: a small integer to V8, never a boxed number. */
  private readonly macLo: Int32Array;
  private readonly vlans: Uint16Array;
  private readonly ports: Int32Array;
  private readonly seen: Float64Array;
  private readonly statics: Uint8Array;
  private count = 0;
  private readonly limit: number;
  /** Port a MOVED entry was on before. */
  movedFrom = -1;
  /** Learned (non-static) entries per port index. */
  private learned = new Int32Array(64);

  constructor(readonly capacity = 16384, public agingMs = 300_000) {
    if (capacity < 8 || (capacity & (capacity - 1)) !== 0) throw new RangeError('MAC table capacity must be a power of two ≥ 8');
    this.mask = capacity - 1;
    this.macHi = new Uint16Array(capacity);
    this.macLo = new Int32Array(capacity);
    this.vlans = new Uint16Array(capacity);
    this.ports = new Int32Array(capacity).fill(EMPTY);
    this.seen = new Float64Array(capacity);
    this.statics = new Uint8Array(capacity);
    this.limit = Math.floor(capacity * 0.75);
  }

  get size(): number {
    return this.count;
  }

  private hash(hi: number, lo: number, vlan: number): number {
    let h = Math.imul(lo ^ 0x5bd1e995, 0x9e3779b1);
    h ^= Math.imul((hi << 12) | vlan, 0x85ebca6b);
    h ^= h >>> 15;
    return h & this.mask;
  }

  /**
   * The clock learning stamps entries with (ms), in `clock[0]`, set by the
   * switch once per batch: the data path's calls then pass nothing but small
   * integers. A typed array cell, because storing a new double into an
   * object's field makes a heap number each time.
   */
  readonly clock = new Float64Array(1);

  /** Slot of the entry, or -1. `lo` is the MAC's low 32 bits, signed. */
  private find(vlan: number, hi: number, lo: number): number {
    let i = this.hash(hi, lo, vlan);
    for (;;) {
      if (this.ports[i] === EMPTY) return -1;
      if (this.macLo[i] === lo && this.macHi[i] === hi && this.vlans[i] === vlan) return i;
      i = (i + 1) & this.mask;
    }
  }

  /** Port the MAC was learned on in this VLAN, or -1 (unknown: flood). Does not refresh the entry. */
  lookup(vlan: number, mac: number): number {
    return this.lookupHiLo(vlan, macHi(mac), macLo(mac));
  }

  /** `lookup` for the MAC at `buf[off..off+6]` (the data path's form: nothing boxed). */
  lookupAt(vlan: number, buf: Uint8Array, off: number): number {
    return this.lookupHiLo(vlan, get16(buf, off), getMacLo(buf, off));
  }

  private lookupHiLo(vlan: number, hi: number, lo: number): number {
    const i = this.find(vlan, hi, lo);
    return i < 0 ? -1 : this.ports[i]!;
  }

  private insert(vlan: number, hi: number, lo: number, port: number, now: number, isStatic: boolean): number {
    let i = this.hash(hi, lo, vlan);
    while (this.ports[i] !== EMPTY) i = (i + 1) & this.mask;
    this.macHi[i] = hi;
    this.macLo[i] = lo;
    this.vlans[i] = vlan;
    this.ports[i] = port;
    this.seen[i] = now;
    this.statics[i] = isStatic ? 1 : 0;
    this.count++;
    if (!isStatic) this.countLearned(port, 1);
    return i;
  }

  private countLearned(port: number, delta: number): void {
    if (port >= this.learned.length) {
      const grown = new Int32Array(Math.max(port + 1, this.learned.length * 2));
      grown.set(this.learned);
      this.learned = grown;
    }
    this.learned[port]! += delta;
  }

  /** Learned (non-static) entries on `port`, in O(1). */
  learnedOn(port: number): number {
    return port < this.learned.length ? this.learned[port]! : 0;
  }

  /** Learn that `mac` in `vlan` is behind `port`, seen at `now` (ms). */
  learn(vlan: number, mac: number, port: number, now: number): LearnResult {
    this.clock[0] = now;
    return this.learnHiLo(vlan, macHi(mac), macLo(mac), port);
  }

  /** `learn` for the MAC at `buf[off..off+6]`, seen at `clock`. */
  learnAt(vlan: number, buf: Uint8Array, off: number, port: number): LearnResult {
    return this.learnHiLo(vlan, get16(buf, off), getMacLo(buf, off), port);
  }

  private learnHiLo(vlan: number, hi: number, lo: number, port: number): LearnResult {
    const now = this.clock[0]!;
    const i = this.find(vlan, hi, lo);
    if (i >= 0) {
      const was = this.ports[i]!;
      if (this.statics[i] === 1) return was === port ? LearnResult.REFRESHED : LearnResult.STATIC_CONFLICT;
      this.seen[i] = now;
      if (was === port) return LearnResult.REFRESHED;
      this.ports[i] = port;
      this.countLearned(was, -1);
      this.countLearned(port, 1);
      this.movedFrom = was;
      return LearnResult.MOVED;
    }
    if (this.count >= this.limit) return LearnResult.FULL;
    this.insert(vlan, hi, lo, port, now, false);
    return LearnResult.NEW;
  }

  isStatic(vlan: number, mac: number): boolean {
    return this.isStaticHiLo(vlan, macHi(mac), macLo(mac));
  }

  /** `isStatic` for the MAC at `buf[off..off+6]`. */
  isStaticAt(vlan: number, buf: Uint8Array, off: number): boolean {
    return this.isStaticHiLo(vlan, get16(buf, off), getMacLo(buf, off));
  }

  private isStaticHiLo(vlan: number, hi: number, lo: number): boolean {
    const i = this.find(vlan, hi, lo);
    return i >= 0 && this.statics[i] === 1;
  }

  /** Pin `mac` in `vlan` to `port`; replaces a learned entry. False if the table is full. */
  addStatic(vlan: number, mac: number, port: number): boolean {
    const i = this.find(vlan, macHi(mac), macLo(mac));
    if (i >= 0) {
      if (this.statics[i] === 0) this.countLearned(this.ports[i]!, -1);
      this.ports[i] = port;
      this.statics[i] = 1;
      this.seen[i] = 0;
      return true;
    }
    if (this.count >= this.limit) return false;
    this.insert(vlan, macHi(mac), macLo(mac), port, 0, true);
    return true;
  }

  remove(vlan: number, mac: number): boolean {
    const i = this.find(vlan, macHi(mac), macLo(mac));
    if (i < 0) return false;
    this.removeAt(i);
    return true;
  }

  /** Backward-shift deletion (Knuth 6.4 algorithm R): keeps every probe chain unbroken. */
  private removeAt(slot: number): void {
    let i = slot;
    let j = slot;
    if (this.statics[i] === 0) this.countLearned(this.ports[i]!, -1);
    this.ports[i] = EMPTY;
    this.count--;
    for (;;) {
      j = (j + 1) & this.mask;
      if (this.ports[j] === EMPTY) return;
      const home = this.hash(this.macHi[j]!, this.macLo[j]!, this.vlans[j]!);
      // Move j back to i unless its home lies cyclically in (i, j].
      const inRange = i <= j ? (i < home && home <= j) : (i < home || home <= j);
      if (inRange) continue;
      this.macHi[i] = this.macHi[j]!;
      this.macLo[i] = this.macLo[j]!;
      this.vlans[i] = this.vlans[j]!;
      this.ports[i] = this.ports[j]!;
      this.seen[i] = this.seen[j]!;
      this.statics[i] = this.statics[j]!;
      this.ports[j] = EMPTY;
      i = j;
    }
  }

  /** Remove learned entries older than the aging time; returns how many. */
  age(now: number): number {
    let removed = 0;
    for (let i = 0; i < this.capacity; ) {
      if (this.ports[i] !== EMPTY && this.statics[i] === 0 && now - this.seen[i]! >= this.agingMs) {
        this.removeAt(i);
        removed++;
        continue; // slot i may now hold a shifted entry
      }
      i++;
    }
    return removed;
  }

  /** Remove every entry on `port` (port deleted or link down); static ones too if asked. */
  flushPort(port: number, includeStatic = false): number {
    let removed = 0;
    for (let i = 0; i < this.capacity; ) {
      if (this.ports[i] === port && (includeStatic || this.statics[i] === 0)) {
        this.removeAt(i);
        removed++;
        continue;
      }
      i++;
    }
    return removed;
  }

  /** Every entry (allocates: control plane). */
  entries(now: number): MacEntry[] {
    const out: MacEntry[] = [];
    for (let i = 0; i < this.capacity; i++) {
      if (this.ports[i] === EMPTY) continue;
      const isStatic = this.statics[i] === 1;
      out.push({
        vlan: this.vlans[i]!, mac: macFromHiLo(this.macHi[i]!, this.macLo[i]!), port: this.ports[i]!,
        isStatic, ageMs: isStatic ? 0 : now - this.seen[i]!,
      });
    }
    return out;
  }
}
