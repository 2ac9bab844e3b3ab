// Helpers for tests: frames into pooled packets, and quick checks on them.
import { BufferPool } from '../../src/packet/pool.js';
import type { Packet } from '../../src/packet/packet.js';
import { FrameLayout, parseFrame } from '../../src/wire/frame.js';
import { verifyChecksums } from '../../src/offload/checksum.js';
import { RxCsum } from '../../src/packet/meta.js';

export function packetFrom(pool: BufferPool, frame: Uint8Array): Packet {
  const p = pool.take(frame.length);
  if (p === null) throw new Error('test pool exhausted');
  p.write(frame);
  return p;
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

export function fromHex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'hex'));
}

/** Parse and verify every checksum of a frame (throws on a parse error). */
export function checksumsOf(frame: Uint8Array): RxCsum {
  const lay = new FrameLayout();
  const e = parseFrame(frame, 0, frame.length, lay);
  if (e !== null) throw new Error(`frame does not parse: ${e}`);
  return verifyChecksums(frame, lay);
}

export function layoutOf(frame: Uint8Array): FrameLayout {
  const lay = new FrameLayout();
  const e = parseFrame(frame, 0, frame.length, lay);
  if (e !== null) throw new Error(`frame does not parse: ${e}`);
  return lay;
}

/** Layout of a pooled packet's frame, at its own offsets. */
export function layoutOfPacket(p: Packet): FrameLayout {
  const lay = new FrameLayout();
  const e = parseFrame(p.buf, p.off, p.len, lay);
  if (e !== null) throw new Error(`packet does not parse: ${e}`);
  return lay;
}
