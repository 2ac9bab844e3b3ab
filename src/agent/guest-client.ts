// The agent's side of the guest API (src/control/guest-api.ts): HTTP over
// the port's own unix socket with the port's bearer token. Every call
// resolves with the status and the JSON body; only transport failures
// (socket gone, daemon not answering) reject.

import { request, type ClientRequest } from 'node:http';
import type { SaDirection, SecurityAssociation } from '../offload/ipsec/sa.js';
import { saRequestBody } from './sa-file.js';

export interface GuestReply<T = Record<string, unknown>> {
  status: number;
  body: T;
}

/** What GET /v1/guest says the switch offers this port. */
export interface GuestAdvertisement {
  port: string;
  kind: string;
  up: boolean;
  ipsec: { enabled: boolean; algorithms: string[]; maxSa: number; transport: boolean; tunnel: boolean; v4?: boolean; v6?: boolean };
}

/** One upload event: the SAs the switch hands back, with their sequence numbers and replay windows. */
export interface GuestUploadEvent {
  type: 'upload';
  port: string;
  reason: string;
  sas: Record<string, unknown>[];
}

export type OffloadResult =
  | { ok: true; view: Record<string, unknown> }
  | { ok: false; status: number; reason: string; detail: string };

export class GuestApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export class GuestClient {
  private readonly inflight = new Set<ClientRequest>();
  private closed = false;

  constructor(readonly socket: string, private readonly token: string) {}

  call<T = Record<string, unknown>>(method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<GuestReply<T>> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new GuestApiError(0, 'guest API client closed'));
        return;
      }
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headers: Record<string, string | number> = { authorization: `Bearer ${this.token}` };
      if (payload !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = Buffer.byteLength(payload);
      }
      // A connection per request (agent: false): Node 20's default agent keeps connections alive,
      // and one the daemon closes while idle fails the next request with EPIPE/ECONNRESET.
      const req = request({ socketPath: this.socket, method, path, headers, timeout: timeoutMs, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => { this.inflight.delete(req); reject(e); });
        res.on('end', () => {
          this.inflight.delete(req);
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown = {};
          try {
            if (text.length > 0) json = JSON.parse(text);
          } catch {
            reject(new GuestApiError(res.statusCode ?? 0, `guest API answered with something that is not JSON: ${text.slice(0, 200)}`));
            return;
          }
          resolve({ status: res.statusCode ?? 0, body: json as T });
        });
      });
      this.inflight.add(req);
      req.on('timeout', () => req.destroy(new GuestApiError(0, `guest API at ${this.socket}: no answer in ${timeoutMs} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => {
        this.inflight.delete(req);
        if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') reject(new GuestApiError(0, `cannot reach the guest API at ${this.socket} (${e.code})`));
        else reject(e);
      });
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  private static fail(r: GuestReply<unknown>, what: string): never {
    const b = r.body as { error?: string };
    throw new GuestApiError(r.status, `${what}: HTTP ${r.status}${b.error !== undefined ? `: ${b.error}` : ''}`);
  }

  async advertisement(): Promise<GuestAdvertisement> {
    const r = await this.call<GuestAdvertisement>('GET', '/v1/guest');
    if (r.status !== 200) GuestClient.fail(r, 'GET /v1/guest');
    return r.body;
  }

  /** Offload an SA: accepted (201), or refused with the switch's reason (422, or 503 when the switch has no IPsec). */
  async offload(sa: SecurityAssociation): Promise<OffloadResult> {
    const r = await this.call('POST', '/v1/guest/sas', saRequestBody(sa));
    if (r.status === 201) return { ok: true, view: r.body };
    const b = r.body as { error?: string; reason?: string };
    if (r.status === 422 || r.status === 503) return { ok: false, status: r.status, reason: b.reason ?? `http-${r.status}`, detail: b.error ?? '' };
    GuestClient.fail(r, `POST /v1/guest/sas (${sa.direction} 0x${sa.spi.toString(16)})`);
  }

  /** Remove an SA from the switch; false when the switch has none such (404). */
  async remove(direction: SaDirection, spi: number): Promise<boolean> {
    const r = await this.call('DELETE', `/v1/guest/sas/${direction}/${spi}`);
    if (r.status === 200) return true;
    if (r.status === 404) return false;
    GuestClient.fail(r, `DELETE /v1/guest/sas/${direction}/${spi}`);
  }

  /** Upload events, waiting up to `waitMs` for one. */
  async events(waitMs: number): Promise<GuestUploadEvent[]> {
    const r = await this.call<{ events: GuestUploadEvent[] }>('GET', `/v1/guest/events?wait=${Math.round(waitMs)}`, undefined, waitMs + 10_000);
    if (r.status !== 200) GuestClient.fail(r, 'GET /v1/guest/events');
    return r.body.events ?? [];
  }

  /** Tell the switch the VM now handles an uploaded SA itself. */
  async ackUploaded(direction: SaDirection, spi: number): Promise<void> {
    const r = await this.call('POST', `/v1/guest/sas/${direction}/${spi}/uploaded`);
    if (r.status !== 200) GuestClient.fail(r, `POST /v1/guest/sas/${direction}/${spi}/uploaded`);
  }

  async list(): Promise<{ sas: Record<string, unknown>[]; rejected: Record<string, unknown>[] }> {
    const r = await this.call<{ sas: Record<string, unknown>[]; rejected: Record<string, unknown>[] }>('GET', '/v1/guest/sas');
    if (r.status !== 200) GuestClient.fail(r, 'GET /v1/guest/sas');
    return r.body;
  }

  /** Abort every request in flight (a pending long poll) and refuse new ones. */
  close(): void {
    this.closed = true;
    for (const r of this.inflight) r.destroy(new GuestApiError(0, 'guest API client closed'));
    this.inflight.clear();
  }

  /** Allow requests again after close() (the agent's shutdown still has SAs to remove). */
  reopen(): void {
    this.closed = false;
  }
}
