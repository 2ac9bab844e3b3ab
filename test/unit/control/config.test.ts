// Configuration mistakes, one kind per test: each is reported with the file,
// line and column it is at, and what is wrong; nothing is accepted half-way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseConfig, type ConfigIssue } from '../../../src/control/config.js';

function issues(yaml: string): ConfigIssue[] {
  try {
    parseConfig(yaml, 'sw.yaml');
  } catch (e) {
    if (e instanceof ConfigError) return e.issues;
    throw e;
  }
  assert.fail('accepted a bad configuration');
}

/** Exactly one issue, at `line`, whose message matches. */
function one(yaml: string, line: number, message: RegExp, path?: string): ConfigIssue {
  const all = issues(yaml);
  assert.equal(all.length, 1, JSON.stringify(all));
  const i = all[0]!;
  assert.equal(i.file, 'sw.yaml');
  assert.equal(i.line, line, `line of ${JSON.stringify(i)}`);
  assert.match(i.message, message);
  if (path !== undefined) assert.equal(i.path, path);
  return i;
}

const GOOD = `
switch:
  name: lab
  macAgingSeconds: 60
  api: { socket: /tmp/x.sock, listen: "127.0.0.1:8089" }
  log: { level: debug, format: text }
ports:
  - name: vm1
    kind: synthetic
    mtu: 9000
    mac: 02:00:00:00:00:01
    vlan: 10
    guest: { namespace: vm1, create: true, addresses: [198.18.0.1/24, "2001:db8::1/64"] }
    offloads: { lso: false }
    budget: { cpuPercent: 25, action: throttle, backlog: 128 }
    security: { allowedMacs: ["02:00:00:00:00:01"], allowedIps: [198.18.0.1, "2001:db8::1"] }
    acl:
      in:
        default: allow
        rules:
          - { action: deny, protocol: tcp, dstPort: 22 }
          - { action: deny, dst: 198.19.0.0/16, srcPort: 1000-2000, protocol: udp }
    maxMacs: 4
  - name: uplink
    kind: external
    device: eth1
    vlan: { mode: trunk, allowed: [10, 20], native: 1 }
  - name: host0
    kind: host
    addresses: [198.18.0.3/24]
  - name: pxe
    kind: legacy
    guest: { namespace: old }
`;

test('a good configuration becomes runtime port specs and switch settings', () => {
  const c = parseConfig(GOOD, 'sw.yaml');
  assert.equal(c.settings.name, 'lab');
  assert.equal(c.settings.macAgingMs, 60_000);
  assert.equal(c.settings.socket, '/tmp/x.sock');
  assert.equal(c.settings.listen, '127.0.0.1:8089');
  assert.equal(c.settings.tokenFile, '/run/vswitch/lab.token', 'the loopback API token beside the state');
  assert.equal(parseConfig(GOOD.replace('listen: "127.0.0.1:8089"', 'listen: "127.0.0.1:8089", tokenFile: /etc/vs.token'), 'sw.yaml').settings.tokenFile, '/etc/vs.token');
  assert.equal(c.ports.length, 4);
  const vm1 = c.ports[0]!;
  assert.equal(vm1.mac, 0x020000000001);
  assert.deepEqual(vm1.vlan, { mode: 'access', vlan: 10 });
  assert.deepEqual(vm1.budget, { cpuNsPerSec: 250_000_000, action: 'throttle', backlog: 128 });
  assert.equal(vm1.aclIn!.rules[0]!.protocol, 6);
  assert.deepEqual(vm1.aclIn!.rules[0]!.dstPort, [22, 22]);
  assert.deepEqual(vm1.aclIn!.rules[1]!.srcPort, [1000, 2000]);
  assert.equal(vm1.security!.allowedIps!.length, 2);
  assert.deepEqual(c.ports[1]!.vlan, { mode: 'trunk', allowed: [10, 20], native: 1 });
  const d = parseConfig('ports: []', 'x.yaml').settings;
  assert.equal(d.socket, '/run/vswitch/vswitch.sock', 'default socket');
  assert.equal(d.workers, 1, 'one I/O worker by default');
  assert.equal(d.workerReads, false, 'it writes only, by default');
  assert.deepEqual(d.workerPorts, ['legacy', 'external'], 'the legacy NICs and uplinks, by default');
  const w = parseConfig('switch: { workers: 2, workerReads: false, workerPorts: [legacy, external] }\nports: []', 'x.yaml').settings;
  assert.deepEqual([w.workers, w.workerReads, w.workerPorts], [2, false, ['legacy', 'external']]);
});

test('I/O worker settings: a count in range, a boolean', () => {
  one('switch: { workers: 65 }\nports: []\n', 1, /must be <= 64/);
  one('switch:\n  workers: 1\n  workerReads: sometimes\nports: []\n', 3, /must be boolean/);
  one('switch:\n  workerPorts: [legacy, vm]\nports: []\n', 2, /one of "synthetic", "host", "legacy", "external"/);
});

test('YAML syntax error: line and column of the broken text', () => {
  one('ports:\n  - name: a\n    kind: [synthetic\n', 4, /YAML/);
});

test('duplicate key in a mapping', () => {
  one('ports:\n  - name: a\n    kind: host\n    kind: legacy\n', 4, /YAML.*[Uu]nique|YAML.*duplicate|Map keys must be unique/);
});

test('empty file', () => {
  one('', 1, /empty/);
});

test('missing "ports"', () => {
  one('switch: { name: x }\n', 1, /missing required key "ports"/);
});

test('unknown key (a typo) points at the key', () => {
  const i = one('ports:\n  - name: a\n    kind: host\n    mtuu: 1500\n', 4, /unknown key "mtuu"/, 'ports[0].mtuu');
  assert.equal(i.col, 5);
});

test('wrong type', () => {
  one('ports:\n  - name: a\n    kind: host\n    mtu: big\n', 4, /must be integer/);
});

test('value not among the choices', () => {
  one('ports:\n  - name: a\n    kind: virtual\n', 3, /one of "synthetic", "host", "legacy", "external"/);
});

test('number out of range', () => {
  one('ports:\n  - name: a\n    kind: host\n    mtu: 20\n', 4, /must be >= 68/);
});

test('missing required key in a port', () => {
  one('ports:\n  - name: a\n', 2, /missing required key "kind"/);
});

test('VLAN id out of range inside a trunk list (the right branch of "number or access or trunk")', () => {
  one('ports:\n  - name: a\n    kind: external\n    vlan: { mode: trunk, allowed: [10, 5000] }\n', 4, /must be <= 4094/, 'ports[0].vlan.allowed[1]');
});

test('device name longer than Linux allows', () => {
  one('ports:\n  - name: a\n    kind: host\n    device: thisnameistoolong\n', 4, /more than 15 characters/);
  one('ports:\n  - name: averyveryverylongportname\n    kind: host\n', 2, /longer than 15 characters \(set device:\)/);
});

test('malformed MAC address', () => {
  one('ports:\n  - name: a\n    kind: host\n    mac: 02:00:00:00:00\n', 4, /not a MAC address/);
});

test('guest address without prefix length, and a bad ACL prefix', () => {
  one('ports:\n  - name: a\n    kind: synthetic\n    guest: { namespace: n, addresses: [198.18.0.1] }\n', 4, /with a prefix length/);
  one('ports:\n  - name: a\n    kind: host\n    acl: { in: { rules: [ { action: deny, src: 198.18.0.0/40 } ] } }\n', 4, /not an IPv4\/IPv6 address/);
});

test('duplicate port names, devices and created namespaces', () => {
  one('ports:\n  - name: a\n    kind: host\n  - name: a\n    kind: host\n    device: b\n', 4, /port name "a" is used by ports\[0\] too/);
  one('ports:\n  - name: a\n    kind: host\n    device: d\n  - name: b\n    kind: host\n    device: d\n', 7, /device "d" is used by ports\[0\]/);
  one('ports:\n  - { name: a, kind: synthetic, guest: { namespace: n, create: true } }\n  - { name: b, kind: synthetic, guest: { namespace: n, create: true } }\n', 3, /namespace "n" is created by ports\[0\]/);
});

test('settings that do not fit the port kind', () => {
  one('ports:\n  - name: a\n    kind: external\n    guest: { namespace: n }\n', 4, /external port has no guest/);
  one('ports:\n  - name: a\n    kind: synthetic\n    addresses: [198.18.0.1/24]\n', 4, /only host ports take addresses/);
  one('ports:\n  - name: a\n    kind: legacy\n    offloads: { lso: true }\n', 4, /legacy port never gets offloads/);
  one('ports:\n  - name: a\n    kind: legacy\n    uro: true\n', 4, /legacy port never gets offloads/, 'ports[0].uro');
  one('ports:\n  - name: a\n    kind: external\n    txQueueLen: 4096\n', 4, /only a TAP port has a queue length here .*ip link set DEV txqueuelen/);
  one('ports:\n  - name: a\n    kind: synthetic\n    txQueueLen: 8\n', 4, /must be >= 16/);
});

test('uro and txQueueLen reach the port specs', () => {
  const c = parseConfig('ports:\n  - name: a\n    kind: synthetic\n    uro: false\n    txQueueLen: 10000\n  - name: b\n    kind: legacy\n', 'sw.yaml');
  assert.equal(c.ports[0]!.uro, false);
  assert.equal(c.ports[0]!.txQueueLen, 10000);
  assert.equal(c.ports[1]!.txQueueLen, undefined);
});

test('budget needs exactly one rate', () => {
  one('ports:\n  - name: a\n    kind: host\n    budget: { action: drop }\n', 4, /exactly one of cpuPercent or cpuNsPerSec/);
  one('ports:\n  - name: a\n    kind: host\n    budget: { action: drop, cpuPercent: 5, cpuNsPerSec: 5 }\n', 4, /exactly one/);
});

test('ACL rule mistakes: L4 ports without TCP/UDP, reversed range', () => {
  one('ports:\n  - name: a\n    kind: host\n    acl: { in: { rules: [ { action: deny, protocol: icmp, dstPort: 22 } ] } }\n', 4, /only make sense with protocol tcp or udp/);
  one('ports:\n  - name: a\n    kind: host\n    acl: { out: { rules: [ { action: deny, protocol: tcp, dstPort: "90-80" } ] } }\n', 4, /port range 90-80/);
});

test('several mistakes are all reported, each at its own line', () => {
  const all = issues('switch:\n  nam: x\nports:\n  - name: a\n    kind: host\n    mtu: 1\n  - name: b\n    kind: bogus\n');
  assert.deepEqual(all.map((i) => i.line).sort(), [2, 6, 8]);
});

test('a file that cannot be read says which and why', () => {
  assert.throws(() => loadConfig('/nonexistent/vswitch.yaml'), (e: unknown) => e instanceof ConfigError && /\/nonexistent\/vswitch.yaml.*cannot read/.test(e.message));
  const dir = mkdtempSync(join(tmpdir(), 'vsconf-'));
  const f = join(dir, 'bad.yaml');
  writeFileSync(f, 'ports:\n  - name: a\n    kind: host\n    mtu: 1\n');
  assert.throws(() => loadConfig(f), (e: unknown) => e instanceof ConfigError && e.message.startsWith(`${f}:4:10: ports[0].mtu: must be >= 68`));
});

test('a QEMU dgram port: addresses parsed; both kinds of socket, neither, a bad address, mixed families or a mode are errors at their line', () => {
  const port = (qemu: string) => `ports:\n  - name: pxe\n    kind: legacy\n    qemu: ${qemu}\n`;
  const ok = parseConfig(port('{ dgram: { local: "127.0.0.1:40001", remote: "127.0.0.1:40002" } }'), 'sw.yaml');
  assert.deepEqual(ok.ports[0]!.qemu, { dgram: { local: { host: '127.0.0.1', port: 40001 }, remote: { host: '127.0.0.1', port: 40002 } } });
  const v6 = parseConfig(port('{ dgram: { local: "[2001:db8::1]:7", remote: "[::1]:8" } }'), 'sw.yaml');
  assert.deepEqual(v6.ports[0]!.qemu, { dgram: { local: { host: '2001:db8::1', port: 7 }, remote: { host: '::1', port: 8 } } });
  one(port('{ socket: /tmp/a.sock, dgram: { local: "127.0.0.1:1", remote: "127.0.0.1:2" } }'), 4, /either socket .* or dgram .*, not both or neither/);
  one(port('{ mode: listen }'), 4, /either socket .* or dgram/);
  one(port('{ dgram: { local: "localhost:1", remote: "127.0.0.1:2" } }'), 4, /"localhost:1" is not IPv4:PORT or \[IPv6\]:PORT/, 'ports[0].qemu.dgram.local');
  one(port('{ dgram: { local: "127.0.0.1:1", remote: "127.0.0.256:2" } }'), 4, /is not IPv4:PORT/);
  one(port('{ dgram: { local: "127.0.0.1:0", remote: "127.0.0.1:2" } }'), 4, /is not IPv4:PORT/);
  one(port('{ dgram: { local: "127.0.0.1:1", remote: "[::1]:2" } }'), 4, /both be IPv4 or both IPv6/);
  one(port('{ mode: connect, dgram: { local: "127.0.0.1:1", remote: "127.0.0.1:2" } }'), 4, /mode is for a stream socket/);
});
