// The management API: HTTP/JSON on a unix socket (mode 0600: root only) and
// optionally on loopback. Documented in docs/api.md; the `vswitch` CLI is
// its client. Every reply is JSON except a capture, which streams pcapng.
//
// Errors: {"error": "...", "issues"?: [...]} with 400 (bad request / bad
// config), 404 (no such port), 409 (conflict), 500 (failed on the host).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Writable } from 'node:stream';
import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import { buildFrame, type FrameSpec } from '../wire/builder.js';
import { macToString } from '../wire/bytes.js';
import { GsoType } from '../packet/meta.js';
import type { Packet } from '../packet/packet.js';
import { describeCapabilities } from '../offload/translate/index.js';
import type { Port } from '../switch/port.js';
import { DROP_REASONS } from '../switch/counters.js';
import { PcapngWriter, capturePort } from '../io/pcapng.js';
import { FdBackend } from '../io/fd-backend.js';
import { TapBackend } from '../io/tap.js';
import { AfPacketBackend } from '../io/af-packet.js';
import { ConfigError, parseConfig, type PortYaml } from './config.js';
import type { Runtime } from './runtime.js';
import { TAP_TX_QUEUE_LEN } from './runtime.js';
import type { Logger } from './log.js';
import type { GuestApi } from './guest-api.js';
import { STAT_STIME, STAT_UTIME, USER_HZ, statFields } from './procfs.js';

export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly issues?: unknown) {
    super(message);
  }
}

export interface ApiContext {
  rt: Runtime;
  log: Logger;
  name: string;
  startedAt: number;
  /** The YAML-shaped spec of each port as configured (for PATCH). */
  portYaml: Map<string, PortYaml>;
  shutdown: () => void;
  /** Persist what the daemon created (crash recovery) after a change. */
  saveState: () => void;
  /** Per-port guest sockets (IPsec SA offload for the VMs' agents). */
  guest: GuestApi;
  /** Where the data plane runs: its own thread or the main thread, and the thread's Node threadId. */
  dataPlane: { mode: 'thread' | 'main'; threadId: number; tid: number };
}

/**
 * One API request as the data plane sees it, whichever thread it runs on:
 * the HTTP front end (main thread) parses it and carries the reply back.
 */
export interface ApiCall {
  readonly method: string;
  readonly url: URL;
  /** Status of a JSON reply (a handler sets 201 for a creation). */
  status: number;
  /** Answer with a stream instead (status 200, headers sent now): write it there, end it when done. */
  stream(contentType: string): Writable;
  /** Run `fn` once when the client hangs up or a streamed reply ended. */
  onClose(fn: () => void): void;
}

/** A JSON reply, already serialized (it may have to cross to another thread). */
export interface ApiReply {
  status: number;
  json: string;
}

/** What the HTTP front end hands a request to: answers it on `res`, the body already parsed. */
export type ApiServe = (method: string, url: string, body: unknown, res: ServerResponse) => Promise<void>;

/** What the HTTP front end serves: requests (to the data plane), and GET /v1/health itself. */
export interface ApiFront {
  serve: ApiServe;
  /** Whether the data plane answers; `dataPlane` is 'ok' when it does. */
  health(): { dataPlane: string; answeredMsAgo: number };
}

type Handler = (ctx: ApiContext, call: ApiCall, params: string[], body: unknown) => unknown | Promise<unknown>;

const routes: [string, RegExp, Handler][] = [];
function route(method: string, pattern: string, h: Handler): void {
  routes.push([method, new RegExp(`^${pattern.replace(/:(\w+)/g, '([^/]+)')}$`), h]);
}

function portOf(ctx: ApiContext, name: string): Port {
  const p = ctx.rt.sw.findPort(name);
  if (p === undefined) throw new ApiError(404, `no port ${name}`);
  return p;
}

function vlanView(p: Port): unknown {
  return p.vlan;
}

export function portSummary(ctx: ApiContext, p: Port): Record<string, unknown> {
  const b = ctx.rt.backendOf(p.name);
  const y = ctx.portYaml.get(p.name);
  return {
    name: p.name,
    kind: p.kind,
    device: b instanceof TapBackend || b instanceof AfPacketBackend ? b.ifname : y?.device ?? p.name,
    up: p.up,
    mtu: p.mtu,
    mac: p.mac !== 0 ? macToString(p.mac) : null,
    vlan: vlanView(p),
    namespace: y?.guest?.namespace ?? null,
    passThrough: p.isVnic ? p.passThrough : null,
    uro: p.isVnic ? p.uro : null,
    macsLearned: ctx.rt.sw.macs.learnedOn(p.index),
    guestApi: ctx.guest.endpoint(p.name) ?? null,
    // A QEMU VM's NIC: its socket ({socket, mode}) or its UDP addresses ({dgram: {local, remote}}).
    ...(y?.qemu !== undefined ? { qemu: y.qemu } : {}),
  };
}

function statsOf(ctx: ApiContext, p: Port): Record<string, unknown> {
  const b = ctx.rt.backendOf(p.name);
  const out: Record<string, unknown> = { name: p.name, kind: p.kind, ...p.counters.snapshot() };
  // Reads and writes on an I/O worker: which (by thread id), the frames the main thread took from it, and how the writes went.
  const io = (q: FdBackend) => ({ ...q.stats, ...(q.worker !== null ? { workerThread: q.worker.thread.threadId, workerRxFrames: q.rxChannel?.frames ?? 0, txViaWorker: q.txViaWorker, txBypass: q.txBypass } : {}) });
  if (b instanceof FdBackend) out['io'] = io(b);
  if (b instanceof TapBackend && b.queueCount > 1) out['queues'] = b.queueBackends().map(io);
  if (b instanceof AfPacketBackend) out['kernel'] = { packets: b.kernelPackets, drops: b.kernelDrops };
  if (p.budget !== undefined) out['budget'] = { ...p.budget, tokensNs: p.tokens, backlog: p.backlog.length };
  return out;
}

/** CPU seconds (user + system) thread `tid` of this process has used, from /proc; null when unknown. */
function threadCpuSeconds(tid: number): number | null {
  const f = tid > 0 ? statFields(`/proc/self/task/${tid}/stat`) : null;
  return f === null ? null : (Number(f[STAT_UTIME]) + Number(f[STAT_STIME])) / USER_HZ;
}

/** The daemon's threads, what each does and the CPU each has used. */
function threadsView(ctx: ApiContext): { role: 'main' | 'data-plane' | 'io'; threadId: number; tid: number; cpuSeconds: number | null }[] {
  const dp = ctx.dataPlane;
  const main = { role: 'main' as const, threadId: 0, tid: process.pid, cpuSeconds: threadCpuSeconds(process.pid) };
  const plane = dp.mode === 'thread' ? [{ role: 'data-plane' as const, threadId: dp.threadId, tid: dp.tid, cpuSeconds: threadCpuSeconds(dp.tid) }] : [];
  const io = ctx.rt.workersView().threads.map((w) => ({ role: 'io' as const, threadId: w.threadId, tid: w.tid, cpuSeconds: threadCpuSeconds(w.tid) }));
  return [main, ...plane, ...io];
}

route('GET', '/v1/switch', (ctx) => ({
  name: ctx.name,
  pid: process.pid,
  uptimeSeconds: Math.round((Date.now() - ctx.startedAt) / 1000),
  ports: ctx.rt.sw.listPorts().length,
  pool: { inUse: ctx.rt.pool.inUse, capacity: ctx.rt.pool.capacity, classes: ctx.rt.pool.stats(), simdChecksum: ctx.rt.pool.memory.accelerated },
  macTable: { entries: ctx.rt.sw.macs.size, capacity: ctx.rt.sw.macs.capacity, agingMs: ctx.rt.sw.macs.agingMs },
  dataPlane: { mode: ctx.dataPlane.mode, threadId: ctx.dataPlane.threadId },
  workers: ctx.rt.workersView(),
  threads: threadsView(ctx),
  dropReasons: DROP_REASONS,
}));

route('GET', '/v1/ports', (ctx) => ({ ports: ctx.rt.sw.listPorts().map((p) => portSummary(ctx, p)) }));
route('GET', '/v1/ports/([^/]+)', (ctx, _c, [name]) => portSummary(ctx, portOf(ctx, name!)));

route('POST', '/v1/ports', async (ctx, call, _p, body) => {
  const y = body as PortYaml;
  const spec = checkPort(y);
  if (ctx.rt.sw.findPort(spec.name) !== undefined) throw new ApiError(409, `port ${spec.name} exists already`);
  try {
    ctx.rt.addPort(spec);
  } catch (e) {
    throw new ApiError(500, `port ${spec.name} could not be added: ${(e as Error).message}`);
  }
  ctx.portYaml.set(spec.name, y);
  ctx.saveState();
  await ctx.guest.open(portOf(ctx, spec.name));
  ctx.log.info('port added over the API', { port: spec.name });
  call.status = 201;
  return portSummary(ctx, portOf(ctx, spec.name));
});

route('DELETE', '/v1/ports/([^/]+)', (ctx, _c, [name]) => {
  portOf(ctx, name!);
  ctx.guest.close(name!);
  ctx.rt.removePort(name!);
  ctx.portYaml.delete(name!);
  ctx.saveState();
  return { removed: name };
});

/** Live changes to a port; what needs a new device (kind, device, guest) needs delete + add. */
route('PATCH', '/v1/ports/([^/]+)', (ctx, _c, [name], body) => {
  const port = portOf(ctx, name!);
  const change = (body ?? {}) as Partial<PortYaml> & { up?: boolean };
  for (const k of ['name', 'kind', 'device', 'guest', 'addresses', 'qemu', 'staticMacs'] as const) {
    if (k in change) throw new ApiError(409, `${k} cannot change while the port exists: delete it and add it again`);
  }
  const { up, ...rest } = change;
  const merged = { ...(ctx.portYaml.get(port.name) ?? { name: port.name, kind: port.kind }), ...rest } as PortYaml;
  const spec = checkPort(merged);
  if (spec.mtu !== undefined && spec.mtu !== port.mtu) {
    port.mtu = spec.mtu;
    ctx.rt.setDeviceMtu(port.name, spec.mtu);
  }
  if ('vlan' in rest && spec.vlan !== undefined) port.vlan = spec.vlan;
  if ('security' in rest) port.security = spec.security;
  if ('acl' in rest) { port.aclIn = spec.aclIn; port.aclOut = spec.aclOut; }
  if ('passThrough' in rest) port.passThrough = spec.passThrough ?? true;
  if ('txQueueLen' in rest) ctx.rt.setTxQueueLen(port.name, spec.txQueueLen ?? TAP_TX_QUEUE_LEN);
  if ('uro' in rest) port.uro = spec.uro ?? true;
  if ('maxMacs' in rest) port.maxMacs = spec.maxMacs ?? Infinity;
  if ('maxSa' in rest) port.maxSa = spec.maxSa ?? 32;
  if ('mac' in rest) port.mac = spec.mac ?? 0;
  if ('budget' in rest) {
    port.budget = spec.budget;
    port.tokens = port.burstNs;
  }
  if ('offloads' in rest) {
    port.overrides = spec.offloads ?? {};
    ctx.rt.sw.readvertise();
  }
  if ('ipsec' in rest && port.kind === 'external') {
    const b = ctx.rt.backendOf(port.name);
    if (b instanceof AfPacketBackend) {
      b.setEspEngine(spec.ipsecEngine ?? null);
      b.capabilities = b.readCapabilities();
      ctx.rt.sw.updateCapabilities(port.name, b.capabilities);
    }
  }
  if (up !== undefined) ctx.rt.sw.setPortUp(port.name, up);
  ctx.portYaml.set(port.name, merged);
  ctx.log.info('port changed over the API', { port: port.name, keys: Object.keys(change) });
  return portSummary(ctx, port);
});

function checkPort(y: unknown): ReturnType<typeof parseConfig>['ports'][number] {
  try {
    return parseConfig(JSON.stringify({ ports: [y] }), 'request').ports[0]!;
  } catch (e) {
    if (e instanceof ConfigError) {
      throw new ApiError(400, e.issues.map((i) => `${i.path.replace(/^ports\[0\]\.?/, '') || 'port'}: ${i.message}`).join('; '), e.issues);
    }
    throw e;
  }
}

route('GET', '/v1/caps', (ctx) => ({
  ports: ctx.rt.sw.listPorts().map((p) => ({
    name: p.name,
    kind: p.kind,
    /** For an external port: what the NIC can do. For a vNIC: what the guest accepts. */
    device: p.deviceCaps,
    advertised: p.advertised,
    views: p.isVnic ? describeCapabilities(p.advertised) : p.kind === 'external' ? describeCapabilities(p.deviceCaps) : null,
    tunFlags: (() => { const b = ctx.rt.backendOf(p.name); return b instanceof TapBackend ? b.tunFlags : null; })(),
  })),
}));

route('GET', '/v1/stats', (ctx) => ({ ports: ctx.rt.sw.listPorts().map((p) => statsOf(ctx, p)), pool: { inUse: ctx.rt.pool.inUse } }));
route('GET', '/v1/stats/([^/]+)', (ctx, _c, [name]) => statsOf(ctx, portOf(ctx, name!)));

route('GET', '/v1/sas', (ctx) => {
  const ipsec = ctx.rt.sw.ipsec;
  return { enabled: ipsec !== null, sas: ipsec?.list() ?? [], rejected: ipsec?.rejected() ?? [] };
});

route('GET', '/v1/neighbors', (ctx) => ({
  entries: ctx.rt.sw.neighbors.entries().map((e) => ({ ip: e.ip, mac: macToString(e.mac) })),
}));

route('GET', '/v1/macs', (ctx) => ({
  entries: ctx.rt.sw.macs.entries(Date.now()).map((e) => ({
    vlan: e.vlan, mac: macToString(e.mac), port: ctx.rt.sw.ports[e.port]?.name ?? `#${e.port}`, static: e.isStatic, ageSeconds: Math.round(e.ageMs / 1000),
  })),
}));

export interface TraceRequest {
  in: string;
  /** The frame as hex. */
  frame?: string;
  /** Or a description to build it from (see FrameSpec in src/wire/builder.ts, addresses as text). */
  packet?: FrameSpec & { srcMac?: string | number; dstMac?: string | number };
  /** Offload metadata as a guest would set it. */
  meta?: { gso?: 'tcpv4' | 'tcpv6' | 'udp-l4'; gsoSize?: number; csum?: boolean; csumStart?: number; csumOffset?: number; rxCsumVerified?: boolean };
}

route('POST', '/v1/trace', (ctx, _c, _p, body) => {
  const t = body as TraceRequest;
  if (typeof t?.in !== 'string') throw new ApiError(400, 'trace needs "in": the port the packet arrives on');
  portOf(ctx, t.in);
  let frame: Uint8Array;
  let l4Off = -1;
  let csumOffset = -1;
  if (typeof t.frame === 'string') {
    if (!/^([0-9a-f]{2})+$/i.test(t.frame)) throw new ApiError(400, 'frame must be hex bytes');
    frame = Buffer.from(t.frame, 'hex');
  } else if (t.packet !== undefined) {
    try {
      const spec = { ...t.packet } as FrameSpec & { srcMac?: string | number; dstMac?: string | number };
      const mac = (v: string | number | undefined) => (typeof v === 'string' ? parseInt(v.replace(/[:-]/g, ''), 16) : v);
      const built = buildFrame({ ...spec, srcMac: mac(spec.srcMac), dstMac: mac(spec.dstMac) } as FrameSpec);
      frame = built.frame;
      l4Off = built.l4Off;
      csumOffset = built.csumOffset;
    } catch (e) {
      throw new ApiError(400, `packet description: ${(e as Error).message}`);
    }
  } else {
    throw new ApiError(400, 'trace needs "frame" (hex) or "packet" (a description)');
  }
  const m = t.meta ?? {};
  const prepare = (p: Packet) => {
    const gso = m.gso === 'tcpv4' ? GsoType.TCPV4 : m.gso === 'tcpv6' ? GsoType.TCPV6 : m.gso === 'udp-l4' ? GsoType.UDP_L4 : GsoType.NONE;
    if (gso !== GsoType.NONE) {
      p.meta.gsoType = gso;
      p.meta.gsoSize = m.gsoSize ?? 1448;
    }
    if (m.csum === true || gso !== GsoType.NONE) {
      p.meta.needsCsum = true;
      p.meta.csumStart = m.csumStart ?? l4Off;
      p.meta.csumOffset = m.csumOffset ?? csumOffset;
    }
    if (m.rxCsumVerified === true) p.meta.rxCsum = 1;
  };
  return { frameLength: frame.length, ...ctx.rt.sw.trace(t.in, frame, prepare) };
});

/** How to end each running capture cleanly (statistics blocks written, stream ended), by port. */
const captureStops = new WeakMap<Port, () => void>();

/**
 * Stream a pcapng capture of a port until `count` packets or `seconds` passed,
 * DELETE on the same path (a clean end: the client gets whole blocks and the
 * statistics), or the client hangs up.
 */
route('GET', '/v1/ports/([^/]+)/capture', (ctx, call, [name]) => {
  const port = portOf(ctx, name!);
  if (port.capture !== null) throw new ApiError(409, `port ${name} is being captured already`);
  const param = (key: string, integer: boolean): number => {
    const v = call.url.searchParams.get(key);
    if (v === null) return 0;
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
      throw new ApiError(400, `capture: ${key} must be a non-negative ${integer ? 'integer' : 'number'}, not "${v}"`);
    }
    return n;
  };
  const count = param('count', true);
  const seconds = param('seconds', false);
  const snaplen = param('snaplen', true);
  const writer = new PcapngWriter(call.stream('application/x-pcapng'), { flushIntervalMs: 200, ...(snaplen > 0 ? { snaplen } : {}) });
  const stop = capturePort(port, writer);
  let timer: ReturnType<typeof setTimeout> | null = null;
  let poll: ReturnType<typeof setInterval> | null = null;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    if (captureStops.get(port) === finish) captureStops.delete(port);
    stop();
    if (timer !== null) clearTimeout(timer);
    if (poll !== null) clearInterval(poll);
    void writer.close();
  };
  call.onClose(finish);
  if (seconds > 0) timer = setTimeout(finish, seconds * 1000);
  if (count > 0) poll = setInterval(() => { if (writer.stats.packets >= count) finish(); }, 50);
  captureStops.set(port, finish);
  ctx.log.info('capture started', { port: name });
  return STREAMING;
});

/** End the running capture of a port cleanly; its stream closes with whole blocks and the statistics. */
route('DELETE', '/v1/ports/([^/]+)/capture', (ctx, _c, [name]) => {
  const finish = captureStops.get(portOf(ctx, name!));
  if (finish === undefined) throw new ApiError(404, `port ${name} is not being captured`);
  finish();
  ctx.log.info('capture stopped', { port: name });
  return { stopped: name };
});

route('POST', '/v1/shutdown', (ctx) => {
  setImmediate(() => ctx.shutdown());
  return { stopping: true };
});

const STREAMING = Symbol('streaming');

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 1 << 20) throw new ApiError(413, 'request body over 1 MiB');
    chunks.push(c as Buffer);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new ApiError(400, 'request body is not JSON');
  }
}

export function reply(status: number, obj: unknown): ApiReply {
  return { status, json: `${JSON.stringify(obj, null, 1)}\n` };
}

/** A request's path without trailing slashes ("/" for none). */
function pathOf(url: URL): string {
  return url.pathname.replace(/\/+$/, '') || '/';
}

/** The reply to a request that threw: its ApiError's status and message, or 500 (logged: a bug or the host). */
function errorReply(e: unknown, log: Logger, path: string): ApiReply {
  if (e instanceof ApiError) return reply(e.status, { error: e.message, ...(e.issues !== undefined ? { issues: e.issues } : {}) });
  log.error('API request failed', { path, error: String((e as Error).stack ?? e) });
  return reply(500, { error: (e as Error).message });
}

/** Answer one request against the data plane's state. Null: the handler answers with a stream (call.stream). */
export async function dispatch(ctx: ApiContext, call: ApiCall, body: unknown): Promise<ApiReply | null> {
  const path = pathOf(call.url);
  try {
    let methodOk = false;
    for (const [method, re, h] of routes) {
      const m = re.exec(path);
      if (m === null) continue;
      if (method !== call.method) { methodOk = true; continue; }
      const out = await h(ctx, call, m.slice(1).map(decodeURIComponent), body);
      return out === STREAMING ? null : reply(call.status, out);
    }
    throw new ApiError(methodOk ? 405 : 404, methodOk ? `${call.method} not allowed on ${path}` : `no such endpoint ${path}`);
  } catch (e) {
    return errorReply(e, ctx.log, path);
  }
}

/** Write a JSON reply (unless a stream already answered). */
export function sendReply(res: ServerResponse, r: ApiReply): void {
  if (res.headersSent) return;
  res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(r.json) });
  res.end(r.json);
}

/** Serve requests against a data plane in this thread (switch.dataPlane: main). */
export function serveLocal(ctx: ApiContext): ApiServe {
  return async (method, url, body, res) => {
    const call: ApiCall = {
      method,
      url: new URL(url, 'http://x'),
      status: 200,
      stream: (contentType) => {
        res.writeHead(200, { 'content-type': contentType });
        return res;
      },
      onClose: (fn) => { res.once('close', fn); },
    };
    const r = await dispatch(ctx, call, body);
    if (r !== null) sendReply(res, r);
  };
}

/**
 * The HTTP side of a request: parse the body, hand it on, answer errors of
 * its own — and GET /v1/health, which this thread answers without the data
 * plane, so it tells even when the data plane does not answer.
 */
function front(api: ApiFront, log: Logger) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    try {
      if (method === 'GET' && pathOf(new URL(url, 'http://x')) === '/v1/health') {
        const h = api.health();
        const ok = h.dataPlane === 'ok';
        sendReply(res, reply(ok ? 200 : 503, ok ? h : { error: `the data plane is ${h.dataPlane} (last answer ${(h.answeredMsAgo / 1000).toFixed(1)} s ago)`, ...h }));
        return;
      }
      const body = method === 'GET' || method === 'DELETE' ? undefined : await readBody(req);
      await api.serve(method, url, body, res);
    } catch (e) {
      sendReply(res, errorReply(e, log, url));
    }
  };
}

/** `Authorization: Bearer <token>`, compared in constant time. */
function bearerMatches(req: IncomingMessage, token: Buffer): boolean {
  const h = req.headers.authorization;
  if (typeof h !== 'string' || !/^bearer /i.test(h)) return false;
  const got = Buffer.from(h.slice(7).trim());
  return got.length === token.length && timingSafeEqual(got, token);
}

/**
 * Listen on the unix socket (replacing a stale one; mode 0600 is its access
 * control) and optionally on loopback, where any local user can connect:
 * there every request must carry the bearer token from the token file.
 */
export async function listen(api: ApiFront, log: Logger, socket: string, loopback: { address: string; token: string; tokenFile: string } | null): Promise<Server[]> {
  const servers: Server[] = [];
  const h = front(api, log);
  if (existsSync(socket)) unlinkSync(socket);
  const s = createServer((q, r) => void h(q, r));
  await new Promise<void>((res, rej) => { s.once('error', rej); s.listen(socket, () => res()); });
  chmodSync(socket, 0o600);
  servers.push(s);
  if (loopback !== null) {
    const a = loopback.address;
    const [host, port] = [a.slice(0, a.lastIndexOf(':')).replace(/^\[|\]$/g, ''), Number(a.slice(a.lastIndexOf(':') + 1))];
    const token = Buffer.from(loopback.token);
    const t = createServer((q, r) => {
      if (bearerMatches(q, token)) {
        void h(q, r);
        return;
      }
      q.resume();
      const body = `${JSON.stringify({ error: `the loopback API needs "Authorization: Bearer <token>", the token being the contents of ${loopback.tokenFile} (root's)` }, null, 1)}\n`;
      r.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'www-authenticate': 'Bearer realm="vswitch"' });
      r.end(body);
    });
    await new Promise<void>((res, rej) => { t.once('error', rej); t.listen(port, host, () => res()); });
    servers.push(t);
  }
  return servers;
}
