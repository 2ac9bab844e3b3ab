// Human-readable tables for the CLI (the --json output is the API's JSON).

export function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  ').trimEnd();
  return `${[line(head), line(w.map((n) => '-'.repeat(n))), ...cells.slice(1).map(line)].join('\n')}\n`;
}

function vlanText(v: unknown): string {
  const x = v as { mode: string; vlan?: number; allowed?: number[] | 'all'; native?: number };
  if (x?.mode === 'access') return String(x.vlan);
  if (x?.mode === 'trunk') return `trunk ${x.allowed === 'all' ? 'all' : (x.allowed ?? []).join(',')}${x.native !== undefined ? ` native ${x.native}` : ''}`;
  return '-';
}

/** Where the port's frames go: its device, or a QEMU VM's socket or UDP addresses. */
function deviceText(p: Record<string, unknown>): string {
  const q = p['qemu'] as { socket?: string; dgram?: { local: string; remote: string } } | undefined;
  if (q?.dgram !== undefined) return `qemu udp ${q.dgram.local} ⇄ ${q.dgram.remote}`;
  if (q?.socket !== undefined) return `qemu ${q.socket}`;
  return String(p['device']);
}

export function formatPorts(ports: Record<string, unknown>[]): string {
  return table(['PORT', 'KIND', 'DEVICE', 'STATE', 'MTU', 'VLAN', 'NAMESPACE', 'PASS-THROUGH', 'MACS'],
    ports.map((p) => [
      String(p['name']), String(p['kind']), deviceText(p), p['up'] ? 'up' : 'down', Number(p['mtu']), vlanText(p['vlan']),
      String(p['namespace'] ?? '-'), p['passThrough'] === null ? '-' : p['passThrough'] ? 'on' : 'off', Number(p['macsLearned']),
    ]));
}

interface Caps {
  txChecksum: Record<string, boolean>;
  rxChecksum: Record<string, boolean>;
  lso: { v4: boolean; v6: boolean; maxOffloadSize: number };
  uso: { v4: boolean; v6: boolean };
  ipsec: { enabled: boolean; algorithms: string[]; maxSa: number };
  rsc: { v4: boolean; v6: boolean };
  rxPartialChecksum: boolean;
}

function capsText(c: Caps): string[] {
  const v = (a: boolean, b: boolean) => (a && b ? 'v4+v6' : a ? 'v4' : b ? 'v6' : 'off');
  const csum = (x: Record<string, boolean>) => {
    const on = ['tcp4', 'udp4', 'tcp6', 'udp6'].filter((k) => x[k]);
    return on.length === 4 ? 'all' : on.length === 0 ? 'off' : on.join(',');
  };
  return [
    csum(c.txChecksum), v(c.lso.v4, c.lso.v6), v(c.uso.v4, c.uso.v6), csum(c.rxChecksum),
    c.ipsec.enabled ? `${c.ipsec.algorithms.join(',')} (${c.ipsec.maxSa} SAs)` : 'off',
  ];
}

export function formatCaps(ports: Record<string, unknown>[]): string {
  const rows: string[][] = [];
  for (const p of ports) {
    const kind = String(p['kind']);
    if (kind === 'external') rows.push([String(p['name']), kind, 'NIC can do', ...capsText(p['device'] as Caps)]);
    else if (kind === 'legacy') rows.push([String(p['name']), kind, 'advertised', 'off', 'off', 'off', 'off', 'off']);
    else {
      rows.push([String(p['name']), kind, 'advertised', ...capsText(p['advertised'] as Caps)]);
      const tun = p['tunFlags'];
      if (typeof tun === 'number') rows.push(['', '', `TUNSETOFFLOAD 0x${tun.toString(16)}`, '', '', '', '', '']);
    }
  }
  return `${table(['PORT', 'KIND', '', 'TX CSUM', 'LSO', 'USO', 'RX CSUM', 'IPSEC'], rows)}` +
    '(vswitch caps --json shows each port in Linux ethtool, virtio feature-bit and NDIS_OFFLOAD terms)\n';
}

export interface StatsSnapshot {
  name: string;
  kind: string;
  rxPackets: number; rxBytes: number; forwarded: number; txPackets: number; txBytes: number;
  rxDrops: Record<string, number>; txDrops: Record<string, number>;
  offload: { hardware: number; passThrough: number; software: number; segments: number; coalesced?: { datagrams: number; frames: number } };
  charged: { packets: number; bytes: number; cpuNs: number; segments: number; checksums: number; throttled: number };
  ipsec?: { packets: number; bytes: number; cpuNs: number };
  pending: number;
}

function human(n: number, unit = ''): string {
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(2)}G${unit}`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(2)}M${unit}`;
  if (a >= 1e3) return `${(n / 1e3).toFixed(1)}k${unit}`;
  return `${Math.round(n)}${unit}`;
}

function drops(d: Record<string, number>): string {
  const e = Object.entries(d);
  return e.length === 0 ? '-' : e.map(([k, v]) => `${k}:${v}`).join(' ');
}

/** Counters, or rates when a previous snapshot and the seconds between are given. */
export function formatStats(ports: StatsSnapshot[], prev: StatsSnapshot[] | null, dt: number): string {
  const before = new Map((prev ?? []).map((p) => [p.name, p]));
  const rate = prev !== null && dt > 0;
  const rows = ports.map((p) => {
    const b = before.get(p.name);
    const d = (f: (s: StatsSnapshot) => number) => (rate && b ? (f(p) - f(b)) / dt : f(p));
    return [
      p.name, p.kind,
      human(d((s) => s.rxPackets), rate ? 'pps' : ''), human(d((s) => s.rxBytes * 8), rate ? 'bps' : 'b'),
      human(d((s) => s.txPackets), rate ? 'pps' : ''), human(d((s) => s.txBytes * 8), rate ? 'bps' : 'b'),
      `${human(d((s) => s.offload.hardware))}/${human(d((s) => s.offload.passThrough))}/${human(d((s) => s.offload.software))}`,
      human(d((s) => s.offload.segments)),
      human(d((s) => s.offload.coalesced?.datagrams ?? 0)),
      `${(d((s) => s.charged.cpuNs) / (rate ? 1e7 : 1e6)).toFixed(rate ? 1 : 0)}${rate ? '%' : 'ms'}`,
      `${human(d((s) => s.ipsec?.packets ?? 0))}/${(d((s) => s.ipsec?.cpuNs ?? 0) / (rate ? 1e7 : 1e6)).toFixed(rate ? 1 : 0)}${rate ? '%' : 'ms'}`,
      drops(p.rxDrops), drops(p.txDrops),
    ];
  });
  return table(['PORT', 'KIND', 'RX', 'RX', 'TX', 'TX', 'OFFLOAD HW/PASS/SW', 'SEGMENTS', 'COALESCED', 'SW CPU', 'ESP PKTS/CPU', 'RX DROPS', 'TX DROPS'], rows);
}

export function formatMacs(entries: Record<string, unknown>[]): string {
  return table(['VLAN', 'MAC', 'PORT', 'TYPE', 'AGE'], entries.map((e) => [
    Number(e['vlan']), String(e['mac']), String(e['port']), e['static'] ? 'static' : 'learned', e['static'] ? '-' : `${String(e['ageSeconds'])}s`,
  ]));
}

export function formatTrace(r: Record<string, unknown>): string {
  const lines: string[] = [`packet of ${String(r['frameLength'])} B in on ${String(r['inPort'])}`];
  for (const s of r['stages'] as { stage: string; verdict: string; detail?: string }[]) {
    lines.push(`  ${s.stage.padEnd(9)} ${s.verdict.padEnd(6)} ${s.detail ?? ''}`.trimEnd());
  }
  const dests = r['destinations'] as { port: string; kind: string; egress: string; offload: string; why: string; segments?: number; partialChecksum?: boolean; vlanTag?: number; drop?: string }[];
  if (dests.length > 0) {
    lines.push('  destinations:');
    for (const d of dests) {
      const extra = [
        d.segments !== undefined ? `${d.segments} segments` : '',
        d.partialChecksum !== undefined ? (d.partialChecksum ? 'checksums by the receiver' : 'checksums computed') : '',
        d.vlanTag !== undefined ? `tag ${d.vlanTag & 0xfff}` : '',
        d.drop !== undefined ? `DROP ${d.drop}` : '',
      ].filter((x) => x !== '').join(', ');
      lines.push(`    ${d.port} (${d.kind}): ${d.egress === 'deny' ? 'denied' : d.offload} — ${d.why}${extra ? ` [${extra}]` : ''}`);
    }
  }
  lines.push(`  outcome: ${String(r['outcome'])}`);
  return `${lines.join('\n')}\n`;
}

export function formatSas(sas: Record<string, any>[], rejected: Record<string, any>[]): string {
  let text = table(['PORT', 'DIR', 'SPI', 'MODE', 'ALGORITHM', 'SRC', 'DST', 'STATE', 'UPLINK', 'PACKETS', 'BYTES', 'CPU', 'AUTH FAIL', 'REPLAY', 'HELD BACK'],
    sas.map((s) => [
      s['port'], s['direction'], `0x${Number(s['spi']).toString(16)}`, s['mode'], s['algorithm'], s['src'], s['dst'],
      s['state'] + (s['uploadReason'] ? ` (${s['uploadReason']})` : ''), s['uplink'] ?? '-',
      s['counters'].packets, s['counters'].bytes, `${(s['counters'].cpuNs / 1e6).toFixed(1)}ms`,
      s['counters'].authFailures, s['counters'].replays, s['counters'].droppedWhileUploading,
    ]));
  if (rejected.length > 0) {
    text += `\nrejected:\n${table(['PORT', 'DIR', 'SPI', 'REASON', 'DETAIL', 'AT'], rejected.map((r) => [r['port'], r['direction'], `0x${Number(r['spi']).toString(16)}`, r['reason'], r['detail'], r['at']]))}`;
  }
  return text;
}

function duration(s: number): string {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return d > 0 ? `${d}d ${h}h` : h > 0 ? `${h}h ${m}m` : m > 0 ? `${m}m ${sec}s` : `${sec}s`;
}

/** `vswitch status`: GET /v1/switch and GET /v1/health in a few lines. */
export function formatStatus(sw: Record<string, any>, health: { dataPlane: string; answeredMsAgo: number }): string {
  const dp = sw['dataPlane'] as { mode: string; threadId: number } | undefined;
  const w = sw['workers'] as { count: number; reads: boolean; portKinds: string[]; threads: { threadId: number; queues: number }[] };
  const pool = sw['pool'] as { inUse: number; capacity: number; simdChecksum: boolean; classes: { peak: number }[] };
  const macs = sw['macTable'] as { entries: number; capacity: number; agingMs: number };
  const plane = dp === undefined || dp.mode === 'main'
    ? 'on the main thread'
    : `its own thread (threadId ${dp.threadId}), ${health.dataPlane === 'ok' ? 'answering' : health.dataPlane} (last answer ${(health.answeredMsAgo / 1000).toFixed(1)} s ago)`;
  const workers = w.count === 0
    ? 'none (the data plane does all I/O)'
    : `${w.count} (${w.reads ? 'read and write' : 'write'} ${w.portKinds.join(', ')} queues): ${w.threads.map((t) => `thread ${t.threadId} holds ${t.queues}`).join(', ')}`;
  const rows: [string, string][] = [
    ['switch', `${sw['name']}, pid ${sw['pid']}, up ${duration(Number(sw['uptimeSeconds']))}, ${sw['ports']} ports`],
    ['data plane', plane],
    ['I/O workers', workers],
    ['buffers', `${pool.inUse} of ${pool.capacity} in use (peak ${pool.classes.reduce((a, c) => a + c.peak, 0)}), SIMD checksum ${pool.simdChecksum ? 'on' : 'off'}`],
    ['MAC table', `${macs.entries} of ${macs.capacity} entries, aging ${Math.round(macs.agingMs / 1000)} s`],
  ];
  const threads = sw['threads'] as { role: string; threadId: number; cpuSeconds: number | null }[] | undefined;
  if (threads !== undefined) {
    const name = (t: { role: string; threadId: number }) => (t.role === 'io' ? `I/O ${t.threadId}` : t.role === 'data-plane' ? 'data plane' : 'main');
    rows.push(['CPU', `${threads.map((t) => `${name(t)} ${t.cpuSeconds === null ? '?' : `${t.cpuSeconds.toFixed(1)} s`}`).join(', ')} (since start)`]);
  }
  return rows.map(([k, v]) => `${k.padEnd(12)} ${v}`).join('\n') + '\n';
}
