// The memory packet buffers live in. One contiguous region, preferably a
// WebAssembly memory so the SIMD checksum kernel works on packets in place,
// and shared (SharedArrayBuffer) so worker threads can hand packets to each
// other by index. It never grows: growing would replace the ArrayBuffer
// under every view.

import { registerChecksumKernel, type ChecksumKernel } from '../wire/checksum.js';
import { simdChecksumKernel } from '../wire/checksum-simd.js';

const PAGE = 65536;

export interface PacketMemoryOptions {
  /** Back the memory with a SharedArrayBuffer (default true where available). */
  shared?: boolean;
  /** Use WebAssembly memory + SIMD checksum (default true where available). */
  wasm?: boolean;
}

export class PacketMemory {
  readonly size: number;
  readonly buffer: ArrayBufferLike;
  readonly bytes: Uint8Array;
  readonly memory: WebAssembly.Memory | null;
  readonly kernel: ChecksumKernel | null;
  private next = 0;

  constructor(size: number, opts: PacketMemoryOptions = {}) {
    const pages = Math.max(1, Math.ceil(size / PAGE));
    const canShare = typeof SharedArrayBuffer !== 'undefined';
    const shared = (opts.shared ?? true) && canShare;
    const wantWasm = (opts.wasm ?? true) && typeof WebAssembly === 'object';
    let memory: WebAssembly.Memory | null = null;
    let kernel: ChecksumKernel | null = null;
    if (wantWasm) {
      memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared });
      kernel = simdChecksumKernel(memory);
      if (kernel === null) memory = null; // no SIMD: plain memory is just as good
    }
    this.memory = memory;
    this.buffer = memory !== null
      ? memory.buffer
      : shared ? new SharedArrayBuffer(pages * PAGE) : new ArrayBuffer(pages * PAGE);
    this.size = this.buffer.byteLength;
    this.bytes = new Uint8Array(this.buffer);
    this.kernel = kernel;
    if (kernel !== null) registerChecksumKernel(kernel);
  }

  get accelerated(): boolean {
    return this.kernel !== null;
  }

  get used(): number {
    return this.next;
  }

  /** Reserve `size` bytes aligned to `align`; returns the offset. Throws when full (a sizing bug). */
  alloc(size: number, align = 64): number {
    const at = (this.next + align - 1) & ~(align - 1);
    if (at + size > this.size) {
      throw new RangeError(`packet memory exhausted: need ${size} B at ${at}, have ${this.size} B`);
    }
    this.next = at + size;
    return at;
  }
}
