// Frames out of a capture file, pcap (libpcap) or pcapng, for `vswitch
// trace --pcap`. Ethernet link type only. Malformed files give an error
// naming what is wrong, never a crash.

export interface CapturedFrame {
  frame: Uint8Array;
  /** pcapng comment, if any (vswitch writes the offload metadata there). */
  comment?: string;
}

export class CaptureFileError extends Error {}

function pcapngFrames(b: Buffer): CapturedFrame[] {
  const out: CapturedFrame[] = [];
  let le = true;
  let o = 0;
  const u32 = (at: number) => (le ? b.readUInt32LE(at) : b.readUInt32BE(at));
  const u16 = (at: number) => (le ? b.readUInt16LE(at) : b.readUInt16BE(at));
  const linktypes: number[] = [];
  while (o + 12 <= b.length) {
    if (b.readUInt32LE(o) === 0x0a0d0d0a) {
      const magic = b.readUInt32LE(o + 8);
      if (magic === 0x1a2b3c4d) le = true;
      else if (magic === 0x4d3c2b1a) le = false;
      else throw new CaptureFileError(`pcapng: bad byte-order magic at ${o}`);
      linktypes.length = 0;
    }
    const type = u32(o);
    const len = u32(o + 4);
    if (len < 12 || len % 4 !== 0 || o + len > b.length) throw new CaptureFileError(`pcapng: block at ${o} has bad length ${len}`);
    if (type === 1) {
      linktypes.push(u16(o + 8));
    } else if (type === 6) {
      const ifId = u32(o + 8);
      const capLen = u32(o + 20);
      if (28 + capLen > len) throw new CaptureFileError(`pcapng: packet at ${o} longer than its block`);
      if (linktypes[ifId] !== 1) throw new CaptureFileError(`pcapng: interface ${ifId} is not Ethernet`);
      const f: CapturedFrame = { frame: new Uint8Array(b.subarray(o + 28, o + 28 + capLen)) };
      // Options after the padded packet data: look for a comment (code 1).
      let p = o + 28 + ((capLen + 3) & ~3);
      while (p + 4 <= o + len - 4) {
        const code = u16(p);
        const olen = u16(p + 2);
        if (code === 0) break;
        if (code === 1) f.comment = b.toString('utf8', p + 4, p + 4 + olen);
        p += 4 + ((olen + 3) & ~3);
      }
      out.push(f);
    } else if (type === 3) {
      if (linktypes[0] !== 1) throw new CaptureFileError('pcapng: interface 0 is not Ethernet');
      const origLen = u32(o + 8);
      out.push({ frame: new Uint8Array(b.subarray(o + 12, o + 12 + Math.min(origLen, len - 16))) });
    }
    o += len;
  }
  return out;
}

function pcapFrames(b: Buffer): CapturedFrame[] {
  const magic = b.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  const be = magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1;
  if (!le && !be) throw new CaptureFileError('not a pcap or pcapng file');
  if (b.length < 24) throw new CaptureFileError('pcap: truncated file header');
  const u32 = (at: number) => (le ? b.readUInt32LE(at) : b.readUInt32BE(at));
  if ((u32(20) & 0x0fffffff) !== 1) throw new CaptureFileError(`pcap: link type ${u32(20)} is not Ethernet`);
  const out: CapturedFrame[] = [];
  let o = 24;
  while (o + 16 <= b.length) {
    const capLen = u32(o + 8);
    if (o + 16 + capLen > b.length) throw new CaptureFileError(`pcap: record at ${o} runs past the end of the file`);
    out.push({ frame: new Uint8Array(b.subarray(o + 16, o + 16 + capLen)) });
    o += 16 + capLen;
  }
  return out;
}

export function readCapture(data: Buffer): CapturedFrame[] {
  if (data.length < 4) throw new CaptureFileError('file too short to be a capture');
  return data.readUInt32LE(0) === 0x0a0d0d0a ? pcapngFrames(data) : pcapFrames(data);
}
