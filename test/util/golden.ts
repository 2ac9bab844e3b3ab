// Kernel GSO golden vectors (scripts/kernel-gso-vectors.py): load them and
// run each case through our engine, reporting every difference.
import { readFileSync } from 'node:fs';
import { BufferPool } from '../../src/packet/pool.js';
import { Batch } from '../../src/packet/batch.js';
import { decodeVnetHeader, VNET_HDR_LEN, VnetFlag } from '../../src/packet/vnet.js';
import { segment } from '../../src/offload/segment.js';
import { fromHex, hex } from './frames.js';

export interface VnetFields { flags: number; gsoType: number; hdrLen: number; gsoSize: number; csumStart: number; csumOffset: number }
export interface GoldenCase {
  name: string;
  description?: string;
  mode: 'full' | 'partial';
  input: { vnet: VnetFields; frame: string };
  segments: { vnet: VnetFields; frame: string }[];
}
export interface GoldenFile { kernel: string; generatedAt: string; cases: GoldenCase[] }

export function loadGolden(path: string): GoldenFile {
  return JSON.parse(readFileSync(path, 'utf8')) as GoldenFile;
}

export function vnetBytes(v: VnetFields): Uint8Array {
  const b = new Uint8Array(VNET_HDR_LEN);
  const dv = new DataView(b.buffer);
  b[0] = v.flags;
  b[1] = v.gsoType;
  dv.setUint16(2, v.hdrLen, true);
  dv.setUint16(4, v.gsoSize, true);
  dv.setUint16(6, v.csumStart, true);
  dv.setUint16(8, v.csumOffset, true);
  return b;
}

const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 512 }, { bufferSize: 66560, count: 8 }] });
const out = new Batch(256);

/** Differences between the kernel's segments and ours for one case (empty when identical). */
export function compareCase(c: GoldenCase): string[] {
  const diffs: string[] = [];
  const frame = fromHex(c.input.frame);
  const p = pool.take(frame.length);
  if (p === null) return ['test pool exhausted'];
  try {
    p.write(frame);
    const e = decodeVnetHeader(vnetBytes(c.input.vnet), 0, VNET_HDR_LEN, p.buf, p.off, p.len, p.meta, 'guest');
    if (e !== null) return [`our vnet decode refused the kernel-accepted header: ${e}`];
    out.clear();
    const err = segment(p, out, { partialChecksum: c.mode === 'partial' });
    if (err !== null) return [`segment() failed: ${err}`];
    if (out.count !== c.segments.length) diffs.push(`segment count: kernel ${c.segments.length}, ours ${out.count}`);
    const n = Math.min(out.count, c.segments.length);
    for (let i = 0; i < n; i++) {
      const want = c.segments[i]!;
      const got = out.get(i);
      const gotHex = hex(got.view());
      if (gotHex !== want.frame) diffs.push(`segment ${i}: bytes differ at ${firstDiff(gotHex, want.frame)}`);
      const kernelPartial = (want.vnet.flags & VnetFlag.NEEDS_CSUM) !== 0;
      if (kernelPartial !== got.meta.needsCsum) diffs.push(`segment ${i}: NEEDS_CSUM kernel ${kernelPartial}, ours ${got.meta.needsCsum}`);
      if (kernelPartial && got.meta.needsCsum &&
          (want.vnet.csumStart !== got.meta.csumStart || want.vnet.csumOffset !== got.meta.csumOffset)) {
        diffs.push(`segment ${i}: csum start/offset kernel ${want.vnet.csumStart}/${want.vnet.csumOffset}, ours ${got.meta.csumStart}/${got.meta.csumOffset}`);
      }
    }
  } finally {
    out.releaseAll();
    p.release();
  }
  return diffs;
}

function firstDiff(a: string, b: string): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const byte = i >> 1;
  return `byte ${byte} (ours ${a.slice(byte * 2, byte * 2 + 8) || '∅'}…, kernel ${b.slice(byte * 2, byte * 2 + 8) || '∅'}…; lengths ${a.length / 2}/${b.length / 2})`;
}
