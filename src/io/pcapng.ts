// pcapng capture of switch ports (draft-ietf-opsawg-pcapng), readable by
// Wireshark and tshark. One section per writer, little-endian; one
// Interface Description Block per captured port; one Enhanced Packet Block
// per frame seen, with its direction in epb_flags and the packet's offload
// metadata — which a plain capture would lose — as a greppable opt_comment:
//
//   vswitch: dir=rx gso=tcpv4 gso_size=1448 hdr_len=66 csum=partial(34+16) rx_csum=verified vlan=100
//
// The capture hook runs inside the data path, so writing a packet allocates
// nothing but the clock reading (V8 boxes the double that performance.now()
// returns: 16 bytes): blocks are encoded straight into a reusable output
// chunk (the comment too, as ASCII), and chunks go to the stream only when a
// threshold is passed, on a timer, or on close. A stream that cannot keep up makes the
// capture drop packets (counted, and reported per interface in an Interface
// Statistics Block on close) rather than grow without bound or slow the switch.

import { createWriteStream } from 'node:fs';
import { release as osRelease, type as osType } from 'node:os';
import { Transform, type TransformCallback, type Writable } from 'node:stream';
import { GsoType, NO_SA, RxCsum, gsoTypeName, type OffloadMeta } from '../packet/meta.js';
import type { Packet } from '../packet/packet.js';
import type { CaptureHook, Port, VlanConfig } from '../switch/port.js';

export const LINKTYPE_ETHERNET = 1;
export const DEFAULT_SNAPLEN = 262144;
/** Timestamps are microseconds since 1970 (if_tsresol 6, written explicitly). */
export const TSRESOL_MICROSECONDS = 6;

// Block types.
const BT_SHB = 0x0a0d0d0a;
const BT_IDB = 1;
const BT_ISB = 5;
const BT_EPB = 6;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;

// Option codes (per block type; 0 and 1 are common to all).
const OPT_ENDOFOPT = 0;
const OPT_COMMENT = 1;
const SHB_OS = 3;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const IF_MACADDR = 6;
const IF_TSRESOL = 9;
const EPB_FLAGS = 2;
const ISB_STARTTIME = 2;
const ISB_ENDTIME = 3;
const ISB_IFRECV = 4;
const ISB_OSDROP = 7;
const ISB_USRDELIV = 8;

/** epb_flags bits 0-1. */
export const EPB_INBOUND = 1;
export const EPB_OUTBOUND = 2;
/** epb_flags bits 2-4: reception type. */
const RX_UNICAST = 1 << 2;
const RX_MULTICAST = 2 << 2;
const RX_BROADCAST = 3 << 2;

/** Text options (names, descriptions, comments on non-packet blocks) are cut to this many bytes. */
const MAX_TEXT_OPTION = 4096;
/** Room an offload comment can take, with every field present and every number at its longest. */
const MAX_OFFLOAD_COMMENT = 512;
/** EPB without its packet data: header 28, flags 8, comment header 4 + text, end of options 4, trailer 4. */
const EPB_OVERHEAD = 28 + 8 + 4 + MAX_OFFLOAD_COMMENT + 4 + 4;
/** Largest non-packet block: an IDB with three capped text options and the fixed ones. */
const MAX_META_BLOCK = 64 + 3 * (4 + MAX_TEXT_OPTION) + 64;

export interface PcapngWriterOptions {
  /** Bytes kept of each frame (default 262144); longer frames are truncated, their original length kept. */
  snaplen?: number;
  /** Hand the buffered blocks to the stream once this many bytes are waiting (default 64 KiB). */
  flushBytes?: number;
  /** Also flush this often while packets trickle in, in ms (default 1000; 0: only on size and close). */
  flushIntervalMs?: number;
  /**
   * Bytes handed to the stream and not yet written beyond which packets are
   * dropped (counted) instead of queued (default 32 MiB).
   */
  maxPendingBytes?: number;
  /** Wall clock in microseconds since 1970 (tests pin it). */
  clock?: () => number;
  /** Comment on the Section Header Block. */
  comment?: string;
  /** End the stream on close (default true). A file opened from a path is always closed. */
  endStream?: boolean;
}

export interface InterfaceInfo {
  name: string;
  /** if_description (for a port: its kind). */
  description?: string;
  /** if_MACaddr, as a 48-bit number (omitted when 0 or absent). */
  mac?: number;
  /** opt_comment on the interface block. */
  comment?: string;
}

export interface CaptureStats {
  /** Enhanced Packet Blocks written. */
  packets: number;
  /** Packets not written: the stream could not keep up, or failed. */
  dropped: number;
  /** Chunks handed to the stream. */
  flushes: number;
  /** Bytes handed to the stream. */
  bytes: number;
}

interface Chunk {
  bytes: Buffer;
  /** The same memory for little-endian fields (inlined by the JIT: no boxed numbers). */
  view: DataView;
  /** And as 32-bit words (the chunk is 4-aligned), for word copies. */
  words: Int32Array;
}

interface Iface {
  info: InterfaceInfo;
  /** When the interface was registered (µs). */
  start: number;
  seen: number;
  written: number;
  dropped: number;
}

function newChunk(size: number): Chunk {
  // A chunk of its own (never a slice of Node's shared pool), so byteOffset is 0 and words align.
  const bytes = Buffer.allocUnsafeSlow(size);
  return {
    bytes,
    view: new DataView(bytes.buffer, bytes.byteOffset, size),
    words: new Int32Array(bytes.buffer, bytes.byteOffset, size >>> 2),
  };
}

const TIME_ORIGIN_MS = performance.timeOrigin;

function pad4(n: number): number {
  return (n + 3) & ~3;
}

/**
 * Writes one pcapng section to a stream or file. Register interfaces with
 * addInterface / interfaceFor (or let capturePort do it), then writePacket;
 * close() flushes, adds per-interface statistics and ends the stream.
 */
export class PcapngWriter {
  readonly snaplen: number;
  private readonly out: Writable;
  private readonly ownsStream: boolean;
  private readonly endStream: boolean;
  private readonly flushBytes: number;
  private readonly chunkSize: number;
  private readonly maxPending: number;
  /** null: the real clock, read inline (each reading still boxes one number: 16 B a packet). */
  private readonly clock: (() => number) | null;
  private chunk: Chunk;
  private used = 0;
  private readonly spare: Chunk[] = [];
  private pending = 0;
  private readonly idle: (() => void)[] = [];
  private readonly ifaces: Iface[] = [];
  private readonly byPort = new Map<Port, number>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private closing: Promise<void> | null = null;
  private error: Error | null = null;
  private readonly st: CaptureStats = { packets: 0, dropped: 0, flushes: 0, bytes: 0 };

  constructor(out: Writable | string, opts: PcapngWriterOptions = {}) {
    const snaplen = opts.snaplen ?? DEFAULT_SNAPLEN;
    if (!Number.isInteger(snaplen) || snaplen < 16 || snaplen > 16 * 1024 * 1024) {
      throw new RangeError(`pcapng snaplen ${snaplen}: must be an integer from 16 to 16 MiB`);
    }
    this.snaplen = snaplen;
    this.flushBytes = Math.max(4096, opts.flushBytes ?? 64 * 1024);
    // Below the threshold there is always room for one more block of any kind.
    this.chunkSize = pad4(this.flushBytes + Math.max(EPB_OVERHEAD + pad4(snaplen), MAX_META_BLOCK));
    this.maxPending = opts.maxPendingBytes ?? 32 * 1024 * 1024;
    this.clock = opts.clock ?? null;
    this.ownsStream = typeof out === 'string';
    this.endStream = this.ownsStream || (opts.endStream ?? true);
    this.out = typeof out === 'string' ? createWriteStream(out) : out;
    this.out.on('error', (e: Error) => {
      this.error ??= e;
    });
    this.chunk = newChunk(this.chunkSize);
    this.writeSectionHeader(opts.comment);
    const every = opts.flushIntervalMs ?? 1000;
    if (every > 0) {
      this.timer = setInterval(() => this.flush(), every);
      this.timer.unref();
    }
  }

  /** Counters so far (a copy). */
  get stats(): CaptureStats {
    return { ...this.st };
  }

  /** Number of interfaces registered (their ids are 0 … n-1, in order). */
  get interfaceCount(): number {
    return this.ifaces.length;
  }

  /** close() was called, or the stream failed: packets are no longer written. */
  get closed(): boolean {
    return this.closing !== null || this.error !== null;
  }

  /** Register an interface (writes its IDB); returns its id for writePacket. */
  addInterface(info: InterfaceInfo): number {
    if (this.closing !== null) throw new Error('pcapng writer is closed');
    const id = this.ifaces.length;
    this.ifaces.push({ info: { ...info }, start: this.now(), seen: 0, written: 0, dropped: 0 });
    this.writeInterfaceDescription(info);
    return id;
  }

  /** The interface id of a switch port, registering it on first use. */
  interfaceFor(port: Port): number {
    let id = this.byPort.get(port);
    if (id === undefined) {
      id = this.addInterface({
        name: port.name,
        description: port.kind,
        mac: port.mac,
        comment: `vswitch port ${port.index}: kind=${port.kind} mtu=${port.mtu} vlan=${vlanText(port.vlan)}`,
      });
      this.byPort.set(port, id);
    }
    return id;
  }

  /**
   * One frame seen on interface `ifId`: an EPB with the 802.1Q tag `tci`
   * inserted after the MAC addresses when tci ≥ 0 — or, without one, the
   * packet's out-of-band tag (meta.vlanPresent) — as the frame was on the
   * wire, cut to the snaplen. False when the packet was not written
   * (closed, or dropped because the stream lags or failed).
   */
  writePacket(ifId: number, p: Packet, dir: 'rx' | 'tx', tci: number): boolean {
    const iface = this.ifaces[ifId];
    if (iface === undefined) throw new RangeError(`pcapng: no interface ${ifId}`);
    if (this.closing !== null) return false;
    iface.seen++;
    if (this.error !== null || this.pending > this.maxPending) {
      iface.dropped++;
      this.st.dropped++;
      return false;
    }
    // A tag carried out of band (stripped by the NIC, or to be inserted by
    // it) goes back into the frame, as libpcap does: the capture shows the wire.
    if (tci < 0 && p.meta.vlanPresent) tci = p.meta.vlanTci & 0xffff;
    const tagLen = tci >= 0 ? 4 : 0;
    const origLen = p.len + tagLen;
    const capLen = origLen < this.snaplen ? origLen : this.snaplen;
    const c = this.chunk;
    const v = c.view;
    const start = this.used;
    const us = this.now();
    const hi = Math.floor(us / 0x100000000);
    v.setUint32(start, BT_EPB, true);
    v.setUint32(start + 8, ifId, true);
    v.setUint32(start + 12, hi, true);
    v.setUint32(start + 16, us - hi * 0x100000000, true);
    v.setUint32(start + 20, capLen, true);
    v.setUint32(start + 24, origLen, true);
    let o = zeroPad(c.bytes, this.putFrame(start + 28, p, tci, capLen));
    v.setUint16(o, EPB_FLAGS, true);
    v.setUint16(o + 2, 4, true);
    v.setUint32(o + 4, dir === 'rx' ? EPB_INBOUND | receptionType(p) : EPB_OUTBOUND, true);
    o += 8;
    const end = writeOffloadComment(c.bytes, o + 4, p.meta, dir);
    v.setUint16(o, OPT_COMMENT, true);
    v.setUint16(o + 2, end - o - 4, true);
    o = zeroPad(c.bytes, end);
    v.setUint32(o, OPT_ENDOFOPT, true); // code 0, length 0
    o += 4;
    const total = o + 4 - start;
    v.setUint32(start + 4, total, true);
    v.setUint32(o, total, true);
    this.used = o + 4;
    iface.written++;
    this.st.packets++;
    if (this.used >= this.flushBytes) this.flush();
    return true;
  }

  /** Hand everything buffered to the stream now. */
  flush(): void {
    const n = this.used;
    if (n === 0) return;
    if (this.error !== null) {
      this.used = 0; // nowhere to go: dropped, and the chunk stays usable
      return;
    }
    const chunk = this.chunk;
    this.pending += n;
    this.st.flushes++;
    this.st.bytes += n;
    // The stream keeps the chunk until written; it is reused only after that.
    this.out.write(chunk.bytes.subarray(0, n), (err) => {
      this.pending -= n;
      if (err == null) this.spare.push(chunk);
      if (this.pending === 0) for (const f of this.idle.splice(0)) f();
    });
    this.chunk = this.spare.pop() ?? newChunk(this.chunkSize);
    this.used = 0;
  }

  /**
   * Stop capturing: write an Interface Statistics Block per interface, flush,
   * end the stream (or, with endStream false, wait until everything is
   * written). Resolves when the bytes are out (the file closed, for a path).
   */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    const now = this.now();
    for (let id = 0; id < this.ifaces.length; id++) this.writeInterfaceStatistics(id, now);
    this.flush();
    this.closing = new Promise<void>((resolve, reject) => {
      if (this.error !== null) {
        reject(this.error);
        return;
      }
      const out = this.out;
      const failed = (e: Error) => reject(e);
      out.once('error', failed);
      const done = () => {
        out.off('error', failed);
        if (this.error !== null) reject(this.error);
        else resolve();
      };
      if (!this.endStream) {
        if (this.pending === 0) done();
        else this.idle.push(done);
        return;
      }
      out.once(this.ownsStream ? 'close' : 'finish', done);
      out.end();
    });
    return this.closing;
  }

  /** Microseconds since 1970. */
  private now(): number {
    const c = this.clock;
    return c === null ? Math.floor((TIME_ORIGIN_MS + performance.now()) * 1000) : Math.floor(c());
  }

  /** Copy the frame (with the tag inserted) into the chunk at `o`, `capLen` bytes in all; returns the end. */
  private putFrame(o: number, p: Packet, tci: number, capLen: number): number {
    const c = this.chunk;
    if (tci < 0) {
      copyInto(p.buf, p.off, c, o, capLen);
      return o + capLen;
    }
    const head = Math.min(12, p.len, capLen);
    copyInto(p.buf, p.off, c, o, head);
    o += head;
    let left = capLen - head;
    const b = c.bytes;
    if (left > 0) { b[o++] = 0x81; left--; }
    if (left > 0) { b[o++] = 0x00; left--; }
    if (left > 0) { b[o++] = (tci >>> 8) & 0xff; left--; }
    if (left > 0) { b[o++] = tci & 0xff; left--; }
    copyInto(p.buf, p.off + head, c, o, left);
    return o + left;
  }

  private writeSectionHeader(comment: string | undefined): void {
    const b = this.chunk.bytes;
    const start = this.used;
    b.writeUInt32LE(BT_SHB, start);
    b.writeUInt32LE(BYTE_ORDER_MAGIC, start + 8);
    b.writeUInt16LE(1, start + 12); // major
    b.writeUInt16LE(0, start + 14); // minor
    b.writeInt32LE(-1, start + 16); // section length: not known (-1, all 64 bits)
    b.writeInt32LE(-1, start + 20);
    let o = start + 24;
    if (comment !== undefined) o = this.textOption(o, OPT_COMMENT, comment);
    o = this.textOption(o, SHB_OS, `${osType()} ${osRelease()}`);
    o = this.textOption(o, SHB_USERAPPL, 'vswitch');
    this.endBlock(start, o);
  }

  private writeInterfaceDescription(info: InterfaceInfo): void {
    const b = this.chunk.bytes;
    const start = this.used;
    b.writeUInt32LE(BT_IDB, start);
    b.writeUInt16LE(LINKTYPE_ETHERNET, start + 8);
    b.writeUInt16LE(0, start + 10);
    b.writeUInt32LE(this.snaplen, start + 12);
    let o = start + 16;
    o = this.textOption(o, IF_NAME, info.name);
    if (info.description !== undefined) o = this.textOption(o, IF_DESCRIPTION, info.description);
    if (info.mac !== undefined && info.mac > 0 && info.mac <= 0xffffffffffff) {
      b.writeUInt16LE(IF_MACADDR, o);
      b.writeUInt16LE(6, o + 2);
      b.writeUIntBE(info.mac, o + 4, 6);
      b.writeUInt16LE(0, o + 10);
      o += 12;
    }
    b.writeUInt16LE(IF_TSRESOL, o);
    b.writeUInt16LE(1, o + 2);
    b.writeUInt32LE(TSRESOL_MICROSECONDS, o + 4); // one byte of value, three of padding
    o += 8;
    if (info.comment !== undefined) o = this.textOption(o, OPT_COMMENT, info.comment);
    this.endBlock(start, o);
  }

  private writeInterfaceStatistics(id: number, now: number): void {
    const f = this.ifaces[id]!;
    const b = this.chunk.bytes;
    const start = this.used;
    b.writeUInt32LE(BT_ISB, start);
    b.writeUInt32LE(id, start + 8);
    putTime(b, start + 12, now);
    let o = start + 20;
    o = u64Option(b, o, ISB_STARTTIME, f.start, true);
    o = u64Option(b, o, ISB_ENDTIME, now, true);
    o = u64Option(b, o, ISB_IFRECV, f.seen, false);
    o = u64Option(b, o, ISB_OSDROP, f.dropped, false);
    o = u64Option(b, o, ISB_USRDELIV, f.written, false);
    this.endBlock(start, o);
  }

  /** A UTF-8 option (cut to MAX_TEXT_OPTION bytes on a character boundary), padded. */
  private textOption(o: number, code: number, text: string): number {
    const b = this.chunk.bytes;
    // Buffer.write stops before a character that does not fit, so the cut is clean.
    const n = b.write(text, o + 4, MAX_TEXT_OPTION, 'utf8');
    b.writeUInt16LE(code, o);
    b.writeUInt16LE(n, o + 2);
    return zeroPad(b, o + 4 + n);
  }

  /** Options end, trailing length, both lengths filled; the block joins the buffer. */
  private endBlock(start: number, o: number): void {
    const b = this.chunk.bytes;
    b.writeUInt32LE(OPT_ENDOFOPT, o);
    o += 4;
    const total = o + 4 - start;
    b.writeUInt32LE(total, start + 4);
    b.writeUInt32LE(total, o);
    this.used = o + 4;
    // Below the threshold there is room for any block: keep it that way.
    if (this.used >= this.flushBytes) this.flush();
  }
}

/**
 * Capture what `port` receives and sends into `writer` (its interface block
 * is written on first use; several ports may share a writer). Returns the
 * function that stops it. A port has one capture at a time.
 */
export function capturePort(port: Port, writer: PcapngWriter): () => void {
  if (port.capture !== null) throw new Error(`port ${port.name} is already being captured`);
  const id = writer.interfaceFor(port);
  const hook: CaptureHook = (p, _port, dir, tci) => {
    // A closed writer unhooks itself rather than be called for nothing.
    if (!writer.writePacket(id, p, dir, tci) && writer.closed && port.capture === hook) port.capture = null;
  };
  port.capture = hook;
  return () => {
    if (port.capture === hook) port.capture = null;
  };
}

function vlanText(v: VlanConfig): string {
  if (v.mode === 'access') return `access:${v.vlan}`;
  const allowed = v.allowed === 'all' ? 'all' : v.allowed.join(',');
  return v.native === undefined ? `trunk:${allowed}` : `trunk:${allowed} native=${v.native}`;
}

function zeroPad(b: Uint8Array, o: number): number {
  while ((o & 3) !== 0) b[o++] = 0;
  return o;
}

/** A timestamp (µs) as the high then the low 32 bits, as EPBs and ISB time options store it. */
function putTime(b: Buffer, o: number, us: number): void {
  const hi = Math.floor(us / 0x100000000);
  b.writeUInt32LE(hi >>> 0, o);
  b.writeUInt32LE((us - hi * 0x100000000) >>> 0, o + 4);
}

/** An 8-byte option: a timestamp (high word first) or a counter (a little-endian u64). */
function u64Option(b: Buffer, o: number, code: number, v: number, time: boolean): number {
  b.writeUInt16LE(code, o);
  b.writeUInt16LE(8, o + 2);
  if (time) {
    putTime(b, o + 4, v);
  } else {
    const hi = Math.floor(v / 0x100000000);
    b.writeUInt32LE((v - hi * 0x100000000) >>> 0, o + 4);
    b.writeUInt32LE(hi >>> 0, o + 8);
  }
  return o + 12;
}

/** epb_flags reception type from the destination MAC. */
function receptionType(p: Packet): number {
  if (p.len < 6) return 0;
  const b = p.buf;
  const o = p.off;
  if ((b[o]! & 1) === 0) return RX_UNICAST;
  if ((b[o]! & b[o + 1]! & b[o + 2]! & b[o + 3]! & b[o + 4]! & b[o + 5]!) === 0xff) return RX_BROADCAST;
  return RX_MULTICAST;
}

// Source words view, cached per backing buffer (the packet memory), so
// copying allocates nothing.
let srcWordsBuffer: ArrayBufferLike | null = null;
let srcWords: Int32Array<ArrayBufferLike> = new Int32Array(0);

/**
 * Copy `n` bytes from `src` to the chunk. Packet memory is shared
 * (SharedArrayBuffer), where TypedArray.set copies no faster than a word
 * loop; a word loop needs no subarray view, so it allocates nothing. Large
 * or misaligned copies use set(), whose one view is nothing beside the bytes.
 */
function copyInto(src: Uint8Array, from: number, dst: Chunk, to: number, n: number): void {
  if (n <= 0) return;
  const d = dst.bytes;
  if (n < 16) {
    for (let i = 0; i < n; i++) d[to + i] = src[from + i]!;
    return;
  }
  const s = src.byteOffset + from;
  if (n >= 8192 || (s & 3) !== (to & 3)) {
    d.set(src.subarray(from, from + n), to);
    return;
  }
  // Bytes up to a word boundary, words, then the tail.
  let i = 0;
  while (((to + i) & 3) !== 0) { d[to + i] = src[from + i]!; i++; }
  if (srcWordsBuffer !== src.buffer) {
    srcWordsBuffer = src.buffer;
    srcWords = new Int32Array(src.buffer, 0, src.buffer.byteLength >>> 2);
  }
  const sw = srcWords;
  const dw = dst.words;
  const words = (n - i) >>> 2;
  const si = (s + i) >>> 2;
  const di = (to + i) >>> 2;
  for (let k = 0; k < words; k++) dw[di + k] = sw[si + k]!;
  i += words << 2;
  for (; i < n; i++) d[to + i] = src[from + i]!;
}

// ---- The offload comment, written as ASCII straight into the output. ----

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (ch) => ch.charCodeAt(0));
const T = {
  head: ascii('vswitch: dir='),
  rx: ascii('rx'),
  tx: ascii('tx'),
  gso: ascii(' gso='),
  gsoSize: ascii(' gso_size='),
  hdrLen: ascii(' hdr_len='),
  gsoEcn: ascii(' gso_ecn'),
  csumNone: ascii(' csum=none'),
  csumPartial: ascii(' csum=partial('),
  plus: ascii('+'),
  close: ascii(')'),
  ipCsum: ascii(' ip_csum=compute'),
  rxVerified: ascii(' rx_csum=verified'),
  rxFailed: ascii(' rx_csum=failed'),
  vlan: ascii(' vlan='),
  pcp: ascii(' vlan_pcp='),
  rsc: ascii(' rsc='),
  slash: ascii('/'),
  sa: ascii(' sa='),
};
const GSO_NAMES: Uint8Array[] = [];
for (const t of Object.values(GsoType)) GSO_NAMES[t] = ascii(gsoTypeName(t));

function put(b: Uint8Array, o: number, t: Uint8Array): number {
  for (let i = 0; i < t.length; i++) b[o + i] = t[i]!;
  return o + t.length;
}

/** A number in decimal (integers; anything else as its integer part, non-finite as 0). */
function putNum(b: Uint8Array, o: number, v: number): number {
  let n = Number.isFinite(v) ? Math.trunc(v) : 0;
  if (n < 0) {
    b[o++] = 0x2d; // '-'
    n = -n;
  }
  if (n > Number.MAX_SAFE_INTEGER) n = Number.MAX_SAFE_INTEGER; // bounded length, exact digits
  let digits = 1;
  for (let x = n; x >= 10; x = Math.floor(x / 10)) digits++;
  for (let i = digits - 1; i >= 0; i--) {
    b[o + i] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  }
  return o + digits;
}

/**
 * The offload comment for a packet, written at `o`; returns the end. At
 * most MAX_OFFLOAD_COMMENT bytes. Always dir, gso and csum; the rest only
 * when they apply (GSO parameters with GSO, rx_csum when known, vlan when an
 * out-of-band tag is present, rsc when coalesced, sa with an SA).
 */
export function writeOffloadComment(b: Uint8Array, o: number, m: OffloadMeta, dir: 'rx' | 'tx'): number {
  o = put(b, o, T.head);
  o = put(b, o, dir === 'rx' ? T.rx : T.tx);
  o = put(b, o, T.gso);
  const name = GSO_NAMES[m.gsoType];
  if (name !== undefined) o = put(b, o, name);
  else o = putNum(b, o, m.gsoType); // an unknown code from an untrusted sender, shown as is
  if (m.gsoType !== GsoType.NONE) {
    o = put(b, o, T.gsoSize);
    o = putNum(b, o, m.gsoSize);
    o = put(b, o, T.hdrLen);
    o = putNum(b, o, m.hdrLen);
    if (m.gsoEcn) o = put(b, o, T.gsoEcn);
  }
  if (m.needsCsum) {
    o = put(b, o, T.csumPartial);
    o = putNum(b, o, m.csumStart);
    o = put(b, o, T.plus);
    o = putNum(b, o, m.csumOffset);
    o = put(b, o, T.close);
  } else {
    o = put(b, o, T.csumNone);
  }
  if (m.ipv4HeaderCsum) o = put(b, o, T.ipCsum);
  if (m.rxCsum === RxCsum.VERIFIED) o = put(b, o, T.rxVerified);
  else if (m.rxCsum === RxCsum.FAILED) o = put(b, o, T.rxFailed);
  if (m.vlanPresent) {
    o = put(b, o, T.vlan);
    o = putNum(b, o, m.vlanTci & 0xfff);
    if (((m.vlanTci >>> 13) & 7) !== 0) {
      o = put(b, o, T.pcp);
      o = putNum(b, o, (m.vlanTci >>> 13) & 7);
    }
  }
  if (m.rscSegments > 0) {
    o = put(b, o, T.rsc);
    o = putNum(b, o, m.rscSegments);
    o = put(b, o, T.slash);
    o = putNum(b, o, m.rscDupAcks);
  }
  if (m.saHandle !== NO_SA) {
    o = put(b, o, T.sa);
    o = putNum(b, o, m.saHandle);
  }
  return o;
}

const describeScratch = new Uint8Array(MAX_OFFLOAD_COMMENT);
const latin1 = new TextDecoder('latin1');

/** The offload comment as a string (allocates: for traces, logs and tests). */
export function describeOffloads(m: OffloadMeta, dir: 'rx' | 'tx'): string {
  const n = writeOffloadComment(describeScratch, 0, m, dir);
  return latin1.decode(describeScratch.subarray(0, n));
}

/**
 * Passes a pcapng byte stream on in whole blocks only. A capture read over a
 * connection that is cut (Ctrl-C, a crashed daemon) would otherwise end in the
 * middle of a block, and Wireshark calls such a file "cut short". What is left
 * of an unfinished block at the end is dropped and its size kept in
 * `droppedBytes`; a stream that is not pcapng (or has an impossible block
 * length) fails with an error rather than be passed on as garbage.
 */
export class PcapngBlockStream extends Transform {
  private pending: Buffer = Buffer.alloc(0);
  private little = true;
  /** Bytes of an unfinished last block, dropped at the end. */
  droppedBytes = 0;
  blocks = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    let off = 0;
    while (buf.length - off >= 12) {
      const type = buf.readUInt32LE(off);
      if (type === BT_SHB) {
        const magic = buf.readUInt32LE(off + 8);
        if (magic === BYTE_ORDER_MAGIC) this.little = true;
        else if (magic === 0x4d3c2b1a) this.little = false;
        else { done(new Error(`not pcapng: bad byte-order magic 0x${magic.toString(16)} at byte ${off}`)); return; }
      } else if (this.blocks === 0) {
        done(new Error('not pcapng: the stream does not start with a Section Header Block'));
        return;
      }
      const len = this.little ? buf.readUInt32LE(off + 4) : buf.readUInt32BE(off + 4);
      if (len < 12 || len % 4 !== 0 || len > 64 << 20) { done(new Error(`not pcapng: block of length ${len} at byte ${off}`)); return; }
      if (buf.length - off < len) break;
      off += len;
      this.blocks++;
    }
    if (off > 0) this.push(buf.subarray(0, off));
    this.pending = Buffer.from(buf.subarray(off));
    done();
  }

  override _flush(done: TransformCallback): void {
    this.droppedBytes = this.pending.length;
    this.pending = Buffer.alloc(0);
    done();
  }
}
