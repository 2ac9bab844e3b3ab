// Pre-allocated packet buffers in a few fixed size classes, carved once from
// packet memory. take and give are O(1) (a stack of free indexes per class)
// and allocate nothing; every buffer has its Packet object made up front.

import { Packet } from './packet.js';
import { PacketMemory } from './memory.js';

export interface SizeClassSpec {
  /** Bytes per buffer, headroom included. */
  bufferSize: number;
  count: number;
}

/** Packet memory beyond the buffers, for backends' fixed scratch areas (PacketMemory.alloc). */
export const SCRATCH_BYTES = 1 << 20;

/** Default headroom: room for two VLAN tags plus an IPv6 VXLAN encapsulation. */
export const DEFAULT_HEADROOM = 128;

/**
 * MTU-sized buffers (1500 + Ethernet + two tags + vnet header + headroom) and
 * super-frame buffers: the largest TSO frame a guest was seen to send is
 * 65 238 B; a 64 KiB IP packet plus headers needs 65 535 + 14 + 8 = 65 557.
 */
export const DEFAULT_SIZE_CLASSES: readonly SizeClassSpec[] = [
  { bufferSize: 2048, count: 4096 },
  { bufferSize: 65536 + 1024, count: 256 },
];

export class DoubleFreeError extends Error {
  constructor(index: number) {
    super(`packet buffer ${index} given back to the pool twice`);
    this.name = 'DoubleFreeError';
  }
}

export interface BufferPoolOptions {
  classes?: readonly SizeClassSpec[];
  headroom?: number;
  /** Memory to carve from; by default the pool makes its own, sized to fit. */
  memory?: PacketMemory;
  /** Bytes of packet memory beyond the buffers for backends' rings and scratch (default 1 MiB). */
  scratchBytes?: number;
}

export interface SizeClassStats {
  bufferSize: number;
  count: number;
  inUse: number;
  /** Highest simultaneous use seen. */
  peak: number;
  /** take() calls that found the class empty. */
  exhausted: number;
}

class SizeClass {
  readonly free: Int32Array;
  top = 0;
  peak = 0;
  exhausted = 0;
  constructor(readonly bufferSize: number, readonly count: number, readonly first: number) {
    this.free = new Int32Array(count);
  }
  get inUse(): number { return this.count - this.top; }
}

export class BufferPool {
  readonly memory: PacketMemory;
  readonly bytes: Uint8Array;
  readonly headroom: number;
  /** Every packet of the pool, by index. */
  readonly packets: Packet[] = [];
  private readonly classes: SizeClass[] = [];
  doubleFrees = 0;

  constructor(opts: BufferPoolOptions = {}) {
    const specs = [...(opts.classes ?? DEFAULT_SIZE_CLASSES)].sort((a, b) => a.bufferSize - b.bufferSize);
    this.headroom = opts.headroom ?? DEFAULT_HEADROOM;
    for (const s of specs) {
      if (!(s.bufferSize > this.headroom) || !(s.count > 0) || !Number.isInteger(s.count)) {
        throw new RangeError(`bad size class ${s.bufferSize}×${s.count} (headroom ${this.headroom})`);
      }
    }
    // Plus room for backends' small fixed areas (e.g. virtio header scratch).
    const total = specs.reduce((n, s) => n + ((s.bufferSize + 63) & ~63) * s.count + 64, 0) + (opts.scratchBytes ?? SCRATCH_BYTES);
    this.memory = opts.memory ?? new PacketMemory(total);
    this.bytes = this.memory.bytes;
    for (let c = 0; c < specs.length; c++) {
      const s = specs[c]!;
      const stride = (s.bufferSize + 63) & ~63;
      const start = this.memory.alloc(stride * s.count);
      const cls = new SizeClass(s.bufferSize, s.count, this.packets.length);
      for (let i = 0; i < s.count; i++) {
        const p = new Packet(this, this.packets.length, c, this.bytes, start + i * stride, s.bufferSize);
        this.packets.push(p);
        // Lowest address on top of the stack: early takes walk memory in order.
        cls.free[s.count - 1 - i] = p.index;
      }
      cls.top = s.count;
      this.classes.push(cls);
    }
  }

  /** Largest frame a buffer of this pool can hold (after headroom). */
  get maxFrameLen(): number {
    return this.classes[this.classes.length - 1]!.bufferSize - this.headroom;
  }

  /**
   * A packet whose buffer holds a frame of `frameLen` bytes after the
   * headroom, from the smallest class that fits; null when that class and
   * every larger one is empty, or nothing fits.
   */
  take(frameLen: number): Packet | null {
    const need = frameLen + this.headroom;
    const classes = this.classes;
    for (let c = 0; c < classes.length; c++) {
      const cls = classes[c]!;
      if (cls.bufferSize < need) continue;
      if (cls.top === 0) {
        cls.exhausted++;
        continue;
      }
      const p = this.packets[cls.free[--cls.top]!]!;
      const used = cls.count - cls.top;
      if (used > cls.peak) cls.peak = used;
      p.inUse = true;
      p.refs = 1;
      p.reset(this.headroom);
      return p;
    }
    return null;
  }

  /** Give a packet back. Giving one twice is a bug: counted, and thrown. */
  give(p: Packet): void {
    if (p.pool !== this) throw new Error('packet given back to a pool it does not belong to');
    if (!p.inUse) {
      this.doubleFrees++;
      throw new DoubleFreeError(p.index);
    }
    p.inUse = false;
    const cls = this.classes[p.sizeClass]!;
    cls.free[cls.top++] = p.index;
  }

  /** Buffers taken and not given back, over all classes. */
  get inUse(): number {
    let n = 0;
    for (const c of this.classes) n += c.inUse;
    return n;
  }

  get capacity(): number {
    return this.packets.length;
  }

  stats(): SizeClassStats[] {
    return this.classes.map((c) => ({
      bufferSize: c.bufferSize, count: c.count, inUse: c.inUse, peak: c.peak, exhausted: c.exhausted,
    }));
  }
}
