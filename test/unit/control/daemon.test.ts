// The daemon's two halves: the control plane on the main thread (config,
// API front end, shutdown) and the data plane on a thread of its own, and
// what happens when that thread dies. No ports, so no root needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'node:net';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startDaemon, type DaemonHandle } from '../../../src/control/daemon.js';
import type { Watchdog } from '../../../src/control/dataplane-host.js';
import { createLogger } from '../../../src/control/log.js';
import { Client, ApiFailure } from '../../../src/cli/client.js';

interface Setup { dir: string; socket: string; lines: string[] }

/**
 * A daemon without ports in a directory of its own (`switch` lines of the
 * config in `extra`), its log lines collected, with the data-plane thread's
 * script from fixtures/ when `fixture` is given; `body` runs against it, and
 * the daemon is stopped and the directory removed whatever happens.
 */
async function withDaemon(
  o: { extra?: string; fixture?: string; watchdog?: Watchdog },
  body: (d: DaemonHandle, s: Setup, api: Client) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vswitch-daemon-'));
  const socket = join(dir, 'api.sock');
  const config = join(dir, 'switch.yaml');
  writeFileSync(config, `switch:\n  name: t\n  stateDir: ${dir}\n  api:\n    socket: ${socket}\n${o.extra ?? ''}ports: []\n`);
  const lines: string[] = [];
  let d: DaemonHandle | null = null;
  try {
    d = await startDaemon(config, {
      log: createLogger({ level: 'info', write: (l) => lines.push(l) }),
      ...(o.fixture !== undefined ? { dataPlaneEntry: new URL(`./fixtures/${o.fixture}.js`, import.meta.url) } : {}),
      ...(o.watchdog !== undefined ? { watchdog: o.watchdog } : {}),
    });
    await body(d, { dir, socket, lines }, new Client(socket));
  } finally {
    await d?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the data plane runs on its own thread and answers the API through the main thread; shutdown over the API stops both', async () => {
  await withDaemon({}, async (d, s, api) => {
    assert.ok(d.dataPlaneThread > 0, 'a worker thread');
    await new Promise((r) => setTimeout(r, 1100)); // one watchdog question and its answer; the I/O worker up
    const sw = await api.call<{ dataPlane: { mode: string; threadId: number }; ports: number; threads: { role: string; threadId: number; tid: number; cpuSeconds: number | null }[] }>('GET', '/v1/switch');
    assert.deepEqual(sw.dataPlane, { mode: 'thread', threadId: d.dataPlaneThread });
    assert.equal(sw.ports, 0);
    // Every thread with its kernel id and CPU time: main (this process), the data plane, the I/O worker.
    assert.deepEqual(sw.threads.map((t) => t.role), ['main', 'data-plane', 'io']);
    assert.equal(sw.threads[0]!.tid, process.pid);
    assert.equal(sw.threads[1]!.threadId, d.dataPlaneThread);
    assert.equal(new Set(sw.threads.map((t) => t.tid)).size, 3, `three different kernel threads: ${JSON.stringify(sw.threads)}`);
    assert.ok(sw.threads.every((t) => t.tid > 0 && typeof t.cpuSeconds === 'number' && t.cpuSeconds >= 0), JSON.stringify(sw.threads));
    const h = await api.call<{ dataPlane: string; answeredMsAgo: number }>('GET', '/v1/health');
    assert.equal(h.dataPlane, 'ok');
    assert.ok(h.answeredMsAgo < 1100, `the real data-plane thread answers the watchdog (${h.answeredMsAgo} ms ago)`);
    // Errors cross the thread with their status and message.
    await assert.rejects(api.call('GET', '/v1/ports/nope'), (e: ApiFailure) => e.status === 404 && /no port nope/.test(e.message));
    await assert.rejects(api.call('PATCH', '/v1/switch', {}), (e: ApiFailure) => e.status === 405);
    await api.call('POST', '/v1/shutdown');
    assert.equal(await d.stopped, null, 'a clean stop');
    assert.ok(!existsSync(s.socket), 'socket removed');
    assert.ok(!existsSync(join(s.dir, 't.state.json')), 'state file removed');
  });
});

test('with dataPlane: main the switch runs on the main thread', async () => {
  await withDaemon({ extra: '  dataPlane: main\n' }, async (d, _s, api) => {
    assert.equal(d.dataPlaneThread, 0);
    const sw = await api.call<{ dataPlane: unknown }>('GET', '/v1/switch');
    assert.deepEqual(sw.dataPlane, { mode: 'main', threadId: 0 });
    await d.stop();
    assert.equal(await d.stopped, null);
  });
});

test('a data-plane thread that dies: the request in flight gets 503, the daemon logs why, cleans up and reports it (the CLI exits 1)', async () => {
  await withDaemon({ fixture: 'failing-plane' }, async (d, s, api) => {
    await assert.rejects(api.call('GET', '/v1/switch'), (e: ApiFailure) => e.status === 503 && /data plane is down/.test(e.message));
    const why = await d.stopped;
    assert.match(why ?? '', /a bug in the data plane/);
    assert.ok(s.lines.some((l) => /the data-plane thread died/.test(l) && /a bug in the data plane/.test(l)), 'logged with the reason');
    assert.ok(!existsSync(s.socket), 'socket removed');
  });
});

test('a client that hangs up before the data-plane thread opened its stream: the thread is told, so a capture cannot run on for nobody', async () => {
  await withDaemon({ fixture: 'slow-stream-plane' }, async (d, s) => {
    await new Promise<void>((res, rej) => {
      const c = createConnection(s.socket, () => {
        c.end('GET /v1/ports/vm1/capture HTTP/1.1\r\nHost: vswitch\r\n\r\n');
        setTimeout(() => { c.destroy(); res(); }, 50);
      });
      c.once('error', rej);
    });
    await new Promise((r) => setTimeout(r, 600));
    assert.ok(s.lines.some((l) => /told: client gone/.test(l)), `the thread was told: ${s.lines.join('\n')}`);
    await d.stop();
    assert.equal(await d.stopped, null);
  });
});

test('a data plane that stops answering (stuck for 5 s): GET /v1/health (answered by the main thread) says stalled, requests get 504 instead of hanging, it is logged, and all is well again when it answers', async () => {
  await withDaemon({ fixture: 'stalling-plane', watchdog: { intervalMs: 50, stallMs: 300, callTimeoutMs: 2000 } }, async (d, s, api) => {
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await api.call<{ dataPlane: string }>('GET', '/v1/health')).dataPlane, 'ok');
    const t0 = Date.now();
    const stuck = api.call('GET', '/v1/switch').then(() => null, (e: ApiFailure) => e);
    await new Promise((r) => setTimeout(r, 500));
    await assert.rejects(api.call('GET', '/v1/health'), (e: ApiFailure) => e.status === 503 && /stalled/.test(e.message), 'the main thread answers while the data plane is stuck');
    // `vswitch status` says so and exits 1 (a liveness check can use it).
    const status = await new Promise<{ code: number | null; err: string }>((res) => {
      const c = spawn(process.execPath, [fileURLToPath(new URL('../../../src/cli/main.js', import.meta.url)), 'status', '--socket', s.socket]);
      let err = '';
      c.stderr.on('data', (b: Buffer) => { err += b.toString(); });
      c.once('exit', (code) => res({ code, err }));
    });
    assert.equal(status.code, 1, status.err);
    assert.match(status.err, /not well: the data plane is stalled/);
    const e = await stuck;
    assert.ok(e !== null && e.status === 504 && /did not answer within 2 s/.test(e.message), `504 (the timeout's answer, not the late 200): ${String(e)}`);
    await new Promise((r) => setTimeout(r, Math.max(0, t0 + 5600 - Date.now())));
    assert.equal((await api.call<{ dataPlane: string }>('GET', '/v1/health')).dataPlane, 'ok', 'healthy again');
    assert.ok(s.lines.some((l) => /the data plane is not answering/.test(l)), 'the stall was logged');
    assert.ok(s.lines.some((l) => /the data plane answers again/.test(l)), 'and the recovery');
    await d.stop();
    assert.equal(await d.stopped, null);
  });
});
