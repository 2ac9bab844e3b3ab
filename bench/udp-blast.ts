// One-way UDP at full speed, for paths whose far end cannot answer (ESP that
// nothing on the other side can decrypt). Run inside the sender's namespace:
//
//   ip netns exec NS node dist/bench/udp-blast.js --device DEV --dst ADDR --len 22 --seconds 5
//
// A raw IPv4 socket for UDP (the kernel writes the IP header), bound to the
// device, one sendto per datagram through the project's native shim. Prints
// {"sent":N,"seconds":S,"errors":E} (errors: sends refused, e.g. a full queue).

import { native } from '../src/io/native/index.js';

function arg(name: string, dflt?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : dflt;
  if (v === undefined) throw new Error(`udp-blast: --${name} is required`);
  return v;
}

const device = arg('device');
const dst = arg('dst');
const len = Number(arg('len', '22'));
const seconds = Number(arg('seconds', '5'));
const sport = 40000 + (process.pid % 20000);
const dport = Number(arg('port', '9'));

const n = native();
const fd = n.rawOpen(4, 17, device);
const dgram = new Uint8Array(8 + len);
const dv = new DataView(dgram.buffer);
dv.setUint16(0, sport);
dv.setUint16(2, dport);
dv.setUint16(4, 8 + len);
dv.setUint16(6, 0); // no checksum (allowed for UDP over IPv4)
for (let i = 0; i < len; i++) dgram[8 + i] = (i * 31) & 0xff;

let sent = 0;
let errors = 0;
const t0 = process.hrtime.bigint();
const end = t0 + BigInt(Math.round(seconds * 1e9));
for (;;) {
  for (let i = 0; i < 256; i++) {
    dv.setUint32(8, sent); // a sequence number in the payload (len ≥ 4)
    if (n.sendTo(fd, dgram, 0, dgram.length, dst) < 0) errors++;
    else sent++;
  }
  if (process.hrtime.bigint() >= end) break;
}
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
n.close(fd);
process.stdout.write(`${JSON.stringify({ sent, seconds: secs, errors })}\n`);
