// The management API client the CLI uses: HTTP over the daemon's unix socket.

import { request, type IncomingMessage } from 'node:http';

export const DEFAULT_SOCKET = '/run/vswitch/vswitch.sock';

export class UnreachableError extends Error {}

export class ApiFailure extends Error {
  constructor(readonly status: number, message: string, readonly issues?: unknown) {
    super(message);
  }
}

export class Client {
  constructor(readonly socket: string) {}

  private raw(method: string, path: string, body?: unknown): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = request({
        // No keep-alive: a reused socket can meet the daemon's idle timeout mid-request (EPIPE).
        socketPath: this.socket, method, path, agent: false,
        headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      }, resolve);
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'EACCES') {
          reject(new UnreachableError(`permission denied on ${this.socket}: the management socket is root's (run as root)`));
        } else if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
          reject(new UnreachableError(`cannot reach vswitch at ${this.socket} (${e.code}): is it running? start it with \`vswitch run --config FILE\`, or point --socket at it`));
        } else reject(e);
      });
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  async call<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body);
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    let json: unknown;
    try {
      json = text.length > 0 ? JSON.parse(text) : {};
    } catch {
      throw new ApiFailure(res.statusCode ?? 0, `daemon answered with something that is not JSON: ${text.slice(0, 200)}`);
    }
    if ((res.statusCode ?? 500) >= 400) {
      const j = json as { error?: string; issues?: unknown };
      throw new ApiFailure(res.statusCode ?? 500, j.error ?? `HTTP ${res.statusCode}`, j.issues);
    }
    return json as T;
  }

  /** A streaming GET (captures): resolves with the response to pipe. */
  async stream(path: string): Promise<IncomingMessage> {
    const res = await this.raw('GET', path);
    if ((res.statusCode ?? 500) >= 400) {
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      let msg = `HTTP ${res.statusCode}`;
      try { msg = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error: string }).error; } catch { /* keep the status */ }
      throw new ApiFailure(res.statusCode ?? 500, msg);
    }
    return res;
  }
}
