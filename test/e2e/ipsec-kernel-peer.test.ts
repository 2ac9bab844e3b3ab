// A real kernel IPsec peer: Debian's Linux in a QEMU VM (TCG), with its own
// XFRM and ESP (esp4/esp6, rfc4106(gcm(aes))), on the "physical network"
// behind vswitch's uplink, talks ESP with vm1 — a namespace behind vswitch
// whose kernel has no ESP at all. vm1's SAs are offloaded to vswitch through
// vm1's guest API, so vswitch's ESP engine at the uplink is vm1's IPsec: it
// encrypts what vm1 sends to the VM and decrypts what the VM sends back.
//
//   vm1 (namespace, 198.18.K.1, 2001:db8:K::1: plaintext only)
//     └ synthetic port ─ vswitch ─ external port "phys" (ipsec: {}) ─ veth ─┐
//         phys namespace: Linux bridge ─ TAP ─ QEMU e1000 ─ VM (198.18.K.9, 2001:db8:K::9, XFRM)
//
// Before any SA exists, vm1 pings the VM in plaintext: that is how the switch
// learns where the VM is (an SA for a destination it has not seen is refused).
// Then, in one boot, one SA pair after the other (CASES: AES-GCM-128 and -256,
// IPv4 and IPv6, transport and tunnel mode): the VM's kernel gets the SAs and
// policies demanding ESP both ways (`ip xfrm`, over the serial console), vm1's
// agent (the test) offloads the same SAs to vswitch, and vm1 pings the VM
// (the answers prove that the VM's kernel took our ESP and that vswitch took
// its ESP) and downloads a random file from busybox httpd in the VM (SHA-256
// checked). The uplink is captured twice meanwhile — through vswitch's API
// (port phys) and by dumpcap on the veth's far end in the phys namespace,
// which vswitch has no part in — and tshark, given the keys, decrypts and
// authenticates every packet between vm1 and the VM: all are ESP of the SA
// pair with a good ICV and a good inner checksum; not one is plaintext. The
// VM's `ip -s xfrm state` (its kernel's counters) must count exactly the ESP
// packets the captures saw each way, with no failures, and so must vswitch's
// GET /v1/sas.
//
// Then vm1 uploads a file to the VM: its TSO super-frames go through the ESP
// engine, re-segmented so every ESP packet fits the uplink's MTU.
//
// Needs root, qemu-system-x86, linux-image-amd64, busybox-static, iproute2,
// iputils-ping and tshark (with dumpcap). Without them it is skipped locally
// and fails under CI=true.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { request } from 'node:http';
import { join } from 'node:path';
import { hasCommand, isRoot, need } from '../util/env.js';
import { Lab } from '../util/lab.js';
import { buildInitramfs, executableWithLibraries, vmUnavailable, type BuiltVm } from '../vm/tiny-vm.js';
import { SERVE_SCRIPT, VmSession } from '../vm/vm-session.js';

/**
 * Kernel modules the VM loads (modules.dep adds xfrm_algo and gf128mul; aes
 * is built in). drbg: ESP's IV generator, seqiv, seeds itself from the
 * default RNG, and without it `ip xfrm state add` fails with "Kernel was
 * unable to initialize cryptographic operations" (no modprobe in the VM).
 */
const IPSEC_MODULES = ['e1000', 'xfrm_user', 'esp4', 'esp6', 'gcm', 'ghash-generic', 'ctr', 'seqiv', 'drbg'] as const;
const IPROUTE2 = '/usr/sbin/ip';
const VM_HOST = 9;
const DOWNLOAD_BYTES = 2 << 20;
const UPLOAD_BYTES = 1 << 20;
/** How long the VM listens for an upload (a working one takes a few seconds). */
const UPLOAD_WAIT_S = 12;
const UPLOAD_PORT = 5001;
const PINGS = 5;

const VM_SCRIPT = `
IP=${IPROUTE2}
$IP link set lo up
$IP link set eth0 up
$IP addr add "$VSQ_IP" dev eth0
$IP -6 addr add "$VSQ_IP6" dev eth0 nodad
i=0
while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
echo "VSQ-IPROUTE2 $($IP -V)"
mkdir -p /www
dd if=/dev/urandom of=/www/blob bs=4096 count=$((VSQ_BLOB / 4096)) 2>/dev/null
echo "VSQ-BLOB $(sha256sum /www/blob | cut -d' ' -f1) $(wc -c < /www/blob)"
httpd -p 80 -h /www
${SERVE_SCRIPT}
`;

/** vm1's HTTP client, run by Node inside vm1's namespace: GET argv[1] into the file argv[2]. */
const HTTP_GET = `
const [url, file] = process.argv.slice(1);
require('http').get(url, { timeout: 120000 }, (res) => {
  if (res.statusCode !== 200) { console.error('HTTP ' + res.statusCode); process.exit(1); }
  res.pipe(require('fs').createWriteStream(file)).on('finish', () => process.exit(0));
}).on('error', (e) => { console.error(e.message); process.exit(1); }).on('timeout', () => { console.error('timeout'); process.exit(1); });
`;

/**
 * vm1's TCP sender: the file argv[3] to argv[1] port argv[2], then a clean
 * close. Half-open allowed: busybox nc in the VM, its stdin at EOF, closes
 * its sending side at once.
 */
const TCP_SEND = `
const [host, port, file] = process.argv.slice(1);
const s = require('net').connect({ host, port: Number(port), allowHalfOpen: true }, () => require('fs').createReadStream(file).pipe(s));
s.on('error', (e) => { console.error(e.message); process.exit(1); });
s.on('close', (hadError) => process.exit(hadError ? 1 : 0));
`;

interface GuestEndpoint { socket: string; tokenFile: string }

/** One call to vm1's guest API (its own socket, its own bearer token). */
function guestCall(ep: GuestEndpoint, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const token = readFileSync(ep.tokenFile, 'utf8').trim();
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request({
      socketPath: ep.socket, method, path,
      headers: {
        authorization: `Bearer ${token}`,
        ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
      },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown = text;
        try { json = JSON.parse(text); } catch { /* keep the text */ }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

function sh(cmd: string, args: string[], timeout = 60_000) {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout, maxBuffer: 64 << 20 });
}

function must(cmd: string, args: string[]): string {
  const r = sh(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.stdout || r.error?.message}`);
  return r.stdout;
}

/** Cut a pcapng stream that was hung up on back to its last whole block. */
function wholeBlocks(buf: Buffer): Buffer {
  let off = 0;
  while (off + 12 <= buf.length) {
    const len = buf.readUInt32LE(off + 4);
    if (len < 12 || len % 4 !== 0 || off + len > buf.length) break;
    off += len;
  }
  return buf.subarray(0, off);
}

/** vswitch's own capture of a port, through the management API, until stop(). */
async function apiCapture(lab: Lab, port: string, file: string): Promise<{ stop: () => Promise<void> }> {
  const res = await lab.api.stream(`/v1/ports/${port}/capture`);
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((r) => { res.once('end', r); res.once('close', r); res.once('error', () => r()); });
  return {
    stop: async () => {
      await new Promise((r) => setTimeout(r, 600)); // the writer flushes every 200 ms
      res.destroy();
      await ended;
      writeFileSync(file, wholeBlocks(Buffer.concat(chunks)));
    },
  };
}

/** dumpcap on a device inside a namespace: a capture vswitch has no part in. */
async function dumpcap(ns: string, dev: string, file: string): Promise<{ stop: () => Promise<void> }> {
  const c: ChildProcess = spawn('ip', ['netns', 'exec', ns, 'dumpcap', '-i', dev, '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const exited = new Promise<number | null>((r) => c.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`dumpcap did not start: ${err}`)), 15_000);
    c.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (/Capturing on/.test(err)) { clearTimeout(t); resolve(); }
    });
    c.once('exit', () => { clearTimeout(t); reject(new Error(`dumpcap exited: ${err}`)); });
  });
  // "Capturing on" comes a moment before the socket sees packets
  await new Promise((r) => setTimeout(r, 1000));
  return {
    stop: async () => {
      await new Promise((r) => setTimeout(r, 300));
      c.kill('SIGINT');
      const killer = setTimeout(() => c.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
      assert.ok(existsSync(file), `dumpcap wrote nothing: ${err}`);
    },
  };
}

const FIELDS = ['frame.number', 'ip.src', 'ip.dst', 'ip.proto', 'ipv6.src', 'ipv6.dst', 'ipv6.nxt', 'esp.spi', 'esp.sequence',
  'esp.icv_good', 'esp.icv_bad', 'esp.protocol', 'icmp.type', 'icmpv6.type', 'tcp.srcport', 'tcp.dstport', 'tcp.len',
  'tcp.checksum', 'tcp.checksum.status', 'frame.protocols', '_ws.expert.message'] as const;
type Row = Record<(typeof FIELDS)[number], string>;

interface Case {
  algorithm: 'aes-gcm-128' | 'aes-gcm-256';
  family: 4 | 6;
  mode: 'transport' | 'tunnel';
  /** Also send a file from vm1 to the VM: TSO super-frames re-segmented so ESP fits the uplink's MTU. */
  upload: boolean;
}

const CASES: Case[] = [
  { algorithm: 'aes-gcm-128', family: 4, mode: 'transport', upload: true },
  { algorithm: 'aes-gcm-256', family: 4, mode: 'transport', upload: true },
  { algorithm: 'aes-gcm-128', family: 6, mode: 'transport', upload: true },
  { algorithm: 'aes-gcm-256', family: 4, mode: 'tunnel', upload: true },
  { algorithm: 'aes-gcm-128', family: 6, mode: 'tunnel', upload: true },
];


interface SaPair {
  c: Case;
  key: Buffer;
  salt: Buffer;
  /** vm1 → VM (vm1's outbound SA, the VM's inbound). */
  spiOut: number;
  /** VM → vm1, with key material of its own (one key both ways would hide a direction mix-up). */
  spiIn: number;
  keyIn: Buffer;
  saltIn: Buffer;
}

const hex = (b: Buffer) => b.toString('hex');
const spiHex = (spi: number) => `0x${spi.toString(16).padStart(8, '0')}`;
const label = (c: Case) => `${c.algorithm} IPv${c.family} ${c.mode}`;

/** The `uat:esp_sa` records of an SA pair (Wireshark 4.0: protocol, src, dst, SPI, encryption, key‖salt, authentication, key). */
function uatRecords(sa: SaPair, a: string, b: string): string[] {
  const uat = (src: string, dst: string, spi: number, key: Buffer, salt: Buffer) =>
    `uat:esp_sa:"IPv${sa.c.family}","${src}","${dst}","${spiHex(spi)}","AES-GCM with 16 octet ICV [RFC4106]","0x${hex(key)}${hex(salt)}","NULL",""`;
  return [uat(a, b, sa.spiOut, sa.key, sa.salt), uat(b, a, sa.spiIn, sa.keyIn, sa.saltIn)];
}

function tshark(file: string, sa: SaPair, a: string, b: string): Row[] {
  const args = ['-r', file, '-n',
    '-o', 'esp.enable_encryption_decode:TRUE', '-o', 'esp.enable_authentication_check:TRUE',
    '-o', 'tcp.check_checksum:TRUE', '-o', 'tcp.desegment_tcp_streams:FALSE',
    // The TCP payload is random bytes: read as data. (A heuristic dissector that throws on it
    // would cut the ESP tree short before its ICV status, as esp-interop.test.ts found.)
    '-d', 'tcp.port==80,data', '-d', `tcp.port==${UPLOAD_PORT},data`,
    ...uatRecords(sa, a, b).flatMap((u) => ['-o', u]),
    '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=,', ...FIELDS.flatMap((f) => ['-e', f])];
  const r = sh('tshark', args, 120_000);
  assert.equal(r.status, 0, `tshark failed: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /uat|invalid|cut short|isn't a capture file/i, `tshark complained:\n${r.stderr}`);
  return r.stdout.trim().split('\n').filter((l) => l !== '').map((line) => {
    const v = line.split('\t');
    return Object.fromEntries(FIELDS.map((f, i) => [f, v[i] ?? ''])) as Row;
  });
}

interface FlowCheck {
  espOut: number;
  espIn: number;
  echoRequests: number;
  echoReplies: number;
  tcpOut: number;
  tcpIn: number;
  tcpBytesIn: number;
  tcpBytesOut: number;
}

const first = (v: string) => v.split(',')[0] ?? '';

/**
 * Every packet between a (vm1) and b (the VM) must be ESP of this SA pair,
 * authenticated, holding ICMP echo or TCP with a good checksum: the outer
 * header (the first of its fields) is what travelled, the rest is what
 * tshark found inside with the keys.
 */
function checkFlow(rows: Row[], sa: SaPair, a: string, b: string, what: string): FlowCheck {
  const c: FlowCheck = { espOut: 0, espIn: 0, echoRequests: 0, echoReplies: 0, tcpOut: 0, tcpIn: 0, tcpBytesIn: 0, tcpBytesOut: 0 };
  const v6 = sa.c.family === 6;
  const tunnel = sa.c.mode === 'tunnel';
  let lastSeqOut = 0;
  let lastSeqIn = 0;
  for (const r of rows) {
    const src = first(v6 ? r['ipv6.src'] : r['ip.src']);
    const dst = first(v6 ? r['ipv6.dst'] : r['ip.dst']);
    const out = src === a && dst === b;
    const inb = src === b && dst === a;
    if (!out && !inb) continue;
    const where = `${what}, frame ${r['frame.number']}: ${JSON.stringify(r)}`;
    assert.equal(first(v6 ? r['ipv6.nxt'] : r['ip.proto']), '50', `plaintext between vm1 and the VM: ${where}`);
    assert.equal(r['esp.spi'], spiHex(out ? sa.spiOut : sa.spiIn), where);
    assert.equal(r['esp.icv_good'], '1', `ICV not good: ${where}`);
    assert.equal(r['esp.icv_bad'], '0', where);
    const seq = Number(r['esp.sequence']);
    if (out) { assert.ok(seq > lastSeqOut, `sequence not increasing: ${where}`); lastSeqOut = seq; c.espOut++; }
    else { assert.ok(seq > lastSeqIn, `sequence not increasing: ${where}`); lastSeqIn = seq; c.espIn++; }
    const icmp = v6 ? r['icmpv6.type'] : r['icmp.type'];
    const nh = Number.parseInt(r['esp.protocol'], 16);
    if (tunnel) {
      assert.equal(nh, v6 ? 41 : 4, `tunnel mode carries an IPv${sa.c.family} packet: ${where}`);
      // the inner header: the same hosts
      const isrc = (v6 ? r['ipv6.src'] : r['ip.src']).split(',')[1];
      const idst = (v6 ? r['ipv6.dst'] : r['ip.dst']).split(',')[1];
      assert.deepEqual([isrc, idst], out ? [a, b] : [b, a], `inner addresses: ${where}`);
    }
    if (icmp !== '') {
      assert.equal(tunnel ? 0 : nh, tunnel ? 0 : v6 ? 58 : 1, where);
      if (icmp === (v6 ? '128' : '8') && out) c.echoRequests++;
      else if (icmp === (v6 ? '129' : '0') && inb) c.echoReplies++;
      else if (!(v6 && (icmp === '135' || icmp === '136'))) assert.fail(`unexpected ICMP: ${where}`);
    } else if (r['tcp.srcport'] !== '') {
      if (!tunnel) assert.equal(nh, 6, where);
      // 0xffff where the sum is 0 is the same one's-complement zero (RFC 1624 §3): Linux sends it
      // (about one segment in 65536); tshark calls it bad, every receiver takes it.
      const negativeZero = r['tcp.checksum'] === '0xffff' && r['_ws.expert.message'].includes('0xffff instead of 0x0000');
      assert.ok(r['tcp.checksum.status'] === '1' || negativeZero, `inner TCP checksum not good: ${where}`);
      const len = Number(r['tcp.len'] || 0);
      if (out) { c.tcpOut++; c.tcpBytesOut += len; } else { c.tcpIn++; c.tcpBytesIn += len; }
    } else {
      assert.fail(`nothing tshark could decrypt to ICMP or TCP: ${where}`);
    }
  }
  return c;
}

interface XfrmState { src: string; dst: string; spi: number; bytes: number; packets: number; replay: number; failed: number; aead: string; mode: string }

/** `ip -s xfrm state` as the VM printed it. */
function parseXfrm(text: string): XfrmState[] {
  const out: XfrmState[] = [];
  for (const block of text.split(/\n(?=src )/)) {
    const head = /^src (\S+) dst (\S+)/.exec(block.trim());
    const spi = /proto esp spi (0x[0-9a-f]+)/.exec(block);
    if (head === null || spi === null) continue;
    const cur = /lifetime current:\s*\n\s*(\d+)\(bytes\), (\d+)\(packets\)/.exec(block);
    const st = /stats:\s*\n\s*replay-window \d+ replay (\d+) failed (\d+)/.exec(block);
    out.push({
      src: head[1]!, dst: head[2]!, spi: Number(spi[1]), aead: /aead (\S+)/.exec(block)?.[1] ?? '', mode: /mode (\S+)/.exec(block)?.[1] ?? '',
      bytes: Number(cur?.[1] ?? -1), packets: Number(cur?.[2] ?? -1), replay: Number(st?.[1] ?? -1), failed: Number(st?.[2] ?? -1),
    });
  }
  return out;
}

function newPair(c: Case, n: number): SaPair {
  const klen = c.algorithm === 'aes-gcm-128' ? 16 : 32;
  const base = (0x10000 + (randomBytes(2).readUInt16BE(0) << 8)) >>> 0;
  return { c, key: randomBytes(klen), salt: randomBytes(4), keyIn: randomBytes(klen), saltIn: randomBytes(4), spiOut: base + 2 * n, spiIn: base + 2 * n + 1 };
}

test('a Linux kernel IPsec peer (XFRM in a QEMU VM) and vm1 with its SAs offloaded to vswitch: ping and TCP, AES-GCM-128/256, IPv4/IPv6, transport/tunnel, no plaintext', { timeout: 900_000 }, async (t) => {
  if (!need(t, isRoot(), 'needs root (namespaces, bridge, TAP)')) return;
  const vmWhy = vmUnavailable();
  if (!need(t, vmWhy === null, vmWhy ?? '')) return;
  const missing = ['ip', 'ping', 'tshark', 'dumpcap', 'ldd', 'timeout'].filter((c) => !hasCommand(c));
  if (!existsSync(IPROUTE2)) missing.push(IPROUTE2);
  if (!need(t, missing.length === 0, `needs ${missing.join(', ')} (apt-get install iproute2 iputils-ping tshark)`)) return;

  const tb = Date.now();
  const vm: BuiltVm = buildInitramfs({ script: VM_SCRIPT, modules: IPSEC_MODULES, files: executableWithLibraries(IPROUTE2) });
  t.diagnostic(`initramfs ${vm.cached ? 'cached' : 'built'} in ${Date.now() - tb} ms: ${vm.initramfs} (${statSync(vm.initramfs).size} B), kernel ${vm.kernel.release}${vm.pvh ? ' (PVH)' : ''}`);

  const lab = await Lab.start({ nodes: ['vm1', 'phys'], portOverrides: { phys: { ipsec: {} } } });
  let session: VmSession | null = null;
  const captures: { stop: () => Promise<void> }[] = [];
  const keys: string[] = [];
  try {
    const physNs = lab.ns('phys');
    const vm1Ns = lab.ns('vm1');
    const br = `${lab.prefix}br`;
    const tap = `${lab.prefix}tp`;
    const addr = {
      4: { vm1: lab.ip4('vm1'), peer: `198.18.${lab.subnet}.${VM_HOST}` },
      6: { vm1: lab.ip6('vm1'), peer: `2001:db8:${lab.subnet.toString(16)}::${VM_HOST}` },
    } as const;
    const mac = `52:54:00:${[...randomBytes(3)].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
    // The physical network: a bridge joining the uplink's far end and the VM's TAP.
    const inNs = (...a: string[]) => must('ip', ['-n', physNs, ...a]);
    inNs('addr', 'flush', 'dev', lab.physDev);
    inNs('link', 'add', br, 'type', 'bridge');
    inNs('link', 'set', lab.physDev, 'master', br);
    inNs('tuntap', 'add', 'dev', tap, 'mode', 'tap');
    inNs('link', 'set', tap, 'master', br);
    inNs('link', 'set', tap, 'up');
    inNs('link', 'set', br, 'up');
    inNs('addr', 'add', `${lab.ip4('phys')}/24`, 'dev', br);

    session = VmSession.start({
      vm, wrap: ['ip', 'netns', 'exec', physNs],
      params: { ip: `${addr[4].peer}/24`, ip6: `${addr[6].peer}/64`, blob: String(DOWNLOAD_BYTES) },
      net: ['-netdev', `tap,id=n0,ifname=${tap},script=no,downscript=no`, '-device', `e1000,netdev=n0,mac=${mac},romfile=`],
    });
    const vmSh = session;
    await vmSh.waitFor(/^VSQ-READY/, 120_000);
    const blob = (await vmSh.waitFor(/^VSQ-BLOB ([0-9a-f]{64}) (\d+)/, 1000)).match;
    assert.deepEqual(vmSh.lines.filter((l) => l.includes('VSQ-INSMOD-FAILED')), [], 'every module loads');
    assert.equal(Number(blob[2]), DOWNLOAD_BYTES);
    t.diagnostic(`VM: QEMU start → /init ${vmSh.bootMs} ms, → ready (modules, addresses, file, httpd) ${vmSh.readyMs} ms; ${vmSh.lines.find((l) => l.startsWith('VSQ-IPROUTE2'))?.slice(13)}`);

    // What vm1's agent sees: IPsec advertised, because the uplink can do it.
    const ports = await lab.api.call<{ ports: { name: string; guestApi: GuestEndpoint | null }[] }>('GET', '/v1/ports');
    const ep = ports.ports.find((p) => p.name === 'vm1')?.guestApi;
    assert.ok(ep !== null && ep !== undefined, 'vm1 has a guest API');
    const g = await guestCall(ep, 'GET', '/v1/guest');
    assert.equal(g.status, 200, JSON.stringify(g.json));
    assert.equal(g.json.ipsec.enabled, true, `IPsec advertised to vm1: ${JSON.stringify(g.json)}`);

    // An SA for a peer the switch has not seen is refused: nothing could say where it is.
    // (vm1 speaks first to someone else, the bridge, so that its own address is known.)
    const hello = sh('ip', ['netns', 'exec', vm1Ns, 'ping', '-4', '-c', '1', '-W', '5', lab.ip4('phys')]);
    assert.equal(hello.status, 0, `vm1 → the phys namespace:\n${hello.stdout}${hello.stderr}`);
    const known = (await lab.api.call<{ entries: { ip: string }[] }>('GET', '/v1/neighbors')).entries.some((e) => e.ip === addr[4].peer);
    if (!known) {
      const early = await guestCall(ep, 'POST', '/v1/guest/sas', {
        spi: 0xe000 + randomBytes(1)[0]!, direction: 'out', mode: 'transport', algorithm: 'aes-gcm-128',
        key: hex(randomBytes(16)), salt: hex(randomBytes(4)), src: addr[4].vm1, dst: addr[4].peer,
      });
      assert.equal(early.status, 422, JSON.stringify(early.json));
      assert.equal(early.json.reason, 'destination-unknown', JSON.stringify(early.json));
      t.diagnostic(`an SA for the VM before the switch had seen it: ${early.status} ${early.json.reason} (${early.json.error})`);
    }

    // Before any SA, vm1 and the VM meet in plaintext: the switch learns where the VM is.
    for (const f of [4, 6] as const) {
      const r = sh('ip', ['netns', 'exec', vm1Ns, 'ping', `-${f}`, '-c', '2', '-i', '0.3', '-W', '5', addr[f].peer]);
      assert.equal(r.status, 0, `plaintext IPv${f} ping before any SA:\n${r.stdout}${r.stderr}`);
    }
    const nb = await lab.api.call<{ entries: { ip: string; mac: string }[] }>('GET', '/v1/neighbors');
    for (const f of [4, 6] as const) {
      assert.ok(nb.entries.some((e) => e.ip === addr[f].peer && e.mac === mac), `the switch knows the VM's IPv${f} address: ${JSON.stringify(nb.entries)}`);
    }

    const upload = randomBytes(UPLOAD_BYTES);
    const upFile = join(lab.dir, 'upload.bin');
    writeFileSync(upFile, upload);
    const upSha = createHash('sha256').update(upload).digest('hex');
    let previous: SaPair | null = null;
    let n = 0;
    for (const c of CASES) {
      const sa = newPair(c, n++);
      const { vm1: a, peer: b } = addr[c.family];
      const plen = c.family === 4 ? 32 : 128;
      const ping = (count: number) => sh('ip', ['netns', 'exec', vm1Ns, 'ping', `-${c.family}`, '-c', String(count), '-i', '0.2', '-W', '5', b]);
      const url = `http://${c.family === 4 ? b : `[${b}]`}/blob`;
      const tag = `${c.algorithm}-${c.family}-${c.mode}`;

      // The VM: its own kernel does ESP; its policies demand it both ways.
      await vmSh.must(`
IP=${IPROUTE2}
$IP xfrm policy flush
$IP xfrm state flush
$IP xfrm state add src ${a} dst ${b} proto esp spi ${sa.spiOut} mode ${c.mode} replay-window 64 aead 'rfc4106(gcm(aes))' 0x${hex(sa.key)}${hex(sa.salt)} 128
$IP xfrm state add src ${b} dst ${a} proto esp spi ${sa.spiIn} mode ${c.mode} aead 'rfc4106(gcm(aes))' 0x${hex(sa.keyIn)}${hex(sa.saltIn)} 128
$IP xfrm policy add src ${b}/${plen} dst ${a}/${plen} dir out tmpl src ${b} dst ${a} proto esp mode ${c.mode}
$IP xfrm policy add src ${a}/${plen} dst ${b}/${plen} dir in tmpl src ${a} dst ${b} proto esp mode ${c.mode}
`);
      // vm1: no ESP in its kernel; the same SAs offloaded to the switch by its agent (here: the test).
      if (previous !== null) {
        for (const [d, spi] of [['out', previous.spiOut], ['in', previous.spiIn]] as const) {
          const r = await guestCall(ep, 'DELETE', `/v1/guest/sas/${d}/${spi}`);
          assert.equal(r.status, 200, `DELETE ${d} ${spi}: ${JSON.stringify(r.json)}`);
        }
      }
      const common = { mode: c.mode, algorithm: c.algorithm };
      // Tunnel mode: the selector says which inner packets, as the VM's policies do (without one,
      // vswitch's tunnel SA would take every packet vm1 sends, of either family, to anyone).
      const sel = (src: string, dst: string) => c.mode === 'tunnel' ? { selector: { src: `${src}/${plen}`, dst: `${dst}/${plen}` } } : {};
      for (const body of [
        { spi: sa.spiOut, direction: 'out', ...common, key: hex(sa.key), salt: hex(sa.salt), src: a, dst: b, ...sel(a, b) },
        { spi: sa.spiIn, direction: 'in', ...common, key: hex(sa.keyIn), salt: hex(sa.saltIn), src: b, dst: a, replayWindow: 64, ...sel(b, a) },
      ]) {
        const r = await guestCall(ep, 'POST', '/v1/guest/sas', body);
        assert.equal(r.status, 201, `${label(c)}: offload the ${body.direction} SA: ${r.status} ${JSON.stringify(r.json)}`);
        assert.equal(r.json.state, 'offloaded');
        assert.equal(r.json.uplink, 'phys');
      }
      previous = sa;
      keys.push(`# ${label(c)}`, ...uatRecords(sa, a, b));

      // Traffic, with the uplink captured twice: by vswitch (API) and by dumpcap in the phys namespace.
      const apiPcap = join(lab.dir, `api-${tag}.pcapng`);
      const nsPcap = join(lab.dir, `ns-${tag}.pcapng`);
      const capA = await apiCapture(lab, 'phys', apiPcap);
      captures.push(capA);
      const capB = await dumpcap(physNs, lab.physDev, nsPcap);
      captures.push(capB);
      const t0 = Date.now();
      const p1 = ping(PINGS);
      assert.equal(p1.status, 0, `${label(c)}: ping over IPsec:\n${p1.stdout}${p1.stderr}`);
      assert.match(p1.stdout, new RegExp(`${PINGS} packets transmitted, ${PINGS} received`), p1.stdout);
      const td = Date.now();
      const got = join(lab.dir, `download-${tag}.bin`);
      const dl = sh('ip', ['netns', 'exec', vm1Ns, process.execPath, '-e', HTTP_GET, url, got], 130_000);
      assert.equal(dl.status, 0, `${label(c)}: download over IPsec: ${dl.stderr}`);
      const dlMs = Date.now() - td;
      const gotBytes = readFileSync(got);
      assert.equal(gotBytes.length, DOWNLOAD_BYTES);
      assert.equal(createHash('sha256').update(gotBytes).digest('hex'), blob[1], `${label(c)}: the download's SHA-256 is the VM's file's`);

      let uploaded = false;
      let ulMs = 0;
      if (c.upload) {
        await t.test(`${label(c)}: vm1 uploads ${UPLOAD_BYTES} B to the VM (TSO super-frames and full-size segments through the ESP engine)`, async () => {
          const before = (await lab.stats())['phys']!;
          const listen = vmSh.must(`timeout ${UPLOAD_WAIT_S} nc -l -p ${UPLOAD_PORT} > /tmp/up; echo "VSQ-UP $(sha256sum /tmp/up | cut -d' ' -f1) $(wc -c < /tmp/up)"`, (UPLOAD_WAIT_S + 30) * 1000);
          listen.catch(() => undefined);
          await new Promise((r) => setTimeout(r, 1000));
          const tu = Date.now();
          const send = sh('ip', ['netns', 'exec', vm1Ns, 'timeout', String(UPLOAD_WAIT_S - 2), process.execPath, '-e', TCP_SEND, b, String(UPLOAD_PORT), upFile], UPLOAD_WAIT_S * 1000);
          const up = /VSQ-UP ([0-9a-f]{64}) (\d+)/.exec(await listen);
          ulMs = Date.now() - tu;
          const after = (await lab.stats())['phys']!;
          const txErr = (after['txDrops']?.['tx-error'] ?? 0) - (before['txDrops']?.['tx-error'] ?? 0);
          assert.equal(txErr, 0, `the uplink refused ${txErr} frames (last write error ${after['io']?.['lastWriteError']}: 90 = EMSGSIZE, above its MTU)`);
          assert.equal(send.status, 0, `upload over IPsec: exit ${send.status} ${send.stderr}`);
          assert.ok(up !== null, 'the VM reported the upload');
          assert.equal(Number(up[2]), UPLOAD_BYTES, 'upload size in the VM');
          assert.equal(up[1], upSha, "the upload's SHA-256 in the VM");
          uploaded = true;
        });
      }
      const p2 = ping(2);
      assert.equal(p2.status, 0, `${label(c)}: ping after the transfers:\n${p2.stdout}`);
      await capA.stop();
      await capB.stop();
      captures.length = 0;
      const trafficMs = Date.now() - t0;
      // Both sides' counters now, before anything else can pass (the analysis takes seconds).
      const xfrmText = await vmSh.must(`${IPROUTE2} -s xfrm state; grep -E '^Xfrm(In|Out)' /proc/net/xfrm_stat`);
      const sas = await lab.api.call<{ sas: any[] }>('GET', '/v1/sas');

      // tshark, with the keys: everything between vm1 and the VM is ESP of these SAs, authenticated.
      const flows: FlowCheck[] = [];
      for (const [what, file] of [['vswitch capture of port phys', apiPcap], ['dumpcap in the phys namespace', nsPcap]] as const) {
        const f = checkFlow(tshark(file, sa, a, b), sa, a, b, `${label(c)}, ${what}`);
        assert.ok(f.echoRequests >= PINGS + 2 && f.echoReplies >= PINGS + 2, `${what}: the pings inside ESP ${JSON.stringify(f)}`);
        assert.ok(f.tcpBytesIn >= DOWNLOAD_BYTES, `${what}: the download inside ESP ${JSON.stringify(f)}`);
        if (uploaded) assert.ok(f.tcpBytesOut >= UPLOAD_BYTES, `${what}: the upload inside ESP ${JSON.stringify(f)}`);
        flows.push(f);
      }
      assert.deepEqual(flows[0], flows[1], 'both captures saw the same ESP packets');
      // Without the keys, not one packet between them is anything but ESP.
      const ipf = c.family === 4 ? 'ip' : 'ipv6';
      for (const file of [apiPcap, nsPcap]) {
        const blind = sh('tshark', ['-r', file, '-n', '-Y', `${ipf}.addr==${a} && ${ipf}.addr==${b} && !esp`, '-T', 'fields', '-e', 'frame.number', '-e', 'frame.protocols']);
        assert.equal(blind.status, 0, blind.stderr);
        const bad = blind.stdout.trim().split('\n').filter((l) => l !== '');
        assert.deepEqual(bad, [], `${label(c)}: plaintext frames between vm1 and the VM in ${file}`);
      }

      // The VM's kernel counted our ESP in and its own out, without failures.
      const states = parseXfrm(xfrmText);
      const vin = states.find((s) => s.spi === sa.spiOut);
      const vout = states.find((s) => s.spi === sa.spiIn);
      assert.ok(vin !== undefined && vout !== undefined, `the VM's states:\n${xfrmText}`);
      for (const s of [vin, vout]) {
        assert.equal(s.aead, 'rfc4106(gcm(aes))', xfrmText);
        assert.equal(s.mode, c.mode, xfrmText);
      }
      const f = flows[1]!;
      assert.equal(vin.packets, f.espOut, `the VM decrypted ${vin.packets} of the ${f.espOut} ESP packets vm1 sent:\n${xfrmText}`);
      assert.equal(vout.packets, f.espIn, `the VM encrypted ${vout.packets} packets, dumpcap saw ${f.espIn}:\n${xfrmText}`);
      assert.equal(vin.failed, 0, `the VM: authentication failures on our ESP:\n${xfrmText}`);
      assert.equal(vin.replay, 0, `the VM: replays:\n${xfrmText}`);
      for (const m of xfrmText.matchAll(/^(Xfrm\w+)\s+(\d+)$/gm)) assert.equal(m[2], '0', `the VM's ${m[1]} = ${m[2]}`);

      // vswitch's view: both SAs offloaded, with every packet the captures saw.
      const sOut = sas.sas.find((s) => s.port === 'vm1' && s.direction === 'out' && s.spi === sa.spiOut);
      const sIn = sas.sas.find((s) => s.port === 'vm1' && s.direction === 'in' && s.spi === sa.spiIn);
      assert.ok(sOut !== undefined && sIn !== undefined, JSON.stringify(sas));
      for (const s of [sOut, sIn]) {
        assert.equal(s.state, 'offloaded');
        assert.equal(s.algorithm, c.algorithm);
        assert.equal(s.mode, c.mode);
        assert.equal(s.counters.authFailures, 0);
        assert.equal(s.counters.replays, 0);
      }
      assert.equal(sOut.counters.packets, f.espOut, `out SA counted ${sOut.counters.packets}, dumpcap saw ${f.espOut}`);
      assert.equal(sIn.counters.packets, f.espIn, `in SA counted ${sIn.counters.packets}, dumpcap saw ${f.espIn}`);

      t.diagnostic(`${label(c)}: ${f.echoRequests}/${f.echoReplies} echo requests/replies; download ${DOWNLOAD_BYTES} B in ${dlMs} ms ` +
        `(${(DOWNLOAD_BYTES * 8 / dlMs / 1000).toFixed(1)} Mbit/s)${c.upload ? `, upload ${uploaded ? `${UPLOAD_BYTES} B in ${ulMs} ms` : 'FAILED'}` : ''}; ` +
        `uplink ESP vm1→VM ${f.espOut}, VM→vm1 ${f.espIn} packets (both captures agree, every ICV good, no plaintext); ` +
        `VM xfrm in ${vin.packets} pkts/${vin.bytes} B, out ${vout.packets} pkts/${vout.bytes} B; ` +
        `vswitch SA out ${sOut.counters.packets} pkts/${sOut.counters.bytes} B/${(sOut.counters.cpuNs / 1e6).toFixed(1)} ms CPU, ` +
        `in ${sIn.counters.packets} pkts/${sIn.counters.bytes} B/${(sIn.counters.cpuNs / 1e6).toFixed(1)} ms CPU; ${trafficMs} ms`);
    }
    await vmSh.quit();
    assert.ok(vmSh.lines.includes('VSQ-EXIT 0'), 'the VM\'s script ended cleanly');
  } catch (e) {
    // The captures and the keys to read them, for a look after the lab is gone.
    const keep = mkdtempSync(join(tmpdir(), 'ipsec-kernel-peer-failed-'));
    for (const f of readdirSync(lab.dir).filter((x) => x.endsWith('.pcapng'))) copyFileSync(join(lab.dir, f), join(keep, f));
    writeFileSync(join(keep, 'esp_sa.txt'), keys.join('\n') + '\n');
    t.diagnostic(`captures kept in ${keep}, with esp_sa.txt: the keys, one tshark -o value a line`);
    if (session !== null) t.diagnostic(`VM console (last lines):\n${session.tail(60)}`);
    t.diagnostic(`vswitch log (tail):\n${lab.stderr.split('\n').slice(-30).join('\n')}`);
    throw e;
  } finally {
    for (const c of captures) await c.stop().catch(() => undefined);
    if (session !== null) await session.kill();
    await lab.stop();
  }
  assert.deepEqual(lab.leftovers(), [], 'nothing of the lab is left');
});
