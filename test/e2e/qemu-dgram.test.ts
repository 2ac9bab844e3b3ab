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
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freeUdpPort } from '../util/env.js';
import { Client } from '../../src/cli/client.js';
import { bootVm, buildInitramfs, type BootResult } from '../vm/tiny-vm.js';
import { canRunLegacyVm, FarNetwork, LEGACY_VM_SCRIPT } from '../vm/legacy-net.js';

const mainJs = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');


test('a QEMU VM on -netdev dgram, a legacy port of the daemon: ping, a download segmented in software, and a second boot', { timeout: 300_000 }, async (t) => {
  if (!canRunLegacyVm(t)) return;

  const far = new FarNetwork('vsd');
  const switchPort = await freeUdpPort();
  let vmPort = await freeUdpPort();
  while (vmPort === switchPort) vmPort = await freeUdpPort();
  let daemon: ChildProcess | null = null;
  let daemonLog = '';
  far.onCleanup = () => daemon?.kill('SIGKILL');
  try {
    far.up();
    const config = join(far.dir, 'switch.yaml');
    writeFileSync(config, [
      'switch:',
      `  name: ${far.prefix}`,
      `  stateDir: ${far.dir}`,
      '  log: { level: info, format: json }',
      'ports:',
      '  - name: vm',
      '    kind: legacy',
      `    qemu: { dgram: { local: "127.0.0.1:${switchPort}", remote: "127.0.0.1:${vmPort}" } }`,
      '  - name: uplink',
      '    kind: external',
      `    device: ${far.uplink}`,
      '',
    ].join('\n'));
    daemon = spawn(process.execPath, [mainJs, 'run', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    daemon.stdout!.on('data', (d: Buffer) => { daemonLog += d.toString(); });
    daemon.stderr!.on('data', (d: Buffer) => { daemonLog += d.toString(); });
    const api = new Client(join(far.dir, `${far.prefix}.sock`));
    for (let i = 0; ; i++) {
      try {
        await api.call('GET', '/v1/switch');
        break;
      } catch (e) {
        if (daemon.exitCode !== null || i > 200) throw new Error(`the daemon did not come up: ${String(e)}\n${daemonLog}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }

    const vm = buildInitramfs({ script: LEGACY_VM_SCRIPT });
    const net = [
      '-netdev', `dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=${vmPort},remote.type=inet,remote.host=127.0.0.1,remote.port=${switchPort}`,
      '-device', `e1000,netdev=n0,mac=${far.mac},romfile=`,
    ];
    const serialOf = (r: BootResult) => `--- serial ---\n${r.serial}\n--- qemu stderr ---\n${r.stderr}\n--- daemon ---\n${daemonLog.slice(-3000)}`;
    const stats = async () => (await api.call<{ ports: Record<string, any>[] }>('GET', '/v1/stats')).ports.find((p) => p['name'] === 'vm')!;

    const r1 = await bootVm({ vm, net, params: { ip: `${far.vmIp}/24`, peer: far.nsIp, port: '8080', mode: 'full' }, timeoutMs: 150_000 });
    t.diagnostic(`boot 1: script done after ${r1.elapsedMs} ms`);
    assert.ok(r1.markerSeen, `VM 1 did not finish (timed out: ${r1.timedOut})\n${serialOf(r1)}`);
    far.assertPinged(r1, serialOf(r1));
    far.assertDownloaded(r1, serialOf(r1));

    const s1 = await stats();
    t.diagnostic(`vm port after boot 1: ${JSON.stringify({ rx: s1['rxPackets'], tx: s1['txPackets'], offload: s1['offload'], io: s1['io'] })}`);
    assert.ok(s1['io']['framesRead'] >= 10, 'the VM\'s datagrams were read as frames');
    assert.ok(s1['txPackets'] >= far.blob.length / 1460, `the download reached the VM as MTU frames (${s1['txPackets']})`);
    assert.ok(s1['offload']['segments'] > 0, 'the namespace\'s super-frames were segmented in software for the legacy NIC');
    assert.equal(s1['offload']['passThrough'], 0, 'nothing passed through whole to the legacy NIC');
    assert.equal(s1['io']['truncated'], 0);
    const rxDropped = Object.values(s1['rxDrops'] as Record<string, number>).reduce((a, b) => a + b, 0);
    assert.equal(s1['rxPackets'], s1['forwarded'] + rxDropped + s1['pending'], 'received = forwarded + dropped + pending');
    assert.deepEqual(s1['rxDrops'], {}, 'nothing from the VM was dropped');

    // The port's MTU is the switch's limit here (no device of ours to set): PATCH takes it.
    const patched = await api.call<{ mtu: number; qemu: unknown }>('PATCH', '/v1/ports/vm', { mtu: 1400 });
    assert.equal(patched.mtu, 1400);
    assert.deepEqual(patched.qemu, { dgram: { local: `127.0.0.1:${switchPort}`, remote: `127.0.0.1:${vmPort}` } }, 'the port shows its QEMU addresses');

    // Boot 2: a new QEMU on the same addresses; the port needs nothing done.
    const r2 = await bootVm({ vm, net, params: { ip: `${far.vmIp}/24`, peer: far.nsIp, mode: 'ping' }, timeoutMs: 120_000 });
    assert.ok(r2.markerSeen, `VM 2 did not finish\n${serialOf(r2)}`);
    far.assertPinged(r2, `after the VM came back\n${serialOf(r2)}`);
    assert.equal(daemon.exitCode, null, 'the daemon is still running');
  } finally {
    if (daemon !== null && daemon.exitCode === null) {
      const gone = new Promise<void>((r) => daemon!.once('exit', () => r()));
      daemon.kill('SIGTERM');
      const tm = setTimeout(() => daemon!.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(tm);
    }
    far.cleanup();
  }
  far.assertGone();
});
