// The management API on loopback TCP (`switch.api.listen`): any local user
// can connect there, so every request must carry the bearer token the daemon
// keeps in a root-only file; the unix socket (mode 0600) needs none.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab } from '../util/lab.js';
import { hasCommand, inCI, isRoot } from '../util/env.js';

const runnable = isRoot() && hasCommand('ip');
const why = 'needs root and iproute2';
if (!runnable && inCI) throw new Error(`cannot run in CI: ${why}`);

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function get(port: number, path: string, auth?: string): Promise<{ status: number; body: Record<string, unknown>; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', agent: false, headers: auth !== undefined ? { authorization: auth } : {} }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(body) as Record<string, unknown>, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the loopback API answers only requests with the token; the token file is root\'s and survives a restart', { skip: !runnable && why, timeout: 90_000 }, async () => {
  const port = await freePort();
  let lab = await Lab.start({ nodes: ['vm1'], api: { listen: `127.0.0.1:${port}` } });
  try {
    // By default the token is made next to the socket, in the state directory.
    const tokenFile = join(lab.dir, `${lab.prefix}.token`);
    assert.equal(statSync(tokenFile).mode & 0o777, 0o600, 'the token file is readable by root only');
    const token = readFileSync(tokenFile, 'utf8').trim();
    assert.match(token, /^[0-9a-f]{64}$/);

    const none = await get(port, '/v1/switch');
    assert.equal(none.status, 401);
    assert.ok(String(none.body['error']).includes(tokenFile), `the error says where the token is: ${String(none.body['error'])}`);
    assert.match(String(none.headers['www-authenticate']), /^Bearer/);
    assert.equal((await get(port, '/v1/switch', `Bearer ${token.slice(0, -1)}${token.endsWith('0') ? '1' : '0'}`)).status, 401, 'a wrong token');
    assert.equal((await get(port, '/v1/switch', `Basic ${token}`)).status, 401, 'another scheme');
    assert.equal((await get(port, '/v1/ports/nope', 'Bearer ')).status, 401, 'an empty token, even for a path that does not exist');
    const ok = await get(port, '/v1/switch', `Bearer ${token}`);
    assert.equal(ok.status, 200);
    assert.equal(ok.body['name'], lab.prefix);
    // The unix socket needs none.
    assert.equal((await lab.api.call<{ name: string }>('GET', '/v1/switch')).name, lab.prefix);
  } finally {
    await lab.stop();
  }
  assert.deepEqual(lab.leftovers(), [], 'namespaces or devices left behind');

  // A token file named in the config is made once and kept: a client set up once keeps working across restarts.
  const keep = mkdtempSync(join(tmpdir(), 'vs-token-'));
  try {
    const tokenFile = join(keep, 'api.token');
    lab = await Lab.start({ nodes: ['vm1'], api: { listen: `127.0.0.1:${port}`, tokenFile } });
    const token = readFileSync(tokenFile, 'utf8').trim();
    await lab.stop();
    lab = await Lab.start({ nodes: ['vm1'], api: { listen: `127.0.0.1:${port}`, tokenFile } });
    assert.equal(readFileSync(tokenFile, 'utf8').trim(), token);
    assert.equal((await get(port, '/v1/switch', `Bearer ${token}`)).status, 200, 'the same token after a restart');
    await lab.stop();
  } finally {
    await lab.stop();
    rmSync(keep, { recursive: true, force: true });
  }
});

test('a token file others can read, or one that holds no token, stops the daemon with a message saying so', { skip: !runnable && why, timeout: 60_000 }, async () => {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'vs-token-'));
  try {
    const loose = join(dir, 'loose.token');
    writeFileSync(loose, `${'a'.repeat(64)}\n`, { mode: 0o644 });
    await assert.rejects(Lab.start({ nodes: ['vm1'], api: { listen: `127.0.0.1:${port}`, tokenFile: loose } }), /loose\.token: the API token must be readable by its owner only \(mode 644; chmod 600 it\)/);
    const short = join(dir, 'short.token');
    writeFileSync(short, 'secret\n', { mode: 0o600 });
    await assert.rejects(Lab.start({ nodes: ['vm1'], api: { listen: `127.0.0.1:${port}`, tokenFile: short } }), /short\.token: not an API token/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
