// A real QEMU VM — Debian's kernel, its e1000 driver, busybox — on an
// emulated e1000 NIC, attached to vswitch as a legacy port over QEMU's
// `-netdev stream` socket. Across the switch, through an external port
// (AF_PACKET on a veth), is a network namespace serving a file over HTTP.
// The VM pings the namespace and downloads the file; the SHA-256 it prints on
// its serial console must be the file's. The namespace's kernel sends TSO
// super-frames with partial checksums to the uplink: the legacy VM can only
// have received them because the switch segmented and checksummed them in
// software, and nothing it got was above its MTU. Then the VM is booted a
// second time on the same port: a VM going away and coming back is just a
// reconnect. A third boot turns the socket round: QEMU listens, vswitch dials.
//
//   QEMU (e1000, 198.18.K.2) ─ unix socket ─ [vm: legacy | vswitch child | uplink: external] ─ veth ─ namespace (198.18.K.1, httpd)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { hasCommand, isRoot, need, netnsList, runPrefix } from '../util/env.js';
import { nativeAvailable } from '../../src/io/native/index.js';
import { bootVm, buildInitramfs, vmUnavailable, type BootResult, type BuiltVm } from '../vm/tiny-vm.js';

const here = dirname(fileURLToPath(import.meta.url));
const childJs = resolve(here, '../vm/switch-child.js');

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
  # (busybox-static 1.35 wget segfaults with -T in this VM: bound it with timeout instead)
  timeout 90 wget -q -O /tmp/blob "http://$VSQ_PEER:$VSQ_PORT/blob"
  echo "VSQ-WGET rc=$?"
  echo "VSQ-SHA256 $(sha256sum /tmp/blob | cut -d' ' -f1) $(wc -c < /tmp/blob)"
fi
echo VSQ-DONE
`;

type Event = Record<string, unknown> & { event: string };

/** The switch child: JSON lines out, commands in. */
class SwitchChild {
  readonly events: Event[] = [];
  private waiters: Array<{ pred: (e: Event) => boolean; resolve: (e: Event) => void }> = [];
  stderr = '';
  exited = false;
  private constructor(readonly proc: ChildProcess) {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      let e: Event;
      try {
        e = JSON.parse(line) as Event;
      } catch {
        return;
      }
      this.events.push(e);
      for (const w of [...this.waiters]) {
        if (w.pred(e)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(e);
        }
      }
    });
    proc.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    proc.once('exit', () => { this.exited = true; });
  }
  static start(cfg: { socket: string; uplink: string }): SwitchChild {
    return new SwitchChild(spawn(process.execPath, [childJs, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] }));
  }
  /** The next event matching `pred` (or one already seen, when `past`). */
  wait(what: string, pred: (e: Event) => boolean, ms: number, past = false): Promise<Event> {
    if (past) {
      const e = this.events.find(pred);
      if (e !== undefined) return Promise.resolve(e);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`switch child: no ${what} within ${ms} ms; events ${JSON.stringify(this.events)}; stderr ${this.stderr}`));
      }, ms);
      const done = (e: Event) => { clearTimeout(timer); resolve(e); };
      this.waiters.push({ pred, resolve: done });
    });
  }
  async stats(): Promise<Event> {
    const p = this.wait('stats', (e) => e.event === 'stats', 10_000);
    this.proc.stdin!.write('stats\n');
    return p;
  }
  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((r) => this.proc.once('exit', () => r()));
    this.proc.stdin!.end('exit\n');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  }
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? ''}${r.stderr}`);
  return r.stdout;
}

function linkExists(name: string): boolean {
  return spawnSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;
}

type PortStats = { rxPackets: number; forwarded: number; rxDropped: number; pending: number; txPackets: number;
  rxDrops: Record<string, number>; txDrops: Record<string, number>; txSoftware: number; txPassThrough: number; txSegments: number };

test('a QEMU VM with an emulated e1000 on a legacy port pings and downloads through vswitch, comes back after a reboot, and works with QEMU as the server', { timeout: 300_000 }, async (t) => {
  if (!need(t, isRoot(), 'needs root (network namespaces, AF_PACKET)')) return;
  if (!need(t, hasCommand('ip') && hasCommand('ethtool'), 'needs iproute2 and ethtool')) return;
  const why = vmUnavailable();
  if (!need(t, why === null, `tiny VM: ${why}`)) return;
  if (!need(t, nativeAvailable(), 'needs the native addon (build/Release/vswitch_native.node)')) return;

  const prefix = runPrefix('vsq');
  const ns = `${prefix}-vm`;
  const uplink = `${prefix}u`;
  const far = `${prefix}n`;
  const k = 100 + Math.floor(Math.random() * 100);
  const nsIp = `198.18.${k}.1`;
  const vmIp = `198.18.${k}.2`;
  const mac = `52:54:00:${[0, 0, 0].map(() => Math.floor(Math.random() * 256).toString(16).padStart(2, '0')).join(':')}`;
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const socket = join(dir, 'vm.sock');
  const www = join(dir, 'www');
  mkdirSync(www);
  const blob = randomBytes(4 << 20);
  writeFileSync(join(www, 'blob'), blob);
  const blobHash = createHash('sha256').update(blob).digest('hex');

  let child: SwitchChild | null = null;
  let httpd: ChildProcess | null = null;
  // If the test process dies half-way (runner timeout, ^C), still leave nothing behind.
  const emergency = () => {
    child?.proc.kill('SIGKILL');
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
    // The "other machine": a namespace behind a veth; its kernel keeps TSO on.
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['link', 'add', uplink, 'type', 'veth', 'peer', 'name', far]);
    sh('ip', ['link', 'set', far, 'netns', ns]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', ns, 'addr', 'add', `${nsIp}/24`, 'dev', far]);
    sh('ip', ['-n', ns, 'link', 'set', far, 'up']);
    sh('sysctl', ['-q', '-w', `net.ipv6.conf.${uplink}.disable_ipv6=1`]);
    sh('ip', ['link', 'set', uplink, 'up']);
    httpd = spawn('ip', ['netns', 'exec', ns, '/bin/busybox', 'httpd', '-f', '-p', `${nsIp}:8080`, '-h', www], { stdio: 'ignore' });

    child = SwitchChild.start({ socket, uplink });
    await child.wait('ready', (e) => e.event === 'ready' || e.event === 'error', 20_000, true).then((e) => {
      assert.equal(e.event, 'ready', `switch child failed: ${JSON.stringify(e)}`);
    });
    assert.ok(existsSync(socket), 'the legacy port listens on its unix socket');

    const vm: BuiltVm = buildInitramfs({ script: VM_SCRIPT });
    const net = [
      '-netdev', `stream,id=n0,server=off,addr.type=unix,addr.path=${socket}`,
      '-device', `e1000,netdev=n0,mac=${mac},romfile=`,
    ];
    const serialOf = (r: BootResult) => `--- serial ---\n${r.serial}\n--- qemu stderr ---\n${r.stderr}`;

    // Boot 1: ping, then download the file.
    const r1 = await bootVm({ vm, net, params: { ip: `${vmIp}/24`, peer: nsIp, port: '8080', mode: 'full' }, timeoutMs: 150_000 });
    t.diagnostic(`boot 1: VSQ-BOOTED after ${r1.bootMs} ms, script done after ${r1.elapsedMs} ms (kernel ${vm.kernel.release}, ${vm.pvh ? 'PVH vmlinux' : 'bzImage'})`);
    assert.ok(r1.markerSeen, `VM 1 did not finish (timed out: ${r1.timedOut})\n${serialOf(r1)}`);
    assert.doesNotMatch(r1.serial, /VSQ-INSMOD-FAILED/, serialOf(r1));
    const ping1 = /VSQ-PING rc=(\d+) (\d+) packets received/.exec(r1.serial);
    assert.ok(ping1 !== null && ping1[1] === '0' && ping1[2] === '3', `ping from the VM: 3 of 3 replies expected\n${serialOf(r1)}`);
    assert.match(r1.serial, /VSQ-WGET rc=0/, serialOf(r1));
    const sha = /VSQ-SHA256 ([0-9a-f]{64}) (\d+)/.exec(r1.serial);
    assert.ok(sha !== null, serialOf(r1));
    assert.equal(Number(sha[2]), blob.length, 'downloaded size');
    assert.equal(sha[1], blobHash, 'the VM computed the file\'s SHA-256');
    await child.wait('disconnect after poweroff', (e) => e.event === 'link' && e.state === 'disconnected', 10_000, true);

    const s1 = await child.stats();
    const ports = s1['ports'] as Record<string, PortStats>;
    const q = s1['qemu'] as { maxFrameOut: number; framesIn: number; framesOut: number; resets: number; connects: number };
    const vmPort = ports['vm']!;
    const up = ports['uplink']!;
    t.diagnostic(`after boot 1: vm ${JSON.stringify(vmPort)} qemu ${JSON.stringify(q)} uplink ${JSON.stringify(up)}`);
    assert.ok(q.framesIn >= 10, `frames from the VM reached the switch (${q.framesIn})`);
    assert.ok(q.framesOut >= blob.length / 1460, `the download reached the VM as MTU frames (${q.framesOut})`);
    assert.ok(q.maxFrameOut <= 1514, `a frame of ${q.maxFrameOut} B reached the legacy NIC (MTU 1500)`);
    assert.equal(q.resets, 0, 'QEMU spoke the framing');
    assert.equal(vmPort.rxDrops['malformed'] ?? 0, 0);
    assert.equal(vmPort.rxDrops['legacy-offload'] ?? 0, 0);
    assert.ok(vmPort.txSegments > 0, 'super-frames from the namespace were segmented in software for the legacy NIC');
    assert.equal(vmPort.txPassThrough, 0, 'nothing passed through whole to the legacy NIC');
    for (const [name, c] of Object.entries(ports)) {
      assert.equal(c.rxPackets, c.forwarded + c.rxDropped + c.pending, `${name}: received = forwarded + dropped + pending`);
    }

    // Boot 2: a new QEMU on the same port — the switch took the last one's exit in its stride.
    const r2 = await bootVm({ vm, net, params: { ip: `${vmIp}/24`, peer: nsIp, mode: 'ping' }, timeoutMs: 120_000 });
    t.diagnostic(`boot 2: VSQ-BOOTED after ${r2.bootMs} ms, done after ${r2.elapsedMs} ms`);
    assert.ok(r2.markerSeen, `VM 2 did not finish\n${serialOf(r2)}`);
    const ping2 = /VSQ-PING rc=(\d+) (\d+) packets received/.exec(r2.serial);
    assert.ok(ping2 !== null && ping2[1] === '0' && ping2[2] === '3', `ping after reconnect\n${serialOf(r2)}`);
    const s2 = await child.stats();
    assert.equal((s2['qemu'] as { connects: number }).connects, 2, 'two VMs, two connections on one port');

    // Boot 3, the other way round: QEMU listens (server=on) and vswitch dials it.
    const qemuSocket = join(dir, 'qemu.sock');
    child.proc.stdin!.write(`${JSON.stringify({ cmd: 'vm', mode: 'connect', socket: qemuSocket })}\n`);
    await child.wait('port replaced', (e) => e.event === 'vm-replaced', 10_000);
    const r3 = await bootVm({
      vm, params: { ip: `${vmIp}/24`, peer: nsIp, mode: 'ping' }, timeoutMs: 120_000,
      net: ['-netdev', `stream,id=n0,server=on,addr.type=unix,addr.path=${qemuSocket}`, '-device', `e1000,netdev=n0,mac=${mac},romfile=`],
    });
    t.diagnostic(`boot 3 (QEMU listens): done after ${r3.elapsedMs} ms`);
    assert.ok(r3.markerSeen, `VM 3 did not finish\n${serialOf(r3)}`);
    const ping3 = /VSQ-PING rc=(\d+) (\d+) packets received/.exec(r3.serial);
    assert.ok(ping3 !== null && ping3[1] === '0' && ping3[2] === '3', `ping with vswitch dialling QEMU\n${serialOf(r3)}`);
    await child.wait('connect-mode link', (e) => e.event === 'link' && e['mode'] === 'connect' && e.state === 'connected', 1000, true);
    assert.ok(!child.events.some((e) => e.event === 'error'), `switch child reported errors: ${JSON.stringify(child.events.filter((e) => e.event === 'error'))}`);
  } finally {
    process.off('exit', emergency);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await child?.stop();
    if (httpd !== null && httpd.exitCode === null) httpd.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', ns]);
    if (linkExists(uplink)) spawnSync('ip', ['link', 'del', uplink]);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(!netnsList().includes(ns), 'namespace removed');
  assert.ok(!linkExists(uplink), 'veth removed');
  assert.ok(!existsSync(socket), 'socket file removed');
});
