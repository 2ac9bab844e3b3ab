// IPsec task offload end to end, with the guest agent: real namespaces,
// real kernels, vswitch as its own process, `vswitch guest-agent` in the
// VMs.
//
//   vm1 (synthetic) ─┐
//   vm2 (synthetic) ─┤ vswitch ── phys (external, ESP engine) ══ veth ══ [phys ns: Linux bridge] ══ veth ══ peer ns
//                    └─ (later) peer (synthetic): the peer migrated onto this host
//
// The peer runs `vswitch guest-agent --local-only` (userspace ESP: this
// machine's kernel has no ESP). Its crypto is ours too, so the independent
// checks come from tshark decrypting and authenticating the captures with
// the SA keys (Wireshark's ESP dissector, libgcrypt), from scapy
// (scripts/esp-peer.py) making tampered, replayed and truncated ESP, and from
// the kernels' TCP agreeing on a SHA-256 of what was sent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { request, type IncomingMessage } from 'node:http';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pipeline } from 'node:stream/promises';
import { Lab } from '../util/lab.js';
import { hasCommand, isRoot, need } from '../util/env.js';
import { buildFrame } from '../../src/wire/builder.js';

const distRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const repoRoot = resolve(distRoot, '..');
const CLI = join(distRoot, 'src/cli/main.js');
const ESP_PEER = join(repoRoot, 'scripts/esp-peer.py');
const PY = '/usr/bin/python3';

function hasScapy(): boolean {
  return spawnSync(PY, ['-c', 'import scapy.layers.ipsec, cryptography.hazmat.primitives.ciphers.aead'], { stdio: 'ignore' }).status === 0;
}
const runnable = isRoot() && hasCommand('ip') && hasCommand('ping') && hasCommand('tshark') && hasScapy();
const why = 'needs root, iproute2, ping, tshark, and scapy with python3-cryptography under /usr/bin/python3';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function run(cmd: string, args: string[], opts: { input?: string; timeout?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: opts.timeout ?? 60_000, input: opts.input, maxBuffer: 256 << 20 });
}

function must(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
  return r.stdout;
}

// --- the lab ---------------------------------------------------------------------

let lab: Lab;
let peerNs: string;
/** The peer's NIC inside its namespace: first a veth end, after the migration a vswitch TAP of the same name. */
let peerDev: string;
/** The veth end in the phys namespace, on the bridge. */
let peerBridgePort: string;
let bridge: string;
let peerMac: string;
let peerIp: string;
let peerIp6: string;
let sock: string;
const children: ChildProcess[] = [];

const ip4 = (n: 'vm1' | 'vm2' | 'phys') => lab.ip4(n);

before(async () => {
  if (!runnable) return;
  lab = await Lab.start({ nodes: ['vm1', 'vm2', 'phys'], portOverrides: { phys: { ipsec: {} } } });
  sock = lab.api.socket;
  peerNs = `${lab.prefix}-peer`;
  peerDev = `${lab.prefix}pe`;
  peerBridgePort = `${lab.prefix}pb`;
  bridge = `${lab.prefix}br`;
  peerIp = `198.18.${lab.subnet}.9`;
  peerIp6 = `2001:db8:${lab.subnet.toString(16)}::9`;
  peerMac = `02:00:c6:12:${lab.subnet.toString(16).padStart(2, '0')}:09`;
  const phys = lab.ns('phys');
  // The "physical network": a Linux bridge in the phys namespace joins the
  // uplink's far end and a veth to the peer, so the peer can later leave it.
  must('ip', ['netns', 'add', peerNs]);
  must('ip', ['-n', phys, 'link', 'add', bridge, 'type', 'bridge']);
  must('ip', ['-n', phys, 'link', 'add', peerBridgePort, 'type', 'veth', 'peer', 'name', peerDev, 'netns', peerNs]);
  must('ip', ['-n', phys, 'addr', 'flush', 'dev', lab.physDev]);
  must('ip', ['-n', phys, 'link', 'set', lab.physDev, 'master', bridge]);
  must('ip', ['-n', phys, 'link', 'set', peerBridgePort, 'master', bridge, 'up']);
  must('ip', ['-n', phys, 'link', 'set', bridge, 'up']);
  must('ip', ['-n', phys, 'addr', 'add', `${ip4('phys')}/24`, 'dev', bridge]);
  must('ip', ['-n', peerNs, 'link', 'set', 'lo', 'up']);
  must('ip', ['-n', peerNs, 'link', 'set', peerDev, 'address', peerMac, 'up']);
  must('ip', ['-n', peerNs, 'addr', 'add', `${peerIp}/24`, 'dev', peerDev]);
  must('ip', ['-n', peerNs, 'addr', 'add', `${peerIp6}/64`, 'dev', peerDev, 'nodad']);
  // Everyone knows everyone (the switch learns where each address is).
  for (const n of ['vm1', 'vm2'] as const) {
    const r = lab.exec(n, ['ping', '-c', '2', '-i', '0.2', '-W', '2', peerIp]);
    assert.equal(r.status, 0, `${n} → peer before any IPsec: ${r.stdout}${r.stderr}`);
  }
  assert.equal(lab.ping('vm1', 'vm2', false, 1).status, 0);
});

after(async () => {
  if (!runnable) return;
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await lab.stop();
  assert.deepEqual(lab.leftovers(), [], 'namespaces or devices left behind');
});

function inNs(ns: string, cmd: string[], opts: { input?: string; timeout?: number } = {}): SpawnSyncReturns<string> {
  return run('ip', ['netns', 'exec', ns, ...cmd], opts);
}

function spawnNs(ns: string, cmd: string[]): ChildProcess {
  const c = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(c);
  return c;
}

// --- the management API and the CLI ----------------------------------------------------

function vswitch(args: string[]): SpawnSyncReturns<string> {
  return run(process.execPath, [CLI, ...args, '--socket', sock], { timeout: 30_000 });
}

function vswitchJson<T = Record<string, any>>(args: string[]): T {
  const r = vswitch([...args, '--json']);
  assert.equal(r.status, 0, `vswitch ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

interface GuestEndpoint { socket: string; tokenFile: string }

async function guestApiOf(port: string): Promise<GuestEndpoint> {
  const r = await api<{ ports: { name: string; guestApi: GuestEndpoint | null }[] }>('GET', '/v1/ports');
  const p = r.ports.find((x) => x.name === port);
  assert.ok(p?.guestApi, `port ${port} has a guest API`);
  return p.guestApi;
}

/**
 * HTTP over a unix socket, a connection per request: Node 20's default agent
 * keeps connections alive, and one the daemon closed while idle (after its
 * 5 s keep-alive timeout) fails the next request with EPIPE.
 */
function unixRequest(socketPath: string, method: string, path: string, body?: unknown, token?: string): Promise<IncomingMessage> {
  return new Promise((res, rej) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request({
      socketPath, method, path, agent: false,
      headers: {
        ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
        ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
      },
    }, res);
    req.on('error', rej);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

async function readJson(r: IncomingMessage): Promise<any> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  const t = Buffer.concat(chunks).toString('utf8');
  return t.length > 0 ? JSON.parse(t) : {};
}

/** The management API. */
async function api<T = Record<string, any>>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await unixRequest(sock, method, path, body);
  const j = await readJson(r);
  if ((r.statusCode ?? 500) >= 400) throw new Error(`${method} ${path}: HTTP ${r.statusCode}: ${JSON.stringify(j)}`);
  return j as T;
}

async function stats(): Promise<Record<string, Record<string, any>>> {
  const r = await api<{ ports: Record<string, any>[] }>('GET', '/v1/stats');
  return Object.fromEntries(r.ports.map((p) => [p['name'] as string, p]));
}

/** A raw guest API request (for the validation tests: the agent is not the only client a VM may run). */
async function guestCall(ep: { socket: string }, token: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await unixRequest(ep.socket, method, path, body, token);
  return { status: r.statusCode ?? 0, body: await readJson(r) };
}

// --- SAs and agents ------------------------------------------------------------------

interface SaSpec {
  direction: 'in' | 'out';
  spi: number;
  mode: 'transport' | 'tunnel';
  algorithm: 'aes-gcm-128' | 'aes-gcm-256';
  key: string;
  salt: string;
  src: string;
  dst: string;
}

interface SaPair {
  /** vm1 → peer and peer → vm1, as vm1 sees them. */
  vm1: SaSpec[];
  /** The same two SAs, as the peer sees them. */
  peer: SaSpec[];
  toPeer: SaSpec;
  toVm1: SaSpec;
}

let nextSpi = 0x7100;

function saPair(algorithm: SaSpec['algorithm'], v6 = false): SaPair {
  const keyLen = algorithm === 'aes-gcm-128' ? 16 : 32;
  const mk = (src: string, dst: string): Omit<SaSpec, 'direction'> => ({
    spi: nextSpi++, mode: 'transport', algorithm, key: randomBytes(keyLen).toString('hex'), salt: randomBytes(4).toString('hex'), src, dst,
  });
  const [me, them] = v6 ? [lab.ip6('vm1'), peerIp6] : [ip4('vm1'), peerIp];
  const toPeer = mk(me, them);
  const toVm1 = mk(them, me);
  return {
    vm1: [{ direction: 'out', ...toPeer }, { direction: 'in', ...toVm1 }],
    peer: [{ direction: 'out', ...toVm1 }, { direction: 'in', ...toPeer }],
    toPeer: { direction: 'out', ...toPeer },
    toVm1: { direction: 'out', ...toVm1 },
  };
}

class AgentProc {
  readonly events: Record<string, any>[] = [];
  stderr = '';
  private waiters: (() => void)[] = [];
  readonly exited: Promise<number>;

  constructor(readonly name: string, readonly child: ChildProcess) {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim().length === 0) continue;
        try {
          this.events.push(JSON.parse(line) as Record<string, any>);
        } catch {
          this.stderr += `(not JSON) ${line}\n`;
        }
        for (const w of this.waiters.splice(0)) w();
      }
    });
    child.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.exited = new Promise((res) => child.once('exit', (code, sig) => { for (const w of this.waiters.splice(0)) w(); res(code ?? (sig !== null ? 128 : -1)); }));
  }

  of(kind: string): Record<string, any>[] {
    return this.events.filter((e) => e['event'] === kind);
  }

  /** Wait until `pred` holds over the events so far. */
  async waitFor(what: string, pred: (evs: Record<string, any>[]) => boolean, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.events)) {
      if (this.child.exitCode !== null || Date.now() > deadline) {
        assert.fail(`${this.name}: ${what} did not happen (${this.child.exitCode !== null ? `exited ${this.child.exitCode}` : 'timeout'}); events:\n${this.events.map((e) => JSON.stringify(e)).join('\n')}\nstderr: ${this.stderr}`);
      }
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 200); });
    }
  }

  /** SIGTERM: it removes what it installed and exits 0 with a `stopped` event. */
  async stop(): Promise<Record<string, any>> {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const code = await this.exited;
    clearTimeout(t);
    assert.equal(code, 0, `${this.name} exit code; stderr: ${this.stderr}`);
    const s = this.of('stopped');
    assert.equal(s.length, 1, `${this.name} reported stopping`);
    return s[0]!;
  }
}

async function startAgent(name: string, ns: string, sas: SaSpec[], args: string[]): Promise<AgentProc> {
  const file = join(lab.dir, `${name}-${sas[0]!.spi}.sas.json`);
  writeFileSync(file, JSON.stringify({ sas }, null, 1));
  const a = new AgentProc(name, spawnNs(ns, [process.execPath, CLI, 'guest-agent', '--json', '--sas', file, ...args]));
  await a.waitFor('ready', (e) => e.some((x) => x['event'] === 'ready'));
  return a;
}

/** The agent's default long poll (25 s) unless a test says otherwise. */
async function vm1Agent(sas: SaSpec[], pollMs = 25_000): Promise<AgentProc> {
  const ep = await guestApiOf('vm1');
  return startAgent('vm1-agent', lab.ns('vm1'), sas, ['--socket', ep.socket, '--token-file', ep.tokenFile, '--device', lab.dev('vm1'), '--tun', 'vsesp0', '--poll-ms', String(pollMs)]);
}

function peerAgent(sas: SaSpec[]): Promise<AgentProc> {
  return startAgent('peer-agent', peerNs, sas, ['--local-only', '--local', 'userspace', '--device', peerDev, '--tun', 'vsesp0']);
}

// --- traffic ---------------------------------------------------------------------------

const RECEIVER = `
const net = require('net'), crypto = require('crypto');
const [host, port] = [process.argv[1], Number(process.argv[2])];
const s = net.createServer((c) => {
  const h = crypto.createHash('sha256'); let n = 0;
  c.on('data', (d) => { h.update(d); n += d.length; });
  c.on('end', () => { console.log(JSON.stringify({ received: n, sha256: h.digest('hex') })); s.close(); });
  c.on('error', (e) => { console.log(JSON.stringify({ error: e.message, received: n })); s.close(); });
});
s.listen(port, host, () => console.log('listening'));`;

// Sends `bytes` of random data, or for `seconds` at up to `rate` bytes/s (0: as fast as TCP goes).
const SENDER = `
const net = require('net'), crypto = require('crypto');
const [host, port, bytes, seconds, rate] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5])];
const h = crypto.createHash('sha256'); let sent = 0; const t0 = Date.now();
const c = net.connect(port, host, pump);
function pump() {
  for (;;) {
    const el = (Date.now() - t0) / 1000;
    if ((bytes > 0 && sent >= bytes) || (seconds > 0 && el >= seconds)) { c.end(); return; }
    if (rate > 0 && sent > rate * el) { setTimeout(pump, 5); return; }
    const chunk = crypto.randomBytes(bytes > 0 ? Math.min(65536, bytes - sent) : 65536);
    h.update(chunk); sent += chunk.length;
    if (!c.write(chunk)) { c.once('drain', pump); return; }
  }
}
c.on('close', (err) => console.log(JSON.stringify({ sent, sha256: h.digest('hex'), error: err || undefined, ms: Date.now() - t0 })));
c.on('error', (e) => console.error(e.message));`;

interface TransferResult { sent: number; received: number; sha256Sent: string; sha256Received: string; ms: number }

/** A TCP transfer from `fromNs` to `toNs` (listening on toAddr:port), hashed on both sides. */
async function transfer(fromNs: string, toNs: string, toAddr: string, port: number, o: { bytes?: number; seconds?: number; rate?: number; during?: () => Promise<void> }): Promise<TransferResult> {
  const rx = spawnNs(toNs, [process.execPath, '-e', RECEIVER, toAddr, String(port)]);
  let rxOut = '';
  rx.stdout!.on('data', (d: Buffer) => { rxOut += d.toString(); });
  await new Promise<void>((res, rej) => {
    const t = setTimeout(() => rej(new Error('receiver did not listen')), 10_000);
    rx.stdout!.once('data', () => { clearTimeout(t); res(); });
  });
  const tx = spawnNs(fromNs, [process.execPath, '-e', SENDER, toAddr, String(port), String(o.bytes ?? 0), String(o.seconds ?? 0), String(o.rate ?? 0)]);
  let txOut = '';
  let txErr = '';
  tx.stdout!.on('data', (d: Buffer) => { txOut += d.toString(); });
  tx.stderr!.on('data', (d: Buffer) => { txErr += d.toString(); });
  const txDone = new Promise<void>((res) => tx.once('exit', () => res()));
  const rxDone = new Promise<void>((res) => rx.once('exit', () => res()));
  if (o.during !== undefined) await o.during();
  // A transfer that stalls (the receiver refusing what it gets, say) fails the test in good time.
  const limit = setTimeout(() => { tx.kill('SIGKILL'); rx.kill('SIGKILL'); }, (o.seconds ?? 0) * 1000 + 60_000);
  await txDone;
  await rxDone;
  clearTimeout(limit);
  const s = JSON.parse(txOut.trim().split('\n').pop() || '{}') as { sent: number; sha256: string; ms: number };
  const r = JSON.parse(rxOut.trim().split('\n').filter((l) => l.startsWith('{')).pop() || '{}') as { received: number; sha256: string };
  assert.ok(s.sha256 !== undefined, `sender failed: ${txOut} ${txErr}`);
  assert.ok(r.sha256 !== undefined, `receiver failed: ${rxOut}`);
  return { sent: s.sent, received: r.received, sha256Sent: s.sha256, sha256Received: r.sha256, ms: s.ms };
}

function ping(fromNs: string, to: string, count = 5, size = 56): SpawnSyncReturns<string> {
  return inNs(fromNs, ['ping', to.includes(':') ? '-6' : '-4', '-c', String(count), '-i', '0.2', '-W', '2', '-s', String(size), to]);
}

// --- captures and tshark -----------------------------------------------------------------

interface Capture { port: string; file: string; stop: () => Promise<void> }

async function startCapture(port: string, tag: string): Promise<Capture> {
  const file = join(lab.dir, `${tag}-${port}.pcapng`);
  const res = await unixRequest(sock, 'GET', `/v1/ports/${port}/capture?snaplen=65535`);
  assert.equal(res.statusCode, 200, `capture of ${port}`);
  const written = pipeline(res, createWriteStream(file)).catch(() => {});
  await sleep(100);
  return {
    port, file,
    stop: async () => {
      await sleep(300);
      const end = await unixRequest(sock, 'DELETE', `/v1/ports/${port}/capture`);
      end.resume();
      assert.equal(end.statusCode, 200, `end of the capture of ${port}`);
      await written;
    },
  };
}

function uat(sa: SaSpec): string {
  return `uat:esp_sa:"IPv${sa.src.includes(':') ? 6 : 4}","${sa.src}","${sa.dst}","0x${sa.spi.toString(16).padStart(8, '0')}",` +
    `"AES-GCM with 16 octet ICV [RFC4106]","0x${sa.key}${sa.salt}","NULL",""`;
}

const FIELDS = ['frame.number', 'frame.time_epoch', 'frame.len', 'frame.comment', 'ip.src', 'ip.dst', 'ip.proto', 'esp.spi', 'esp.sequence', 'esp.icv_good', 'esp.icv_bad',
  'ip.checksum.status', 'icmp.code', 'ipv6.src', 'icmpv6.type', 'icmpv6.checksum.status', 'tcp.srcport', 'tcp.dstport', 'tcp.len', 'tcp.checksum.status', 'tcp.checksum', 'tcp.checksum_calculated', 'icmp.type', 'icmp.checksum.status', 'udp.dstport', 'frame.protocols'] as const;
type Row = Record<(typeof FIELDS)[number], string>;

/**
 * Dissect no application protocol: random payload taken for one (iperf2 on
 * port 5001, or a heuristic such as Thrift's) can make its dissector throw,
 * which cuts the ESP tree short before its ICV status is added. So: only the
 * protocols checked here, the transfers' ports (61000-61010) decoded as plain
 * data (port rules come before heuristics), and no TCP analysis or reassembly.
 */
const ONLY_PROTOCOLS = ['--disable-protocol', 'ALL', '--enable-protocol', 'frame,eth,ethertype,arp,ip,ipv6,icmp,icmpv6,esp,tcp,udp,data',
  '-d', 'tcp.port==61000-61010,data', '-o', 'tcp.try_heuristic_first:FALSE',
  '-o', 'tcp.analyze_sequence_numbers:FALSE', '-o', 'tcp.desegment_tcp_streams:FALSE'];

function tshark(file: string, filter: string, sas: SaSpec[] = []): Row[] {
  const args = ['-r', file, '-n', ...ONLY_PROTOCOLS, '-o', 'ip.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE',
    ...(sas.length > 0 ? ['-o', 'esp.enable_encryption_decode:TRUE', '-o', 'esp.enable_authentication_check:TRUE', ...sas.flatMap((s) => ['-o', uat(s)])] : []),
    '-Y', filter, '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=,', ...FIELDS.flatMap((f) => ['-e', f])];
  const r = run('tshark', args, { timeout: 300_000 });
  assert.equal(r.status, 0, `tshark failed: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.length > 0).map((line) => {
    const v = line.split('\t');
    return Object.fromEntries(FIELDS.map((f, i) => [f, v[i] ?? ''])) as Row;
  });
}

/** The protected flow between vm1 and the peer, not ESP: must never be on a port it is not vm1's. */
const ipAddr = (a: string) => (a.includes(':') ? `ipv6.addr == ${a}` : `ip.addr == ${a}`);
// Neighbour discovery (ICMPv6 133-137) is the link's business, not the flow's: IPsec stacks bypass it (RFC 4301 §4.4.1).
const plaintextOf = (a: string, b: string) => `${ipAddr(a)} && ${ipAddr(b)} && !esp && !(icmpv6.type >= 133 && icmpv6.type <= 137)`;
const espOf = (a: string, b: string) => `${ipAddr(a)} && ${ipAddr(b)} && esp`;

/**
 * tshark decrypts every ESP packet of the flow in `file` with the SA keys:
 * every ICV verifies, every header checksum inside is good, and there is a
 * transport header inside (the payload really was the flow's). Returns the
 * packet counts per SPI.
 */
function checkEspDecrypts(file: string, pair: SaPair, what: string): { total: number; perSpi: Record<string, number>; tcpBytes: number; icmpErrors: number } {
  const rows = tshark(file, espOf(pair.toPeer.src, pair.toPeer.dst), [pair.toPeer, pair.toVm1]);
  const perSpi: Record<string, number> = {};
  let tcpBytes = 0;
  let icmpErrors = 0;
  const first = (v: string) => v.split(',')[0]!;
  for (const r of rows) {
    const where = `${what} frame ${r['frame.number']}: ${JSON.stringify(r)}`;
    // The outer ESP (an ICMP error inside may quote another, cut short: its ICV cannot verify).
    assert.equal(first(r['esp.icv_good']), '1', `ICV verifies: ${where}`);
    if (r['ipv6.src'] === '') assert.equal(first(r['ip.checksum.status']), '1', `IP header checksum: ${where}`);
    assert.match(r['frame.protocols'], /:esp:(tcp|icmp|icmpv6|udp)/, `a transport header inside the ESP: ${where}`);
    if (first(r['icmp.type']) === '3') {
      // The receiving kernel's "protocol unreachable" for ESP its agent's socket had no room for
      // (a full socket buffer counts as no socket on Linux ≥ 6.x): protected like the rest. What
      // it quotes is a cut-short packet, so only its own checksum can be checked.
      assert.equal(first(r['icmp.checksum.status']), '1', `inner ICMP checksum: ${where}`);
      icmpErrors++;
    } else if (r['tcp.srcport'] !== '') {
      assert.match(r['frame.protocols'], /:esp:tcp(:data)?$/, `the TCP payload is read as plain data: ${where}`);
      // 0xffff is zero too (ones' complement): Linux writes it for a zero checksum (skb_checksum_help,
      // CSUM_MANGLED_0); tshark 4.0 calls it bad next to its own 0x0000.
      const negativeZero = r['tcp.checksum'] === '0xffff' && r['tcp.checksum_calculated'] === '0x0000';
      assert.ok(r['tcp.checksum.status'] === '1' || negativeZero, `inner TCP checksum: ${where}`);
      tcpBytes += Number(r['tcp.len'] || 0);
    } else if (r['icmp.type'] !== '') {
      assert.equal(r['icmp.checksum.status'], '1', `inner ICMP checksum: ${where}`);
    } else if (r['icmpv6.type'] !== '') {
      assert.equal(first(r['icmpv6.checksum.status']), '1', `inner ICMPv6 checksum: ${where}`);
      // Destination unreachable or parameter problem ("unrecognized next header": IPv6's protocol unreachable).
      if (['1', '4'].includes(first(r['icmpv6.type']))) icmpErrors++;
    }
    const spi = first(r['esp.spi']);
    perSpi[spi] = (perSpi[spi] ?? 0) + 1;
  }
  return { total: rows.length, perSpi, tcpBytes, icmpErrors };
}

const spiHex = (sa: SaSpec) => `0x${sa.spi.toString(16).padStart(8, '0')}`;

// --- the tests ---------------------------------------------------------------------------

for (const algorithm of ['aes-gcm-128', 'aes-gcm-256'] as const) {
  test(`offload (${algorithm}, transport, IPv4): vm1's agent offloads both SAs; ping and a TCP transfer to the peer arrive intact; the uplink carries only ESP that tshark decrypts and authenticates`, { timeout: 240_000 }, async (t) => {
    if (!need(t, runnable, why)) return;
    const pair = saPair(algorithm);
    const peer = await peerAgent(pair.peer);
    assert.equal(peer.of('installed-locally').length, 2, 'the peer does its own IPsec');
    assert.ok(peer.of('installed-locally').every((e) => e['how'] === 'userspace'));
    const before = (await stats())['vm1']!['ipsec'];
    const vm1 = await vm1Agent(pair.vm1);
    try {
      assert.deepEqual(vm1.of('offloaded').map((e) => [e['direction'], e['spi'], e['uplink']]).sort(),
        [['in', pair.toVm1.spi, 'phys'], ['out', pair.toPeer.spi, 'phys']].sort());
      assert.equal(vm1.of('installed-locally').length, 0, 'nothing done in the VM');
      const cap = await startCapture('phys', `offload-${algorithm}`);
      let t: TransferResult;
      try {
        const p = ping(lab.ns('vm1'), peerIp, 5);
        assert.equal(p.status, 0, `ping vm1 → peer through ESP: ${p.stdout}${p.stderr}`);
        // The agent lowered vm1's path MTU to the peer so the switch's ESP fits the uplink:
        // the largest unfragmented ping now is 1463 - 28 B, and it goes through.
        const route = inNs(lab.ns('vm1'), ['ip', 'route', 'get', peerIp]).stdout;
        assert.match(route, /mtu 1463/, `vm1's route to the peer: ${route}`);
        const big = ping(lab.ns('vm1'), peerIp, 3, 1435);
        assert.equal(big.status, 0, `ping -s 1435 vm1 → peer: ${big.stdout}${big.stderr}`);
        // Larger: vm1 fragments, and the switch will not protect fragments in transport mode
        // (RFC 4303 §3.3): dropped and counted, never sent in the clear (the capture checks that).
        const dropsBefore = (await stats())['phys']!['txDrops']['ipsec-fragment'] ?? 0;
        assert.notEqual(ping(lab.ns('vm1'), peerIp, 2, 1472).status, 0, 'fragments of a protected flow do not get through');
        assert.equal(((await stats())['phys']!['txDrops']['ipsec-fragment'] ?? 0) - dropsBefore, 4, 'two fragments of each ping dropped at the uplink');
        t = await transfer(lab.ns('vm1'), peerNs, peerIp, 61001, { bytes: 16 << 20 });
      } finally {
        await cap.stop();
      }
      assert.equal(t.received, t.sent, 'every byte arrived');
      assert.equal(t.sha256Received, t.sha256Sent, 'SHA-256 of the transfer');
      // The uplink: never the flow in plaintext; every ESP packet decrypts, authenticates, has good inner checksums.
      assert.equal(tshark(cap.file, plaintextOf(ip4('vm1'), peerIp)).length, 0, 'no plaintext of the protected flow on the uplink');
      const esp = checkEspDecrypts(cap.file, pair, `phys ${algorithm}`);
      assert.ok(esp.perSpi[spiHex(pair.toPeer)]! > 1000, `vm1 → peer ESP packets: ${JSON.stringify(esp.perSpi)}`);
      assert.ok(esp.perSpi[spiHex(pair.toVm1)]! > 100, `peer → vm1 ESP packets: ${JSON.stringify(esp.perSpi)}`);
      assert.ok(esp.tcpBytes >= 16 << 20, `decrypted TCP payload ${esp.tcpBytes} B covers the transfer`);
      // vswitch sa: both offloaded, with counters; vswitch stats: ESP CPU charged to vm1.
      const sas = vswitchJson<{ sas: any[] }>(['sa', 'vm1']).sas;
      const out = sas.find((s) => s.direction === 'out' && s.spi === pair.toPeer.spi);
      const inb = sas.find((s) => s.direction === 'in' && s.spi === pair.toVm1.spi);
      assert.equal(out?.state, 'offloaded');
      assert.equal(inb?.state, 'offloaded');
      assert.equal(out.uplink, 'phys');
      assert.ok(out.counters.packets >= esp.perSpi[spiHex(pair.toPeer)]!, `outbound SA counted ${out.counters.packets} packets`);
      assert.ok(out.counters.bytes >= 16 << 20 && out.counters.cpuNs > 0);
      assert.ok(inb.counters.packets >= esp.perSpi[spiHex(pair.toVm1)]! && inb.counters.authFailures === 0);
      const table = vswitch(['sa', 'vm1']);
      assert.match(table.stdout, new RegExp(`vm1\\s+out\\s+0x${pair.toPeer.spi.toString(16)}.*offloaded`));
      const st = vswitchJson<{ ports: any[] }>(['stats', 'vm1']).ports[0].ipsec;
      assert.ok(st.packets - before.packets >= out.counters.packets + inb.counters.packets - 10, `ESP packets charged to vm1: ${JSON.stringify(st)}`);
      assert.ok(st.cpuNs > before.cpuNs, 'ESP CPU time charged to vm1');
      const phys = (await stats())['phys']!;
      assert.deepEqual(Object.keys(phys['txDrops']), ['ipsec-fragment'], `only the fragments were dropped on the way out: ${JSON.stringify(phys['txDrops'])}`);
      console.log(`# offload ${algorithm}: ${t.sent} B in ${t.ms} ms; uplink ESP ${JSON.stringify(esp.perSpi)} (${esp.icmpErrors} ICMP errors); vm1 charged ${((st.cpuNs - before.cpuNs) / 1e6).toFixed(0)} ms CPU for ${st.packets - before.packets} packets`);
    } finally {
      const s = await vm1.stop();
      assert.equal(s['removedFromSwitch'], 2, 'the agent took its SAs out of the switch');
      await peer.stop();
    }
    assert.equal(vswitchJson<{ sas: any[] }>(['sa', 'vm1']).sas.filter((s) => s.spi === pair.toPeer.spi || s.spi === pair.toVm1.spi).length, 0);
    // The peer's TUN and route went with its agent.
    assert.doesNotMatch(inNs(peerNs, ['ip', 'link']).stdout, /vsesp0/);
    assert.doesNotMatch(inNs(peerNs, ['ip', 'route']).stdout, /vsesp0/);
  });
}

test('validation over the real guest API: tokens, one port cannot touch another\'s SAs, and every rejection reason in the 422 body and in `vswitch sa`', { timeout: 60_000 }, async (t) => {
  if (!need(t, runnable, why)) return;
  const ep1 = await guestApiOf('vm1');
  const ep2 = await guestApiOf('vm2');
  const tok1 = readFileSync(ep1.tokenFile, 'utf8').trim();
  const tok2 = readFileSync(ep2.tokenFile, 'utf8').trim();
  assert.notEqual(tok1, tok2, 'a token per port');
  const pair = saPair('aes-gcm-128');
  const body = (sa: SaSpec, o: Partial<SaSpec> = {}) => ({ ...sa, ...o });
  const [out, inb] = pair.vm1 as [SaSpec, SaSpec];

  // Wrong or missing token: 401, and nothing happens.
  for (const t of [tok2, '00'.repeat(32), '']) {
    assert.equal((await guestCall(ep1, t, 'GET', '/v1/guest')).status, 401);
    assert.equal((await guestCall(ep1, t, 'POST', '/v1/guest/sas', body(out))).status, 401);
  }
  const adv = await guestCall(ep1, tok1, 'GET', '/v1/guest');
  assert.equal(adv.status, 200);
  assert.equal(adv.body.port, 'vm1');
  assert.equal(adv.body.ipsec.enabled, true, 'IPsec offload advertised to vm1 (phys has the ESP engine)');

  // vm1 offloads a pair; vm2, through its own socket, can neither see, delete, ack nor claim them.
  assert.equal((await guestCall(ep1, tok1, 'POST', '/v1/guest/sas', body(out))).status, 201);
  assert.equal((await guestCall(ep1, tok1, 'POST', '/v1/guest/sas', body(inb))).status, 201);
  // An agent that restarts offloads what it had again: the same SA, accepted, still one of it.
  assert.equal((await guestCall(ep1, tok1, 'POST', '/v1/guest/sas', body(out))).status, 201);
  assert.equal(vswitchJson<{ sas: any[] }>(['sa', 'vm1']).sas.filter((s) => s.spi === out.spi).length, 1, 'a re-offload adds no second SA');
  const vm2sas = await guestCall(ep2, tok2, 'GET', '/v1/guest/sas');
  assert.equal(vm2sas.status, 200);
  assert.equal(vm2sas.body.sas.length, 0, "vm2 does not see vm1's SAs");
  assert.equal((await guestCall(ep2, tok2, 'DELETE', `/v1/guest/sas/out/${out.spi}`)).status, 404);
  assert.equal((await guestCall(ep2, tok2, 'POST', `/v1/guest/sas/out/${out.spi}/uploaded`)).status, 409);
  const claimSpi = nextSpi++;
  const claim = await guestCall(ep2, tok2, 'POST', '/v1/guest/sas', body(out, { spi: claimSpi }));
  assert.equal(claim.status, 422);
  assert.equal(claim.body.reason, 'source-not-owned', "vm2 cannot claim vm1's address");
  assert.deepEqual(vswitchJson<{ sas: any[] }>(['sa', 'vm1']).sas.filter((s) => s.spi === out.spi || s.spi === inb.spi).map((s) => s.state), ['offloaded', 'offloaded']);

  // Every rejection, with its reason, in the 422 body and in `vswitch sa`.
  const unknown = `198.18.${lab.subnet}.200`;
  const cases: [string, Record<string, unknown>][] = [
    ['source-not-owned', body(out, { spi: nextSpi++, src: ip4('vm2') })],
    ['destination-unknown', body(out, { spi: nextSpi++, dst: unknown })],
    ['destination-not-ipsec-capable', body(out, { spi: nextSpi++, dst: ip4('vm2') })],
    // The same SPI with another key (the very same SA again is an agent re-offloading it: accepted, see above).
    ['duplicate-spi', body(out, { key: 'ab'.repeat(16) })],
    ['bad-key', body(out, { spi: nextSpi++, algorithm: 'aes-gcm-256' })],
  ];
  const seen: { port: string; spi: number; reason: string }[] = [{ port: 'vm2', spi: claimSpi, reason: 'source-not-owned' }];
  for (const [reason, b] of cases) {
    const r = await guestCall(ep1, tok1, 'POST', '/v1/guest/sas', b);
    assert.equal(r.status, 422, `${reason}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.reason, reason, `${reason}: ${JSON.stringify(r.body)}`);
    assert.ok(typeof r.body.error === 'string' && r.body.error.length > 10, `${reason} says why: ${r.body.error}`);
    seen.push({ port: 'vm1', spi: b['spi'] as number, reason });
  }
  // The port's SA limit (maxSa): two offloaded already.
  await api('PATCH', '/v1/ports/vm1', { maxSa: 2 });
  try {
    const lim = await guestCall(ep1, tok1, 'POST', '/v1/guest/sas', body(out, { spi: nextSpi++ }));
    assert.equal(lim.status, 422);
    assert.equal(lim.body.reason, 'sa-limit', JSON.stringify(lim.body));
    seen.push({ port: 'vm1', spi: nextSpi - 1, reason: 'sa-limit' });
  } finally {
    await api('PATCH', '/v1/ports/vm1', { maxSa: 32 });
  }
  const listed = vswitchJson<{ rejected: any[] }>(['sa']).rejected;
  for (const x of seen) {
    assert.ok(listed.some((r) => r.port === x.port && r.spi === x.spi && r.reason === x.reason && r.detail.length > 0),
      `vswitch sa lists ${x.port}'s rejection of SPI ${x.spi} as ${x.reason}: ${JSON.stringify(listed.slice(-10))}`);
  }
  const table = vswitch(['sa']).stdout;
  for (const reason of ['source-not-owned', 'destination-unknown', 'destination-not-ipsec-capable', 'duplicate-spi', 'bad-key', 'sa-limit']) {
    assert.match(table, new RegExp(reason), `the table shows ${reason}`);
  }
  // vm1 removes its own SAs.
  assert.equal((await guestCall(ep1, tok1, 'DELETE', `/v1/guest/sas/out/${out.spi}`)).status, 200);
  assert.equal((await guestCall(ep1, tok1, 'DELETE', `/v1/guest/sas/in/${inb.spi}`)).status, 200);
});

/** Send raw IP packets (hex) as Ethernet frames from a namespace's device with scapy. */
function sendFrames(ns: string, dev: string, srcMac: string, dstMac: string, packets: string[]): void {
  const script = `
import sys
from scapy.all import Ether, IP, Raw, sendp, conf
conf.verb = 0
frames = [Ether(src=sys.argv[2], dst=sys.argv[3], type=0x0800) / Raw(bytes.fromhex(h)) for h in sys.stdin.read().split()]
sendp(frames, iface=sys.argv[1], inter=0.02)
print(len(frames))`;
  const r = inNs(ns, [PY, '-c', script, dev, srcMac, dstMac], { input: packets.join('\n') });
  assert.equal(r.status, 0, `scapy sendp: ${r.stderr}`);
  assert.equal(r.stdout.trim(), String(packets.length));
}

function macOf(ns: string, dev: string): string {
  return (JSON.parse(inNs(ns, ['ip', '-j', 'link', 'show', 'dev', dev]).stdout) as { address: string }[])[0]!.address;
}

test('tampered ESP from the network (scapy): bad ICVs, replays and truncation for vm1\'s offloaded inbound SA are dropped at the uplink and counted; nothing reaches vm1', { timeout: 120_000 }, async (t) => {
  if (!need(t, runnable, why)) return;
  const pair = saPair('aes-gcm-128');
  const peer = await peerAgent(pair.peer);
  const vm1 = await vm1Agent(pair.vm1);
  try {
    assert.equal(vm1.of('offloaded').length, 2);
    // Real traffic first: the inbound SA's window has moved past 1..5.
    assert.equal(ping(lab.ns('vm1'), peerIp, 5).status, 0);
    const vm1Mac = macOf(lab.ns('vm1'), lab.dev('vm1'));
    // Plaintext the attacker wants delivered: UDP to vm1:9999, each with a marker.
    const inner = (marker: string) => Buffer.from(buildFrame({
      ip: { version: 4, src: peerIp, dst: ip4('vm1') }, l4: { kind: 'udp', sport: 40000, dport: 9999 },
      payload: new Uint8Array(Buffer.from(marker.padEnd(64, '.'))), checksum: 'full',
    }).frame.subarray(14)).toString('hex');
    const script: [string, number, string][] = [
      ['tamper-icv', 1000, 'TAMPER-ICV'], ['tamper-data', 1001, 'TAMPER-DATA'], ['tamper-iv', 1002, 'TAMPER-IV'], ['tamper-seq', 1003, 'TAMPER-SEQ'],
      ['valid', 1, 'REPLAY-1'], ['valid', 3, 'REPLAY-3'], ['truncate', 1004, 'TRUNCATED'],
    ];
    const req = {
      sa: { spi: pair.toVm1.spi, mode: 'transport', key: pair.toVm1.key, salt: pair.toVm1.salt, src: peerIp, dst: ip4('vm1') },
      packets: [...script.map(([variant, seq, marker]) => ({ packet: inner(marker), seq, variant })),
        // The control: a valid packet with a fresh number, which must arrive (so the check can fail).
        { packet: inner('CONTROL'), seq: 2000, variant: 'valid' }],
    };
    const made = run(PY, [ESP_PEER, 'encrypt'], { input: JSON.stringify(req) });
    assert.equal(made.status, 0, made.stderr);
    const packets = (JSON.parse(made.stdout) as { results: { packet: string }[] }).results.map((x) => x.packet);
    const before = (await stats())['phys']!['rxDrops'] as Record<string, number>;
    const saBefore = vswitchJson<{ sas: any[] }>(['sa', 'vm1']).sas.find((s) => s.spi === pair.toVm1.spi).counters;
    const capVm1 = await startCapture('vm1', 'tamper');
    const capPhys = await startCapture('phys', 'tamper');
    try {
      sendFrames(peerNs, peerDev, peerMac, vm1Mac, packets);
      await sleep(500);
    } finally {
      await capVm1.stop();
      await capPhys.stop();
    }
    const after = (await stats())['phys']!['rxDrops'] as Record<string, number>;
    const delta = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
    assert.equal(delta('ipsec-auth-failed'), 4, `bit flips in ICV, data, IV and sequence number fail authentication: ${JSON.stringify(after)}`);
    assert.equal(delta('ipsec-replay'), 2, 'replays of sequence numbers 1 and 3');
    assert.equal(delta('ipsec-malformed'), 1, 'the truncated packet');
    const saAfter = vswitchJson<{ sas: any[] }>(['sa', 'vm1']).sas.find((s) => s.spi === pair.toVm1.spi).counters;
    assert.equal(saAfter.authFailures - saBefore.authFailures, 4);
    assert.equal(saAfter.replays - saBefore.replays, 2);
    // The uplink saw all eight; vm1 got only the control.
    const atPhys = tshark(capPhys.file, `esp.spi == ${pair.toVm1.spi} && esp.sequence >= 1000 || (esp.spi == ${pair.toVm1.spi} && esp.sequence <= 3)`);
    assert.equal(atPhys.filter((r) => r['frame.comment'].includes('dir=rx')).length, 8, 'the uplink received every forged packet and the control');
    // (vm1 answers the control with an ICMP port unreachable quoting it: not a delivery.)
    const atVm1 = tshark(capVm1.file, 'udp.dstport == 9999 && !icmp');
    assert.equal(atVm1.length, 1, `only the control reached vm1: ${JSON.stringify(atVm1)}`);
    const body = run('tshark', ['-r', capVm1.file, ...ONLY_PROTOCOLS, '-Y', 'udp.dstport == 9999 && !icmp', '-T', 'fields', '-e', 'data.data']).stdout;
    assert.match(Buffer.from(body.trim(), 'hex').toString(), /^CONTROL/);
    assert.equal(tshark(capVm1.file, 'esp').length, 0, 'no ESP reached vm1 either (the switch decrypts its offloaded SA)');
    console.log(`# tamper: 8 sent, 4 auth-failed, 2 replay, 1 malformed at the uplink; 1 delivered (the control)`);
  } finally {
    await vm1.stop();
    await peer.stop();
  }
});

/** The outbound SA's ESP on a capture, split into what the switch's engine made (sa= in the comment) and what came ESP from the VM. */
function outboundSeqs(file: string, sa: SaSpec, dir: 'tx' | 'rx'): { bySwitch: number[]; byVm: number[] } {
  const rows = tshark(file, `esp.spi == ${sa.spi}`).filter((r) => r['frame.comment'].includes(`dir=${dir}`));
  const bySwitch: number[] = [];
  const byVm: number[] = [];
  for (const r of rows) (/ sa=\d+/.test(r['frame.comment']) ? bySwitch : byVm).push(Number(r['esp.sequence'].split(',')[0]));
  return { bySwitch, byVm };
}

/** No sequence number twice under one key (GCM's IV is the sequence number: a repeat would be fatal), and the VM continued where the switch stopped. */
function assertSeqContinues(bySwitch: number[], byVm: number[], what: string): void {
  const all = [...bySwitch, ...byVm];
  assert.equal(new Set(all).size, all.length, `${what}: a sequence number was used twice`);
  assert.ok(bySwitch.length > 0 && byVm.length > 0, `${what}: ESP from both the switch (${bySwitch.length}) and the VM (${byVm.length})`);
  assert.ok(Math.max(...bySwitch) < Math.min(...byVm), `${what}: the VM's numbers (from ${Math.min(...byVm)}) follow the switch's (to ${Math.max(...bySwitch)})`);
}

test('uplink IPsec withdrawn while traffic flows (PATCH phys ipsec.enabled=false): advertisement withdrawn, SAs uploaded, vm1 encrypts by itself from the switch\'s sequence number, no plaintext on the uplink, the transfer completes', { timeout: 180_000 }, async (t) => {
  if (!need(t, runnable, why)) return;
  const pair = saPair('aes-gcm-256');
  const peer = await peerAgent(pair.peer);
  const vm1 = await vm1Agent(pair.vm1);
  const ep1 = await guestApiOf('vm1');
  const tok1 = readFileSync(ep1.tokenFile, 'utf8').trim();
  let withdrawnAt = 0;
  try {
    assert.equal(vm1.of('offloaded').length, 2);
    const cap = await startCapture('phys', 'withdraw');
    let t: TransferResult;
    try {
      t = await transfer(lab.ns('vm1'), peerNs, peerIp, 61002, {
        seconds: 6, rate: 3 << 20,
        during: async () => {
          await sleep(2000);
          withdrawnAt = Date.now();
          await api('PATCH', '/v1/ports/phys', { ipsec: { enabled: false } });
          await vm1.waitFor('both SAs uploaded', (e) => e.filter((x) => x['event'] === 'uploaded').length === 2, 10_000);
        },
      });
    } finally {
      await cap.stop();
    }
    assert.equal(t.received, t.sent);
    assert.equal(t.sha256Received, t.sha256Sent, 'SHA-256 of the transfer across the handover');
    assert.ok(t.sent > 8 << 20, `${t.sent} B sent`);
    // The advertisement is gone, to the guest API and in the capability map.
    const adv = await guestCall(ep1, tok1, 'GET', '/v1/guest');
    assert.equal(adv.body.ipsec.enabled, false, 'GET /v1/guest: IPsec no longer advertised');
    assert.equal(vswitchJson<{ ports: any[] }>(['caps', 'vm1']).ports[0].advertised.ipsec.enabled, false);
    // The uploads: the VM's userspace ESP took over, continuing the counters.
    const up = vm1.of('uploaded');
    assert.ok(up.every((e) => e['how'] === 'userspace' && /capabilit/.test(e['reason'])), JSON.stringify(up));
    const upOut = up.find((e) => e['direction'] === 'out')!;
    const upIn = up.find((e) => e['direction'] === 'in')!;
    assert.ok(upOut['seq'] > 1000, `next outbound sequence number ${upOut['seq']}`);
    assert.ok(upIn['replayTop'] > 10, `inbound replay window top ${upIn['replayTop']}`);
    const sas = vswitchJson<{ sas: any[] }>(['sa', 'vm1']).sas.filter((s) => s.spi === pair.toPeer.spi || s.spi === pair.toVm1.spi);
    assert.deepEqual(sas.map((s) => s.state), ['uploaded', 'uploaded']);
    assert.ok(sas.every((s) => /capabilit/.test(s.uploadReason)), JSON.stringify(sas));
    const held = sas.reduce((n, s) => n + s.counters.droppedWhileUploading, 0);
    // The uplink: no plaintext, every ESP packet authentic, and one sequence of numbers under the key.
    assert.equal(tshark(cap.file, plaintextOf(ip4('vm1'), peerIp)).length, 0, 'no plaintext of the protected flow on the uplink');
    const esp = checkEspDecrypts(cap.file, pair, 'phys withdraw');
    const seqs = outboundSeqs(cap.file, pair.toPeer, 'tx');
    assertSeqContinues(seqs.bySwitch, seqs.byVm, 'vm1 → peer');
    assert.equal(Math.min(...seqs.byVm), upOut['seq'], 'the first packet vm1 sealed itself carries the uploaded sequence number');
    console.log(`# withdraw: ${t.sent} B; ESP ${JSON.stringify(esp.perSpi)} (${esp.icmpErrors} ICMP errors inside); vm1 → peer by the switch ${seqs.bySwitch.length} (to seq ${Math.max(...seqs.bySwitch)}), by vm1 ${seqs.byVm.length}; plaintext held back ${held}; upload ${up[0]!['time']} (${Date.parse(up[0]!['time']) - withdrawnAt} ms after the PATCH)`);
  } finally {
    await api('PATCH', '/v1/ports/phys', { ipsec: { enabled: true } });
    const s = await vm1.stop();
    const st = (s['stats'] ?? {}) as Record<string, any>;
    assert.equal(st['how'], 'userspace');
    assert.ok(st['sealed'] > 0 && st['opened'] > 0, `vm1's agent sealed and opened ESP: ${JSON.stringify(st)}`);
    await peer.stop();
  }
  assert.doesNotMatch(inNs(lab.ns('vm1'), ['ip', 'link']).stdout, /vsesp0/, "vm1's TUN removed");
  assert.doesNotMatch(inNs(lab.ns('vm1'), ['ip', 'route']).stdout, /vsesp0|mtu/, "vm1's routes removed");
});

test('IPv6, both sides doing their own IPsec in userspace (--local-only): the IPv6 raw socket path, ping and a TCP transfer, only ESP on the uplink', { timeout: 120_000 }, async (t) => {
  if (!need(t, runnable, why)) return;
  const pair = saPair('aes-gcm-256', true);
  const peer = await peerAgent(pair.peer);
  const vm1 = await startAgent('vm1-agent', lab.ns('vm1'), pair.vm1, ['--local-only', '--local', 'userspace', '--device', lab.dev('vm1'), '--tun', 'vsesp0']);
  try {
    assert.equal(vm1.of('installed-locally').length, 2);
    const cap = await startCapture('phys', 'v6');
    let t: TransferResult;
    try {
      const p = ping(lab.ns('vm1'), peerIp6, 5);
      assert.equal(p.status, 0, `ping -6 vm1 → peer: ${p.stdout}${p.stderr}`);
      t = await transfer(lab.ns('vm1'), peerNs, peerIp6, 61004, { bytes: 8 << 20 });
    } finally {
      await cap.stop();
    }
    assert.equal(t.sha256Received, t.sha256Sent, 'SHA-256 over IPv6 ESP');
    const plain6 = tshark(cap.file, plaintextOf(lab.ip6('vm1'), peerIp6));
    assert.equal(plain6.length, 0, `no plaintext of the IPv6 flow on the uplink: ${JSON.stringify(plain6)}`);
    const esp = checkEspDecrypts(cap.file, pair, 'phys v6');
    assert.ok(esp.perSpi[spiHex(pair.toPeer)]! > 1000 && esp.perSpi[spiHex(pair.toVm1)]! > 100, JSON.stringify(esp.perSpi));
    assert.ok(esp.tcpBytes >= 8 << 20);
    assert.equal(vswitchJson<{ sas: any[] }>(['sa']).sas.filter((s) => s.spi === pair.toPeer.spi).length, 0, 'the switch was never asked');
    console.log(`# v6 userspace: ${t.sent} B in ${t.ms} ms; ESP ${JSON.stringify(esp.perSpi)} (${esp.icmpErrors} ICMPv6 errors inside)`);
  } finally {
    await vm1.stop();
    await peer.stop();
  }
});

test('an agent that stopped does not take the next agent\'s upload with it (its long poll dies with its connection)', {
  timeout: 120_000,
}, async (t) => {
  if (!need(t, runnable, why)) return;
  // Agent A waits for uploads with the default 25 s long poll, then stops.
  const p1 = saPair('aes-gcm-128');
  const peer1 = await peerAgent(p1.peer);
  const a = await vm1Agent(p1.vm1, 25_000);
  await a.stop();
  await peer1.stop();
  // Agent B, same VM, other SAs; the uplink loses IPsec while A's poll would still be waiting.
  const p2 = saPair('aes-gcm-128');
  const peer2 = await peerAgent(p2.peer);
  const b = await vm1Agent(p2.vm1);
  try {
    assert.equal(b.of('offloaded').length, 2);
    await api('PATCH', '/v1/ports/phys', { ipsec: { enabled: false } });
    await b.waitFor('both SAs uploaded to the running agent', (e) => e.filter((x) => x['event'] === 'uploaded').length === 2, 5_000);
  } finally {
    await api('PATCH', '/v1/ports/phys', { ipsec: { enabled: true } });
    await b.stop();
    await peer2.stop();
  }
});

test('live migration: the peer moves from behind the uplink to a local synthetic port (same MAC and IP, gratuitous ARP) while vm1 sends to it; the SAs are uploaded to vm1, which encrypts by itself; the transfer completes; no port ever carries the flow in plaintext', { timeout: 240_000 }, async (t) => {
  if (!need(t, runnable, why)) return;
  const pair = saPair('aes-gcm-128');
  const peer = await peerAgent(pair.peer);
  const vm1 = await vm1Agent(pair.vm1);
  const caps: Capture[] = [];
  let movedAt = 0;
  let peerCap: Capture | null = null;
  try {
    assert.equal(vm1.of('offloaded').length, 2);
    for (const p of ['vm1', 'vm2', 'phys']) caps.push(await startCapture(p, 'migrate'));
    let t: TransferResult;
    try {
      t = await transfer(lab.ns('vm1'), peerNs, peerIp, 61003, {
        seconds: 10, rate: 2 << 20,
        during: async () => {
          await sleep(3000);
          // The move: the peer's NIC behind the uplink goes, a vswitch port with the same MAC and address comes.
          movedAt = Date.now();
          must('ip', ['-n', peerNs, 'link', 'del', peerDev]);
          await api('POST', '/v1/ports', {
            name: 'peer', kind: 'synthetic', device: peerDev,
            guest: { namespace: peerNs, mac: peerMac, addresses: [`${peerIp}/24`] },
          });
          peerCap = await startCapture('peer', 'migrate');
          caps.push(peerCap);
          // Gratuitous ARP (as arping -U would): "peerIp is at peerMac", from the new port.
          const garp = inNs(peerNs, [PY, '-c', `
from scapy.all import Ether, ARP, sendp, conf
conf.verb = 0
sendp(Ether(src='${peerMac}', dst='ff:ff:ff:ff:ff:ff') / ARP(op=1, hwsrc='${peerMac}', psrc='${peerIp}', hwdst='00:00:00:00:00:00', pdst='${peerIp}'), iface='${peerDev}', count=2, inter=0.1)`]);
          assert.equal(garp.status, 0, garp.stderr);
          await vm1.waitFor('both SAs uploaded', (e) => e.filter((x) => x['event'] === 'uploaded').length === 2, 15_000);
        },
      });
    } finally {
      for (const c of caps) await c.stop();
    }
    assert.equal(t.received, t.sent, `every byte arrived (${t.received} of ${t.sent})`);
    assert.equal(t.sha256Received, t.sha256Sent, 'SHA-256 of the transfer across the migration');
    const up = vm1.of('uploaded');
    assert.ok(up.every((e) => e['how'] === 'userspace'), JSON.stringify(up));
    const sas = vswitchJson<{ sas: any[] }>(['sa', 'vm1']).sas.filter((s) => s.spi === pair.toPeer.spi || s.spi === pair.toVm1.spi);
    assert.deepEqual(sas.map((s) => s.state), ['uploaded', 'uploaded'], JSON.stringify(sas));
    assert.ok(sas.every((s) => /MAC moved|destination moved|neighbour/.test(s.uploadReason)), `upload reasons: ${sas.map((s) => s.uploadReason).join('; ')}`);
    const held = sas.reduce((n, s) => n + s.counters.droppedWhileUploading, 0);
    // The peer kept its own SAs; its agent followed its NIC to the new device.
    assert.equal(peer.of('uploaded').length, 0);
    assert.ok(peer.of('notice').some((e) => /NIC replaced/.test(e['message'])), `the peer's agent rebound its ESP socket: ${JSON.stringify(peer.of('notice'))}`);

    // No plaintext of the flow on phys, vm2 or the peer's new port, ever; on vm1's own port only before the upload.
    const uploadedAt = Math.max(...up.map((e) => Date.parse(e['time']))) / 1000;
    const counts: Record<string, number> = {};
    for (const c of caps) {
      const plain = tshark(c.file, plaintextOf(ip4('vm1'), peerIp));
      counts[c.port] = tshark(c.file, `ip.addr == ${ip4('vm1')} && ip.addr == ${peerIp}`).length;
      if (c.port === 'vm1') {
        const late = plain.filter((r) => Number(r['frame.time_epoch']) > uploadedAt);
        assert.equal(late.length, 0, `plaintext on vm1's port after the upload: ${JSON.stringify(late.slice(0, 3))}`);
        assert.ok(plain.length > 0, "vm1's plaintext while the SAs were offloaded (vm1 is their owner)");
      } else {
        assert.equal(plain.length, 0, `plaintext of the protected flow on port ${c.port}: ${JSON.stringify(plain.slice(0, 3))}`);
      }
    }
    assert.ok(counts['phys']! > 1000 && counts['peer']! > 1000, `the flow went through phys and then the new port: ${JSON.stringify(counts)}`);
    assert.equal(counts['vm2'], 0, 'vm2 never saw the flow');
    // Everything on the wire decrypts and authenticates; one sequence of numbers under the key across the move.
    const before = checkEspDecrypts(caps.find((c) => c.port === 'phys')!.file, pair, 'phys migrate');
    const afterMove = checkEspDecrypts(peerCap!.file, pair, 'peer port migrate');
    const fromSwitch = outboundSeqs(caps.find((c) => c.port === 'phys')!.file, pair.toPeer, 'tx');
    const fromVm = outboundSeqs(peerCap!.file, pair.toPeer, 'tx');
    assert.equal(fromVm.bySwitch.length, 0, 'nothing on the new port was encrypted by the switch');
    assertSeqContinues(fromSwitch.bySwitch, fromVm.byVm, 'vm1 → peer across the migration');
    const st = (await vm1.stop())['stats'] as Record<string, any>;
    assert.equal(st['drops']['auth-failed'] ?? 0, 0, `vm1's agent: ${JSON.stringify(st['drops'])}`);
    assert.equal((st['drops']['replay'] ?? 0) + (st['drops']['too-old'] ?? 0), 0, 'the replay window continued from the switch\'s');
    assert.ok(st['opened'] > 100 && st['sealed'] > 1000, JSON.stringify(st));
    console.log(`# migrate: ${t.sent} B in ${t.ms} ms; move → upload acked ${Math.round(uploadedAt * 1000 - movedAt)} ms; packets of the flow per port ${JSON.stringify(counts)}; ESP before ${JSON.stringify(before.perSpi)} after ${JSON.stringify(afterMove.perSpi)}; vm1 → peer by the switch to seq ${Math.max(...fromSwitch.bySwitch)}, by vm1 from ${Math.min(...fromVm.byVm)} (${fromVm.byVm.length} packets); plaintext held back ${held}; vm1 agent sealed ${st['sealed']} opened ${st['opened']}`);
  } finally {
    if (vm1.child.exitCode === null) await vm1.stop();
    await peer.stop();
  }
});
