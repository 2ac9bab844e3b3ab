#!/usr/bin/env node
// `vswitch`: run the daemon, and talk to it through its management API.
//
// Exit codes: 0 done; 1 the operation failed (the daemon said no, or a port
// could not be set up); 2 usage or configuration error; 3 the daemon cannot
// be reached.

import { parseArgs } from 'node:util';
import { createWriteStream, readFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { parse as parseYaml } from 'yaml';
import { ApiFailure, Client, DEFAULT_SOCKET, UnreachableError } from './client.js';
import { ConfigError, loadConfig } from '../control/config.js';
import { readCapture, CaptureFileError } from '../io/pcap-read.js';
import { PcapngBlockStream } from '../io/pcapng.js';
import { formatCaps, formatMacs, formatPorts, formatSas, formatStats, formatStatus, formatTrace, type StatsSnapshot } from './format.js';

const VERSION = '0.1.0';

const HELP = `vswitch ${VERSION} — a userspace virtual switch with NIC offloads for every guest

usage: vswitch <command> [options]

daemon
  run --config FILE            start the switch in the foreground (Ctrl-C stops it and removes what it made)
  check --config FILE          check a configuration file and exit

inspect (talk to a running switch; --socket PATH or $VSWITCH_SOCKET, default ${DEFAULT_SOCKET})
  status                       the switch: data plane (answering?), I/O workers, buffers, MAC table;
                               exit 1 when the data plane does not answer
  show                         ports, kinds, devices, state
  caps [PORT]                  capability map: what each uplink can do, what each vNIC was advertised
                               (Linux TUN/ethtool, virtio and NDIS views with --json)
  stats [PORT] [--watch [S]]   counters, drops by reason, hardware/software/pass-through offloads, charges
                               (--watch: rates every S seconds, default 1, until Ctrl-C)
  macs                         the MAC table
  sa [PORT]                    IPsec SAs offloaded per port, their state (offloaded/uploading/uploaded),
                               counters, and recent rejections with their reasons
  trace --in PORT (--frame HEX | --pcap FILE [--index N] | packet options)
                               what the pipeline does with a packet, stage by stage and per destination
        packet options: --proto tcp|udp|icmp --src IP[:PORT] --dst IP[:PORT] [--len N] [--src-mac MAC]
                        [--dst-mac MAC] [--vlan VID] [--tso MSS | --uso SIZE] [--csum]
  capture PORT [-w FILE] [-c COUNT] [--seconds S]
                               pcapng of what PORT receives and sends (stdout unless -w; Ctrl-C ends it)

change
  port add --file PORT.yaml | --yaml '{name: vm3, kind: synthetic, ...}'
  port del NAME
  port set NAME KEY=VALUE...   mtu=9000 up=false passThrough=false uro=false vlan=10 offloads.lso=false maxMacs=8
  stop                         shut the daemon down

demo
  demo [--quick] [--memory]    the README's demo: a small data centre in namespaces (in memory without root)

inside a VM
  guest-agent --socket S --token-file T --sas FILE [--device DEV] [--local-only] [--json]
                               offload the VM's IPsec SAs to the switch, take them back on upload
                               (docs/ipsec.md)

common options: --json (machine-readable output), --socket PATH, -h/--help, --version
`;

class UsageError extends Error {}

function client(socket: string | undefined): Client {
  return new Client(socket ?? process.env['VSWITCH_SOCKET'] ?? DEFAULT_SOCKET);
}

function out(json: boolean, data: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : human());
}

/** KEY=VALUE pairs into a nested object; values parsed as YAML scalars (numbers, booleans, lists). */
function assignments(pairs: string[]): Record<string, unknown> {
  const obj: Record<string, unknown> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`"${pair}" is not KEY=VALUE`);
    const keys = pair.slice(0, eq).split('.');
    let at: Record<string, unknown> = obj;
    for (const k of keys.slice(0, -1)) at = (at[k] ??= {}) as Record<string, unknown>;
    at[keys[keys.length - 1]!] = parseYaml(pair.slice(eq + 1)) as unknown;
  }
  return obj;
}

function hostPort(s: string): [string, number | undefined] {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(s) ?? (s.split(':').length === 2 ? /^([^:]+):(\d+)$/.exec(s) : null);
  if (m) return [m[1]!, m[2] !== undefined ? Number(m[2]) : undefined];
  return [s, undefined];
}

function packetFromOptions(v: Record<string, string | boolean | undefined>): { packet: Record<string, unknown>; meta: Record<string, unknown> } {
  const proto = (v['proto'] as string | undefined) ?? 'tcp';
  if (!['tcp', 'udp', 'icmp'].includes(proto)) throw new UsageError(`--proto must be tcp, udp or icmp`);
  if (typeof v['src'] !== 'string' || typeof v['dst'] !== 'string') throw new UsageError('trace needs --src and --dst (or --frame / --pcap)');
  const [src, sport] = hostPort(v['src']);
  const [dst, dport] = hostPort(v['dst']);
  const v6 = src.includes(':');
  const packet: Record<string, unknown> = {
    ip: v6 ? { version: 6, src, dst } : { version: 4, src, dst },
    l4: proto === 'icmp' ? { kind: 'icmp', type: v6 ? 128 : 8 } : { kind: proto, sport: sport ?? 40000, dport: dport ?? 5201 },
    payload: Number(v['len'] ?? 64),
    checksum: v['tso'] !== undefined || v['uso'] !== undefined || v['csum'] === true ? 'partial' : 'full',
  };
  if (typeof v['src-mac'] === 'string') packet['srcMac'] = v['src-mac'];
  if (typeof v['dst-mac'] === 'string') packet['dstMac'] = v['dst-mac'];
  if (typeof v['vlan'] === 'string') packet['vlans'] = [{ tpid: 0x8100, pcp: 0, dei: false, vid: Number(v['vlan']) }];
  const meta: Record<string, unknown> = {};
  if (typeof v['tso'] === 'string') { meta['gso'] = v6 ? 'tcpv6' : 'tcpv4'; meta['gsoSize'] = Number(v['tso']); }
  if (typeof v['uso'] === 'string') { meta['gso'] = 'udp-l4'; meta['gsoSize'] = Number(v['uso']); }
  if (v['csum'] === true) meta['csum'] = true;
  return { packet, meta };
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'demo') {
    // The demo has options of its own (--quick, --memory, ...); it reads them from process.argv.
    process.argv = [process.argv[0]!, process.argv[1]!, ...argv.slice(1)];
    await import('./demo.js');
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  }
  if (argv[0] === 'guest-agent') {
    // Runs inside a VM, with options of its own (src/agent/main.ts).
    const { agentMain } = await import('../agent/main.js');
    return agentMain(argv.slice(1));
  }
  if (argv[0] === 'stats' && argv.includes('--watch')) {
    // `stats [PORT] --watch [S]`: a number right after --watch is the interval.
    const i = argv.indexOf('--watch');
    if (/^\d+(\.\d+)?$/.test(argv[i + 1] ?? '')) argv = [...argv.slice(0, i + 1), '--interval', ...argv.slice(i + 1)];
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' }, socket: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' }, watch: { type: 'boolean' }, interval: { type: 'string' },
      in: { type: 'string' }, frame: { type: 'string' }, pcap: { type: 'string' }, index: { type: 'string' },
      proto: { type: 'string' }, src: { type: 'string' }, dst: { type: 'string' }, len: { type: 'string' },
      'src-mac': { type: 'string' }, 'dst-mac': { type: 'string' }, vlan: { type: 'string' },
      tso: { type: 'string' }, uso: { type: 'string' }, csum: { type: 'boolean' },
      write: { type: 'string', short: 'w' }, count: { type: 'string', short: 'c' }, seconds: { type: 'string' },
      file: { type: 'string' }, yaml: { type: 'string' },
    },
  });
  if (values.version) { process.stdout.write(`vswitch ${VERSION}\n`); return 0; }
  const [cmd, ...args] = positionals;
  if (values.help || cmd === undefined || cmd === 'help') { process.stdout.write(HELP); return cmd === undefined && !values.help ? 2 : 0; }
  const json = values.json === true;

  switch (cmd) {
    case 'run': {
      if (values.config === undefined) throw new UsageError('run needs --config FILE');
      if (typeof process.getuid === 'function' && process.getuid() !== 0) {
        throw new ApiFailure(1, 'vswitch run needs root (CAP_NET_ADMIN for TAP devices, packet sockets and namespaces); without root, `vswitch demo` shows the switch on its in-memory backend');
      }
      const { startDaemon } = await import('../control/daemon.js');
      const d = await startDaemon(values.config);
      const stop = () => void d.stop();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      process.once('SIGHUP', stop);
      const died = await d.stopped;
      if (died !== null) throw new ApiFailure(1, `vswitch stopped: the data plane died (${died})`);
      return 0;
    }
    case 'check': {
      if (values.config === undefined) throw new UsageError('check needs --config FILE');
      const cfg = loadConfig(values.config);
      out(json, cfg, () => `${values.config}: ok (${cfg.ports.length} ports; API at ${cfg.settings.socket})\n`);
      return 0;
    }
    case 'status': {
      const c = client(values.socket);
      // Health first: the main thread answers it even when the data plane does not (and then /v1/switch would wait).
      let health: { dataPlane: string; answeredMsAgo: number };
      try {
        health = await c.call('GET', '/v1/health');
      } catch (e) {
        if (e instanceof ApiFailure && e.status === 503) throw new ApiFailure(1, `vswitch is not well: ${e.message}`);
        throw e;
      }
      const sw = await c.call('GET', '/v1/switch');
      out(json, { health, switch: sw }, () => formatStatus(sw, health));
      return 0;
    }
    case 'show': {
      const r = await client(values.socket).call<{ ports: Record<string, unknown>[] }>('GET', '/v1/ports');
      out(json, r, () => formatPorts(r.ports));
      return 0;
    }
    case 'caps': {
      const r = await client(values.socket).call<{ ports: Record<string, unknown>[] }>('GET', '/v1/caps');
      const ports = args[0] !== undefined ? r.ports.filter((p) => p['name'] === args[0]) : r.ports;
      if (args[0] !== undefined && ports.length === 0) throw new ApiFailure(404, `no port ${args[0]}`);
      out(json, { ports }, () => formatCaps(ports));
      return 0;
    }
    case 'stats': {
      const c = client(values.socket);
      const get = async () => {
        const r = await c.call<{ ports: StatsSnapshot[] }>('GET', '/v1/stats');
        const ports = args[0] !== undefined ? r.ports.filter((p) => p.name === args[0]) : r.ports;
        if (args[0] !== undefined && ports.length === 0) throw new ApiFailure(404, `no port ${args[0]}`);
        return ports;
      };
      if (!values.watch) {
        const ports = await get();
        out(json, { ports }, () => formatStats(ports, null, 0));
        return 0;
      }
      const every = Number(values.interval ?? args[1] ?? 1);
      let prev = await get();
      let prevAt = Date.now();
      for (;;) {
        await new Promise((r) => setTimeout(r, every * 1000));
        const now = await get();
        const dt = (Date.now() - prevAt) / 1000;
        if (json) process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ports: now })}\n`);
        else process.stdout.write(`${process.stdout.isTTY ? '\x1b[H\x1b[2J' : ''}${formatStats(now, prev, dt)}`);
        prev = now;
        prevAt = Date.now();
      }
    }
    case 'sa': {
      const r = await client(values.socket).call<{ enabled: boolean; sas: Record<string, any>[]; rejected: Record<string, any>[] }>('GET', '/v1/sas');
      const sas = args[0] !== undefined ? r.sas.filter((x) => x['port'] === args[0]) : r.sas;
      const rejected = args[0] !== undefined ? r.rejected.filter((x) => x['port'] === args[0]) : r.rejected;
      out(json, { enabled: r.enabled, sas, rejected }, () => formatSas(sas, rejected));
      return 0;
    }
    case 'macs': {
      const r = await client(values.socket).call<{ entries: Record<string, unknown>[] }>('GET', '/v1/macs');
      out(json, r, () => formatMacs(r.entries));
      return 0;
    }
    case 'trace': {
      if (values.in === undefined) throw new UsageError('trace needs --in PORT');
      const body: Record<string, unknown> = { in: values.in };
      if (values.frame !== undefined) body['frame'] = values.frame.replace(/[\s:]/g, '');
      else if (values.pcap !== undefined) {
        const frames = readCapture(readFileSync(values.pcap));
        const i = Number(values.index ?? 0);
        if (!(i >= 0 && i < frames.length)) throw new UsageError(`${values.pcap} has ${frames.length} frames; --index ${i} is not one of them`);
        body['frame'] = Buffer.from(frames[i]!.frame).toString('hex');
        const meta: Record<string, unknown> = {};
        if (values.tso !== undefined) { meta['gso'] = 'tcpv4'; meta['gsoSize'] = Number(values.tso); }
        if (values.csum) meta['csum'] = true;
        body['meta'] = meta;
      } else Object.assign(body, packetFromOptions(values as Record<string, string | boolean | undefined>));
      const r = await client(values.socket).call<Record<string, unknown>>('POST', '/v1/trace', body);
      out(json, r, () => formatTrace(r));
      return 0;
    }
    case 'capture': {
      const port = args[0];
      if (port === undefined) throw new UsageError('capture needs a PORT');
      const q = new URLSearchParams();
      if (values.count !== undefined) q.set('count', values.count);
      if (values.seconds !== undefined) q.set('seconds', values.seconds);
      const c = client(values.socket);
      const path = `/v1/ports/${encodeURIComponent(port)}/capture`;
      const res = await c.stream(`${path}?${q}`);
      // Ctrl-C asks the daemon to end the capture (whole blocks, statistics); if it
      // does not within 3 s, or on a second Ctrl-C, hang up.
      // Hanging up still writes out every whole block received.
      const blocks = new PcapngBlockStream();
      const sink = values.write !== undefined ? createWriteStream(values.write) : process.stdout;
      const hangUp = () => {
        res.unpipe(blocks);
        res.destroy();
        if (!blocks.writableEnded) blocks.end();
      };
      process.once('SIGINT', () => {
        process.once('SIGINT', hangUp);
        setTimeout(hangUp, 3000).unref();
        c.call('DELETE', path).catch(hangUp);
      });
      res.once('close', hangUp); // the daemon went away: keep what came
      const written = pipeline(blocks, sink, { end: sink !== process.stdout });
      res.pipe(blocks);
      await written;
      if (blocks.droppedBytes > 0) process.stderr.write(`the capture was cut off: an unfinished last block (${blocks.droppedBytes} B) left out\n`);
      if (values.write !== undefined) process.stderr.write(`capture of ${port} written to ${values.write}\n`);
      return 0;
    }
    case 'port': {
      const [sub, name, ...rest] = args;
      const c = client(values.socket);
      if (sub === 'add') {
        let spec: unknown;
        if (values.file !== undefined) spec = parseYaml(readFileSync(values.file, 'utf8'));
        else if (values.yaml !== undefined) spec = parseYaml(values.yaml);
        else throw new UsageError('port add needs --file PORT.yaml or --yaml \'{...}\'');
        const r = await c.call<Record<string, unknown>>('POST', '/v1/ports', spec);
        out(json, r, () => `port ${String(r['name'])} added\n`);
        return 0;
      }
      if (sub === 'del') {
        if (name === undefined) throw new UsageError('port del needs a NAME');
        await c.call('DELETE', `/v1/ports/${encodeURIComponent(name)}`);
        out(json, { removed: name }, () => `port ${name} removed\n`);
        return 0;
      }
      if (sub === 'set') {
        if (name === undefined || rest.length === 0) throw new UsageError('port set needs a NAME and KEY=VALUE pairs');
        const r = await c.call<Record<string, unknown>>('PATCH', `/v1/ports/${encodeURIComponent(name)}`, assignments(rest));
        out(json, r, () => `port ${name} updated\n`);
        return 0;
      }
      throw new UsageError('port needs add, del or set');
    }
    case 'stop': {
      await client(values.socket).call('POST', '/v1/shutdown');
      out(json, { stopping: true }, () => 'vswitch is shutting down\n');
      return 0;
    }
    default:
      throw new UsageError(`unknown command "${cmd}" (vswitch --help lists them)`);
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    if (e instanceof ConfigError) {
      process.stderr.write(`vswitch: configuration has ${e.issues.length} problem(s):\n${e.message}\n`);
      process.exitCode = 2;
    } else if (e instanceof UsageError || (e as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ||
               (e as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || (e as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      process.stderr.write(`vswitch: ${(e as Error).message}\n`);
      process.exitCode = 2;
    } else if (e instanceof CaptureFileError) {
      process.stderr.write(`vswitch: ${e.message}\n`);
      process.exitCode = 2;
    } else if (e instanceof UnreachableError) {
      process.stderr.write(`vswitch: ${e.message}\n`);
      process.exitCode = 3;
    } else if (e instanceof ApiFailure) {
      process.stderr.write(`vswitch: ${e.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`vswitch: ${(e as Error)?.message ?? String(e)}\n`);
      process.exitCode = 1;
    }
  },
);
