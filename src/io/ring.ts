// A lock-free single-producer / single-consumer ring of fixed-width integer
// records in shared memory (SharedArrayBuffer + Atomics): how threads hand
// each other packets — by buffer index, never by message. The producer
// publishes a batch with one atomic store of its tail; the consumer frees
// slots with one store of its head. A consumer about to sleep raises a flag
// so the producer knows to ring its doorbell (an eventfd the consumer polls),
// and only then: a busy consumer costs the producer no syscall.
//
// Layout (Int32Array): [0] head  [1] tail  [2] consumer asleep  [3] unused,
// then `capacity` records of `width` ints. Indices run freely and wrap at 2^32.

const HEAD = 0;
const TAIL = 1;
const ASLEEP = 2;
const HEADER_INTS = 4;

export class SpscRing {
  readonly ints: Int32Array;
  readonly capacity: number;
  readonly width: number;
  private readonly mask: number;
  /** Producer's next index (its own copy of the tail). */
  private ptail: number;
  /** Consumer's next index (its own copy of the head). */
  private chead: number;

  /** Bytes a ring of this shape takes. */
  static bytes(capacity: number, width: number): number {
    return (HEADER_INTS + capacity * width) * 4;
  }

  constructor(buffer: ArrayBufferLike, byteOffset: number, capacity: number, width: number) {
    if (capacity < 2 || (capacity & (capacity - 1)) !== 0) throw new RangeError('ring capacity must be a power of two');
    this.ints = new Int32Array(buffer, byteOffset, HEADER_INTS + capacity * width);
    this.capacity = capacity;
    this.width = width;
    this.mask = capacity - 1;
    this.ptail = Atomics.load(this.ints, TAIL);
    this.chead = Atomics.load(this.ints, HEAD);
  }

  // --- producer --------------------------------------------------------------

  /** Records the producer can write now. */
  space(): number {
    return this.capacity - ((this.ptail - Atomics.load(this.ints, HEAD)) | 0);
  }

  /** Int offset of the k-th record after the ones already written but not published. */
  slotFor(k: number): number {
    return HEADER_INTS + ((this.ptail + k) & this.mask) * this.width;
  }

  /** Make the next `n` written records visible; returns whether the consumer was asleep (ring its doorbell). */
  publish(n: number): boolean {
    this.ptail = (this.ptail + n) | 0;
    Atomics.store(this.ints, TAIL, this.ptail);
    return Atomics.load(this.ints, ASLEEP) === 1 && Atomics.compareExchange(this.ints, ASLEEP, 1, 0) === 1;
  }

  /** Visit records published but not consumed (by whoever consumes): for cleanup once the consumer is gone. */
  forEachUnconsumed(fn: (slot: number) => void): number {
    const head = Atomics.load(this.ints, HEAD);
    const tail = Atomics.load(this.ints, TAIL);
    const n = (tail - head) | 0;
    for (let k = 0; k < n; k++) fn(HEADER_INTS + ((head + k) & this.mask) * this.width);
    Atomics.store(this.ints, HEAD, tail);
    return n;
  }

  // --- consumer ---------------------------------------------------------------

  /** Records waiting for the consumer. */
  available(): number {
    return (Atomics.load(this.ints, TAIL) - this.chead) | 0;
  }

  /** Int offset of the k-th waiting record. */
  slotAt(k: number): number {
    return HEADER_INTS + ((this.chead + k) & this.mask) * this.width;
  }

  /** Done with the first `n` waiting records. */
  consume(n: number): void {
    this.chead = (this.chead + n) | 0;
    Atomics.store(this.ints, HEAD, this.chead);
  }

  /**
   * Going to sleep: raise the flag, then look once more — a record published
   * between the last look and the flag would otherwise wait for the next one.
   * True when it is safe to sleep.
   */
  sleep(): boolean {
    Atomics.store(this.ints, ASLEEP, 1);
    if (this.available() > 0) {
      Atomics.store(this.ints, ASLEEP, 0);
      return false;
    }
    return true;
  }
}
