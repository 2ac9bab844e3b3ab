// A packet: a frame in a pooled buffer plus its offload metadata.
//
//   base           off                 off+len          base+capacity
//   |<- headroom ->|<----- frame ----->|<-- tailroom -->|
//
// `buf` is the whole packet memory; headers are read in place with wire
// views at absolute offsets (`off` + …), so nothing is copied or allocated
// to look at a packet. Headroom lets the switch push tags or tunnel headers
// in front of a frame without moving it.

import { OffloadMeta } from './meta.js';
import type { BufferPool } from './pool.js';

export class Packet {
  /** Frame start (absolute index into `buf`). */
  off = 0;
  /** Frame length in bytes. */
  len = 0;
  /** Port the packet came in on (set by the switch; -1 if none). */
  inPort = -1;
  readonly meta = new OffloadMeta();
  /** Owned by someone (taken from the pool and not yet given back). */
  inUse = false;
  /**
   * Holders of this packet. One packet may go to several destinations
   * unchanged (flooding); each holds a reference and the buffer returns to
   * the pool when the last one releases it.
   */
  refs = 0;

  constructor(
    readonly pool: BufferPool,
    /** Index of this buffer in its pool (stable for the pool's life). */
    readonly index: number,
    readonly sizeClass: number,
    readonly buf: Uint8Array,
    readonly base: number,
    readonly capacity: number,
  ) {}

  get end(): number { return this.off + this.len; }
  get headroom(): number { return this.off - this.base; }
  get tailroom(): number { return this.base + this.capacity - this.off - this.len; }

  /** Empty the frame, keeping `headroom` bytes in front; metadata cleared. */
  reset(headroom: number): void {
    this.off = this.base + Math.min(headroom, this.capacity);
    this.len = 0;
    this.inPort = -1;
    this.meta.reset();
  }

  /** Grow the frame at the front by `n` bytes (for a tag or encapsulation). False if no headroom. */
  push(n: number): boolean {
    if (n > this.off - this.base) return false;
    this.off -= n;
    this.len += n;
    return true;
  }

  /** Drop `n` bytes from the front. */
  pull(n: number): boolean {
    if (n > this.len) return false;
    this.off += n;
    this.len -= n;
    return true;
  }

  /** Set the frame length (grow into tailroom or shrink). False if it does not fit. */
  setLength(len: number): boolean {
    if (len < 0 || this.off + len > this.base + this.capacity) return false;
    this.len = len;
    return true;
  }

  /** Copy `src` in as the frame. False (nothing written) if it does not fit. */
  write(src: Uint8Array): boolean {
    if (!this.setLength(src.length)) return false;
    this.buf.set(src, this.off);
    return true;
  }

  /** The frame as a fresh view (allocates: for tests, captures and the control plane). */
  view(): Uint8Array {
    return this.buf.subarray(this.off, this.off + this.len);
  }

  /** The frame copied out (allocates). */
  copyOut(): Uint8Array {
    return this.buf.slice(this.off, this.off + this.len);
  }

  /** One more holder (see `refs`). */
  retain(): void {
    this.refs++;
  }

  /** Drop one reference; the buffer goes back to its pool with the last. Releasing a free packet throws. */
  release(): void {
    if (this.refs > 1) {
      this.refs--;
      return;
    }
    this.refs = 0;
    this.pool.give(this);
  }

  /** Whether someone else holds it too: modify only a copy. */
  get shared(): boolean {
    return this.refs > 1;
  }
}
