// A foreground vswitch for tests and the demo: builds a Runtime from a JSON
// spec, says "ready" on stdout, then answers JSON-line commands on stdin
// (one JSON object per line, one reply line each) until "stop", EOF or a
// signal, and cleans up everything it made on the way out.
//
//   node dist/src/control/daemon-main.js spec.json
//
// spec: { "ports": [PortSpec, ...], "macAgingMs"?: number }
// commands: {"cmd":"stats"} {"cmd":"caps"} {"cmd":"ports"}
//           {"cmd":"add","port":PortSpec} {"cmd":"del","name":"..."} {"cmd":"stop"}

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Runtime, type PortSpec } from './runtime.js';
import { AfPacketBackend } from '../io/af-packet.js';
import { TapBackend } from '../io/tap.js';
import { FdBackend } from '../io/fd-backend.js';

interface Spec {
  ports: PortSpec[];
  macAgingMs?: number;
}

function say(obj: unknown): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const specPath = process.argv[2];
if (specPath === undefined) {
  process.stderr.write('usage: daemon-main.js spec.json\n');
  process.exit(2);
}
const spec = JSON.parse(readFileSync(specPath, 'utf8')) as Spec;
const rt = new Runtime({
  ...(spec.macAgingMs !== undefined ? { macAgingMs: spec.macAgingMs } : {}),
  log: (level, msg, fields) => process.stderr.write(`${JSON.stringify({ level, msg, ...fields })}\n`),
});

let stopping = false;
function stop(code: number): void {
  if (stopping) return;
  stopping = true;
  try {
    rt.stop();
  } finally {
    say({ event: 'stopped' });
    process.exit(code);
  }
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => stop(0));
process.on('uncaughtException', (e) => {
  process.stderr.write(`${JSON.stringify({ level: 'error', msg: 'uncaught exception', error: String(e?.stack ?? e) })}\n`);
  stop(1);
});

const failed: { port: string; error: string }[] = [];
for (const p of spec.ports) {
  try {
    rt.addPort(p);
  } catch (e) {
    failed.push({ port: p.name, error: String((e as Error).message) });
  }
}
say({ event: 'ready', ports: rt.ports().map((a) => a.port.name), failed });

function backendInfo(name: string): Record<string, unknown> {
  const b = rt.backendOf(name);
  const out: Record<string, unknown> = {};
  if (b instanceof FdBackend) out['io'] = { ...b.stats };
  if (b instanceof TapBackend) out['tunFlags'] = b.tunFlags;
  if (b instanceof AfPacketBackend) out['kernel'] = { packets: b.kernelPackets, drops: b.kernelDrops };
  return out;
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let cmd: { cmd: string; [k: string]: unknown };
  try {
    cmd = JSON.parse(line) as typeof cmd;
  } catch {
    say({ ok: false, error: 'not JSON' });
    return;
  }
  try {
    switch (cmd.cmd) {
      case 'stats':
        say({ ok: true, ports: Object.fromEntries(rt.sw.listPorts().map((p) => [p.name, { ...p.counters.snapshot(), ...backendInfo(p.name) }])), pool: { inUse: rt.pool.inUse, classes: rt.pool.stats() } });
        break;
      case 'caps':
        say({ ok: true, ports: Object.fromEntries(rt.sw.listPorts().map((p) => [p.name, { kind: p.kind, device: p.deviceCaps, advertised: p.advertised }])) });
        break;
      case 'ports':
        say({ ok: true, ports: rt.sw.listPorts().map((p) => ({ name: p.name, kind: p.kind, up: p.up, mtu: p.mtu })) });
        break;
      case 'add':
        rt.addPort(cmd['port'] as PortSpec);
        say({ ok: true });
        break;
      case 'del':
        rt.removePort(String(cmd['name']));
        say({ ok: true });
        break;
      case 'stop':
        say({ ok: true });
        stop(0);
        break;
      default:
        say({ ok: false, error: `unknown command ${cmd.cmd}` });
    }
  } catch (e) {
    say({ ok: false, error: String((e as Error).message) });
  }
});
rl.on('close', () => stop(0));
