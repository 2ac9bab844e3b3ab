// The offload engines on their own, offline: one guest TSO super-frame, its
// virtio-net header checked by the kernel's own rules, the per-destination
// treatments (pass-through, hardware, software segmentation with partial or
// full checksums), payload integrity, bad metadata refused with a reason,
// byte-for-byte agreement with the Linux kernel's GSO (the committed golden
// vectors, when the source tree is there), and the engines' speed here.
// Needs no devices and no root: the last section of `./demo.sh`, or all of
// `./demo.sh --engines`.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { buildFrame } from '../wire/builder.js';
import { FrameLayout, parseFrame } from '../wire/frame.js';
import { sum } from '../wire/checksum.js';
import { BufferPool } from '../packet/pool.js';
import { Batch } from '../packet/batch.js';
import { GsoType, OffloadMeta, RxCsum, gsoTypeName } from '../packet/meta.js';
import { decodeVnetHeader, encodeVnetHeader, VNET_HDR_MRG_LEN, VnetFlag, VnetGso } from '../packet/vnet.js';
import { segment } from '../offload/segment.js';
import { completeChecksum, verifyChecksums } from '../offload/checksum.js';
import type { Packet } from '../packet/packet.js';
import type { Ui } from './demo-ui.js';

function metaText(m: OffloadMeta): string {
  const parts = [`gso=${gsoTypeName(m.gsoType)}`];
  if (m.isGso) parts.push(`gso_size=${m.gsoSize}`, `hdr_len=${m.hdrLen}`);
  if (m.needsCsum) parts.push(`needs_csum start=${m.csumStart} offset=${m.csumOffset}`);
  parts.push(`rx_csum=${['unknown', 'verified', 'failed'][m.rxCsum]}`);
  return parts.join(' ');
}

function sha256(pkts: Packet[], payloadOff: (p: Packet) => number): string {
  const h = createHash('sha256');
  for (const p of pkts) h.update(p.buf.subarray(payloadOff(p), p.off + p.len));
  return h.digest('hex').slice(0, 16);
}

/** Run the engine checks, reporting through `ui`; failures are counted there. */
export function runEngineSection(ui: Ui, opts: { quick: boolean }): void {
  const { quick } = opts;
  const say = (s = '') => ui.say(s);
  const bold = ui.bold;
  const dim = ui.dim;
  const check = (ok: boolean, what: string) => { ui.check(ok, what); };
  say(dim('   A guest hands the switch a TCP super-frame and asks for segmentation and checksums; the'));
  say(dim('   engines decide and do, per destination, with no devices involved.'));
  say();

  // a. The guest's super-frame, as a Linux virtio-net guest sends it through a TAP.
  const pool = new BufferPool();
  const PAYLOAD = 64000;
  const MSS = 1448;
  const built = buildFrame({
    ip: { version: 4, src: '198.18.0.10', dst: '198.18.0.20', ident: 0x4242 },
    l4: { kind: 'tcp', sport: 43210, dport: 5201, seq: 0x1000, flags: 0x18,
      options: new Uint8Array([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]) },
    payload: PAYLOAD, checksum: 'partial',
  });
  const vnet = new Uint8Array(VNET_HDR_MRG_LEN);
  const dv = new DataView(vnet.buffer);
  vnet[0] = VnetFlag.NEEDS_CSUM;
  vnet[1] = VnetGso.TCPV4;
  dv.setUint16(2, built.payloadOff, true);
  dv.setUint16(4, MSS, true);
  dv.setUint16(6, built.l4Off, true);
  dv.setUint16(8, built.csumOffset, true);
  const pkt = pool.take(built.frame.length)!;
  pkt.write(built.frame);

  say(bold('  a. From the guest: one 64 KB frame with a virtio_net_hdr'));
  say(`   frame ${built.frame.length} B: IPv4 198.18.0.10 → 198.18.0.20, TCP 43210 → 5201, timestamps option`);
  say(`   vnet header: ${[...vnet].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`);
  const derr = decodeVnetHeader(vnet, 0, VNET_HDR_MRG_LEN, pkt.buf, pkt.off, pkt.len, pkt.meta, 'guest');
  check(derr === null, `accepted by the kernel's own rules (virtio_net_hdr_to_skb): ${metaText(pkt.meta)}`);
  say();

  // b. Per destination.
  say(bold('  b. One frame, four destinations, four treatments'));
  const lay = new FrameLayout();
  parseFrame(pkt.buf, pkt.off, pkt.len, lay, { zeroLengthMeansFrame: true });
  const out = new Batch(64);
  const payloadOf = (p: Packet) => {
    const l = new FrameLayout();
    parseFrame(p.buf, p.off, p.len, l);
    return l.payloadOff;
  };
  const wantHash = sha256([pkt], () => pkt.off + built.payloadOff);

  say(`   ${bold('VM vNIC that accepts large frames')} → pass-through: 1 transfer of ${pkt.len} B, metadata kept`);
  const hdr = new Uint8Array(VNET_HDR_MRG_LEN);
  encodeVnetHeader(pkt.meta, hdr, 0, VNET_HDR_MRG_LEN);
  say(`     header written to its TAP: ${[...hdr].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`);

  say(`   ${bold('uplink NIC with TSO on')} → hardware: frame and metadata handed down unchanged`);

  say(`   ${bold('uplink NIC with TSO off, checksum offload on')} → software segmentation, checksums left to the NIC`);
  let e = segment(pkt, out, { partialChecksum: true });
  check(e === null && out.count === Math.ceil(PAYLOAD / MSS),
    `${out.count} segments, each with NEEDS_CSUM (start ${out.get(0).meta.csumStart}, offset ${out.get(0).meta.csumOffset})`);
  // What the NIC will do, for the check: finish the checksums.
  let valid = 0;
  for (let i = 0; i < out.count; i++) {
    const s = out.get(i);
    completeChecksum(s);
    parseFrame(s.buf, s.off, s.len, lay);
    if (verifyChecksums(s.buf, lay) === RxCsum.VERIFIED) valid++;
  }
  check(valid === out.count, `after the NIC fills them in, all ${valid} checksums are valid`);
  out.releaseAll();

  say(`   ${bold('legacy emulated NIC (no offloads)')} → software segmentation and checksums, marked verified`);
  e = segment(pkt, out);
  const segs: Packet[] = [];
  for (let i = 0; i < out.count; i++) segs.push(out.get(i));
  const maxLen = Math.max(...segs.map((s) => s.len));
  check(e === null && maxLen <= 1514, `${segs.length} frames, largest ${maxLen} B (≤ 1514: fits a 1500 MTU)`);
  valid = 0;
  for (const s of segs) {
    parseFrame(s.buf, s.off, s.len, lay);
    if (verifyChecksums(s.buf, lay) === RxCsum.VERIFIED && s.meta.rxCsum === RxCsum.VERIFIED) valid++;
  }
  check(valid === segs.length, `every IPv4 and TCP checksum verifies; each frame is marked checksum-verified`);
  const gotHash = sha256(segs, (p) => payloadOf(p));
  check(gotHash === wantHash, `payload reassembles: sha256 ${gotHash}… = ${wantHash}…`);
  const seqs = segs.map((s) => { parseFrame(s.buf, s.off, s.len, lay); return s.buf[lay.l4Off + 13]!; });
  check((seqs[0]! & 0x08) === 0 && (seqs[seqs.length - 1]! & 0x08) !== 0, 'PSH only on the last segment, as the kernel does');
  out.releaseAll();
  say();

  // c. Untrusted metadata.
  say(bold('  c. Bad guest metadata is dropped with a reason, never trusted'));
  const bad: [string, (b: Uint8Array, d: DataView) => void][] = [
    ['gso_type 6 (no such type)', (b) => { b[1] = 6; }],
    ['gso_size 0', (_b, d) => d.setUint16(4, 0, true)],
    ['csum_start past the frame', (_b, d) => d.setUint16(6, 65000, true)],
    ['csum_start inside the Ethernet header', (_b, d) => d.setUint16(6, 6, true)],
    ['TSO with csum_offset 6 (UDP\'s)', (_b, d) => d.setUint16(8, 6, true)],
    ['ECN bit without a GSO type', (b) => { b[1] = 0x80; }],
  ];
  const scratchMeta = new OffloadMeta();
  for (const [what, mutate] of bad) {
    const h = vnet.slice();
    mutate(h, new DataView(h.buffer));
    const err = decodeVnetHeader(h, 0, VNET_HDR_MRG_LEN, pkt.buf, pkt.off, pkt.len, scratchMeta, 'guest');
    check(err !== null, `${what.padEnd(40)} → ${err ?? 'ACCEPTED (bug)'}`);
  }
  say();

  // d. Against the kernel.
  const here = dirname(fileURLToPath(import.meta.url));
  const vectors = resolve(here, '../../../test/vectors/kernel-gso.json');
  if (existsSync(vectors)) {
    say(bold('  d. Byte for byte against the Linux kernel\'s own GSO'));
    const doc = JSON.parse(readFileSync(vectors, 'utf8')) as {
      kernel: string;
      cases: { name: string; mode: string; input: { vnet: Record<string, number>; frame: string }; segments: { frame: string }[] }[];
    };
    let same = 0;
    let total = 0;
    for (const c of doc.cases) {
      const f = Buffer.from(c.input.frame, 'hex');
      const p = pool.take(f.length);
      if (p === null) break;
      p.write(f);
      p.meta.gsoType = (c.input.vnet['gsoType']! & 0x7f) as GsoType;
      p.meta.gsoSize = c.input.vnet['gsoSize']!;
      const err = segment(p, out, { partialChecksum: c.mode === 'partial' });
      let ok = err === null && out.count === c.segments.length;
      for (let i = 0; ok && i < out.count; i++) {
        ok = Buffer.from(out.get(i).view()).toString('hex') === c.segments[i]!.frame;
      }
      total++;
      if (ok) same++;
      out.releaseAll();
      p.release();
    }
    check(same === total, `${same}/${total} kernel ${doc.kernel} cases identical (TCPv4/v6, USO, VLAN, QinQ, IP and TCP options, wrap-arounds)`);
    say();
  }

  // e. Speed.
  say(bold('  e. How fast, on this machine'));
  const region = pool.take(65536)!;
  region.setLength(65536);
  let reps = quick ? 2000 : 20000;
  let t0 = performance.now();
  let x = 0;
  for (let i = 0; i < reps; i++) x += sum(region.buf, region.off, 65536);
  let dt = performance.now() - t0;
  say(`   checksum: ${((reps * 65536) / dt / 1e6).toFixed(1)} GB/s (${pool.memory.accelerated ? 'WebAssembly SIMD on packet memory' : 'portable TypeScript'})`);
  reps = quick ? 300 : 3000;
  for (let i = 0; i < 200; i++) { segment(pkt, out); out.releaseAll(); } // let the JIT settle
  t0 = performance.now();
  let segErrors = 0;
  for (let i = 0; i < reps; i++) {
    if (segment(pkt, out) !== null) segErrors++;
    out.releaseAll();
  }
  dt = performance.now() - t0;
  say(`   software TSO with checksums: ${((reps * PAYLOAD * 8) / dt / 1e6).toFixed(1)} Gbit/s of payload, ${((reps * Math.ceil(PAYLOAD / MSS)) / dt / 1e3).toFixed(2)} M segments/s`);
  check(segErrors === 0, `${reps} super-frames segmented without an error`);
  region.release();
  pkt.release();
  check(pool.inUse === 0 && x >= 0, `every buffer back in the pool (${pool.capacity} buffers, 0 in use)`);
}
