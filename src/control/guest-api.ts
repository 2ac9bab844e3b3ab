// The guest API: how a VM (its `vswitch guest-agent`) offloads IPsec SAs and
// hears about uploads. Each vNIC port gets its own unix socket and its own
// random token; a request acts for that port only, so a VM can never touch
// another VM's SAs or claim another VM's addresses (the switch checks the
// addresses against the port too). The socket and token file are 0600 and
// removed with the port.
//
//   GET    /v1/guest                           the port and the IPsec offload advertised to it
//   GET    /v1/guest/sas                       its SAs (state, counters) and recent rejections
//   POST   /v1/guest/sas                       offload an SA → 201, or 422 {error, reason}
//   DELETE /v1/guest/sas/{in|out}/{spi}        remove one
//   GET    /v1/guest/events?wait=MS            upload events (long poll)
//   POST   /v1/guest/sas/{in|out}/{spi}/uploaded   the VM installed an uploaded SA itself

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { join } from 'node:path';
import type { Port } from '../switch/port.js';
import type { Switch } from '../switch/switch.js';
import type { SecurityAssociation, SaDirection } from '../offload/ipsec/sa.js';
import type { Logger } from './log.js';

export interface GuestEndpoint {
  socket: string;
  tokenFile: string;
}

interface Listener {
  server: Server;
  endpoint: GuestEndpoint;
  token: Buffer;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly reason?: string) {
    super(message);
  }
}

const SA_KEYS = new Set(['spi', 'direction', 'mode', 'algorithm', 'key', 'salt', 'src', 'dst', 'selector', 'seq', 'replayWindow']);

/** An SA request body into an SA, or a 400 saying what is wrong with it. */
export function parseSaRequest(b: unknown): SecurityAssociation {
  if (typeof b !== 'object' || b === null) throw new HttpError(400, 'body must be a JSON object');
  const o = b as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!SA_KEYS.has(k)) throw new HttpError(400, `unknown field "${k}"`);
  const hexField = (k: string): Uint8Array => {
    const v = o[k];
    if (typeof v !== 'string' || !/^([0-9a-fA-F]{2})+$/.test(v)) throw new HttpError(400, `${k} must be hex bytes`);
    return new Uint8Array(Buffer.from(v, 'hex'));
  };
  const oneOf = <T extends string>(k: string, allowed: readonly T[]): T => {
    const v = o[k];
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) throw new HttpError(400, `${k} must be one of ${allowed.join(', ')}`);
    return v as T;
  };
  const str = (k: string): string => {
    const v = o[k];
    if (typeof v !== 'string' || v.length === 0) throw new HttpError(400, `${k} must be an address`);
    return v;
  };
  const spi = o['spi'];
  if (typeof spi !== 'number' || !Number.isInteger(spi)) throw new HttpError(400, 'spi must be an integer');
  const sa: SecurityAssociation = {
    spi,
    direction: oneOf('direction', ['in', 'out'] as const),
    mode: oneOf('mode', ['transport', 'tunnel'] as const),
    algorithm: oneOf('algorithm', ['aes-gcm-128', 'aes-gcm-256'] as const),
    key: hexField('key'),
    salt: hexField('salt'),
    src: str('src'),
    dst: str('dst'),
  };
  if (o['selector'] !== undefined) {
    if (typeof o['selector'] !== 'object' || o['selector'] === null) throw new HttpError(400, 'selector must be an object');
    sa.selector = o['selector'] as SecurityAssociation['selector'];
  }
  if (o['seq'] !== undefined) {
    if (typeof o['seq'] !== 'number' || !Number.isInteger(o['seq']) || o['seq'] < 1) throw new HttpError(400, 'seq must be a positive integer');
    sa.seq = o['seq'];
  }
  if (o['replayWindow'] !== undefined) {
    if (typeof o['replayWindow'] !== 'number' || !Number.isInteger(o['replayWindow']) || o['replayWindow'] < 0) throw new HttpError(400, 'replayWindow must be an integer ≥ 0');
    sa.replayWindow = o['replayWindow'];
  }
  return sa;
}

function send(res: ServerResponse, status: number, obj: unknown): void {
  const body = `${JSON.stringify(obj)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

async function body(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > 65536) throw new HttpError(413, 'body too large');
    chunks.push(c as Buffer);
  }
  if (n === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new HttpError(400, 'body is not JSON');
  }
}

export class GuestApi {
  private readonly listeners = new Map<string, Listener>();

  constructor(private readonly sw: Switch, private readonly dir: string, private readonly log: Logger) {}

  endpoint(port: string): GuestEndpoint | undefined {
    return this.listeners.get(port)?.endpoint;
  }

  /** Open the port's guest socket (vNICs only). */
  async open(port: Port): Promise<GuestEndpoint | null> {
    if (!port.isVnic) return null;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const socket = join(this.dir, `${port.name}.sock`);
    const tokenFile = join(this.dir, `${port.name}.token`);
    const token = randomBytes(32);
    writeFileSync(tokenFile, `${token.toString('hex')}\n`, { mode: 0o600 });
    rmSync(socket, { force: true });
    const server = createServer((req, res) => void this.handle(port, token, req, res));
    await new Promise<void>((ok, fail) => { server.once('error', fail); server.listen(socket, () => ok()); });
    chmodSync(socket, 0o600);
    const endpoint = { socket, tokenFile };
    this.listeners.set(port.name, { server, endpoint, token });
    return endpoint;
  }

  close(portName: string): void {
    const l = this.listeners.get(portName);
    if (l === undefined) return;
    this.listeners.delete(portName);
    l.server.closeAllConnections?.();
    l.server.close();
    rmSync(l.endpoint.socket, { force: true });
    rmSync(l.endpoint.tokenFile, { force: true });
  }

  closeAll(): void {
    for (const name of [...this.listeners.keys()]) this.close(name);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private authorized(req: IncomingMessage, token: Buffer): boolean {
    const h = req.headers['authorization'];
    if (typeof h !== 'string' || !h.startsWith('Bearer ')) return false;
    const given = Buffer.from(h.slice(7).trim(), 'hex');
    return given.length === token.length && timingSafeEqual(given, token);
  }

  private async handle(port: Port, token: Buffer, req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (!this.authorized(req, token)) throw new HttpError(401, `this socket is port ${port.name}'s; its token is required`);
      const ipsec = this.sw.ipsec;
      const url = new URL(req.url ?? '/', 'http://guest');
      const path = url.pathname.replace(/\/+$/, '');
      const m = /^\/v1\/guest\/sas\/(in|out)\/(\d+)(\/uploaded)?$/.exec(path);
      if (req.method === 'GET' && path === '/v1/guest') {
        return send(res, 200, { port: port.name, kind: port.kind, up: port.up, ipsec: port.advertised.ipsec });
      }
      if (ipsec === null) throw new HttpError(503, 'IPsec offload is not enabled on this switch', 'ipsec-not-advertised');
      if (req.method === 'GET' && path === '/v1/guest/sas') {
        return send(res, 200, { sas: ipsec.list(port), rejected: ipsec.rejected(port) });
      }
      if (req.method === 'POST' && path === '/v1/guest/sas') {
        const sa = parseSaRequest(await body(req));
        const r = ipsec.add(port, sa);
        if ('reason' in r) {
          this.log.info('SA offload refused', { port: port.name, spi: sa.spi, direction: sa.direction, reason: r.reason });
          throw new HttpError(422, r.detail, r.reason);
        }
        this.log.info('SA offloaded', { port: port.name, spi: sa.spi, direction: sa.direction, uplink: r.uplink.name });
        return send(res, 201, r.view());
      }
      if (req.method === 'GET' && path === '/v1/guest/events') {
        const wait = Math.min(Number(url.searchParams.get('wait') ?? 0) || 0, 60_000);
        let closed = false;
        res.once('close', () => { closed = true; });
        const events = await ipsec.nextEvents(port, wait, () => closed || res.destroyed);
        // The agent hung up while waiting: its events go to the next request.
        if (closed || res.destroyed) return ipsec.giveBack(port, events);
        return send(res, 200, { events });
      }
      if (m !== null) {
        const dir = m[1] as SaDirection;
        const spi = Number(m[2]);
        if (req.method === 'DELETE' && m[3] === undefined) {
          if (!ipsec.remove(port, dir, spi)) throw new HttpError(404, `no ${dir}bound SA ${spi} on port ${port.name}`);
          return send(res, 200, { removed: { direction: dir, spi } });
        }
        if (req.method === 'POST' && m[3] !== undefined) {
          if (!ipsec.ackUploaded(port, dir, spi)) throw new HttpError(409, `SA ${dir} ${spi} is not being uploaded`);
          this.log.info('SA now handled by the VM', { port: port.name, spi, direction: dir });
          return send(res, 200, { state: 'uploaded' });
        }
      }
      throw new HttpError(404, `no such endpoint ${req.method} ${path}`);
    } catch (e) {
      if (e instanceof HttpError) send(res, e.status, { error: e.message, ...(e.reason !== undefined ? { reason: e.reason } : {}) });
      else send(res, 500, { error: (e as Error).message });
    }
  }
}
