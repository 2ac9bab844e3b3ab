// Local IPsec in userspace, for guest kernels without ESP: the agent is the
// VM's IPsec stack.
//
//   VM stack ──route to the peer──▶ TUN ──▶ agent: ESP (EspL3) ──▶ raw IPPROTO_ESP socket bound to the NIC ──▶ wire
//   wire ──▶ raw IPPROTO_ESP socket ──▶ agent: verify, anti-replay, decrypt ──▶ TUN ──▶ VM stack
//
// The routes send the VM's plaintext for the protected destinations into a
// TUN whose MTU leaves room for ESP. The raw socket is bound to the VM's NIC
// (SO_BINDTODEVICE) so the agent's own ESP, whose destination is routed to
// the TUN, leaves through the NIC instead of looping back in. The kernel
// writes the outer IP header (source: the NIC's address), so for transport
// mode the SA's local address must be the address the kernel picks for the
// NIC. When the NIC is replaced (a VM's device deleted and made again, as
// in a migration), the socket is opened again on the new device.

import { BufferPool } from '../packet/pool.js';
import type { Packet } from '../packet/packet.js';
import type { Aead } from '../offload/ipsec/esp.js';
import type { ReplayState, SaDirection, SecurityAssociation } from '../offload/ipsec/sa.js';
import { Errno, native, PollEvent, TapFlag, type NativeShim, type PollHandle } from '../io/native/index.js';
import { EspL3 } from './esp-l3.js';
import type { LocalIpsec } from './xfrm.js';
import { hostPrefix, must, type Runner } from './system.js';

const IPPROTO_ESP = 50;
const BATCH = 32;
/** Reads per wake-up before yielding to the other descriptors. */
const ROUNDS = 8;
const ENODEV = 19;

export interface UserspaceOptions {
  /** The VM's NIC (ESP goes out and comes in here). */
  device: string;
  /** Name for the TUN device (≤ 15 characters). */
  tunName: string;
  /** The TUN's MTU: the NIC's minus the largest ESP overhead of the SAs. */
  tunMtu: number;
  /** Largest ESP packet that can arrive (the NIC's MTU). */
  nicMtu: number;
  aead: Aead;
  run: Runner;
  /** Something worth telling the operator (the device changed, a send failed). */
  notice?: (what: string, fields: Record<string, unknown>) => void;
  /** How often to look whether the NIC was replaced (ms, default 200). */
  watchMs?: number;
}

interface RawSocket {
  fd: number;
  poll: PollHandle;
  ifindex: number;
}

interface Route {
  family: 4 | 6;
  dst: string;
}

export class UserspaceIpsec implements LocalIpsec {
  readonly how = 'userspace' as const;
  readonly esp: EspL3;
  private readonly shim: NativeShim;
  private readonly pool: BufferPool;
  private readonly slots: Packet[] = [];
  private readonly offs = new Int32Array(BATCH);
  private readonly caps = new Int32Array(BATCH);
  private readonly lens = new Int32Array(BATCH);
  private readonly tcis = new Int32Array(BATCH).fill(-1);
  private readonly wOffs = new Int32Array(BATCH);
  private readonly wLens = new Int32Array(BATCH);
  private readonly wHdr = new Int32Array(BATCH);
  private tun: { fd: number; name: string; poll: PollHandle } | null = null;
  private readonly raw = new Map<4 | 6, RawSocket>();
  private readonly routes = new Map<string, Route>();
  private watch: ReturnType<typeof setInterval> | null = null;
  private closed = false;
  readonly counters = { tunRead: 0, espSent: 0, sendErrors: 0, lastSendError: 0, espRead: 0, tunWritten: 0, tunWriteErrors: 0, truncatedReads: 0, reopened: 0 };

  constructor(private readonly o: UserspaceOptions) {
    this.shim = native();
    this.esp = new EspL3(o.aead);
    const bufferSize = Math.max(2048, o.nicMtu + 512);
    this.pool = new BufferPool({ classes: [{ bufferSize, count: BATCH }] });
    for (let i = 0; i < BATCH; i++) this.slots.push(this.pool.take(bufferSize - this.pool.headroom)!);
  }

  /** The TUN's name once made. */
  get tunName(): string | null {
    return this.tun?.name ?? null;
  }

  private start(): void {
    if (this.tun !== null) return;
    const [fd, name] = this.shim.tapOpen(this.o.tunName, TapFlag.TUN, 0);
    try {
      must(this.o.run, ['ip', 'link', 'set', 'dev', name, 'mtu', String(this.o.tunMtu), 'up']);
    } catch (e) {
      this.shim.close(fd);
      throw e;
    }
    const poll = this.shim.pollStart(fd, PollEvent.READABLE, (status) => { if (status >= 0) this.fromTun(); });
    this.tun = { fd, name, poll };
    this.watch = setInterval(() => this.checkDevice(), this.o.watchMs ?? 200);
  }

  private openRaw(family: 4 | 6): RawSocket | null {
    const ifindex = this.shim.ifIndex(this.o.device);
    if (ifindex === 0) return null;
    // A big receive buffer: under load the kernel would otherwise drop our ESP (and answer it with ICMP).
    const fd = this.shim.rawOpen(family, IPPROTO_ESP, this.o.device, 8 << 20);
    const poll = this.shim.pollStart(fd, PollEvent.READABLE, (status) => { if (status >= 0) this.fromWire(family); });
    const s = { fd, poll, ifindex };
    this.raw.set(family, s);
    return s;
  }

  private closeRaw(family: 4 | 6): void {
    const s = this.raw.get(family);
    if (s === undefined) return;
    this.raw.delete(family);
    this.shim.pollStop(s.poll);
    this.shim.close(s.fd);
  }

  /** The NIC went away or was made again: bind to the new one. */
  private checkDevice(): void {
    if (this.closed) return;
    const now = this.shim.ifIndex(this.o.device);
    for (const family of [4, 6] as const) {
      const s = this.raw.get(family);
      const wanted = s !== undefined || this.familyInUse(family);
      if (!wanted || (s !== undefined && s.ifindex === now)) continue;
      this.closeRaw(family);
      if (now !== 0 && this.openRaw(family) !== null) {
        this.counters.reopened++;
        this.o.notice?.('NIC replaced: ESP socket bound to the new device', { device: this.o.device, ifindex: now, family });
        // Whatever happened to the NIC, the protected destinations stay routed into the TUN.
        for (const r of this.routes.values()) {
          try {
            this.addRoute(r);
          } catch (e) {
            this.o.notice?.('could not route a protected destination into the TUN again', { route: r.dst, error: (e as Error).message });
          }
        }
      }
    }
  }

  private familyInUse(family: 4 | 6): boolean {
    return [...this.esp.outbound, ...this.esp.inbound].some((s) => s.family === family);
  }

  install(sa: SecurityAssociation, replay?: ReplayState): void {
    if (this.closed) throw new Error('userspace IPsec stopped');
    this.start();
    const family = sa.src.includes(':') ? 6 : 4;
    if (!this.raw.has(family) && this.openRaw(family) === null) throw new Error(`device ${this.o.device} does not exist`);
    let route: Route | null = null;
    if (sa.direction === 'out') {
      // What the SA protects goes to the TUN: its selector's destination, or else its peer itself.
      const dst = sa.selector?.dst ?? sa.dst;
      if (dst === 'any' || dst === '*') {
        throw new Error(`SA 0x${sa.spi.toString(16)} protects any destination: the userspace path will not route everything into its TUN (give selector.dst a prefix)`);
      }
      route = { family: dst.includes(':') ? 6 : 4, dst: hostPrefix(dst) };
    }
    this.esp.add(sa, replay);
    if (route !== null) {
      try {
        this.addRoute(route);
      } catch (e) {
        this.esp.remove(sa.direction, sa.spi);
        throw e;
      }
      this.routes.set(`out/${sa.spi}`, route);
    }
  }

  /**
   * A route for a protected destination into the TUN. Without a source
   * address on purpose: Linux removes the routes whose source is an
   * address when that address goes (a NIC deleted and made again, as in a
   * migration), and the VM's traffic would then leave in plaintext by the
   * NIC's own route. The kernel picks the source from the NIC's addresses.
   */
  private addRoute(r: Route): void {
    must(this.o.run, ['ip', `-${r.family}`, 'route', 'replace', r.dst, 'dev', this.tun!.name]);
  }

  remove(direction: SaDirection, spi: number): void {
    this.esp.remove(direction, spi);
    const r = this.routes.get(`${direction}/${spi}`);
    if (r !== undefined && this.tun !== null) {
      this.routes.delete(`${direction}/${spi}`);
      this.o.run(['ip', `-${r.family}`, 'route', 'del', r.dst, 'dev', this.tun.name]);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watch !== null) clearInterval(this.watch);
    for (const f of [4, 6] as const) this.closeRaw(f);
    if (this.tun !== null) {
      for (const r of this.routes.values()) this.o.run(['ip', `-${r.family}`, 'route', 'del', r.dst, 'dev', this.tun.name]);
      this.shim.pollStop(this.tun.poll);
      // A TUN that is not persistent goes away with its descriptor, and its routes with it.
      this.shim.close(this.tun.fd);
      this.tun = null;
    }
    this.routes.clear();
    for (const p of this.slots) p.release();
    this.slots.length = 0;
  }

  private prepareSlots(): void {
    for (let i = 0; i < BATCH; i++) {
      const p = this.slots[i]!;
      p.reset(this.pool.headroom);
      this.offs[i] = p.off;
      // Room behind the packet for ESP padding, trailer and ICV (≤ 21 B).
      this.caps[i] = p.tailroom - 32;
    }
  }

  /** The VM's plaintext for a protected destination: protect and send. */
  private fromTun(): void {
    const tun = this.tun;
    if (tun === null || this.closed) return;
    const mem = this.pool.bytes;
    for (let round = 0; round < ROUNDS; round++) {
      this.prepareSlots();
      const got = this.shim.readBatch(tun.fd, mem, this.offs, this.caps, this.lens, this.tcis, BATCH, 0);
      if (got <= 0) return;
      for (let i = 0; i < got; i++) {
        const p = this.slots[i]!;
        this.counters.tunRead++;
        if (this.lens[i]! < 0 || this.lens[i]! >= this.caps[i]!) {
          this.counters.truncatedReads++;
          continue;
        }
        p.setLength(this.lens[i]!);
        if (this.esp.seal(p) !== null) continue;
        const s = this.raw.get(this.esp.family);
        if (s === undefined) {
          this.counters.sendErrors++;
          continue;
        }
        const r = this.shim.sendTo(s.fd, p.buf, this.esp.espOff, this.esp.espLen, this.esp.peer);
        if (r < 0) {
          this.counters.sendErrors++;
          this.counters.lastSendError = -r;
          if (-r === ENODEV || -r === Errno.ENXIO || -r === Errno.ENETDOWN) this.checkDevice();
        } else {
          this.counters.espSent++;
        }
      }
      if (got < BATCH) return;
    }
  }

  /** ESP from the network: verify, decrypt, hand the plaintext to the VM's stack through the TUN. */
  private fromWire(family: 4 | 6): void {
    const s = this.raw.get(family);
    const tun = this.tun;
    if (s === undefined || tun === null || this.closed) return;
    const mem = this.pool.bytes;
    for (let round = 0; round < ROUNDS; round++) {
      this.prepareSlots();
      const got = this.shim.readBatch(s.fd, mem, this.offs, this.caps, this.lens, this.tcis, BATCH, 0);
      if (got <= 0) return;
      let n = 0;
      for (let i = 0; i < got; i++) {
        const p = this.slots[i]!;
        this.counters.espRead++;
        if (this.lens[i]! < 0 || this.lens[i]! >= this.caps[i]!) {
          this.counters.truncatedReads++;
          continue;
        }
        p.setLength(this.lens[i]!);
        if (this.esp.open(p, family) !== null) continue;
        this.wOffs[n] = this.esp.l3Off;
        this.wLens[n] = this.esp.l3Len;
        n++;
      }
      if (n > 0) {
        const w = this.shim.writeBatch(tun.fd, mem, this.wHdr, 0, this.wOffs, this.wLens, this.tcis, n, 0);
        if (w < 0) this.counters.tunWriteErrors += n;
        else {
          this.counters.tunWritten += w;
          this.counters.tunWriteErrors += n - w;
        }
      }
      if (got < BATCH) return;
    }
  }

  stats(): Record<string, unknown> {
    return { how: 'userspace', tun: this.tun?.name ?? null, tunMtu: this.o.tunMtu, ...this.counters, ...this.esp.stats() };
  }
}
