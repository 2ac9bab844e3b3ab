// The YAML configuration: schema-validated (ajv), then checked for what a
// schema cannot say (unique names, addresses that parse, VLAN ranges), and
// turned into runtime port specs. Every mistake is reported with the file,
// line and column it sits at. All mistakes of the file's shape are reported
// together, then all mistakes of its content; nothing starts from a
// half-valid file.

import { readFileSync } from 'node:fs';
import { LineCounter, isMap, isNode, isScalar, parseDocument, type Document } from 'yaml';
import { Ajv, type ErrorObject } from 'ajv';
import { macFromString } from '../wire/bytes.js';
import { parseCidr, type Acl, type AclRule, type PortSecurity } from '../switch/policy.js';
import type { OffloadBudget, PortKind, VlanConfig } from '../switch/port.js';
import type { PortSpec } from './runtime.js';
import { parseUdpEndpoint } from '../io/qemu-dgram.js';

// --- the file's shape ------------------------------------------------------------

const vlanId = { type: 'integer', minimum: 1, maximum: 4094 };
const portRange = {
  anyOf: [
    { type: 'integer', minimum: 0, maximum: 65535 },
    { type: 'string', pattern: '^\\d{1,5}-\\d{1,5}$' },
  ],
};
const aclRule = {
  type: 'object',
  additionalProperties: false,
  required: ['action'],
  properties: {
    action: { enum: ['allow', 'deny'] },
    src: { type: 'string' },
    dst: { type: 'string' },
    srcMac: { type: 'string' },
    dstMac: { type: 'string' },
    etherType: { anyOf: [{ enum: ['ipv4', 'ipv6', 'arp'] }, { type: 'integer', minimum: 0, maximum: 65535 }] },
    vlan: vlanId,
    protocol: { anyOf: [{ enum: ['tcp', 'udp', 'icmp', 'icmpv6', 'esp'] }, { type: 'integer', minimum: 0, maximum: 255 }] },
    srcPort: portRange,
    dstPort: portRange,
  },
};
const acl = {
  type: 'object',
  additionalProperties: false,
  properties: {
    default: { enum: ['allow', 'deny'] },
    rules: { type: 'array', items: aclRule },
  },
};

export const CONFIG_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['ports'],
  properties: {
    switch: {
      type: 'object',
      additionalProperties: false,
      properties: {
        name: { type: 'string', minLength: 1, maxLength: 32, pattern: '^[A-Za-z0-9_.-]*$' },
        macAgingSeconds: { type: 'number', minimum: 1, maximum: 86400 },
        api: {
          type: 'object',
          additionalProperties: false,
          properties: {
            socket: { type: 'string', minLength: 1 },
            listen: { type: 'string', pattern: '^(127\\.0\\.0\\.1|localhost|\\[::1\\]):\\d{1,5}$' },
            tokenFile: { type: 'string', minLength: 1 },
          },
        },
        log: {
          type: 'object',
          additionalProperties: false,
          properties: {
            level: { enum: ['debug', 'info', 'warn', 'error'] },
            format: { enum: ['json', 'text'] },
          },
        },
        stateDir: { type: 'string', minLength: 1 },
        workers: { type: 'integer', minimum: 0, maximum: 64 },
        workerReads: { type: 'boolean' },
        workerPorts: { type: 'array', items: { enum: ['synthetic', 'host', 'legacy', 'external'] }, uniqueItems: true },
        dataPlane: { enum: ['thread', 'main'] },
      },
    },
    ports: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'kind'],
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 32, pattern: '^[A-Za-z0-9_.-]*$' },
          kind: { enum: ['synthetic', 'host', 'legacy', 'external'] },
          device: { type: 'string', minLength: 1, maxLength: 15, pattern: '^[A-Za-z0-9_.-]*$' },
          mtu: { type: 'integer', minimum: 68, maximum: 65535 },
          mac: { type: 'string' },
          vlan: {
            anyOf: [
              { type: 'integer', minimum: 1, maximum: 4094 },
              {
                type: 'object', additionalProperties: false, required: ['mode', 'vlan'],
                properties: { mode: { const: 'access' }, vlan: vlanId },
              },
              {
                type: 'object', additionalProperties: false, required: ['mode'],
                properties: {
                  mode: { const: 'trunk' },
                  allowed: { anyOf: [{ const: 'all' }, { type: 'array', items: vlanId, minItems: 1 }] },
                  native: vlanId,
                },
              },
            ],
          },
          guest: {
            type: 'object',
            additionalProperties: false,
            required: ['namespace'],
            properties: {
              namespace: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.-]*$' },
              create: { type: 'boolean' },
              addresses: { type: 'array', items: { type: 'string' } },
              mac: { type: 'string' },
            },
          },
          addresses: { type: 'array', items: { type: 'string' } },
          passThrough: { type: 'boolean' },
          uro: { type: 'boolean' },
          offloads: {
            type: 'object',
            additionalProperties: false,
            properties: {
              checksum: { type: 'boolean' }, lso: { type: 'boolean' }, uso: { type: 'boolean' }, ipsec: { type: 'boolean' },
            },
          },
          budget: {
            type: 'object',
            additionalProperties: false,
            required: ['action'],
            properties: {
              cpuPercent: { type: 'number', exclusiveMinimum: 0, maximum: 100 },
              cpuNsPerSec: { type: 'number', exclusiveMinimum: 0 },
              burstMs: { type: 'number', exclusiveMinimum: 0 },
              action: { enum: ['drop', 'throttle'] },
              backlog: { type: 'integer', minimum: 1, maximum: 65536 },
            },
          },
          security: {
            type: 'object',
            additionalProperties: false,
            properties: {
              allowedMacs: { type: 'array', items: { type: 'string' } },
              allowedIps: { type: 'array', items: { type: 'string' } },
            },
          },
          acl: {
            type: 'object',
            additionalProperties: false,
            properties: { in: acl, out: acl },
          },
          maxMacs: { type: 'integer', minimum: 1 },
          staticMacs: { type: 'array', items: { type: 'string' } },
          queues: { type: 'integer', minimum: 1, maximum: 16 },
          txQueueLen: { type: 'integer', minimum: 16, maximum: 65536 },
          maxSa: { type: 'integer', minimum: 0, maximum: 65536 },
          qemu: {
            type: 'object',
            additionalProperties: false,
            properties: {
              socket: { type: 'string', minLength: 1 },
              mode: { enum: ['listen', 'connect'] },
              dgram: {
                type: 'object',
                additionalProperties: false,
                required: ['local', 'remote'],
                properties: { local: { type: 'string', minLength: 1 }, remote: { type: 'string', minLength: 1 } },
              },
            },
          },
          ipsec: {
            type: 'object',
            additionalProperties: false,
            properties: {
              enabled: { type: 'boolean' },
              algorithms: { type: 'array', minItems: 1, items: { enum: ['aes-gcm-128', 'aes-gcm-256'] } },
              maxSa: { type: 'integer', minimum: 1, maximum: 65536 },
              modes: { type: 'array', minItems: 1, items: { enum: ['transport', 'tunnel'] } },
            },
          },
        },
      },
    },
  },
} as const;

// --- what the file says, typed -------------------------------------------------------

export interface AclRuleYaml {
  action: 'allow' | 'deny';
  src?: string; dst?: string; srcMac?: string; dstMac?: string;
  etherType?: 'ipv4' | 'ipv6' | 'arp' | number;
  vlan?: number;
  protocol?: 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'esp' | number;
  srcPort?: number | string; dstPort?: number | string;
}
export interface AclYaml { default?: 'allow' | 'deny'; rules?: AclRuleYaml[] }

export interface PortYaml {
  name: string;
  kind: 'synthetic' | 'host' | 'legacy' | 'external';
  device?: string;
  mtu?: number;
  mac?: string;
  vlan?: number | { mode: 'access'; vlan: number } | { mode: 'trunk'; allowed?: 'all' | number[]; native?: number };
  guest?: { namespace: string; create?: boolean; addresses?: string[]; mac?: string };
  addresses?: string[];
  passThrough?: boolean;
  uro?: boolean;
  offloads?: { checksum?: boolean; lso?: boolean; uso?: boolean; ipsec?: boolean };
  budget?: { cpuPercent?: number; cpuNsPerSec?: number; burstMs?: number; action: 'drop' | 'throttle'; backlog?: number };
  security?: { allowedMacs?: string[]; allowedIps?: string[] };
  acl?: { in?: AclYaml; out?: AclYaml };
  maxMacs?: number;
  /** MACs pinned to this port (never learned elsewhere, never aged). */
  staticMacs?: string[];
  /** TAP queues (multi-queue, VMQ-like) for synthetic and host ports. */
  queues?: number;
  /** Frames the guest may queue towards the switch, per TAP queue (the TAP's txqueuelen). */
  txQueueLen?: number;
  /** vNICs: how many SAs the guest may offload. */
  maxSa?: number;
  /** Legacy ports: a QEMU VM's -netdev stream socket instead of a TAP. */
  qemu?: { socket?: string; mode?: 'listen' | 'connect'; dgram?: { local: string; remote: string } };
  /** External ports: vswitch's ESP engine acts as this uplink's IPsec offload. */
  ipsec?: { enabled?: boolean; algorithms?: ('aes-gcm-128' | 'aes-gcm-256')[]; maxSa?: number; modes?: ('transport' | 'tunnel')[] };
}

export interface SwitchYaml {
  name?: string;
  macAgingSeconds?: number;
  api?: { socket?: string; listen?: string; tokenFile?: string };
  log?: { level?: 'debug' | 'info' | 'warn' | 'error'; format?: 'json' | 'text' };
  stateDir?: string;
  /** I/O worker threads (0: all I/O on the main thread). */
  workers?: number;
  /** With workers: whether they read the queues too (true) or only write them (default). */
  workerReads?: boolean;
  /** With workers: the kinds of port whose queues they take (default legacy and external). */
  workerPorts?: PortKind[];
  /** Where the switch's pipeline runs: a thread of its own (default) or the main thread. */
  dataPlane?: 'thread' | 'main';
}

export interface ConfigYaml {
  switch?: SwitchYaml;
  ports: PortYaml[];
}

export interface SwitchSettings {
  name: string;
  macAgingMs: number;
  socket: string;
  listen: string | null;
  /** The bearer token the loopback API asks for (made, mode 0600, when missing). */
  tokenFile: string;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  logFormat: 'json' | 'text';
  stateDir: string;
  workers: number;
  workerReads: boolean;
  workerPorts: PortKind[];
  dataPlane: 'thread' | 'main';
}

export interface LoadedConfig {
  settings: SwitchSettings;
  ports: PortSpec[];
}

export const DEFAULT_STATE_DIR = '/run/vswitch';
/**
 * By default one I/O worker writes the legacy NICs and uplinks: where the switch
 * segments and checksums in software, one frame in becomes dozens of writes,
 * and a second thread for them doubles what those paths carry; a vNIC's
 * pass-through super-frame is one write, where a hand-off costs more than it
 * saves (measured: docs/benchmarks.md).
 */
export const DEFAULT_WORKERS = 1;
export const DEFAULT_WORKER_READS = false;
export const DEFAULT_WORKER_PORTS: PortKind[] = ['legacy', 'external'];
/**
 * The pipeline runs on a thread of its own: the main thread keeps the control
 * plane (API front end, configuration, signals, logs), and nothing there
 * delays a packet (docs/architecture.md).
 */
export const DEFAULT_DATA_PLANE = 'thread';

// --- errors -------------------------------------------------------------------------------

export interface ConfigIssue {
  file: string;
  line: number;
  col: number;
  /** Where in the document, e.g. ports[1].mtu */
  path: string;
  message: string;
}

export class ConfigError extends Error {
  constructor(readonly issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
  }
}

export function formatIssue(i: ConfigIssue): string {
  const where = i.line > 0 ? `${i.file}:${i.line}:${i.col}` : i.file;
  return `${where}: ${i.path === '' ? '' : `${i.path}: `}${i.message}`;
}

type PathPart = string | number;

function pathText(path: readonly PathPart[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s === '' ? p : `.${p}`;
  return s;
}

class Located {
  readonly issues: ConfigIssue[] = [];
  constructor(readonly file: string, readonly doc: Document, readonly lines: LineCounter) {}

  /** Position of the node at `path` (or its nearest ancestor that exists); of the key itself with `key`. */
  pos(path: readonly PathPart[], key = false): { line: number; col: number } {
    if (key && path.length > 0) {
      const parent = path.length === 1 ? this.doc.contents : this.doc.getIn(path.slice(0, -1), true);
      if (isMap(parent)) {
        const last = path[path.length - 1];
        const pair = parent.items.find((it) => isScalar(it.key) && it.key.value === last);
        if (pair !== undefined && isNode(pair.key) && pair.key.range) return this.lines.linePos(pair.key.range[0]);
      }
    }
    for (let n = path.length; n >= 0; n--) {
      const node = n === 0 ? this.doc.contents : this.doc.getIn(path.slice(0, n), true);
      if (isNode(node) && node.range) return this.lines.linePos(node.range[0]);
    }
    return { line: 1, col: 1 };
  }

  add(path: readonly PathPart[], message: string, key = false): void {
    const { line, col } = this.pos(path, key);
    this.issues.push({ file: this.file, line, col, path: pathText(path), message });
  }
}

function ajvPath(e: ErrorObject): PathPart[] {
  return e.instancePath.split('/').slice(1).map((s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/~1/g, '/').replace(/~0/g, '~')));
}

function ajvMessage(e: ErrorObject): string {
  switch (e.keyword) {
    case 'additionalProperties':
      return `unknown key "${(e.params as { additionalProperty: string }).additionalProperty}"`;
    case 'required':
      return `missing required key "${(e.params as { missingProperty: string }).missingProperty}"`;
    case 'enum':
      return `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'const':
      return `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
    case 'pattern':
      return 'may only contain letters, digits, ".", "_" and "-"';
    case 'anyOf':
      return 'is not any of the accepted forms';
    default:
      return e.message ?? e.keyword;
  }
}

let validator: ReturnType<Ajv['compile']> | null = null;

function validate(data: unknown): ErrorObject[] {
  if (validator === null) validator = new Ajv({ allErrors: true, strict: true }).compile(CONFIG_SCHEMA);
  return validator(data) ? [] : [...(validator.errors ?? [])];
}

/**
 * Keep the useful errors. For an anyOf (e.g. a VLAN given as a number, an
 * access object or a trunk object), ajv reports every branch's complaints;
 * keep only the branch the value was evidently meant for: one whose own
 * type/const checks passed, preferring the one that got deepest.
 */
function pickErrors(errors: ErrorObject[]): ErrorObject[] {
  const drop = new Set<ErrorObject>();
  for (const any of errors.filter((e) => e.keyword === 'anyOf')) {
    const prefix = `${any.schemaPath.replace(/\/anyOf$/, '')}/anyOf/`;
    const branches = new Map<string, ErrorObject[]>();
    for (const e of errors) {
      if (!e.schemaPath.startsWith(prefix)) continue;
      const branch = e.schemaPath.slice(prefix.length).split('/')[0]!;
      (branches.get(branch) ?? branches.set(branch, []).get(branch)!).push(e);
    }
    const fitting = [...branches.values()].filter((errs) => !errs.some((e) =>
      e.instancePath === any.instancePath && (e.keyword === 'type' || e.keyword === 'const' || e.keyword === 'enum')));
    const depth = (errs: ErrorObject[]) => Math.max(...errs.map((e) => e.instancePath.length));
    const best = fitting.sort((x, y) => depth(y) - depth(x))[0];
    for (const errs of branches.values()) if (errs !== best) for (const e of errs) drop.add(e);
    if (best !== undefined) drop.add(any);
  }
  const out = errors.filter((e) => !drop.has(e));
  // Several branches all rejected the type: say it once.
  const seen = new Set<string>();
  return out.filter((e) => {
    const k = `${e.instancePath}|${e.keyword === 'anyOf' ? 'anyOf' : e.keyword}|${e.keyword === 'type' ? '' : JSON.stringify(e.params)}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

// --- conversion ----------------------------------------------------------------------------

const PROTOCOLS = { tcp: 6, udp: 17, icmp: 1, icmpv6: 58, esp: 50 } as const;
const ETHERTYPES = { ipv4: 0x0800, ipv6: 0x86dd, arp: 0x0806 } as const;

function range(v: number | string, at: readonly PathPart[], L: Located): readonly [number, number] | undefined {
  if (typeof v === 'number') return [v, v];
  const [a, b] = v.split('-').map(Number) as [number, number];
  if (a > b || b > 65535) { L.add(at, `port range ${v} is not low-high within 0-65535`); return undefined; }
  return [a, b];
}

function mac(v: string, at: readonly PathPart[], L: Located): number | undefined {
  const m = macFromString(v);
  if (m === null) L.add(at, `"${v}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  return m ?? undefined;
}

function cidr(v: string, at: readonly PathPart[], L: Located, needPrefix: boolean) {
  const c = parseCidr(v);
  if (c === null || (needPrefix && !v.includes('/'))) {
    L.add(at, needPrefix ? `"${v}" is not an address with a prefix length (198.18.0.1/24, 2001:db8::1/64)` : `"${v}" is not an IPv4/IPv6 address or prefix`);
    return undefined;
  }
  return c;
}

function convertAcl(a: AclYaml, at: readonly PathPart[], L: Located): Acl {
  const rules: AclRule[] = [];
  (a.rules ?? []).forEach((r, i) => {
    const p = [...at, 'rules', i];
    const rule: AclRule = { action: r.action };
    if (r.src !== undefined) { const c = cidr(r.src, [...p, 'src'], L, false); if (c) rule.src = c; }
    if (r.dst !== undefined) { const c = cidr(r.dst, [...p, 'dst'], L, false); if (c) rule.dst = c; }
    if (r.srcMac !== undefined) { const m = mac(r.srcMac, [...p, 'srcMac'], L); if (m !== undefined) rule.srcMac = m; }
    if (r.dstMac !== undefined) { const m = mac(r.dstMac, [...p, 'dstMac'], L); if (m !== undefined) rule.dstMac = m; }
    if (r.etherType !== undefined) rule.etherType = typeof r.etherType === 'number' ? r.etherType : ETHERTYPES[r.etherType];
    if (r.vlan !== undefined) rule.vlan = r.vlan;
    if (r.protocol !== undefined) rule.protocol = typeof r.protocol === 'number' ? r.protocol : PROTOCOLS[r.protocol];
    if (r.srcPort !== undefined) { const x = range(r.srcPort, [...p, 'srcPort'], L); if (x) rule.srcPort = x; }
    if (r.dstPort !== undefined) { const x = range(r.dstPort, [...p, 'dstPort'], L); if (x) rule.dstPort = x; }
    if ((r.srcPort !== undefined || r.dstPort !== undefined) && r.protocol !== undefined &&
        rule.protocol !== PROTOCOLS.tcp && rule.protocol !== PROTOCOLS.udp) {
      L.add(p, 'ports only make sense with protocol tcp or udp');
    }
    rules.push(rule);
  });
  return { rules, defaultAction: a.default ?? 'allow' };
}

function convertVlan(v: NonNullable<PortYaml['vlan']>, at: readonly PathPart[], L: Located): VlanConfig {
  if (typeof v === 'number') return { mode: 'access', vlan: v };
  if (v.mode === 'access') return { mode: 'access', vlan: v.vlan };
  const allowed = v.allowed ?? 'all';
  if (allowed !== 'all' && new Set(allowed).size !== allowed.length) L.add([...at, 'allowed'], 'lists a VLAN twice');
  return v.native !== undefined ? { mode: 'trunk', allowed, native: v.native } : { mode: 'trunk', allowed };
}

function convertBudget(b: NonNullable<PortYaml['budget']>, at: readonly PathPart[], L: Located): OffloadBudget | undefined {
  if ((b.cpuPercent === undefined) === (b.cpuNsPerSec === undefined)) {
    L.add(at, 'give exactly one of cpuPercent or cpuNsPerSec');
    return undefined;
  }
  const cpuNsPerSec = b.cpuNsPerSec ?? (b.cpuPercent! / 100) * 1e9;
  const out: OffloadBudget = { cpuNsPerSec, action: b.action };
  if (b.burstMs !== undefined) out.burstNs = b.burstMs * 1e6;
  if (b.backlog !== undefined) out.backlog = b.backlog;
  return out;
}

function convertPort(p: PortYaml, i: number, L: Located): PortSpec {
  const at: PathPart[] = ['ports', i];
  const spec: PortSpec = { name: p.name, kind: p.kind };
  if (p.device !== undefined) spec.device = p.device;
  if (p.mtu !== undefined) spec.mtu = p.mtu;
  if (p.mac !== undefined) { const m = mac(p.mac, [...at, 'mac'], L); if (m !== undefined) spec.mac = m; }
  if (p.vlan !== undefined) spec.vlan = convertVlan(p.vlan, [...at, 'vlan'], L);
  if (p.passThrough !== undefined) spec.passThrough = p.passThrough;
  if (p.uro !== undefined) spec.uro = p.uro;
  if (p.offloads !== undefined) spec.offloads = { ...p.offloads };
  if (p.maxMacs !== undefined) spec.maxMacs = p.maxMacs;
  if (p.budget !== undefined) { const b = convertBudget(p.budget, [...at, 'budget'], L); if (b) spec.budget = b; }
  if (p.security !== undefined) {
    const sec: PortSecurity = {};
    if (p.security.allowedMacs !== undefined) {
      sec.allowedMacs = p.security.allowedMacs.map((m, k) => mac(m, [...at, 'security', 'allowedMacs', k], L)).filter((m): m is number => m !== undefined);
    }
    if (p.security.allowedIps !== undefined) {
      sec.allowedIps = p.security.allowedIps.map((c, k) => cidr(c, [...at, 'security', 'allowedIps', k], L, false)).filter((c) => c !== undefined);
    }
    spec.security = sec;
  }
  if (p.acl?.in !== undefined) spec.aclIn = convertAcl(p.acl.in, [...at, 'acl', 'in'], L);
  if (p.acl?.out !== undefined) spec.aclOut = convertAcl(p.acl.out, [...at, 'acl', 'out'], L);
  if (p.guest !== undefined) {
    if (p.kind === 'external' || p.kind === 'host') {
      L.add([...at, 'guest'], `a ${p.kind} port has no guest namespace${p.kind === 'host' ? ' (use addresses for the host side)' : ''}`);
    }
    p.guest.addresses?.forEach((a, k) => cidr(a, [...at, 'guest', 'addresses', k], L, true));
    if (p.guest.mac !== undefined) mac(p.guest.mac, [...at, 'guest', 'mac'], L);
    spec.guest = { ...p.guest };
  }
  if (p.addresses !== undefined) {
    if (p.kind !== 'host') L.add([...at, 'addresses'], 'only host ports take addresses here (guests: guest.addresses)');
    p.addresses.forEach((a, k) => cidr(a, [...at, 'addresses', k], L, true));
    spec.addresses = [...p.addresses];
  }
  if (p.kind === 'legacy' && (p.passThrough === true || p.uro === true || p.offloads !== undefined)) {
    L.add([...at, p.offloads !== undefined ? 'offloads' : p.uro === true ? 'uro' : 'passThrough'], 'a legacy port never gets offloads');
  }
  if (p.queues !== undefined) {
    if (p.kind !== 'synthetic' && p.kind !== 'host') L.add([...at, 'queues'], 'only synthetic and host vNICs have several queues');
    spec.queues = p.queues;
  }
  if (p.txQueueLen !== undefined) {
    if (p.kind === 'external' || p.qemu !== undefined) {
      L.add([...at, 'txQueueLen'], `only a TAP port has a queue length here (${p.kind === 'external' ? "an uplink's is its NIC's: ip link set DEV txqueuelen N" : 'a QEMU socket has none'})`);
    }
    spec.txQueueLen = p.txQueueLen;
  }
  if (p.staticMacs !== undefined) {
    spec.staticMacs = p.staticMacs.map((m, k) => mac(m, [...at, 'staticMacs', k], L)).filter((m): m is number => m !== undefined);
  }
  if (p.maxSa !== undefined) {
    if (!(p.kind === 'synthetic' || p.kind === 'host')) L.add([...at, 'maxSa'], 'only host and synthetic vNICs offload SAs');
    spec.maxSa = p.maxSa;
  }
  if (p.qemu !== undefined) {
    if (p.kind !== 'legacy') L.add([...at, 'qemu'], 'only a legacy port connects to a QEMU socket (an emulated NIC)');
    if (p.guest !== undefined) L.add([...at, 'guest'], 'a QEMU port has no guest namespace: the VM is the guest');
    const q = p.qemu;
    if ((q.socket === undefined) === (q.dgram === undefined)) {
      L.add([...at, 'qemu'], 'give either socket (QEMU -netdev stream) or dgram (QEMU -netdev dgram), not both or neither');
    } else if (q.socket !== undefined) {
      spec.qemu = { socket: q.socket, ...(q.mode !== undefined ? { mode: q.mode } : {}) };
    } else {
      if (q.mode !== undefined) L.add([...at, 'qemu', 'mode'], 'mode is for a stream socket; a dgram port just sends and receives');
      const local = parseUdpEndpoint(q.dgram!.local);
      const remote = parseUdpEndpoint(q.dgram!.remote);
      if (local === null) L.add([...at, 'qemu', 'dgram', 'local'], `"${q.dgram!.local}" is not IPv4:PORT or [IPv6]:PORT`);
      if (remote === null) L.add([...at, 'qemu', 'dgram', 'remote'], `"${q.dgram!.remote}" is not IPv4:PORT or [IPv6]:PORT`);
      if (local !== null && remote !== null) {
        if (local.host.includes(':') !== remote.host.includes(':')) L.add([...at, 'qemu', 'dgram'], 'local and remote must both be IPv4 or both IPv6');
        spec.qemu = { dgram: { local, remote } };
      }
    }
  }
  if (p.ipsec !== undefined) {
    if (p.kind !== 'external') L.add([...at, 'ipsec'], 'only an external port has an IPsec engine (vNICs: offloads.ipsec and maxSa)');
    const modes = p.ipsec.modes ?? ['transport', 'tunnel'];
    spec.ipsecEngine = {
      enabled: p.ipsec.enabled ?? true,
      algorithms: [...new Set(p.ipsec.algorithms ?? ['aes-gcm-128', 'aes-gcm-256'] as const)],
      maxSa: p.ipsec.maxSa ?? 64,
      transport: modes.includes('transport'),
      tunnel: modes.includes('tunnel'),
      v4: true,
      v6: true,
    };
  }
  if (p.kind === 'external' && p.device === undefined && p.name.length > 15) {
    L.add([...at, 'name'], 'an external port needs device: (the NIC to bind) when its name is not the device name');
  }
  return spec;
}

/** Parse and check YAML text; throws ConfigError with every issue found. */
export function parseConfig(text: string, file = '<config>'): LoadedConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const L = new Located(file, doc, lines);
  for (const e of doc.errors) {
    // linePos is only filled in with prettyErrors; the offset always is.
    const pos = lines.linePos(e.pos[0]);
    L.issues.push({ file, line: pos.line, col: pos.col, path: '', message: `YAML: ${e.message.split('\n')[0]}` });
  }
  if (L.issues.length > 0) throw new ConfigError(L.issues);
  const data = doc.toJS() as unknown;
  if (data === null || data === undefined) {
    throw new ConfigError([{ file, line: 1, col: 1, path: '', message: 'the file is empty: it needs at least "ports:"' }]);
  }
  for (const e of pickErrors(validate(data))) {
    const path = ajvPath(e);
    const extra = e.keyword === 'additionalProperties' ? [(e.params as { additionalProperty: string }).additionalProperty] : [];
    L.add([...path, ...extra], ajvMessage(e), extra.length > 0);
  }
  if (L.issues.length > 0) throw new ConfigError(L.issues);

  const cfg = data as ConfigYaml;
  const names = new Map<string, number>();
  const devices = new Map<string, number>();
  const namespaces = new Map<string, number>();
  const ports = cfg.ports.map((p, i) => {
    const prevName = names.get(p.name);
    if (prevName !== undefined) L.add(['ports', i, 'name'], `port name "${p.name}" is used by ports[${prevName}] too`);
    names.set(p.name, i);
    const dev = p.device ?? p.name;
    if (dev.length > 15) L.add(['ports', i, p.device === undefined ? 'name' : 'device'], `device name "${dev}" is longer than 15 characters (set device:)`);
    const prevDev = devices.get(dev);
    if (prevDev !== undefined) L.add(['ports', i, p.device === undefined ? 'name' : 'device'], `device "${dev}" is used by ports[${prevDev}] too${p.device === undefined ? ' (a port without device: uses its name)' : ''}`);
    devices.set(dev, i);
    if (p.guest?.create === true) {
      const prevNs = namespaces.get(p.guest.namespace);
      if (prevNs !== undefined) L.add(['ports', i, 'guest', 'namespace'], `namespace "${p.guest.namespace}" is created by ports[${prevNs}] too`);
      namespaces.set(p.guest.namespace, i);
    }
    return convertPort(p, i, L);
  });
  if (L.issues.length > 0) throw new ConfigError(L.issues);

  const s = cfg.switch ?? {};
  const name = s.name ?? 'vswitch';
  const stateDir = s.stateDir ?? DEFAULT_STATE_DIR;
  return {
    settings: {
      name,
      macAgingMs: (s.macAgingSeconds ?? 300) * 1000,
      socket: s.api?.socket ?? `${stateDir}/${name}.sock`,
      listen: s.api?.listen ?? null,
      tokenFile: s.api?.tokenFile ?? `${stateDir}/${name}.token`,
      logLevel: s.log?.level ?? 'info',
      logFormat: s.log?.format ?? 'json',
      stateDir,
      workers: s.workers ?? DEFAULT_WORKERS,
      workerReads: s.workerReads ?? DEFAULT_WORKER_READS,
      workerPorts: s.workerPorts ?? DEFAULT_WORKER_PORTS,
      dataPlane: s.dataPlane ?? DEFAULT_DATA_PLANE,
    },
    ports,
  };
}

/** Read and check a config file. */
export function loadConfig(path: string): LoadedConfig {
  return parseConfig(readConfigText(path), path);
}

/** A configuration file's text; a ConfigError naming the file when it cannot be read. */
export function readConfigText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError([{ file: path, line: 0, col: 0, path: '', message: `cannot read: ${(e as Error).message}` }]);
  }
}

/** Check one port (API requests): the same rules as in a file. */
export function parsePortSpec(p: unknown, where = '<request>'): PortSpec {
  const cfg = parseConfig(JSON.stringify({ ports: [p] }), where);
  return cfg.ports[0]!;
}
