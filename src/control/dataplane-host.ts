// The main thread's handle on the data plane, wherever it runs: on a thread
// of its own (the default; see dataplane-thread.ts for the other side) or,
// with `switch.dataPlane: main`, right here.

import { Worker } from 'node:worker_threads';
import type { ServerResponse } from 'node:http';
import { DataPlane, type DataPlaneInit, type FromPlane, type ToPlane } from './dataplane.js';
import { reply, serveLocal, sendReply, type ApiServe } from './api.js';
import type { Logger } from './log.js';

/**
 * The main thread watches the data-plane thread: a question every
 * `intervalMs`, answered from that thread's event loop. Unanswered for
 * `stallMs`, the data plane is stalled (a packet batch or a request that does
 * not end): logged, and GET /v1/health says so — the main thread answers that
 * one itself. A request the data plane has not answered after `callTimeoutMs`
 * gets 504.
 */
export interface Watchdog {
  intervalMs: number;
  stallMs: number;
  callTimeoutMs: number;
}
export const WATCHDOG: Watchdog = { intervalMs: 1000, stallMs: 5000, callTimeoutMs: 30_000 };

/** GET /v1/health, answered by the main thread. */
export interface Health {
  /** ok: the data plane answers; stalled: it has not for stallMs; down: its thread died; stopping. */
  dataPlane: 'ok' | 'stalled' | 'down' | 'stopping';
  /** How long ago the data-plane thread last answered the watchdog, ms (0 for dataPlane: main). */
  answeredMsAgo: number;
}

export interface DataPlaneHost {
  /** Answer an API request. */
  serve: ApiServe;
  /** Whether the data plane answers (see Watchdog). */
  health(): Health;
  /** Stop the data plane (ports closed, devices and namespaces removed). */
  stop(): Promise<void>;
  /** Set by the daemon: the data plane died (its thread threw); the daemon cleans up and exits. */
  onDeath: ((why: string) => void) | null;
  /** The thread the data plane runs on (Node's threadId; 0 for the main thread). */
  readonly threadId: number;
}

const THREAD_ENTRY = new URL('./dataplane-thread.js', import.meta.url);

export async function startDataPlane(init: DataPlaneInit, log: Logger, shutdown: () => void, entry = THREAD_ENTRY, watchdog = WATCHDOG): Promise<DataPlaneHost> {
  return init.mode === 'main' ? startHere(init, log, shutdown) : startThread(init, log, shutdown, entry, watchdog);
}

async function startHere(init: DataPlaneInit, log: Logger, shutdown: () => void): Promise<DataPlaneHost> {
  const plane = await DataPlane.start(init, log, shutdown);
  return {
    serve: serveLocal(plane.ctx),
    // On the main thread: if this answers, so does the data plane.
    health: () => ({ dataPlane: 'ok', answeredMsAgo: 0 }),
    stop: async () => plane.stop(),
    onDeath: null,
    threadId: 0,
  };
}

/** An open request: its reply goes to `res`. */
interface Pending {
  res: ServerResponse;
  done: () => void;
  /** Streaming: the headers went out. */
  streaming: boolean;
}

function startThread(init: DataPlaneInit, log: Logger, shutdown: () => void, entry: URL, wd: Watchdog): Promise<DataPlaneHost> {
  const worker = new Worker(entry, { workerData: init });
  const send = (m: ToPlane) => worker.postMessage(m);
  const pending = new Map<number, Pending>();
  let nextId = 1;
  let ready = false;
  let stopping: Promise<void> | null = null;
  let resolveStopped = (): void => {};
  let dead: string | null = null;
  let answeredAt = Date.now();
  let stalled = false;
  let ping = 0;
  const watch = setInterval(() => {
    if (!ready || dead !== null) return;
    send({ t: 'ping', n: ++ping });
    const age = Date.now() - answeredAt;
    if (!stalled && age >= wd.stallMs) {
      stalled = true;
      log.error('the data plane is not answering: a batch or a request on its thread does not end', { silentMs: age, openRequests: pending.size });
    }
  }, wd.intervalMs);
  watch.unref();

  const host: DataPlaneHost = {
    threadId: worker.threadId,
    onDeath: null,
    serve: (method, url, body, res) => new Promise<void>((done) => {
      if (dead !== null || stopping !== null) {
        sendReply(res, reply(503, { error: dead !== null ? `the data plane is down: ${dead}` : 'the switch is stopping' }));
        done();
        return;
      }
      const id = nextId++;
      pending.set(id, { res, done, streaming: false });
      // Not answered in time (a stalled data plane): say so rather than hang the client.
      const timer = setTimeout(() => {
        const p = pending.get(id);
        if (p === undefined || p.streaming) return;
        pending.delete(id);
        sendReply(res, reply(504, { error: `the data plane did not answer within ${wd.callTimeoutMs / 1000} s` }));
        done();
      }, wd.callTimeoutMs);
      timer.unref();
      res.once('close', () => {
        clearTimeout(timer);
        const p = pending.get(id);
        if (p === undefined) return;
        pending.delete(id);
        // A stream the client left must stop; one not opened yet is stopped when it opens (below).
        if (p.streaming) send({ t: 'close', id });
        done();
      });
      send({ t: 'call', id, method, url, body });
    }),
    health: () => ({
      dataPlane: dead !== null ? 'down' : stopping !== null ? 'stopping' : stalled ? 'stalled' : 'ok',
      answeredMsAgo: Date.now() - answeredAt,
    }),
    stop: () => {
      if (stopping !== null) return stopping;
      stopping = new Promise<void>((r) => { resolveStopped = r; });
      if (dead !== null) resolveStopped();
      else send({ t: 'stop' });
      return stopping;
    },
  };

  const finishAll = () => {
    for (const [id, p] of pending) {
      pending.delete(id);
      if (p.streaming) p.res.end();
      else sendReply(p.res, reply(503, { error: 'the data plane is down' }));
      p.done();
    }
  };

  return new Promise<DataPlaneHost>((resolve, reject) => {
    worker.on('message', (m: FromPlane) => {
      switch (m.t) {
        case 'ready':
          ready = true;
          resolve(host);
          break;
        case 'failed':
          reject(new Error(m.message));
          void worker.terminate();
          break;
        case 'log':
          log[m.level](m.msg, m.fields);
          break;
        case 'reply': {
          const p = pending.get(m.id);
          if (p === undefined) break;
          pending.delete(m.id);
          // A handler that failed after it started a stream: end what the client got.
          if (p.streaming) p.res.end();
          else sendReply(p.res, { status: m.status, json: m.json });
          p.done();
          break;
        }
        case 'stream': {
          const p = pending.get(m.id);
          // Its client left already: nobody to stream to.
          if (p === undefined) { send({ t: 'close', id: m.id }); break; }
          p.streaming = true;
          p.res.writeHead(200, { 'content-type': m.contentType });
          break;
        }
        case 'data': {
          const p = pending.get(m.id);
          // Gone: the other side was told (close) and does not wait for this one.
          if (p === undefined) break;
          p.res.write(Buffer.from(m.chunk), () => send({ t: 'ack', id: m.id }));
          break;
        }
        case 'end': {
          const p = pending.get(m.id);
          if (p === undefined) break;
          pending.delete(m.id);
          p.res.end();
          p.done();
          break;
        }
        case 'shutdown':
          shutdown();
          break;
        case 'pong':
          answeredAt = Date.now();
          if (stalled) {
            stalled = false;
            log.info('the data plane answers again');
          }
          break;
        case 'stopped':
          clearInterval(watch);
          finishAll();
          // Let its last callbacks run; then make sure it is gone.
          setTimeout(() => void worker.terminate(), 1000).unref();
          resolveStopped();
          break;
      }
    });
    const die = (why: string) => {
      if (dead !== null) return;
      dead = why;
      clearInterval(watch);
      finishAll();
      if (!ready) {
        reject(new Error(`data-plane thread: ${why}`));
        return;
      }
      if (stopping !== null) {
        resolveStopped();
        return;
      }
      host.onDeath?.(why);
    };
    worker.on('error', (e) => die(String((e as Error).stack ?? e)));
    worker.on('exit', (code) => die(`exited with code ${code}`));
  });
}
