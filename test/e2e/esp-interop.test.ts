// ESP interop with two implementations that share nothing with ours:
//
// - tshark (Wireshark's ESP dissector, libgcrypt) decrypts and authenticates
//   the packets vswitch's ESP engine produced, given the keys through the
//   `uat:esp_sa` preference, and finds the inner TCP/UDP/ICMP with good
//   checksums; a tampered packet's ICV is flagged bad.
// - scapy (scapy.layers.ipsec + python-cryptography), through
//   scripts/esp-peer.py: decrypts what we send, and sends us ESP of its own —
//   valid, replayed, too old, tampered, truncated, badly padded, with a wrong
//   next header — which we must accept or refuse for the right reason.
//
// Transport and tunnel mode (tunnel also IPv4-in-IPv6 and IPv6-in-IPv4),
// AES-GCM-128 and -256, IPv4 and IPv6. Files and stdin only: no network.
// Needs tshark (Debian: tshark) and python3-scapy + python3-cryptography.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BufferPool } from '../../src/packet/pool.js';
import { FrameLayout, parseFrame } from '../../src/wire/frame.js';
import { buildFrame, type FrameSpec } from '../../src/wire/builder.js';
import { EspSa, decapsulate, encapsulate, type EspError } from '../../src/offload/ipsec/esp.js';
import type { EspAlgorithm, IpsecMode, SecurityAssociation } from '../../src/offload/ipsec/sa.js';
import { nodeAead } from '../../src/io/aead-node.js';
import { hasCommand, need } from '../util/env.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const PEER = join(root, 'scripts/esp-peer.py');
const PYTHON = '/usr/bin/python3';
const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 64 }] });

const ADDR = {
  4: { a: '198.18.1.1', b: '198.18.2.2', ta: '198.19.0.1', tb: '198.19.0.2' },
  6: { a: '2001:db8:1::1', b: '2001:db8:2::2', ta: '2001:db8:ff::1', tb: '2001:db8:ff::2' },
} as const;

interface Combo {
  mode: IpsecMode;
  algorithm: EspAlgorithm;
  inner: 4 | 6;
  /** Endpoint (outer) family; the inner one in transport mode. */
  outer: 4 | 6;
  spi: number;
  key: Uint8Array;
  salt: Uint8Array;
}

function combos(): Combo[] {
  const list: Combo[] = [];
  let spi = 0x5000;
  for (const algorithm of ['aes-gcm-128', 'aes-gcm-256'] as const) {
    const fams: [4 | 6, 4 | 6, IpsecMode][] = [[4, 4, 'transport'], [6, 6, 'transport'], [4, 4, 'tunnel'], [6, 6, 'tunnel'], [4, 6, 'tunnel'], [6, 4, 'tunnel']];
    for (const [inner, outer, mode] of fams) {
      const n = spi++;
      const key = new Uint8Array(algorithm === 'aes-gcm-128' ? 16 : 32).map((_, i) => (i * 29 + n) & 0xff);
      list.push({ mode, algorithm, inner, outer, spi: n, key, salt: new Uint8Array([0x5a, n & 0xff, 0x17, 0x42]) });
    }
  }
  return list;
}

const label = (c: Combo) => `${c.mode} ${c.algorithm} IPv${c.inner}${c.mode === 'tunnel' ? ` in IPv${c.outer}` : ''}`;

function saOf(c: Combo, direction: 'in' | 'out', replayWindow = 64): SecurityAssociation {
  const ad = ADDR[c.outer];
  const tunnel = c.mode === 'tunnel';
  return {
    spi: c.spi, direction, mode: c.mode, algorithm: c.algorithm, key: c.key, salt: c.salt,
    src: tunnel ? ad.ta : ad.a, dst: tunnel ? ad.tb : ad.b, replayWindow,
  };
}

/** The plaintext packets of a combo: TCP, UDP and an ICMP echo, correct checksums. */
function plaintexts(c: Combo): { kind: string; frame: Uint8Array }[] {
  const ad = ADDR[c.inner];
  const ip: FrameSpec['ip'] = c.inner === 4 ? { version: 4, src: ad.a, dst: ad.b, dscp: 10 } : { version: 6, src: ad.a, dst: ad.b };
  const f = (l4: FrameSpec['l4'], payload: number) => buildFrame({ ip, l4, payload, checksum: 'full' }).frame;
  return [
    // Ports no Wireshark dissector claims: a payload dissector that throws on
    // the pattern bytes would cut short the ESP tree (its ICV status is added after).
    { kind: 'tcp', frame: f({ kind: 'tcp', sport: 61000 + c.spi % 100, dport: 61999, seq: 12345, flags: 0x18 }, 333) },
    { kind: 'udp', frame: f({ kind: 'udp', sport: 62000, dport: 62100 + c.spi % 100 }, 77) },
    { kind: 'icmp', frame: f({ kind: 'icmp', type: c.inner === 4 ? 8 : 128, id: 7, seq: c.spi % 100 }, 56) },
  ];
}

const lay = new FrameLayout();

function runEsp(frame: Uint8Array, sa: EspSa, fn: typeof encapsulate): EspError | Uint8Array {
  const p = pool.take(frame.length)!;
  try {
    p.write(frame);
    const pe = parseFrame(p.buf, p.off, p.len, lay);
    assert.equal(pe, null, `frame does not parse: ${pe}`);
    return fn(p, sa, nodeAead, lay) ?? p.copyOut();
  } finally {
    p.release();
  }
}

function sealed(frame: Uint8Array, sa: EspSa): Uint8Array {
  const r = runEsp(frame, sa, encapsulate);
  assert.ok(r instanceof Uint8Array, `encapsulate: ${String(r)}`);
  return r;
}

const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** A classic pcap file (LINKTYPE_ETHERNET) of `frames`. */
function pcap(frames: Uint8Array[]): Buffer {
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0xa1b2c3d4, 0);
  head.writeUInt16LE(2, 4);
  head.writeUInt16LE(4, 6);
  head.writeUInt32LE(65535, 16);
  head.writeUInt32LE(1, 20);
  const parts = [head];
  frames.forEach((f, i) => {
    const r = Buffer.alloc(16);
    r.writeUInt32LE(1700000000 + i, 0);
    r.writeUInt32LE(f.length, 8);
    r.writeUInt32LE(f.length, 12);
    parts.push(r, Buffer.from(f));
  });
  return Buffer.concat(parts);
}

/** The `uat:esp_sa` record for an SA (Wireshark 4.0: protocol, src, dst, SPI, encryption, key‖salt, authentication, key). */
function uatRecord(c: Combo): string {
  const sa = saOf(c, 'out');
  return `uat:esp_sa:"IPv${c.outer}","${sa.src}","${sa.dst}","0x${c.spi.toString(16).padStart(8, '0')}",` +
    `"AES-GCM with 16 octet ICV [RFC4106]","0x${toHex(c.key)}${toHex(c.salt)}","NULL",""`;
}

const FIELDS = ['frame.number', 'esp.spi', 'esp.sequence', 'esp.icv_good', 'esp.icv_bad', 'esp.protocol', 'ip.src', 'ip.dst',
  'ipv6.src', 'ipv6.dst', 'ip.checksum.status', 'tcp.srcport', 'tcp.dstport', 'tcp.seq_raw', 'tcp.checksum.status',
  'udp.srcport', 'udp.dstport', 'udp.checksum.status', 'icmp.type', 'icmp.checksum.status', 'icmpv6.type',
  'icmpv6.checksum.status', 'frame.protocols'] as const;
type Row = Record<(typeof FIELDS)[number], string>;

function tshark(file: string, records: string[]): Row[] {
  const args = ['-r', file, '-n',
    '-o', 'esp.enable_encryption_decode:TRUE', '-o', 'esp.enable_authentication_check:TRUE',
    '-o', 'ip.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE',
    ...records.flatMap((r) => ['-o', r]),
    '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=,', ...FIELDS.flatMap((f) => ['-e', f])];
  const r = spawnSync('tshark', args, { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.error, undefined, `tshark did not run: ${r.error?.message}`);
  assert.equal(r.status, 0, `tshark failed (${r.status}):\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /uat|invalid|error|isn't a capture file/i, `tshark complained:\n${r.stderr}`);
  return r.stdout.trim().split('\n').map((line) => {
    const v = line.split('\t');
    return Object.fromEntries(FIELDS.map((f, i) => [f, v[i] ?? ''])) as Row;
  });
}

function peer(cmd: 'decrypt' | 'encrypt', req: unknown): any {
  const r = spawnSync(PYTHON, [PEER, cmd], { input: JSON.stringify(req), encoding: 'utf8', timeout: 120_000, maxBuffer: 64 << 20 });
  assert.equal(r.error, undefined, `esp-peer did not run: ${r.error?.message}`);
  assert.equal(r.status, 0, `esp-peer ${cmd} failed (${r.status}):\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

function peerSa(c: Combo): Record<string, unknown> {
  const sa = saOf(c, 'out');
  return { spi: c.spi, mode: c.mode, key: toHex(c.key), salt: toHex(c.salt), src: sa.src, dst: sa.dst };
}

function hasScapy(): boolean {
  return spawnSync(PYTHON, ['-c', 'import scapy.layers.ipsec, cryptography.hazmat.primitives.ciphers.aead'], { stdio: 'ignore' }).status === 0;
}

const nh = (c: Combo, kind: string) => c.mode === 'tunnel' ? (c.inner === 4 ? 4 : 41)
  : kind === 'tcp' ? 6 : kind === 'udp' ? 17 : c.inner === 4 ? 1 : 58;

test('tshark decrypts and authenticates our ESP (transport/tunnel, AES-GCM-128/256, IPv4/IPv6, mixed tunnels) and finds good inner checksums', (t) => {
  if (!need(t, hasCommand('tshark'), 'needs tshark (apt-get install tshark)')) return;
  const dir = mkdtempSync(join(tmpdir(), 'vswitch-esp-'));
  try {
    const all = combos();
    const frames: Uint8Array[] = [];
    const expect: { c: Combo; kind: string; seq: number; tampered: boolean }[] = [];
    for (const c of all) {
      const out = new EspSa(saOf(c, 'out'));
      for (const { kind, frame } of plaintexts(c)) {
        frames.push(sealed(frame, out));
        expect.push({ c, kind, seq: out.seq - 1, tampered: false });
      }
      // The same UDP packet once more, one ciphertext bit flipped: the ICV must fail.
      const bad = sealed(plaintexts(c)[1]!.frame, out);
      bad[bad.length - 40]! ^= 0x04;
      frames.push(bad);
      expect.push({ c, kind: 'udp', seq: out.seq - 1, tampered: true });
    }
    const file = join(dir, 'esp.pcap');
    writeFileSync(file, pcap(frames));
    const rows = tshark(file, all.map(uatRecord));
    assert.equal(rows.length, frames.length);
    rows.forEach((r, i) => {
      const { c, kind, seq, tampered } = expect[i]!;
      const what = `frame ${i + 1} (${label(c)} ${kind}${tampered ? ', tampered' : ''}): ${JSON.stringify(r)}`;
      assert.equal(r['esp.spi'], `0x${c.spi.toString(16).padStart(8, '0')}`, what);
      assert.equal(r['esp.sequence'], String(seq), what);
      if (tampered) {
        assert.equal(r['esp.icv_good'], '0', what);
        assert.equal(r['esp.icv_bad'], '1', what);
        return;
      }
      assert.equal(r['esp.icv_good'], '1', what);
      assert.equal(r['esp.icv_bad'], '0', what);
      assert.equal(r['esp.protocol'], `0x${nh(c, kind).toString(16).padStart(2, '0')}`, what);
      // Addresses: outer then inner in tunnel mode.
      const inner = ADDR[c.inner];
      const outer = ADDR[c.outer];
      const srcs = [...(c.mode === 'tunnel' ? [[c.outer, outer.ta]] : []), [c.inner, inner.a]] as [4 | 6, string][];
      const dsts = [...(c.mode === 'tunnel' ? [[c.outer, outer.tb]] : []), [c.inner, inner.b]] as [4 | 6, string][];
      assert.equal(r['ip.src'], srcs.filter(([f]) => f === 4).map(([, a]) => a).join(','), what);
      assert.equal(r['ip.dst'], dsts.filter(([f]) => f === 4).map(([, a]) => a).join(','), what);
      assert.equal(r['ipv6.src'], srcs.filter(([f]) => f === 6).map(([, a]) => a).join(','), what);
      assert.equal(r['ipv6.dst'], dsts.filter(([f]) => f === 6).map(([, a]) => a).join(','), what);
      const v4Headers = srcs.filter(([f]) => f === 4).length;
      assert.equal(r['ip.checksum.status'], Array(v4Headers).fill('1').join(','), what);
      assert.match(r['frame.protocols'], /:esp:(ip:|ipv6:)?(tcp|udp|icmp|icmpv6)(:data)?$/, what);
      if (kind === 'tcp') {
        assert.equal(r['tcp.dstport'], '61999', what);
        assert.equal(r['tcp.seq_raw'], '12345', what);
        assert.equal(r['tcp.checksum.status'], '1', what);
      } else if (kind === 'udp') {
        assert.equal(r['udp.srcport'], '62000', what);
        assert.equal(r['udp.checksum.status'], '1', what);
      } else if (c.inner === 4) {
        assert.equal(r['icmp.type'], '8', what);
        assert.equal(r['icmp.checksum.status'], '1', what);
      } else {
        assert.equal(r['icmpv6.type'], '128', what);
        assert.equal(r['icmpv6.checksum.status'], '1', what);
      }
    });
    // Without the keys tshark sees only ciphertext: the checks above are about decryption.
    const blind = tshark(file, []);
    assert.ok(blind.every((r) => r['esp.icv_good'] === '' && r['tcp.srcport'] === '' && r['udp.srcport'] === ''));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('scapy (esp-peer.py) decrypts our ESP and rejects a tampered packet', (t) => {
  if (!need(t, hasScapy(), 'needs scapy and python3-cryptography under /usr/bin/python3 (apt-get install python3-scapy python3-cryptography)')) return;
  const all = combos();
  const plain: Uint8Array[][] = [];
  const reqs = all.map((c) => {
    const out = new EspSa(saOf(c, 'out'));
    const ps = plaintexts(c).map((p) => p.frame);
    plain.push(ps);
    const packets = ps.map((f) => toHex(sealed(f, out).subarray(14)));
    const bad = sealed(ps[0]!, out).subarray(14);
    bad[bad.length - 1]! ^= 0x01;
    packets.push(toHex(bad));
    return { sa: peerSa(c), packets };
  });
  const res = peer('decrypt', reqs) as { results: any[] }[];
  assert.equal(res.length, all.length);
  all.forEach((c, k) => {
    const r = res[k]!.results;
    assert.equal(r.length, 4);
    plaintexts(c).forEach(({ kind }, i) => {
      const what = `${label(c)} ${kind}: ${JSON.stringify(r[i])}`;
      assert.equal(r[i].ok, true, what);
      assert.equal(r[i].spi, c.spi, what);
      assert.equal(r[i].seq, i + 1, what);
      assert.equal(r[i].iv, (i + 1).toString(16).padStart(16, '0'), what);
      assert.equal(r[i].padOk, true, what);
      assert.equal(r[i].nextHeader, nh(c, kind), what);
      assert.equal(r[i].inner, toHex(plain[k]![i]!.subarray(14)), what);
      assert.equal(r[i].checksumsOk, true, what);
    });
    assert.deepEqual(r[3], { ok: false, error: 'icv' }, `${label(c)} tampered`);
  });
});

test('we decapsulate scapy\'s ESP: valid packets exactly, and replayed, old, tampered, truncated, mispadded, mislabelled ones refused for the right reason', (t) => {
  if (!need(t, hasScapy(), 'needs scapy and python3-cryptography under /usr/bin/python3 (apt-get install python3-scapy python3-cryptography)')) return;
  const all = combos();
  // [seq, variant, which plaintext, expected]
  const script: [number, string, number, EspError | 'ok'][] = [
    [1, 'valid', 0, 'ok'], [3, 'valid', 1, 'ok'], [2, 'valid', 2, 'ok'], [3, 'valid', 1, 'replay'],
    [10, 'tamper-icv', 0, 'auth-failed'], [11, 'tamper-data', 1, 'auth-failed'], [12, 'tamper-iv', 2, 'auth-failed'],
    [13, 'tamper-seq', 0, 'auth-failed'], [14, 'truncate', 1, 'truncated'], [15, 'bad-pad', 2, 'bad-padding'],
    [16, 'bad-nh', 0, 'bad-next-header'], [200, 'valid', 1, 'ok'], [20, 'valid', 2, 'too-old'], [137, 'valid', 0, 'ok'],
    [200, 'valid', 1, 'replay'],
  ];
  const reqs = all.map((c) => {
    const ps = plaintexts(c);
    return { sa: peerSa(c), packets: script.map(([seq, variant, i]) => ({ packet: toHex(ps[i]!.frame.subarray(14)), seq, variant })) };
  });
  const res = peer('encrypt', reqs) as { results: { packet: string }[] }[];
  all.forEach((c, k) => {
    const inb = new EspSa(saOf(c, 'in'));
    const ps = plaintexts(c);
    const mac = ps[0]!.frame.subarray(0, 12);
    script.forEach(([seq, variant, i, want], j) => {
      const ip = Buffer.from(res[k]!.results[j]!.packet, 'hex');
      const f = new Uint8Array(14 + ip.length);
      f.set(mac);
      f[12] = c.outer === 4 ? 0x08 : 0x86;
      f[13] = c.outer === 4 ? 0x00 : 0xdd;
      f.set(ip, 14);
      const r = runEsp(f, inb, decapsulate);
      const what = `${label(c)} seq ${seq} ${variant}`;
      if (want === 'ok') {
        assert.ok(r instanceof Uint8Array, `${what}: ${String(r)}`);
        assert.equal(toHex(r), toHex(ps[i]!.frame), what);
      } else {
        assert.equal(r, want, what);
      }
    });
    assert.equal(inb.packets, 5);
    assert.equal(inb.authFailures, 4);
    assert.equal(inb.replays, 3);
  });
});
