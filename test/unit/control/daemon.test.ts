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
import { createLogger } from '../../../src/control/log.js';
import { Client, ApiFailure } from '../../../src/cli/client.js';

function setup(extra = ''): { dir: string; config: string; socket: string; lines: string[]; log: ReturnType<typeof createLogger> } {
  const dir = mkdtempSync(join(tmpdir(), 'vswitch-daemon-'));
  const socket = join(dir, 'api.sock');
  const config = join(dir, 'switch.yaml');
  writeFileSync(config, `switch:\n  name: t\n  stateDir: ${dir}\n  api:\n    socket: ${socket}\n${extra}ports: []\n`);
  const lines: string[] = [];
  return { dir, config, socket, lines, log: createLogger({ level: 'info', write: (l) => lines.push(l) }) };
}

test('the data plane runs on its own thread and answers the API through the main thread; shutdown over the API stops both', async () => {
  const s = setup();
  const d = await startDaemon(s.config, { log: s.log });
  try {
    assert.ok(d.dataPlaneThread > 0, 'a worker thread');
    const api = new Client(s.socket);
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
  } finally {
    await d.stop();
    rmSync(s.dir, { recursive: true, force: true });
  }
});

test('with dataPlane: main the switch runs on the main thread', async () => {
  const s = setup('  dataPlane: main\n');
  let d: DaemonHandle | null = null;
  try {
    d = await startDaemon(s.config, { log: s.log });
    assert.equal(d.dataPlaneThread, 0);
    const sw = await new Client(s.socket).call<{ dataPlane: unknown }>('GET', '/v1/switch');
    assert.deepEqual(sw.dataPlane, { mode: 'main', threadId: 0 });
    await d.stop();
    assert.equal(await d.stopped, null);
  } finally {
    await d?.stop();
    rmSync(s.dir, { recursive: true, force: true });
  }
});

test('a data-plane thread that dies: the request in flight gets 503, the daemon logs why, cleans up and reports it (the CLI exits 1)', async () => {
  const s = setup();
  let d: DaemonHandle | null = null;
  try {
    d = await startDaemon(s.config, { log: s.log, dataPlaneEntry: new URL('./fixtures/failing-plane.js', import.meta.url) });
    const api = new Client(s.socket);
    await assert.rejects(api.call('GET', '/v1/switch'), (e: ApiFailure) => e.status === 503 && /data plane is down/.test(e.message));
    const why = await d.stopped;
    assert.match(why ?? '', /a bug in the data plane/);
    assert.ok(s.lines.some((l) => /the data-plane thread died/.test(l) && /a bug in the data plane/.test(l)), 'logged with the reason');
    assert.ok(!existsSync(s.socket), 'socket removed');
  } finally {
    await d?.stop();
    rmSync(s.dir, { recursive: true, force: true });
  }
});

test('a client that hangs up before the data-plane thread opened its stream: the thread is told, so a capture cannot run on for nobody', async () => {
  const s = setup();
  let d: DaemonHandle | null = null;
  try {
    d = await startDaemon(s.config, { log: s.log, dataPlaneEntry: new URL('./fixtures/slow-stream-plane.js', import.meta.url) });
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
  } finally {
    await d?.stop();
    rmSync(s.dir, { recursive: true, force: true });
  }
});

test('a data plane that stops answering (stuck for 5 s): GET /v1/health (answered by the main thread) says stalled, requests get 504 instead of hanging, it is logged, and all is well again when it answers', async () => {
  const s = setup();
  let d: DaemonHandle | null = null;
  try {
    d = await startDaemon(s.config, {
      log: s.log, dataPlaneEntry: new URL('./fixtures/stalling-plane.js', import.meta.url),
      watchdog: { intervalMs: 50, stallMs: 300, callTimeoutMs: 2000 },
    });
    const api = new Client(s.socket);
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
      c.stderr.on('data', (d: Buffer) => { err += d.toString(); });
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
  } finally {
    await d?.stop();
    rmSync(s.dir, { recursive: true, force: true });
  }
});
