// A reusable, fixed-capacity list of packets: the unit the data path moves.
// Its slot array is made once; clearing only resets the count.

import type { Packet } from './packet.js';

export const DEFAULT_BATCH_SIZE = 64;

export class Batch {
  readonly packets: Packet[];
  count = 0;

  constructor(readonly capacity: number = DEFAULT_BATCH_SIZE) {
    // Pre-size the slot array so pushes never grow it.
    this.packets = new Array<Packet>(capacity);
  }

  get full(): boolean { return this.count === this.capacity; }
  get empty(): boolean { return this.count === 0; }

  /** Append; false when full (the caller decides: flush or drop). */
  push(p: Packet): boolean {
    if (this.count === this.capacity) return false;
    this.packets[this.count++] = p;
    return true;
  }

  get(i: number): Packet {
    return this.packets[i]!;
  }

  /** Forget the packets (they are owned elsewhere now). */
  clear(): void {
    this.count = 0;
  }

  /** Give every packet back to its pool and clear. */
  releaseAll(): void {
    for (let i = 0; i < this.count; i++) this.packets[i]!.release();
    this.count = 0;
  }

  /** Keep only the first `n` packets (the rest must have been handed off already). */
  truncate(n: number): void {
    if (n < this.count) this.count = n;
  }
}
