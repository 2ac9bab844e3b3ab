// The data-plane thread (switch.dataPlane: thread, the default): runs the
// DataPlane — switch, ports, their I/O — and answers the API requests the
// main thread's HTTP front end forwards, between batches of packets (this
// thread's event loop runs one or the other, so no lock guards the switch's
// state). Logs go to the main thread's logger; a streamed reply (a capture)
// goes back chunk by chunk, each acknowledged once written to the client, so
// a slow client holds the capture's buffers, not this thread.

import { parentPort, workerData } from 'node:worker_threads';
import { Writable } from 'node:stream';
import { DataPlane, type DataPlaneInit, type FromPlane, type ToPlane } from './dataplane.js';
import { dispatch, type ApiCall } from './api.js';
import type { Logger } from './log.js';

const port = parentPort!;
const post = (m: FromPlane, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer);

function remoteLogger(base: Record<string, unknown> = {}): Logger {
  const at = (level: 'debug' | 'info' | 'warn' | 'error') => (msg: string, fields?: Record<string, unknown>) => {
    const all = { ...base, ...fields };
    try {
      post({ t: 'log', level, msg, fields: all });
    } catch {
      // Something in the fields does not clone (a function, a handle): send what JSON keeps of it.
      post({ t: 'log', level, msg, fields: JSON.parse(JSON.stringify(all)) as Record<string, unknown> });
    }
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (f) => remoteLogger({ ...base, ...f }) };
}

/** A streamed reply's open state on this side. */
interface Stream {
  /** Write callbacks waiting for the main thread's acknowledgement, in order. */
  waiting: ((e?: Error | null) => void)[];
  closeFns: (() => void)[];
  closed: boolean;
}
const streams = new Map<number, Stream>();

function closeStream(id: number): void {
  const st = streams.get(id);
  // No stream: a JSON call (its reply goes nowhere), or one that ended. A handler opens its stream
  // while handling the call message, so a hang-up, which comes later, always finds it.
  if (st === undefined || st.closed) return;
  st.closed = true;
  streams.delete(id);
  // Nobody reads any more: what was waiting counts as written, so the writer can finish.
  for (const cb of st.waiting.splice(0)) cb();
  for (const fn of st.closeFns.splice(0)) fn();
}

function callFor(id: number, method: string, url: string): ApiCall {
  const closeFns: (() => void)[] = [];
  return {
    method,
    url: new URL(url, 'http://x'),
    status: 200,
    stream: (contentType) => {
      const st: Stream = { waiting: [], closeFns, closed: false };
      streams.set(id, st);
      post({ t: 'stream', id, contentType });
      return new Writable({
        write(chunk: Buffer, _enc, cb) {
          if (st.closed) return cb();
          // A copy of the bytes of its own, moved (not cloned) to the main thread.
          const ab = chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.byteLength) as ArrayBuffer;
          st.waiting.push(cb);
          post({ t: 'data', id, chunk: ab }, [ab]);
        },
        final(cb) {
          if (!st.closed) post({ t: 'end', id });
          cb();
          closeStream(id);
        },
      });
    },
    onClose: (fn) => { closeFns.push(fn); },
  };
}

async function main(): Promise<void> {
  const init = workerData as DataPlaneInit;
  const log = remoteLogger();
  let plane: DataPlane;
  try {
    plane = await DataPlane.start(init, log, () => post({ t: 'shutdown' }));
  } catch (e) {
    post({ t: 'failed', message: (e as Error).message });
    return;
  }
  port.on('message', (m: ToPlane) => {
    switch (m.t) {
      case 'call':
        void dispatch(plane.ctx, callFor(m.id, m.method, m.url), m.body).then((r) => {
          if (r !== null) post({ t: 'reply', id: m.id, status: r.status, json: r.json });
        });
        break;
      case 'ack':
        streams.get(m.id)?.waiting.shift()?.();
        break;
      case 'close':
        closeStream(m.id);
        break;
      case 'ping':
        post({ t: 'pong', n: m.n });
        break;
      case 'stop':
        for (const id of [...streams.keys()]) closeStream(id);
        plane.stop();
        post({ t: 'stopped' });
        port.close();
        break;
    }
  });
  post({ t: 'ready' });
}

void main();
