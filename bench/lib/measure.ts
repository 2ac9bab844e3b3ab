// The load generators and what they report: iperf3 (TCP, UDP), ping, and a
// one-way UDP sender for paths nothing on the far side can answer on.

import { spawnIn, runIn, sleep, type RunResult } from './proc.js';
import type { ChildProcess } from 'node:child_process';

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(xs: number[]): Spread | null {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  const median = v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { median, min: v[0]!, max: v[v.length - 1]!, n: v.length };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

// --- iperf3 ----------------------------------------------------------------------------

export const PORT = 5201;

/** Called right before the load starts and right after it ends (CPU sampling). */
export type Mark = (phase: 'start' | 'end') => void;

/** A one-shot iperf3 server (`-s -1`) in a namespace, ready when it listens. */
export async function iperfServer(ns: string, port: number): Promise<ChildProcess> {
  const s = spawnIn(ns, ['iperf3', '-s', '-1', '-p', String(port)]);
  const deadline = Date.now() + 5000;
  for (;;) {
    const r = await runIn(ns, ['ss', '-Hltn', `sport = :${port}`], 5000);
    if (r.stdout.trim() !== '') return s;
    if (s.exitCode !== null || Date.now() > deadline) {
      s.kill('SIGKILL');
      throw new Error(`iperf3 server in ${ns} did not start`);
    }
    await sleep(30);
  }
}

export function stopServer(s: ChildProcess): void {
  if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL');
}

interface IperfJson {
  error?: string;
  end?: {
    sum_sent?: { bytes: number; seconds: number; bits_per_second: number; retransmits?: number };
    sum_received?: { bytes: number; seconds: number; bits_per_second: number; packets?: number; lost_packets?: number };
    sum?: { packets?: number; lost_packets?: number; seconds?: number };
  };
}

function parseIperf(r: RunResult): IperfJson {
  let j: IperfJson;
  try {
    j = JSON.parse(r.stdout) as IperfJson;
  } catch {
    throw new Error(`iperf3 failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
  }
  if (j.error !== undefined) throw new Error(`iperf3: ${j.error}`);
  return j;
}

export interface TcpResult {
  /** Received goodput, bit/s. */
  bps: number;
  retransmits: number;
}

export async function iperfTcp(clientNs: string, serverNs: string, addr: string, seconds: number, streams: number, mark?: Mark, port = PORT): Promise<TcpResult> {
  const s = await iperfServer(serverNs, port);
  try {
    mark?.('start');
    const r = await runIn(clientNs, ['iperf3', '-c', addr, '-p', String(port), '-t', String(seconds), '-P', String(streams), '-J'], (seconds + 20) * 1000);
    mark?.('end');
    const j = parseIperf(r);
    const rx = j.end?.sum_received;
    if (rx === undefined) throw new Error('iperf3: no receiver summary');
    return { bps: rx.bits_per_second, retransmits: j.end?.sum_sent?.retransmits ?? 0 };
  } finally {
    stopServer(s);
  }
}

export interface UdpResult {
  /** Datagrams the receiver got, per second. */
  pps: number;
  sentPps: number;
  lossPct: number;
}

/** UDP datagrams of `payload` bytes at full speed (-b 0); delivered = sent − lost, as the receiver counted. */
export async function iperfUdp(clientNs: string, serverNs: string, addr: string, seconds: number, payload: number, mark?: Mark, port = PORT): Promise<UdpResult> {
  const s = await iperfServer(serverNs, port);
  try {
    mark?.('start');
    const r = await runIn(clientNs, ['iperf3', '-c', addr, '-p', String(port), '-u', '-l', String(payload), '-b', '0', '-w', '4M', '-t', String(seconds), '-J'], (seconds + 20) * 1000);
    mark?.('end');
    const j = parseIperf(r);
    const rx = j.end?.sum_received ?? j.end?.sum;
    if (rx === undefined || rx.packets === undefined) throw new Error('iperf3: no UDP receiver summary');
    const secs = rx.seconds !== undefined && rx.seconds > 0 ? rx.seconds : seconds;
    const delivered = rx.packets - (rx.lost_packets ?? 0);
    return { pps: delivered / secs, sentPps: rx.packets / secs, lossPct: rx.packets > 0 ? (100 * (rx.lost_packets ?? 0)) / rx.packets : 0 };
  } finally {
    stopServer(s);
  }
}

// --- ping ------------------------------------------------------------------------------

export interface RttResult {
  /** Round-trip times, microseconds. */
  medianUs: number;
  p99Us: number;
  lossPct: number;
}

export async function pingRtt(ns: string, addr: string, count: number, intervalS = 0.01, mark?: Mark): Promise<RttResult> {
  mark?.('start');
  const r = await runIn(ns, ['ping', '-n', '-c', String(count), '-i', String(intervalS), '-W', '1', addr], count * intervalS * 1000 + 15_000);
  mark?.('end');
  const times = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]) * 1000).sort((a, b) => a - b);
  if (times.length === 0) throw new Error(`ping ${addr} from ${ns}: no replies (${(r.stderr || r.stdout).trim().split('\n').pop() ?? ''})`);
  return { medianUs: percentile(times, 50), p99Us: percentile(times, 99), lossPct: 100 * (1 - times.length / count) };
}

/** One ping; true if answered. */
export async function reachable(ns: string, addr: string, tries = 3): Promise<boolean> {
  const r = await runIn(ns, ['ping', '-n', '-c', String(tries), '-i', '0.2', '-W', '1', addr], 10_000);
  return /time=/.test(r.stdout);
}

// --- one-way UDP (udp-blast.js) --------------------------------------------------------

export interface BlastResult {
  sent: number;
  seconds: number;
  errors: number;
}

/** Send UDP one way from a namespace for `seconds` (bench/udp-blast.ts); for paths whose far end cannot answer. */
export async function blast(node: string, script: string, ns: string, device: string, addr: string, payload: number, seconds: number, mark?: Mark): Promise<BlastResult> {
  mark?.('start');
  const r = await runIn(ns, [node, script, '--device', device, '--dst', addr, '--len', String(payload), '--seconds', String(seconds)], (seconds + 20) * 1000);
  mark?.('end');
  if (r.code !== 0) throw new Error(`udp-blast: ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
  return JSON.parse(r.stdout) as BlastResult;
}

/** rx_packets / rx_bytes of a device in a namespace. */
export async function rxCounters(ns: string, dev: string): Promise<{ packets: number; bytes: number }> {
  const r = await runIn(ns, ['cat', `/sys/class/net/${dev}/statistics/rx_packets`, `/sys/class/net/${dev}/statistics/rx_bytes`]);
  const [p, b] = r.stdout.trim().split('\n').map(Number);
  return { packets: p ?? 0, bytes: b ?? 0 };
}
