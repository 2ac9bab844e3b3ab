// A UDP sender and receiver whose datagrams can be checked one by one: the
// payload of datagram (flow f, sequence s) is fully determined by (f, s), its
// length too. Run inside a namespace:
//
//   node udp-probe.js recv --bind ADDR --port P --expect N --flows F --timeout-ms T
//     prints {"received":…, "bad":…, "reordered":…, "perFlow":[…]} when N arrived or T passed
//   node udp-probe.js send --dst ADDR --port P --count N --flows F --burst B[,B2,…]
//     sends N datagrams per flow, flows interleaved burst by burst (burst sizes cycled)
import dgram from 'node:dgram';
import { isIPv6 } from 'node:net';

/** Payload length of datagram `s`: mostly 200 B, runs of 1200 B, now and then a short one. */
export function probeLength(s: number): number {
  if (s % 50 === 49) return 37;
  if (Math.floor(s / 100) % 3 === 2) return 1200;
  return 200;
}

export function probePayload(flow: number, s: number): Buffer {
  const len = probeLength(s);
  const b = Buffer.alloc(len);
  b.writeUInt32BE(s, 0);
  b[4] = flow;
  for (let i = 5; i < len; i++) b[i] = (s * 7 + i * 13 + flow * 101) & 0xff;
  return b;
}

function arg(name: string, def?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : def;
  if (v === undefined) throw new Error(`--${name} is required`);
  return v;
}

async function recv(): Promise<void> {
  const bind = arg('bind');
  const port = Number(arg('port'));
  const expect = Number(arg('expect'));
  const flows = Number(arg('flows', '1'));
  const sock = dgram.createSocket({ type: isIPv6(bind) ? 'udp6' : 'udp4', recvBufferSize: 8 << 20 });
  const last = new Array<number>(flows).fill(-1);
  const count = new Array<number>(flows).fill(0);
  let received = 0;
  let bad = 0;
  let reordered = 0;
  let firstReorder: { flow: number; seq: number; after: number } | null = null;
  const done = (): void => {
    process.stdout.write(JSON.stringify({ received, bad, reordered, firstReorder, perFlow: count }) + '\n');
    sock.close();
    process.exit(0);
  };
  sock.on('message', (m) => {
    received++;
    if (m.length < 5) { bad++; return; }
    const s = m.readUInt32BE(0);
    const f = m[4]!;
    if (f >= flows || !m.equals(probePayload(f, s))) { bad++; return; }
    if (s <= last[f]!) {
      reordered++;
      firstReorder ??= { flow: f, seq: s, after: last[f]! };
    }
    last[f] = s;
    count[f]!++;
    if (received >= expect) done();
  });
  await new Promise<void>((r) => sock.bind(port, bind, r));
  process.stdout.write('ready\n');
  setTimeout(done, Number(arg('timeout-ms', '20000')));
}

async function send(): Promise<void> {
  const dst = arg('dst');
  const port = Number(arg('port'));
  const n = Number(arg('count'));
  const flows = Number(arg('flows', '1'));
  const bursts = arg('burst', '32').split(',').map(Number);
  const socks = Array.from({ length: flows }, () => dgram.createSocket({ type: isIPv6(dst) ? 'udp6' : 'udp4', sendBufferSize: 4 << 20 }));
  for (const s of socks) await new Promise<void>((r) => s.connect(port, dst, r));
  for (let s0 = 0, b = 0; s0 < n; s0 += bursts[b++ % bursts.length]!) {
    const burst = bursts[b % bursts.length]!;
    for (let f = 0; f < flows; f++) {
      const sends: Promise<void>[] = [];
      for (let s = s0; s < Math.min(n, s0 + burst); s++) {
        sends.push(new Promise<void>((r, j) => socks[f]!.send(probePayload(f, s), (e) => (e ? j(e) : r()))));
      }
      await Promise.all(sends);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  for (const s of socks) s.close();
}

if (process.argv[2] === 'recv') await recv();
else if (process.argv[2] === 'send') await send();
