// A real QEMU VM on an emulated e1000 whose `-netdev dgram` sends each frame
// as a UDP datagram to a legacy port of the vswitch daemon (`qemu.dgram` in
// the configuration), and across the switch an uplink (AF_PACKET on a veth)
// to a namespace serving a file over HTTP. The VM pings the namespace and
// downloads the file; the SHA-256 it prints must be the file's, and what the
// namespace sent as TSO super-frames must have reached the VM segmented. A
// second boot on the same port: a VM going away and coming back needs nothing
// from the switch.
//
//   QEMU (e1000, 198.18.K.2) ─ UDP on 127.0.0.1 ─ [vm: legacy | vswitch daemon | uplink: external] ─ veth ─ namespace (198.18.K.1, httpd)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasCommand, isRoot, need, netnsList, runPrefix } from '../util/env.js';
import { nativeAvailable } from '../../src/io/native/index.js';
import { Client } from '../../src/cli/client.js';
import { bootVm, buildInitramfs, vmUnavailable, type BootResult } from '../vm/tiny-vm.js';

const here = dirname(fileURLToPath(import.meta.url));
const mainJs = resolve(here, '../../src/cli/main.js');

const VM_SCRIPT = `
ip link set lo up
ip link set eth0 up
ip addr add "$VSQ_IP" dev eth0
i=0
while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
ping -c 3 -W 5 "$VSQ_PEER" > /tmp/ping 2>&1
rc=$?
cat /tmp/ping
echo "VSQ-PING rc=$rc $(grep -o '[0-9]* packets received' /tmp/ping)"
if [ "$VSQ_MODE" = full ]; then
  timeout 90 wget -q -O /tmp/blob "http://$VSQ_PEER:$VSQ_PORT/blob"
  echo "VSQ-WGET rc=$?"
  echo "VSQ-SHA256 $(sha256sum /tmp/blob | cut -d' ' -f1) $(wc -c < /tmp/blob)"
fi
echo VSQ-DONE
`;

/** A UDP port on 127.0.0.1 nobody uses right now. */
async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? ''}${r.stderr}`);
}

const linkExists = (name: string) => spawnSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;

test('a QEMU VM on -netdev dgram, a legacy port of the daemon: ping, a download segmented in software, and a second boot', { timeout: 300_000 }, async (t) => {
  if (!need(t, isRoot(), 'needs root (network namespaces, AF_PACKET)')) return;
  if (!need(t, hasCommand('ip') && hasCommand('ethtool'), 'needs iproute2 and ethtool')) return;
  const why = vmUnavailable();
  if (!need(t, why === null, `tiny VM: ${why}`)) return;
  if (!need(t, nativeAvailable(), 'needs the native addon (build/Release/vswitch_native.node)')) return;

  const prefix = runPrefix('vsd');
  const ns = `${prefix}-vm`;
  const uplink = `${prefix}u`;
  const far = `${prefix}n`;
  const k = 100 + Math.floor(Math.random() * 100);
  const nsIp = `198.18.${k}.1`;
  const vmIp = `198.18.${k}.2`;
  const mac = `52:54:00:${[0, 0, 0].map(() => Math.floor(Math.random() * 256).toString(16).padStart(2, '0')).join(':')}`;
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const www = join(dir, 'www');
  mkdirSync(www);
  const blob = randomBytes(4 << 20);
  writeFileSync(join(www, 'blob'), blob);
  const blobHash = createHash('sha256').update(blob).digest('hex');
  const switchPort = await freeUdpPort();
  let vmPort = await freeUdpPort();
  while (vmPort === switchPort) vmPort = await freeUdpPort();

  let daemon: ChildProcess | null = null;
  let daemonLog = '';
  let httpd: ChildProcess | null = null;
  const emergency = () => {
    daemon?.kill('SIGKILL');
    httpd?.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', ns]);
    spawnSync('ip', ['link', 'del', uplink]);
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = () => process.exit(130);
  process.on('exit', emergency);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['link', 'add', uplink, 'type', 'veth', 'peer', 'name', far]);
    sh('ip', ['link', 'set', far, 'netns', ns]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', ns, 'addr', 'add', `${nsIp}/24`, 'dev', far]);
    sh('ip', ['-n', ns, 'link', 'set', far, 'up']);
    sh('sysctl', ['-q', '-w', `net.ipv6.conf.${uplink}.disable_ipv6=1`]);
    httpd = spawn('ip', ['netns', 'exec', ns, '/bin/busybox', 'httpd', '-f', '-p', `${nsIp}:8080`, '-h', www], { stdio: 'ignore' });

    const config = join(dir, 'switch.yaml');
    writeFileSync(config, [
      'switch:',
      `  name: ${prefix}`,
      `  stateDir: ${dir}`,
      '  log: { level: info, format: json }',
      'ports:',
      '  - name: vm',
      '    kind: legacy',
      `    qemu: { dgram: { local: "127.0.0.1:${switchPort}", remote: "127.0.0.1:${vmPort}" } }`,
      '  - name: uplink',
      '    kind: external',
      `    device: ${uplink}`,
      '',
    ].join('\n'));
    daemon = spawn(process.execPath, [mainJs, 'run', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    daemon.stdout!.on('data', (d: Buffer) => { daemonLog += d.toString(); });
    daemon.stderr!.on('data', (d: Buffer) => { daemonLog += d.toString(); });
    const api = new Client(join(dir, `${prefix}.sock`));
    for (let i = 0; ; i++) {
      try {
        await api.call('GET', '/v1/switch');
        break;
      } catch (e) {
        if (daemon.exitCode !== null || i > 200) throw new Error(`the daemon did not come up: ${String(e)}\n${daemonLog}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }

    const vm = buildInitramfs({ script: VM_SCRIPT });
    const net = [
      '-netdev', `dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=${vmPort},remote.type=inet,remote.host=127.0.0.1,remote.port=${switchPort}`,
      '-device', `e1000,netdev=n0,mac=${mac},romfile=`,
    ];
    const serialOf = (r: BootResult) => `--- serial ---\n${r.serial}\n--- qemu stderr ---\n${r.stderr}\n--- daemon ---\n${daemonLog.slice(-3000)}`;
    const stats = async () => (await api.call<{ ports: Record<string, any>[] }>('GET', '/v1/stats')).ports.find((p) => p['name'] === 'vm')!;

    const r1 = await bootVm({ vm, net, params: { ip: `${vmIp}/24`, peer: nsIp, port: '8080', mode: 'full' }, timeoutMs: 150_000 });
    t.diagnostic(`boot 1: script done after ${r1.elapsedMs} ms`);
    assert.ok(r1.markerSeen, `VM 1 did not finish (timed out: ${r1.timedOut})\n${serialOf(r1)}`);
    const ping1 = /VSQ-PING rc=(\d+) (\d+) packets received/.exec(r1.serial);
    assert.ok(ping1 !== null && ping1[1] === '0' && ping1[2] === '3', `ping from the VM: 3 of 3 replies expected\n${serialOf(r1)}`);
    assert.match(r1.serial, /VSQ-WGET rc=0/, serialOf(r1));
    const sha = /VSQ-SHA256 ([0-9a-f]{64}) (\d+)/.exec(r1.serial);
    assert.ok(sha !== null, serialOf(r1));
    assert.equal(Number(sha[2]), blob.length, 'downloaded size');
    assert.equal(sha[1], blobHash, 'the VM computed the file\'s SHA-256');

    const s1 = await stats();
    t.diagnostic(`vm port after boot 1: ${JSON.stringify({ rx: s1['rxPackets'], tx: s1['txPackets'], offload: s1['offload'], io: s1['io'] })}`);
    assert.ok(s1['io']['framesRead'] >= 10, 'the VM\'s datagrams were read as frames');
    assert.ok(s1['txPackets'] >= blob.length / 1460, `the download reached the VM as MTU frames (${s1['txPackets']})`);
    assert.ok(s1['offload']['segments'] > 0, 'the namespace\'s super-frames were segmented in software for the legacy NIC');
    assert.equal(s1['offload']['passThrough'], 0, 'nothing passed through whole to the legacy NIC');
    assert.equal(s1['io']['truncated'], 0);
    const rxDropped = Object.values(s1['rxDrops'] as Record<string, number>).reduce((a, b) => a + b, 0);
    assert.equal(s1['rxPackets'], s1['forwarded'] + rxDropped + s1['pending'], 'received = forwarded + dropped + pending');
    assert.deepEqual(s1['rxDrops'], {}, 'nothing from the VM was dropped');

    // Boot 2: a new QEMU on the same addresses; the port needs nothing done.
    const r2 = await bootVm({ vm, net, params: { ip: `${vmIp}/24`, peer: nsIp, mode: 'ping' }, timeoutMs: 120_000 });
    assert.ok(r2.markerSeen, `VM 2 did not finish\n${serialOf(r2)}`);
    const ping2 = /VSQ-PING rc=(\d+) (\d+) packets received/.exec(r2.serial);
    assert.ok(ping2 !== null && ping2[1] === '0' && ping2[2] === '3', `ping after the VM came back\n${serialOf(r2)}`);
    assert.equal(daemon.exitCode, null, 'the daemon is still running');
  } finally {
    process.off('exit', emergency);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (daemon !== null && daemon.exitCode === null) {
      const gone = new Promise<void>((r) => daemon!.once('exit', () => r()));
      daemon.kill('SIGTERM');
      const tm = setTimeout(() => daemon!.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(tm);
    }
    if (httpd !== null && httpd.exitCode === null) httpd.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', ns]);
    if (linkExists(uplink)) spawnSync('ip', ['link', 'del', uplink]);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(!netnsList().includes(ns), 'namespace removed');
  assert.ok(!linkExists(uplink), 'veth removed');
});
