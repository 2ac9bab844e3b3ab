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
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { bootVm, buildInitramfs, type BootResult, type BuiltVm } from '../vm/tiny-vm.js';
import { canRunLegacyVm, FarNetwork, LEGACY_VM_SCRIPT } from '../vm/legacy-net.js';

const here = dirname(fileURLToPath(import.meta.url));
const childJs = resolve(here, '../vm/switch-child.js');


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

type PortStats = { rxPackets: number; forwarded: number; rxDropped: number; pending: number; txPackets: number;
  rxDrops: Record<string, number>; txDrops: Record<string, number>; txSoftware: number; txPassThrough: number; txSegments: number };

test('a QEMU VM with an emulated e1000 on a legacy port pings and downloads through vswitch, comes back after a reboot, and works with QEMU as the server', { timeout: 300_000 }, async (t) => {
  if (!canRunLegacyVm(t)) return;

  const far = new FarNetwork('vsq');
  const { uplink, nsIp, vmIp, mac, dir } = far;
  const socket = join(dir, 'vm.sock');
  let child: SwitchChild | null = null;
  let socketLeft = true;
  far.onCleanup = () => child?.proc.kill('SIGKILL');
  try {
    far.up();

    child = SwitchChild.start({ socket, uplink });
    await child.wait('ready', (e) => e.event === 'ready' || e.event === 'error', 20_000, true).then((e) => {
      assert.equal(e.event, 'ready', `switch child failed: ${JSON.stringify(e)}`);
    });
    assert.ok(existsSync(socket), 'the legacy port listens on its unix socket');

    const vm: BuiltVm = buildInitramfs({ script: LEGACY_VM_SCRIPT });
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
    far.assertPinged(r1, serialOf(r1));
    far.assertDownloaded(r1, serialOf(r1));
    await child.wait('disconnect after poweroff', (e) => e.event === 'link' && e.state === 'disconnected', 10_000, true);

    const s1 = await child.stats();
    const ports = s1['ports'] as Record<string, PortStats>;
    const q = s1['qemu'] as { maxFrameOut: number; framesIn: number; framesOut: number; resets: number; connects: number };
    const vmPort = ports['vm']!;
    const up = ports['uplink']!;
    t.diagnostic(`after boot 1: vm ${JSON.stringify(vmPort)} qemu ${JSON.stringify(q)} uplink ${JSON.stringify(up)}`);
    assert.ok(q.framesIn >= 10, `frames from the VM reached the switch (${q.framesIn})`);
    assert.ok(q.framesOut >= far.blob.length / 1460, `the download reached the VM as MTU frames (${q.framesOut})`);
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
    far.assertPinged(r2, `after reconnect\n${serialOf(r2)}`);
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
    far.assertPinged(r3, `with vswitch dialling QEMU\n${serialOf(r3)}`);
    await child.wait('connect-mode link', (e) => e.event === 'link' && e['mode'] === 'connect' && e.state === 'connected', 1000, true);
    assert.ok(!child.events.some((e) => e.event === 'error'), `switch child reported errors: ${JSON.stringify(child.events.filter((e) => e.event === 'error'))}`);
  } finally {
    await child?.stop();
    socketLeft = existsSync(socket);
    far.cleanup();
  }
  far.assertGone();
  assert.ok(!socketLeft, 'the switch removed its socket file');
});
