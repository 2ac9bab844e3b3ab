// The SA file the guest agent is given: the security associations the VM's
// key exchange ("IKE") agreed on, both directions, with their keys. JSON:
//
//   {"sas": [
//     {"direction": "out", "spi": 4096, "mode": "transport", "algorithm": "aes-gcm-128",
//      "key": "<hex, 16 or 32 bytes>", "salt": "<hex, 4 bytes>",
//      "src": "198.18.10.1", "dst": "198.18.10.9",
//      "selector": {"protocol": 6, "dstPort": 5001}, "replayWindow": 64},
//     {"direction": "in", ...}
//   ]}
//
// (a bare list of SAs is accepted too). Every problem is reported with the
// SA's place in the file and what is wrong, before anything is offloaded.

import { ESP_KEY_BYTES, ESP_SALT_BYTES, MAX_REPLAY_WINDOW, type EspAlgorithm, type SecurityAssociation, type TrafficSelector } from '../offload/ipsec/sa.js';
import { AddressPrefix } from '../offload/ipsec/esp.js';
import { ipv4FromString, ipv6FromString, ipv6ToString } from '../wire/bytes.js';

export class SaFileError extends Error {}

const FIELDS = new Set(['direction', 'spi', 'mode', 'algorithm', 'key', 'salt', 'src', 'dst', 'selector', 'replayWindow', 'seq', 'comment']);
const SELECTOR_FIELDS = new Set(['src', 'dst', 'protocol', 'srcPort', 'dstPort']);

/** An address in the one text form the switch and the agent compare (IPv6 compressed, IPv4 without leading zeros); null if not an address. */
export function canonicalIp(ip: string): string | null {
  if (ip.includes(':')) {
    const b = ipv6FromString(ip);
    return b === null ? null : ipv6ToString(b);
  }
  const n = ipv4FromString(ip);
  return n === null ? null : ip.split('.').map(Number).join('.');
}

export function bytesToHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

function hexBytes(v: unknown, what: string): Uint8Array {
  if (typeof v !== 'string' || !/^(0x)?([0-9a-fA-F]{2})+$/.test(v)) throw new SaFileError(`${what} must be hex bytes`);
  return new Uint8Array(Buffer.from(v.replace(/^0x/, ''), 'hex'));
}

/** One SA of the file, checked; `where` names it in messages ("sas[1] (out 0x1001)"). */
export function parseSa(o: unknown, where: string): SecurityAssociation {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new SaFileError(`${where}: an SA must be a JSON object`);
  const r = o as Record<string, unknown>;
  for (const k of Object.keys(r)) if (!FIELDS.has(k)) throw new SaFileError(`${where}: unknown field "${k}"`);
  const direction = r['direction'];
  if (direction !== 'in' && direction !== 'out') throw new SaFileError(`${where}: direction must be "in" or "out"`);
  const spi = r['spi'];
  if (typeof spi !== 'number' || !Number.isInteger(spi) || spi < 1 || spi > 0xffffffff) {
    throw new SaFileError(`${where}: spi must be an integer 1..0xffffffff (0 is reserved)`);
  }
  const at = `${where} (${direction} 0x${spi.toString(16)})`;
  const mode = r['mode'] ?? 'transport';
  if (mode !== 'transport' && mode !== 'tunnel') throw new SaFileError(`${at}: mode must be "transport" or "tunnel"`);
  const algorithm = r['algorithm'] ?? 'aes-gcm-128';
  if (algorithm !== 'aes-gcm-128' && algorithm !== 'aes-gcm-256') throw new SaFileError(`${at}: algorithm must be aes-gcm-128 or aes-gcm-256`);
  const key = hexBytes(r['key'], `${at}: key`);
  if (key.length !== ESP_KEY_BYTES[algorithm as EspAlgorithm]) {
    throw new SaFileError(`${at}: ${algorithm} takes a ${ESP_KEY_BYTES[algorithm as EspAlgorithm]}-byte key, this one has ${key.length}`);
  }
  const salt = hexBytes(r['salt'], `${at}: salt`);
  if (salt.length !== ESP_SALT_BYTES) throw new SaFileError(`${at}: the GCM salt is ${ESP_SALT_BYTES} bytes, this one has ${salt.length}`);
  const addr = (k: 'src' | 'dst'): string => {
    const v = r[k];
    const c = typeof v === 'string' ? canonicalIp(v) : null;
    if (c === null) throw new SaFileError(`${at}: ${k} must be an IPv4 or IPv6 address`);
    return c;
  };
  const src = addr('src');
  const dst = addr('dst');
  if (src.includes(':') !== dst.includes(':')) throw new SaFileError(`${at}: src and dst must be of one address family`);
  const sa: SecurityAssociation = { spi, direction, mode, algorithm: algorithm as EspAlgorithm, key, salt, src, dst };
  if (r['selector'] !== undefined) sa.selector = parseSelector(r['selector'], at);
  if (r['replayWindow'] !== undefined) {
    const w = r['replayWindow'];
    if (typeof w !== 'number' || !Number.isInteger(w) || w < 0 || w > MAX_REPLAY_WINDOW) {
      throw new SaFileError(`${at}: replayWindow must be an integer 0..${MAX_REPLAY_WINDOW}`);
    }
    sa.replayWindow = w;
  }
  if (r['seq'] !== undefined) {
    const s = r['seq'];
    if (typeof s !== 'number' || !Number.isInteger(s) || s < 1 || s > 0xffffffff) throw new SaFileError(`${at}: seq must be an integer 1..0xffffffff`);
    sa.seq = s;
  }
  return sa;
}

function parseSelector(v: unknown, at: string): TrafficSelector {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new SaFileError(`${at}: selector must be an object`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!SELECTOR_FIELDS.has(k)) throw new SaFileError(`${at}: unknown selector field "${k}"`);
  const sel: TrafficSelector = {};
  for (const k of ['src', 'dst'] as const) {
    if (o[k] === undefined) continue;
    if (typeof o[k] !== 'string') throw new SaFileError(`${at}: selector ${k} must be an address or prefix`);
    try {
      AddressPrefix.parse(o[k] as string, `selector ${k}`);
    } catch (e) {
      throw new SaFileError(`${at}: ${(e as Error).message}`);
    }
    sel[k] = o[k] as string;
  }
  const int = (k: 'protocol' | 'srcPort' | 'dstPort', max: number) => {
    if (o[k] === undefined) return;
    const n = o[k];
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > max) throw new SaFileError(`${at}: selector ${k} must be an integer 0..${max}`);
    sel[k] = n;
  };
  int('protocol', 255);
  int('srcPort', 65535);
  int('dstPort', 65535);
  return sel;
}

/** The whole file's text: its SAs, checked, with no two of one direction sharing an SPI. */
export function parseSaFile(text: string, name = 'SA file'): SecurityAssociation[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SaFileError(`${name}: not JSON (${(e as Error).message})`);
  }
  const list = Array.isArray(json) ? json : (json as Record<string, unknown> | null)?.['sas'];
  if (!Array.isArray(list)) throw new SaFileError(`${name}: expected {"sas": [...]} or a list of SAs`);
  if (list.length === 0) throw new SaFileError(`${name}: no SAs`);
  const sas = list.map((o, i) => parseSa(o, `${name}: sas[${i}]`));
  const seen = new Set<string>();
  for (const sa of sas) {
    const k = `${sa.direction}/${sa.spi}`;
    if (seen.has(k)) throw new SaFileError(`${name}: two ${sa.direction}bound SAs with SPI 0x${sa.spi.toString(16)}`);
    seen.add(k);
  }
  return sas;
}

/** The peer an SA protects traffic with: the destination of an outbound SA, the source of an inbound one. */
export function peerOf(sa: SecurityAssociation): string {
  return sa.direction === 'out' ? sa.dst : sa.src;
}

/** The VM's own address in an SA. */
export function localOf(sa: SecurityAssociation): string {
  return sa.direction === 'out' ? sa.src : sa.dst;
}

/** The body of POST /v1/guest/sas for an SA (keys as hex). */
export function saRequestBody(sa: SecurityAssociation): Record<string, unknown> {
  const b: Record<string, unknown> = {
    spi: sa.spi, direction: sa.direction, mode: sa.mode, algorithm: sa.algorithm,
    key: bytesToHex(sa.key), salt: bytesToHex(sa.salt), src: sa.src, dst: sa.dst,
  };
  if (sa.selector !== undefined) b['selector'] = sa.selector;
  if (sa.seq !== undefined) b['seq'] = sa.seq;
  if (sa.replayWindow !== undefined) b['replayWindow'] = sa.replayWindow;
  return b;
}

/** Short name of an SA for messages: "out 0x1001 198.18.10.1→198.18.10.9". */
export function saName(sa: Pick<SecurityAssociation, 'direction' | 'spi' | 'src' | 'dst'>): string {
  return `${sa.direction} 0x${sa.spi.toString(16)} ${sa.src}→${sa.dst}`;
}
