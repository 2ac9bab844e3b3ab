// The data plane: the Runtime (switch, ports, their I/O, IPsec engine), the
// guest sockets and the API's handlers over them. By default it runs on a
// thread of its own (dataplane-thread.ts), so the main thread keeps only the
// control plane — configuration, the HTTP API's front end, signals, logs,
// crash cleanup — and nothing there (a slow client, a log line, a timer)
// delays a packet. `switch.dataPlane: main` runs it on the main thread
// instead (one thread fewer; for comparison).

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import { parse as parseYaml } from 'yaml';
import { parseConfig, type ConfigYaml, type PortYaml } from './config.js';
import { Runtime } from './runtime.js';
import type { Logger } from './log.js';
import type { ApiContext } from './api.js';
import { GuestApi } from './guest-api.js';
import { nodeAead } from '../io/aead-node.js';
import { nativeAeadIfAvailable } from '../io/aead-native.js';
import { native, nativeAvailable } from '../io/native/index.js';

export type DataPlaneMode = 'thread' | 'main';

/** What the data plane is started with (plain data: it may cross to another thread). */
export interface DataPlaneInit {
  configPath: string;
  /** The configuration file's text as the main thread read and checked it. */
  configText: string;
  stateFile: string;
  startedAt: number;
  mode: DataPlaneMode;
}

/** What the daemon records for crash recovery (see recoverPrevious). */
export interface StateFile {
  pid: number;
  name: string;
  startedAt: string;
  socket: string;
  namespaces: string[];
}

export class DataPlane {
  private constructor(readonly ctx: ApiContext) {}

  /**
   * Build the runtime and bring every port up, all or nothing: on failure what
   * was made is removed again and the error names the port and the file.
   */
  static async start(init: DataPlaneInit, log: Logger, shutdown: () => void): Promise<DataPlane> {
    const cfg = parseConfig(init.configText, init.configPath);
    const s = cfg.settings;
    const yaml = parseYaml(init.configText) as ConfigYaml;
    const rt = new Runtime({ macAgingMs: s.macAgingMs, ioWorkers: s.workers, workerReads: s.workerReads, workerPorts: s.workerPorts, log: (level, msg, fields) => log[level](msg, fields) });
    // IPsec task offload: vswitch's ESP engine serves uplinks configured with `ipsec:`; its AES-GCM
    // runs in the native shim with a context per SA (node:crypto, ~4× slower, if the shim is missing).
    rt.sw.enableIpsec(nativeAeadIfAvailable() ?? nodeAead);
    const guest = new GuestApi(rt.sw, join(s.stateDir, `${s.name}.guest`), log);
    const saveState = () => {
      const st: StateFile = { pid: process.pid, name: s.name, startedAt: new Date(init.startedAt).toISOString(), socket: s.socket, namespaces: rt.createdNamespaces() };
      writeFileSync(init.stateFile, JSON.stringify(st, null, 1));
    };
    saveState();
    const portYaml = new Map<string, PortYaml>();
    const ctx: ApiContext = {
      rt, log, name: s.name, startedAt: init.startedAt, portYaml, shutdown, saveState, guest,
      dataPlane: { mode: init.mode, threadId, tid: nativeAvailable() ? native().gettid() : 0 },
    };
    const plane = new DataPlane(ctx);
    try {
      cfg.ports.forEach((spec, i) => {
        try {
          rt.addPort(spec);
        } catch (e) {
          throw new Error(`port ${spec.name} (${init.configPath}, ports[${i}]): ${(e as Error).message}`);
        }
        portYaml.set(spec.name, yaml.ports[i]!);
        saveState();
      });
      for (const p of rt.sw.listPorts()) await guest.open(p);
    } catch (e) {
      plane.stop();
      throw e;
    }
    return plane;
  }

  /** Close every guest socket and port, remove what was created. Idempotent. */
  stop(): void {
    this.ctx.guest.closeAll();
    this.ctx.rt.stop();
  }
}

// --- between the main thread and a data-plane thread -------------------------

/** Main thread → data-plane thread. */
export type ToPlane =
  | { t: 'call'; id: number; method: string; url: string; body: unknown }
  /** The streamed reply's chunk `id` was written to the client. */
  | { t: 'ack'; id: number }
  /** The client of a streamed reply hung up. */
  | { t: 'close'; id: number }
  /** The watchdog's question: answered from the thread's event loop, so between two batches. */
  | { t: 'ping'; n: number }
  | { t: 'stop' };

/** Data-plane thread → main thread. */
export type FromPlane =
  | { t: 'ready' }
  | { t: 'failed'; message: string }
  | { t: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; msg: string; fields?: Record<string, unknown> }
  | { t: 'reply'; id: number; status: number; json: string }
  | { t: 'stream'; id: number; contentType: string }
  | { t: 'data'; id: number; chunk: ArrayBuffer }
  | { t: 'end'; id: number }
  /** POST /v1/shutdown: the main thread stops the daemon. */
  | { t: 'shutdown' }
  | { t: 'pong'; n: number }
  | { t: 'stopped' };
