// A vswitch in its own process for the QEMU end-to-end test, so the test
// process may block (spawnSync, ip, ethtool) without stalling the switch:
//
//   port "vm"     legacy    QemuSocketBackend listening on a unix socket (QEMU connects)
//   port "uplink" external  AfPacketBackend on a veth whose far end is in a namespace
//
// Talks JSON lines: prints {"event":"ready"} once listening, {"event":"link",…}
// on QEMU connects and disconnects, answers "stats" with {"event":"stats",…};
// {"cmd":"vm","mode":"connect","socket":…} replaces the vm port with one that
// dials a QEMU listening there (`server=on`); "exit" (or stdin closing: the
// test died) closes everything and exits.
//
//   node dist/test/vm/switch-child.js '{"socket":"/tmp/x.sock","uplink":"vsq…u"}'

import { createInterface } from 'node:readline';
import { BufferPool } from '../../src/packet/pool.js';
import { Switch } from '../../src/switch/switch.js';
import type { Port } from '../../src/switch/port.js';
import { DROP_REASONS } from '../../src/switch/counters.js';
import { QemuSocketBackend } from '../../src/io/qemu.js';
import { AfPacketBackend } from '../../src/io/af-packet.js';

export interface ChildConfig {
  socket: string;
  uplink: string;
  mtu?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as ChildConfig;
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

process.on('uncaughtException', (e) => say({ event: 'error', error: String(e?.stack ?? e) }));

const pool = new BufferPool({ classes: [{ bufferSize: 2048, count: 8192 }, { bufferSize: 65536 + 1024, count: 256 }] });
const sw = new Switch({ pool });
const tick = setInterval(() => sw.tick(), 100);

function vmPort(mode: 'listen' | 'connect', socket: string): [QemuSocketBackend, Port] {
  // Dial often: the VM boots while we wait for QEMU's socket to appear.
  const be = new QemuSocketBackend({ address: { path: socket }, mode, retryMs: 100, maxRetryMs: 500 });
  be.onState = (state, detail) => say({ event: 'link', mode, state, detail: detail ?? null });
  be.onFatal = (e) => say({ event: 'error', error: `qemu port: ${e.message}` });
  const port = sw.addPort({ name: 'vm', kind: 'legacy', mtu: cfg.mtu ?? 1500 }, be);
  be.attach(sw, port);
  return [be, port];
}
let [qemu, vm] = vmPort('listen', cfg.socket);

const uplinkBe = AfPacketBackend.open({ ifname: cfg.uplink, pool });
const uplink = sw.addPort({ name: 'uplink', kind: 'external' }, uplinkBe);
uplinkBe.attach(sw, uplink);

function counters(p: Port): Record<string, unknown> {
  const c = p.counters;
  const drops = (a: Float64Array) => Object.fromEntries(DROP_REASONS.map((r, i) => [r, a[i]!]).filter(([, n]) => n !== 0));
  return {
    rxPackets: c.rxPackets, rxBytes: c.rxBytes, forwarded: c.forwarded, pending: c.pending,
    txPackets: c.txPackets, txBytes: c.txBytes, rxDropped: c.rxDropped,
    rxDrops: drops(c.rxDrops), txDrops: drops(c.txDrops),
    txHardware: c.txHardware, txPassThrough: c.txPassThrough, txSoftware: c.txSoftware, txSegments: c.txSegments,
    swSegments: c.swSegments, swChecksums: c.swChecksums,
  };
}

let closed = false;
function shutdown(code: number): void {
  if (closed) return;
  closed = true;
  clearInterval(tick);
  for (const name of ['vm', 'uplink']) {
    try {
      sw.removePort(name);
    } catch {
      // already gone
    }
  }
  say({ event: 'bye' });
  process.exitCode = code;
  setImmediate(() => process.exit(code));
}

qemu.listening().then(
  () => say({ event: 'ready', socket: cfg.socket }),
  (e: Error) => { say({ event: 'error', error: `listen: ${e.message}` }); shutdown(1); },
);

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'stats') {
    say({ event: 'stats', ports: { vm: counters(vm), uplink: counters(uplink) }, qemu: qemu.stats, poolInUse: pool.inUse, connected: qemu.connected });
  } else if (cmd === 'exit') {
    shutdown(0);
  } else if (cmd.startsWith('{')) {
    const c = JSON.parse(cmd) as { cmd: string; mode: 'listen' | 'connect'; socket: string };
    if (c.cmd === 'vm') {
      sw.removePort('vm');
      [qemu, vm] = vmPort(c.mode, c.socket);
      say({ event: 'vm-replaced', mode: c.mode });
    }
  }
});
rl.on('close', () => shutdown(0));
process.once('SIGTERM', () => shutdown(0));
