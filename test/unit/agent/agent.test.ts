// The guest agent's behaviour against a fake guest API (a real HTTP server on
// a unix socket, speaking the daemon's protocol): offload, refusals and the
// fallback to the VM's own IPsec, uploads installed where the switch left
// off and acked, and the clean-up on stop. The VM's IPsec is a recorder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, type AgentEvent, type AgentOptions } from '../../../src/agent/agent.js';
import { parseSaFile } from '../../../src/agent/sa-file.js';
import type { LocalIpsec } from '../../../src/agent/xfrm.js';
import type { Runner } from '../../../src/agent/system.js';
import type { ReplayState, SecurityAssociation } from '../../../src/offload/ipsec/sa.js';

const TOKEN = 'ab'.repeat(32);
const KEY = '000102030405060708090a0b0c0d0e0f';
const OUT = { direction: 'out', spi: 0x1001, key: KEY, salt: 'cafe0001', src: '198.18.10.1', dst: '198.18.10.9' };
const IN = { direction: 'in', spi: 0x2001, key: KEY, salt: 'cafe0002', src: '198.18.10.9', dst: '198.18.10.1' };
const sas = () => parseSaFile(JSON.stringify({ sas: [OUT, IN] }));

interface Req { method: string; path: string; body: any }

/** The daemon's guest API, as far as the agent uses it. */
class FakeGuestApi {
  readonly dir = mkdtempSync(join(tmpdir(), 'vswitch-agent-'));
  readonly socket = join(this.dir, 'vm1.sock');
  readonly requests: Req[] = [];
  advertised = true;
  /** Answer to an offload request (default: accepted). */
  decide: (sa: any, n: number) => { status: number; body: unknown } = (sa) => ({ status: 201, body: { ...sa, key: undefined, state: 'offloaded', uplink: 'phys' } });
  private readonly queue: unknown[] = [];
  private waiting: (() => void) | null = null;
  private server!: Server;
  private posts = 0;

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => void this.handle(req.method!, req.url!, req.headers['authorization'], chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined, res));
    });
    await new Promise<void>((r) => this.server.listen(this.socket, r));
    return this;
  }

  private send(res: ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private async handle(method: string, url: string, auth: string | undefined, body: any, res: ServerResponse): Promise<void> {
    const path = url.split('?')[0]!;
    this.requests.push({ method, path, body });
    if (auth !== `Bearer ${TOKEN}`) return this.send(res, 401, { error: 'token' });
    if (method === 'GET' && path === '/v1/guest') {
      return this.send(res, 200, { port: 'vm1', kind: 'synthetic', up: true, ipsec: { enabled: this.advertised, algorithms: ['aes-gcm-128'], maxSa: 64, transport: true, tunnel: true } });
    }
    if (method === 'POST' && path === '/v1/guest/sas') {
      const d = this.decide(body, this.posts++);
      return this.send(res, d.status, d.body);
    }
    if (method === 'GET' && path === '/v1/guest/events') {
      const wait = Number(new URL(url, 'http://x').searchParams.get('wait'));
      if (this.queue.length === 0) {
        await new Promise<void>((r) => {
          const t = setTimeout(r, wait);
          this.waiting = () => { clearTimeout(t); r(); };
        });
        this.waiting = null;
      }
      return this.send(res, 200, { events: this.queue.splice(0) });
    }
    let m = /^\/v1\/guest\/sas\/(in|out)\/(\d+)\/uploaded$/.exec(path);
    if (method === 'POST' && m !== null) return this.send(res, 200, { state: 'uploaded' });
    m = /^\/v1\/guest\/sas\/(in|out)\/(\d+)$/.exec(path);
    if (method === 'DELETE' && m !== null) return this.send(res, 200, { removed: { direction: m[1], spi: Number(m[2]) } });
    return this.send(res, 404, { error: 'no such endpoint' });
  }

  pushEvent(ev: unknown): void {
    this.queue.push(ev);
    this.waiting?.();
  }

  paths(method: string): string[] {
    return this.requests.filter((r) => r.method === method).map((r) => r.path);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The VM's own IPsec, recorded. */
class FakeLocal implements LocalIpsec {
  readonly how = 'userspace' as const;
  readonly installed: { sa: SecurityAssociation; replay?: ReplayState }[] = [];
  closed = false;
  fail: ((sa: SecurityAssociation) => boolean) | null = null;
  install(sa: SecurityAssociation, replay?: ReplayState): void {
    if (this.fail?.(sa)) throw new Error('no TUN for you');
    this.installed.push(replay !== undefined ? { sa, replay } : { sa });
  }
  remove(): void {}
  close(): void { this.closed = true; }
  stats(): Record<string, unknown> { return { how: 'userspace', installed: this.installed.length }; }
}

/** iproute2 as seen from a VM whose NIC is eth0 (MTU 1500). */
function fakeIp(): { run: Runner; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    run: (argv) => {
      const c = argv.join(' ');
      calls.push(c);
      if (c.startsWith('ip -j link show dev eth0')) return { ok: true, stdout: '[{"ifname":"eth0","ifindex":2,"mtu":1500,"address":"02:00:00:00:00:01"}]', stderr: '' };
      const g = /^ip -j -4 route get (\S+)$/.exec(c);
      if (g) return { ok: true, stdout: `[{"dst":"${g[1]}","dev":"eth0","prefsrc":"198.18.10.1"}]`, stderr: '' };
      return { ok: true, stdout: '', stderr: '' };
    },
  };
}

interface Rig { agent: Agent; events: AgentEvent[]; local: FakeLocal; ip: ReturnType<typeof fakeIp>; api: FakeGuestApi; peersAsked: string[][] }

async function rig(o: Partial<AgentOptions> = {}, api?: FakeGuestApi): Promise<Rig> {
  const a = api ?? await new FakeGuestApi().start();
  const events: AgentEvent[] = [];
  const local = new FakeLocal();
  const ip = fakeIp();
  const peersAsked: string[][] = [];
  const agent = new Agent({
    sas: sas(), socket: a.socket, token: TOKEN, device: 'eth0', emit: (e) => events.push(e), run: ip.run, pollMs: 200,
    makeLocal: () => local, resolvePeer: (peer, l) => { peersAsked.push([peer, l]); }, ...o,
  });
  return { agent, events, local, ip, api: a, peersAsked };
}

const kinds = (evs: AgentEvent[]) => evs.map((e) => e.event);
const until = async (what: string, f: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) assert.fail(`${what} did not happen`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

test('offload: both SAs to the switch, the path MTU to the peer lowered for the ESP the switch adds; nothing in the VM', async () => {
  const r = await rig();
  try {
    await r.agent.start();
    assert.deepEqual(kinds(r.events), ['started', 'advertisement', 'offloaded', 'notice', 'offloaded', 'ready']);
    assert.deepEqual(r.api.paths('POST'), ['/v1/guest/sas', '/v1/guest/sas']);
    assert.deepEqual(r.api.requests.filter((q) => q.method === 'POST').map((q) => [q.body.direction, q.body.spi, q.body.key]), [['out', 0x1001, KEY], ['in', 0x2001, KEY]]);
    assert.ok(r.ip.calls.includes('ip -4 route replace 198.18.10.9/32 dev eth0 mtu 1463'), r.ip.calls.join('\n'));
    assert.equal(r.local.installed.length, 0);
    assert.deepEqual(r.events.at(-1), { event: 'ready', offloaded: 2, local: 0 });
  } finally {
    await r.agent.stop();
    await r.api.close();
  }
});

test('upload: installed in the VM inbound first, from the switch\'s sequence number and replay window, then each acked; the lowered MTU goes', async () => {
  const r = await rig();
  try {
    await r.agent.start();
    const replay = { top: 399, bitmap: 'ff'.repeat(8), size: 64 };
    r.api.pushEvent({ type: 'upload', port: 'vm1', reason: 'MAC moved: destination-not-ipsec-capable', sas: [{ ...OUT, mode: 'transport', algorithm: 'aes-gcm-128', seq: 4326 }, { ...IN, mode: 'transport', algorithm: 'aes-gcm-128', replay }] });
    await until('two uploads', () => r.events.filter((e) => e.event === 'uploaded').length === 2);
    assert.deepEqual(r.local.installed.map((i) => i.sa.direction), ['in', 'out']);
    assert.equal(r.local.installed[1]!.sa.seq, 4326);
    assert.deepEqual(r.local.installed[0]!.replay, replay);
    assert.deepEqual(r.api.paths('POST').slice(-2), ['/v1/guest/sas/in/8193/uploaded', '/v1/guest/sas/out/4097/uploaded']);
    const up = r.events.filter((e) => e.event === 'uploaded');
    assert.deepEqual(up.map((e) => e.event === 'uploaded' && [e.direction, e.how, e.seq, e.replayTop]), [['in', 'userspace', undefined, 399], ['out', 'userspace', 4326, undefined]]);
    assert.ok(r.ip.calls.includes('ip -4 route del 198.18.10.9/32 dev eth0'), 'the MTU route is removed once the VM adds its own ESP');
    // A repeated event (say the ack was lost) is acked again without a second install.
    r.api.pushEvent({ type: 'upload', port: 'vm1', reason: 'again', sas: [{ ...OUT, mode: 'transport', algorithm: 'aes-gcm-128', seq: 4326 }] });
    await until('third upload', () => r.events.filter((e) => e.event === 'uploaded').length === 3);
    assert.equal(r.local.installed.length, 2);
  } finally {
    await r.agent.stop();
    await r.api.close();
  }
  // Stop: both SAs removed from the switch, the VM's IPsec closed.
  assert.deepEqual(r.api.paths('DELETE').sort(), ['/v1/guest/sas/in/8193', '/v1/guest/sas/out/4097']);
  assert.equal(r.local.closed, true);
  const st = r.events.at(-1)!;
  assert.equal(st.event, 'stopped');
  assert.equal(st.event === 'stopped' && st.removedFromSwitch, 2);
});

test('an upload the VM cannot install is not acked (the switch keeps holding the plaintext back)', async () => {
  const r = await rig();
  try {
    await r.agent.start();
    r.local.fail = (sa) => sa.direction === 'out';
    r.api.pushEvent({ type: 'upload', port: 'vm1', reason: 'test', sas: [{ ...OUT, mode: 'transport', algorithm: 'aes-gcm-128', seq: 9 }, { ...IN, mode: 'transport', algorithm: 'aes-gcm-128' }] });
    await until('an error', () => r.events.some((e) => e.event === 'error'));
    await until('the inbound ack', () => r.api.paths('POST').includes('/v1/guest/sas/in/8193/uploaded'));
    assert.ok(!r.api.paths('POST').includes('/v1/guest/sas/out/4097/uploaded'));
    assert.match((r.events.find((e) => e.event === 'error') as { message: string }).message, /cannot install uploaded out SA 0x1001: no TUN for you/);
  } finally {
    await r.agent.stop();
    await r.api.close();
  }
});

test('one SA of a peer refused: the other is taken back, and the VM does both itself', async () => {
  const api = await new FakeGuestApi().start();
  api.decide = (sa) => (sa.direction === 'in'
    ? { status: 422, body: { error: '198.18.10.1 is not an address of port vm1', reason: 'source-not-owned' } }
    : { status: 201, body: { state: 'offloaded', uplink: 'phys' } });
  const r = await rig({}, api);
  try {
    await r.agent.start();
    assert.deepEqual(kinds(r.events), ['started', 'advertisement', 'rejected', 'local-stack', 'installed-locally', 'installed-locally', 'ready']);
    const rej = r.events.find((e) => e.event === 'rejected');
    assert.deepEqual(rej, { event: 'rejected', direction: 'in', spi: 0x2001, reason: 'source-not-owned', detail: '198.18.10.1 is not an address of port vm1' });
    assert.deepEqual(r.api.paths('DELETE'), ['/v1/guest/sas/out/4097']);
    assert.deepEqual(r.local.installed.map((i) => i.sa.direction), ['in', 'out']);
    const why = r.events.filter((e) => e.event === 'installed-locally').map((e) => e.event === 'installed-locally' && e.why);
    assert.deepEqual(why, ['rejected: source-not-owned', "the switch refused the peer's other SA (source-not-owned)"]);
    assert.deepEqual(r.events.at(-1), { event: 'ready', offloaded: 0, local: 2 });
  } finally {
    await r.agent.stop();
    await r.api.close();
  }
  // Nothing of it is in the switch: nothing to remove on stop.
  assert.deepEqual(r.api.paths('DELETE'), ['/v1/guest/sas/out/4097']);
});

test('a peer the switch has not seen: the agent asks the network for it (no plaintext to it) and tries once more', async () => {
  const api = await new FakeGuestApi().start();
  api.decide = (_sa, n) => (n === 0 ? { status: 422, body: { error: 'not seen', reason: 'destination-unknown' } } : { status: 201, body: { uplink: 'phys' } });
  const r = await rig({}, api);
  try {
    await r.agent.start();
    assert.deepEqual(r.peersAsked, [['198.18.10.9', '198.18.10.1']]);
    assert.equal(r.events.filter((e) => e.event === 'offloaded').length, 2);
    assert.equal(r.api.paths('POST').length, 3);
  } finally {
    await r.agent.stop();
    await r.api.close();
  }
});

test('not advertised, unreachable, or --local-only: the VM does its own IPsec', async () => {
  const api = await new FakeGuestApi().start();
  api.advertised = false;
  let r = await rig({}, api);
  await r.agent.start();
  assert.equal(r.api.paths('POST').length, 0);
  assert.deepEqual(r.events.filter((e) => e.event === 'installed-locally').map((e) => e.event === 'installed-locally' && e.why), ['IPsec offload not advertised', 'IPsec offload not advertised']);
  await r.agent.stop();
  await api.close();

  r = await rig({ socket: '/nonexistent/vm1.sock' }, await new FakeGuestApi().start());
  await r.agent.start();
  assert.match((r.events.find((e) => e.event === 'error') as { message: string }).message, /cannot reach the guest API/);
  assert.equal(r.local.installed.length, 2);
  await r.agent.stop();
  await r.api.close();

  r = await rig({ localOnly: true, socket: undefined, token: undefined, local: 'auto', probe: () => ({ ok: true, why: 'kernel ESP works' }) }, await new FakeGuestApi().start());
  await r.agent.start();
  assert.deepEqual(kinds(r.events), ['started', 'local-stack', 'installed-locally', 'installed-locally', 'ready']);
  assert.equal((r.events[1] as { how: string }).how, 'xfrm', 'the probe said the kernel can');
  assert.equal(r.api.requests.length, 0, 'the switch is never asked');
  await r.agent.stop();
  await r.api.close();
});
