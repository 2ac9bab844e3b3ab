// TUN flags and ethtool features, against what this machine's kernel did
// (test/vectors/translate/tun-ethtool.json, ethtool-k-*.txt; regenerate with
// test/vectors/translate/tun-ethtool.py) and the uapi header.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { existsSync, readFileSync } from 'node:fs';
import {
  TUN_F, TUN_F_KNOWN, capabilitiesFromEthtool, ethtoolHasEspOffload, ethtoolOn, fromTunOffloadFlags,
  linuxFeaturesForTunFlags, parseEthtoolK, toTunOffloadFlags, tunFlagNames, tunOffloadRefusal,
} from '../../../../src/offload/translate/linux.js';
import {
  checksumAll, checksumNone, noOffloads, normalizeCapabilities, segmentationAll, segmentationNone, vnicOffloads,
} from '../../../../src/offload/capabilities.js';
import { arbCaps, overPromises, readVector } from './caps-arb.js';
import { need } from '../../../util/env.js';

interface TunVectors {
  kernel: string;
  flagBits: Record<string, number>;
  baseline: { flags: string; features: Record<string, string> };
  cases: Array<{ flags: string; error?: string; changed?: Record<string, string> }>;
}

const V = JSON.parse(readVector('tun-ethtool.json')) as TunVectors;

function tableFor(c: TunVectors['cases'][number]): Record<string, string> {
  return { ...V.baseline.features, ...c.changed };
}


test('the vectors cover every combination of the nine known bits and each higher bit', () => {
  const flags = V.cases.map((c) => Number(c.flags));
  for (let f = 0; f <= TUN_F_KNOWN; f++) assert.ok(flags.includes(f), `0x${f.toString(16)} measured`);
  for (let bit = 9; bit < 32; bit++) assert.ok(flags.includes((0x03 | 2 ** bit) >>> 0), `bit ${bit} measured`);
  assert.match(V.kernel, /^\d+\.\d+/);
});

test('TUN_F_* values equal the uapi header (the bits it has) and the vectors', (t) => {
  const header = '/usr/include/linux/if_tun.h';
  assert.deepEqual(V.flagBits, Object.fromEntries(Object.entries(TUN_F).map(([k, v]) => [`TUN_F_${k}`, v])));
  if (!need(t, existsSync(header), `needs ${header} (linux-libc-dev)`)) return;
  const text = readFileSync(header, 'utf8');
  const defs = new Map([...text.matchAll(/#define\s+(TUN_F_\w+)\s+(0x[0-9a-fA-F]+|\d+)/g)].map((m) => [m[1]!, Number(m[2])]));
  assert.ok(defs.size >= 5, 'the header defines TUN_F_CSUM..TUN_F_UFO');
  for (const [name, value] of defs) {
    const ours = (TUN_F as Record<string, number>)[name.slice('TUN_F_'.length)];
    assert.equal(ours, value, name);
  }
});

test('tunOffloadRefusal says EINVAL exactly where this kernel said it, for all 535 measured flag values', () => {
  const wrong: string[] = [];
  for (const c of V.cases) {
    const refused = tunOffloadRefusal(Number(c.flags)) !== null;
    if (refused !== (c.error === 'EINVAL')) wrong.push(`${c.flags}: model ${refused ? 'refuses' : 'accepts'}, kernel ${c.error ?? 'accepted'}`);
  }
  assert.deepEqual(wrong, []);
  assert.equal(V.cases.filter((c) => c.error === undefined).length, 81);
});

test('refusal reasons name the rule the kernel applies', () => {
  assert.equal(tunOffloadRefusal(TUN_F.TSO4), 'needs-csum');
  assert.equal(tunOffloadRefusal(TUN_F.UFO), 'needs-csum');
  assert.equal(tunOffloadRefusal(TUN_F.CSUM | TUN_F.TSO_ECN), 'ecn-needs-tso');
  assert.equal(tunOffloadRefusal(TUN_F.CSUM | TUN_F.USO4), 'uso-needs-both');
  assert.equal(tunOffloadRefusal(TUN_F.CSUM | TUN_F.USO6), 'uso-needs-both');
  assert.equal(tunOffloadRefusal(TUN_F.CSUM | TUN_F.UDP_TUNNEL_GSO), 'tunnel-needs-gso');
  assert.equal(tunOffloadRefusal(TUN_F.CSUM | TUN_F.TSO4 | TUN_F.UDP_TUNNEL_GSO_CSUM), 'tunnel-csum-needs-tunnel');
  assert.equal(tunOffloadRefusal(0x200 | TUN_F.CSUM), 'unknown-flag');
  assert.equal(tunOffloadRefusal(-1), 'not-a-flag-word');
  assert.equal(tunOffloadRefusal(1.5), 'not-a-flag-word');
  assert.equal(tunOffloadRefusal(2 ** 32), 'not-a-flag-word');
  assert.equal(tunOffloadRefusal(0), null);
  assert.equal(tunOffloadRefusal(TUN_F.CSUM | TUN_F.UFO), null);
  assert.deepEqual(tunFlagNames(0x6f), ['TUN_F_CSUM', 'TUN_F_TSO4', 'TUN_F_TSO6', 'TUN_F_TSO_ECN', 'TUN_F_USO4', 'TUN_F_USO6']);
});

test('linuxFeaturesForTunFlags equals the measured ethtool -k table, for every accepted flag value', () => {
  const wrong: string[] = [];
  const varying = new Set<string>();
  for (const c of V.cases) {
    const flags = Number(c.flags);
    const ours = linuxFeaturesForTunFlags(flags);
    if (c.error !== undefined) {
      if (ours !== null) wrong.push(`${c.flags}: kernel refused, model gives features`);
      continue;
    }
    if (ours === null) {
      wrong.push(`${c.flags}: kernel accepted, model refuses`);
      continue;
    }
    for (const k of Object.keys(c.changed ?? {})) varying.add(k);
    const table = tableFor(c);
    for (const [k, v] of Object.entries(ours)) {
      if (!(k in table)) wrong.push(`${c.flags}: ethtool -k has no ${k}`);
      else if (ethtoolOn(table[k]) !== v) wrong.push(`${c.flags}: ${k} measured "${table[k]}", model ${v ? 'on' : 'off'}`);
    }
  }
  assert.deepEqual(wrong, []);
  // the function covers every feature TUNSETOFFLOAD changes
  const keys = Object.keys(linuxFeaturesForTunFlags(0)!);
  assert.deepEqual([...varying].filter((k) => !keys.includes(k)), []);
  assert.ok(varying.size >= 9);
});

test('toTunOffloadFlags: what the switch gives a vNIC, and the kernel\'s rules', () => {
  assert.equal(toTunOffloadFlags(vnicOffloads()), TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6 | TUN_F.TSO_ECN | TUN_F.USO4 | TUN_F.USO6);
  assert.equal(toTunOffloadFlags(vnicOffloads(), { ecn: false }), 0x67);
  assert.equal(toTunOffloadFlags(noOffloads()), 0);
  // TSO without checksum is not said (the kernel would refuse it)
  const noCsum = { ...vnicOffloads(), txChecksum: checksumNone() };
  assert.equal(toTunOffloadFlags(noCsum), 0);
  // HW_CSUM is protocol-generic: missing UDPv6 checksum means no TUN_F_CSUM at all
  assert.equal(toTunOffloadFlags({ ...vnicOffloads(), txChecksum: { ...checksumAll(), udp6: false } }), 0);
  // IPv4-only LSO
  assert.equal(toTunOffloadFlags({ ...vnicOffloads(), lso: { ...segmentationAll(), v6: false }, uso: segmentationNone() }),
    TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO_ECN);
  // a Linux guest's TSO frames carry TCP options (timestamps)
  assert.equal(toTunOffloadFlags({ ...vnicOffloads(), lso: { ...segmentationAll(), tcpOptions: false }, uso: segmentationNone() }), TUN_F.CSUM);
  // USO for one IP version only cannot be said (USO4 alone is EINVAL)
  assert.equal(toTunOffloadFlags({ ...vnicOffloads(), lso: segmentationNone(), uso: { ...segmentationAll(), v6: false } }), TUN_F.CSUM);
});

test('toTunOffloadFlags always gives flags the kernel accepted in the measurement, never promising more than caps', () => {
  const accepted = new Set(V.cases.filter((c) => c.error === undefined).map((c) => Number(c.flags)));
  fc.assert(fc.property(arbCaps, fc.boolean(), (caps, ecn) => {
    const f = toTunOffloadFlags(caps, { ecn });
    assert.equal(tunOffloadRefusal(f), null);
    assert.ok(accepted.has(f), `0x${f.toString(16)} was accepted by the kernel`);
    // TUN flags carry no sizes: compare what is promised, not how large
    assert.deepEqual(overPromises(fromTunOffloadFlags(f), normalizeCapabilities(caps), { sizes: false }), []);
  }), { numRuns: 2000 });
});

test('fromTunOffloadFlags then toTunOffloadFlags gives the flags back (less UFO and the tunnel bits)', () => {
  for (const c of V.cases) {
    if (c.error !== undefined) continue;
    const f = Number(c.flags);
    const expect = f & (TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6 | TUN_F.TSO_ECN | TUN_F.USO4 | TUN_F.USO6);
    assert.equal(toTunOffloadFlags(fromTunOffloadFlags(f), { ecn: (f & TUN_F.TSO_ECN) !== 0 }), expect, c.flags);
  }
  assert.deepEqual(fromTunOffloadFlags(TUN_F.CSUM | TUN_F.USO4), noOffloads(), 'refused flags give nothing');
});

test('the guest\'s ethtool -k read back as capabilities agrees with fromTunOffloadFlags on the send side', () => {
  for (const c of V.cases) {
    if (c.error !== undefined) continue;
    const f = Number(c.flags);
    const fromTable = capabilitiesFromEthtool(tableFor(c));
    const fromFlags = fromTunOffloadFlags(f);
    assert.deepEqual(fromTable.txChecksum, fromFlags.txChecksum, c.flags);
    assert.deepEqual([fromTable.lso.v4, fromTable.lso.v6, fromTable.uso.v4, fromTable.uso.v6],
      [fromFlags.lso.v4, fromFlags.lso.v6, fromFlags.uso.v4, fromFlags.uso.v6], c.flags);
  }
});

test('parseEthtoolK reads the captured texts; the TAP texts match the JSON vectors', () => {
  const off = parseEthtoolK(readVector('ethtool-k-tap-off.txt'));
  const on = parseEthtoolK(readVector('ethtool-k-tap-on.txt'));
  assert.deepEqual(off, V.baseline.features);
  assert.deepEqual(on, tableFor(V.cases.find((c) => Number(c.flags) === 0x6f)!));
  assert.equal(off['rx-checksumming'], 'off [fixed]');
  assert.equal(on['tx-tcp-segmentation'], 'on');
  const txOff = parseEthtoolK(readVector('ethtool-k-veth-tx-off.txt'));
  assert.equal(txOff['tx-tcp-segmentation'], 'off [requested on]');
  assert.equal(ethtoolOn(txOff['tx-tcp-segmentation']), false);
  assert.equal(ethtoolOn('on [fixed]'), true);
  assert.equal(ethtoolOn(undefined), false);
  // odd input never throws and yields nothing odd
  assert.deepEqual(parseEthtoolK('Features for x:\nnot a line\n: on\nfoo bar: on\nbaz: maybe\n\n'), {});
  assert.deepEqual(parseEthtoolK(''), {});
});

test('capabilitiesFromEthtool: a veth as created (generic checksum, TSO, USO, VLAN, receive checksum)', () => {
  const caps = capabilitiesFromEthtool(parseEthtoolK(readVector('ethtool-k-veth.txt')));
  const all4and6 = { ipv4Header: false, tcp4: true, udp4: true, tcp6: true, udp6: true, ipv4Options: true, tcpOptions: true, ipv6ExtHeaders: true };
  assert.deepEqual(caps.txChecksum, all4and6);
  assert.deepEqual(caps.rxChecksum, all4and6);
  assert.deepEqual(caps.lso, { v4: true, v6: true, maxOffloadSize: 65535, minSegmentCount: 1, ipv4Options: true, tcpOptions: true, ipv6ExtHeaders: true });
  assert.deepEqual([caps.uso.v4, caps.uso.v6, caps.uso.tcpOptions], [true, true, false]);
  assert.deepEqual(caps.rsc, { v4: false, v6: false });
  assert.equal(caps.rxPartialChecksum, false);
  assert.deepEqual(caps.vlan, { insert: true, strip: true });
  assert.equal(caps.ipsec.enabled, false);
});

test('capabilitiesFromEthtool: `ethtool -K tx off` — the group line says TSO on, the children (requested on) are off', () => {
  const feats = parseEthtoolK(readVector('ethtool-k-veth-tx-off.txt'));
  assert.equal(feats['tcp-segmentation-offload'], 'on');
  const caps = capabilitiesFromEthtool(feats);
  assert.deepEqual(caps.txChecksum, checksumNone());
  assert.deepEqual(caps.lso, segmentationNone());
  assert.deepEqual(caps.uso, segmentationNone());
  assert.equal(caps.rxChecksum.tcp4, true);
});

test('capabilitiesFromEthtool: a TAP (offloads off, then on)', () => {
  const off = capabilitiesFromEthtool(parseEthtoolK(readVector('ethtool-k-tap-off.txt')));
  const expectOff = noOffloads();
  expectOff.vlan.insert = true;   // tx-vlan-offload is on on every TAP
  assert.deepEqual(off, expectOff);
  const on = capabilitiesFromEthtool(parseEthtoolK(readVector('ethtool-k-tap-on.txt')));
  assert.equal(on.txChecksum.udp6, true);
  assert.deepEqual([on.lso.v4, on.lso.v6, on.uso.v4, on.uso.v6], [true, true, true, true]);
  assert.deepEqual(on.rxChecksum, checksumNone());   // rx-checksumming: off [fixed]
});

test('capabilitiesFromEthtool: kernel feature names, per-version checksums, hardware coalescing, hints', () => {
  const v4only = capabilitiesFromEthtool({ 'tx-checksum-ipv4': true, 'tx-tcp-segmentation': true, 'tx-tcp6-segmentation': true, 'rx-checksum': 'on' });
  assert.deepEqual([v4only.txChecksum.tcp4, v4only.txChecksum.udp4, v4only.txChecksum.tcp6], [true, true, false]);
  assert.deepEqual([v4only.lso.v4, v4only.lso.v6], [true, false], 'TSOv6 needs an IPv6 checksum');
  assert.equal(v4only.rxChecksum.udp6, true);
  const v6only = capabilitiesFromEthtool({ 'tx-checksum-ipv6': 'on [fixed]', 'tx-tcp6-segmentation': 'on' });
  assert.deepEqual([v6only.txChecksum.tcp4, v6only.txChecksum.tcp6, v6only.lso.v6], [false, true, true]);
  const lro = capabilitiesFromEthtool({ 'rx-lro': true });
  assert.deepEqual([lro.rsc, lro.rxPartialChecksum], [{ v4: true, v6: true }, true]);
  const grohw = capabilitiesFromEthtool({ 'rx-gro-hw': 'on' });
  assert.equal(grohw.rsc.v6, true);
  const vlan = capabilitiesFromEthtool({ 'tx-vlan-hw-insert': true, 'rx-vlan-hw-parse': 'off [fixed]' });
  assert.deepEqual(vlan.vlan, { insert: true, strip: false });
  const strip = capabilitiesFromEthtool({ 'tx-vlan-hw-insert': 'off', 'rx-vlan-hw-parse': 'on' });
  assert.deepEqual(strip.vlan, { insert: false, strip: true });
  const sized = capabilitiesFromEthtool({ 'tx-checksum-ip-generic': true, 'tx-tcp-segmentation': true }, { gsoMaxSize: 32000 });
  assert.equal(sized.lso.maxOffloadSize, 32000);
  assert.equal(capabilitiesFromEthtool({ 'tx-checksum-ip-generic': true, 'tx-tcp-segmentation': true }, { gsoMaxSize: 524280 }).lso.maxOffloadSize, 65535);
});

test('capabilitiesFromEthtool: esp-hw-offload gives IPsec only with the algorithms and SA count as hints', () => {
  const feats = { 'esp-hw-offload': 'on', 'tx-checksum-ip-generic': 'on' };
  assert.equal(ethtoolHasEspOffload(feats), true);
  assert.equal(ethtoolHasEspOffload({ 'esp-hw-offload': 'off [fixed]' }), false);
  assert.equal(capabilitiesFromEthtool(feats).ipsec.enabled, false);
  const caps = capabilitiesFromEthtool(feats, { ipsec: { algorithms: ['aes-gcm-256', 'aes-gcm-128'], maxSa: 1024 } });
  assert.deepEqual(caps.ipsec, { enabled: true, algorithms: ['aes-gcm-128', 'aes-gcm-256'], maxSa: 1024, transport: true, tunnel: false, v4: true, v6: true });
  assert.equal(capabilitiesFromEthtool({ 'esp-hw-offload': 'off' }, { ipsec: { algorithms: ['aes-gcm-128'], maxSa: 8 } }).ipsec.enabled, false);
});
