// `vswitch guest-agent`: command line, output and signals around Agent.
//
// Exit codes: 0 stopped by SIGTERM/SIGINT after cleaning up; 1 it could not
// start (no device, guest API unreachable with nothing to fall back on);
// 2 usage or SA file error.

import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { Agent, type AgentEvent, type LocalMode } from './agent.js';
import { parseSaFile, SaFileError } from './sa-file.js';

export const AGENT_HELP = `vswitch guest-agent — IPsec task offload from inside a VM

usage: vswitch guest-agent --sas FILE (--socket PATH --token-file PATH | --local-only) [options]

  --sas FILE          the SAs the VM's key exchange agreed on (JSON, both directions; see docs/ipsec.md)
  --socket PATH       the VM port's guest API socket (vswitch show --json: guestApi.socket)
  --token-file PATH   the file with the port's token (guestApi.tokenFile)
  --device DEV        the VM's NIC (default: the device of the route to the first SA's peer)
  --local-only        never offload: the VM does its own IPsec
  --local MODE        how the VM does IPsec itself: auto (XFRM if the kernel has ESP, else userspace),
                      xfrm, or userspace (TUN + raw ESP socket); default auto
  --tun NAME          the userspace path's TUN device (default vsesp0)
  --poll-ms MS        how long each wait for upload events lasts (default 25000)
  --json              one JSON line per event on stdout
  -h, --help

Events: started, advertisement, offloaded, rejected (with the switch's reason), local-stack,
installed-locally (how: xfrm|userspace), ready, uploaded, notice, error, stopped.
SIGTERM or SIGINT removes what the agent installed (SAs in the switch, XFRM states and
policies, TUN, routes) and exits 0.
`;

function human(e: AgentEvent): string {
  const x = e as { direction?: unknown; spi?: unknown };
  const sa = typeof x.spi === 'number' ? ` ${String(x.direction)} SA 0x${x.spi.toString(16)}` : '';
  switch (e.event) {
    case 'started': return `guest agent on ${e.device}: ${e.sas} SAs, ${e.mode}`;
    case 'advertisement': return `port ${e.port}: IPsec offload ${e.ipsec.enabled ? `advertised (${e.ipsec.algorithms.join(', ')}; up to ${e.ipsec.maxSa} SAs)` : 'not advertised'}`;
    case 'local-stack': return `local IPsec: ${e.how} (${e.why})`;
    case 'offloaded': return `offloaded${sa} to the switch (uplink ${e.uplink ?? '?'})`;
    case 'rejected': return `rejected${sa}: ${e.reason} — ${e.detail}`;
    case 'installed-locally': return `installed${sa} in the VM (${e.how}): ${e.why}`;
    case 'ready': return `ready: ${e.offloaded} offloaded, ${e.local} in the VM`;
    case 'uploaded': return `uploaded${sa}: now in the VM (${e.how}); ${e.reason}${e.seq !== undefined ? `; next seq ${e.seq}` : ''}${e.replayTop !== undefined ? `; replay top ${e.replayTop}` : ''}`;
    case 'notice': return `note: ${e.message}`;
    case 'error': return `error: ${e.message}`;
    case 'stopped': return `stopped: ${e.removedFromSwitch} SAs removed from the switch; local IPsec removed`;
  }
}

export async function agentMain(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv, allowPositionals: false, strict: true,
      options: {
        socket: { type: 'string' }, 'token-file': { type: 'string' }, sas: { type: 'string' }, device: { type: 'string' },
        'local-only': { type: 'boolean' }, local: { type: 'string' }, tun: { type: 'string' }, json: { type: 'boolean' },
        'poll-ms': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    process.stderr.write(`vswitch guest-agent: ${(e as Error).message}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(AGENT_HELP);
    return 0;
  }
  const usage = (m: string) => { process.stderr.write(`vswitch guest-agent: ${m}\n`); return 2; };
  if (values.sas === undefined) return usage('--sas FILE is required');
  const localOnly = values['local-only'] === true;
  if (!localOnly && (values.socket === undefined || values['token-file'] === undefined)) return usage('--socket and --token-file are required (or --local-only)');
  const local = (values.local ?? 'auto') as LocalMode;
  if (!['auto', 'xfrm', 'userspace'].includes(local)) return usage('--local must be auto, xfrm or userspace');
  if (values.tun !== undefined && (values.tun.length === 0 || values.tun.length > 15)) return usage('--tun: a device name of 1..15 characters');

  const pollMs = values['poll-ms'] !== undefined ? Number(values['poll-ms']) : undefined;
  if (pollMs !== undefined && !(Number.isInteger(pollMs) && pollMs >= 100 && pollMs <= 60_000)) return usage('--poll-ms must be 100..60000');

  let sas;
  let token: string | undefined;
  try {
    sas = parseSaFile(readFileSync(values.sas, 'utf8'), values.sas);
    if (!localOnly) token = readFileSync(values['token-file']!, 'utf8').trim();
  } catch (e) {
    return usage(e instanceof SaFileError ? e.message : `${(e as Error).message}`);
  }

  const json = values.json === true;
  const emit = (e: AgentEvent) => {
    process.stdout.write(json ? `${JSON.stringify({ time: new Date().toISOString(), ...e })}\n` : `${human(e)}\n`);
  };
  const agent = new Agent({
    sas, localOnly, local, emit,
    ...(values.socket !== undefined ? { socket: values.socket } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(values.device !== undefined ? { device: values.device } : {}),
    ...(values.tun !== undefined ? { tunName: values.tun } : {}),
    ...(pollMs !== undefined ? { pollMs } : {}),
  });

  // Stays up until told to stop, whatever the agent is waiting on.
  const keepAlive = setInterval(() => {}, 1 << 30);
  let stopping: Promise<void> | null = null;
  const done = new Promise<number>((resolve) => {
    const stop = () => {
      stopping ??= agent.stop().finally(() => { clearInterval(keepAlive); resolve(0); });
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  try {
    await agent.start();
  } catch (e) {
    emit({ event: 'error', message: (e as Error).message });
    await agent.stop();
    clearInterval(keepAlive);
    return 1;
  }
  return done;
}
