// In-memory port backend: frames in and out of the switch as byte arrays,
// for fast deterministic tests of the switch core and for the demo without
// root. It records what the switch delivered — frame bytes with the 802.1Q
// tag inserted where asked, and the offload metadata as a guest or NIC
// would see it — and every advertisement. It is never a stand-in for the
// real endpoints the end-to-end tests use.

import { Batch } from '../packet/batch.js';
import { OffloadMeta } from '../packet/meta.js';
import type { Packet } from '../packet/packet.js';
import { set16 } from '../wire/bytes.js';
import { cloneCapabilities, type OffloadCapabilities } from '../offload/capabilities.js';
import type { OutputQueue, Port, PortBackend } from '../switch/port.js';
import type { Switch } from '../switch/switch.js';

export interface SentFrame {
  /** As it would appear on the wire / in the guest (tag inserted). */
  frame: Uint8Array;
  meta: OffloadMeta;
  /** 802.1Q TCI the switch asked for (-1: none). */
  tci: number;
}

export interface MemoryBackendOptions {
  /** Fail every transmit (to test tx-error accounting). */
  failTransmit?: boolean;
}

export class MemoryBackend implements PortBackend {
  readonly sent: SentFrame[] = [];
  readonly advertisements: OffloadCapabilities[] = [];
  failTransmit: boolean;

  constructor(public capabilities: OffloadCapabilities, opts: MemoryBackendOptions = {}) {
    this.failTransmit = opts.failTransmit ?? false;
  }

  transmit(q: OutputQueue, _port: Port): number {
    if (this.failTransmit) return 0;
    for (let i = 0; i < q.count; i++) {
      const p = q.batch.packets[i]!;
      const tci = q.tci[i]!;
      const meta = new OffloadMeta();
      meta.copyFrom(p.meta);
      this.sent.push({ frame: frameWithTag(p, tci), meta, tci });
    }
    return q.count;
  }

  advertise(caps: OffloadCapabilities): void {
    this.advertisements.push(cloneCapabilities(caps));
  }

  get lastAdvertised(): OffloadCapabilities | undefined {
    return this.advertisements[this.advertisements.length - 1];
  }

  /** Take and forget what was sent so far. */
  take(): SentFrame[] {
    return this.sent.splice(0, this.sent.length);
  }
}

/** The frame's bytes with an 802.1Q tag inserted after the MACs when tci ≥ 0. */
export function frameWithTag(p: Packet, tci: number): Uint8Array {
  if (tci < 0) return p.copyOut();
  const f = new Uint8Array(p.len + 4);
  f.set(p.buf.subarray(p.off, p.off + 12), 0);
  set16(f, 12, 0x8100);
  set16(f, 14, tci);
  f.set(p.buf.subarray(p.off + 12, p.off + p.len), 16);
  return f;
}

/**
 * Hand frames to the switch as if `port`'s endpoint had sent them.
 * `prepare` sets offload metadata per packet (as a vnet header would).
 */
export function inject(sw: Switch, port: Port, frames: readonly Uint8Array[], prepare?: (p: Packet, i: number) => void): void {
  const batch = new Batch(Math.max(1, frames.length));
  for (let i = 0; i < frames.length; i++) {
    const f = frames[i]!;
    const p = sw.pool.take(f.length);
    if (p === null) throw new Error('pool exhausted while injecting');
    p.write(f);
    prepare?.(p, i);
    batch.push(p);
  }
  sw.receive(port, batch);
}
