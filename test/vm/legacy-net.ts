// What the QEMU legacy-NIC tests share: the script the VM runs (ping, then
// optionally download a file and print its SHA-256 on the serial console),
// the "other machine" behind the switch's uplink (a namespace on a veth,
// serving a random file over HTTP), the checks on what the VM printed, and
// cleanup that also runs when the test process dies half-way.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { hasCommand, isRoot, need, netnsList, runPrefix } from '../util/env.js';
import { nativeAvailable } from '../../src/io/native/index.js';
import { vmUnavailable, type BootResult } from './tiny-vm.js';

/** What a legacy-NIC VM test needs (root, iproute2, ethtool, the tiny VM, the shim); false: it has said why (need()). */
export function canRunLegacyVm(t: TestContext): boolean {
  if (!need(t, isRoot(), 'needs root (network namespaces, AF_PACKET)')) return false;
  if (!need(t, hasCommand('ip') && hasCommand('ethtool'), 'needs iproute2 and ethtool')) return false;
  const why = vmUnavailable();
  if (!need(t, why === null, `tiny VM: ${why}`)) return false;
  return need(t, nativeAvailable(), 'needs the native addon (build/Release/vswitch_native.node)');
}

export const LEGACY_VM_SCRIPT = `
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

export function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? ''}${r.stderr}`);
  return r.stdout;
}

export const linkExists = (name: string): boolean => spawnSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;

/** The namespace across the switch, its veth, the VM's addresses and the file it downloads. */
export class FarNetwork {
  readonly prefix: string;
  readonly ns: string;
  /** The veth end in the root namespace: the switch's uplink. */
  readonly uplink: string;
  readonly nsIp: string;
  readonly vmIp: string;
  readonly mac: string;
  /** A temporary directory for the test's files, removed by cleanup(). */
  readonly dir: string;
  readonly blob = randomBytes(4 << 20);
  readonly blobHash = createHash('sha256').update(this.blob).digest('hex');
  private httpd: ChildProcess | null = null;
  /** Run at cleanup (and when the process dies half-way) before the network goes: stop the switch. */
  onCleanup: (() => void) | null = null;
  private readonly emergency = (): void => this.cleanup();
  private readonly onSignal = (): void => process.exit(130);

  constructor(tag: string) {
    this.prefix = runPrefix(tag);
    this.ns = `${this.prefix}-vm`;
    this.uplink = `${this.prefix}u`;
    const k = 100 + Math.floor(Math.random() * 100);
    this.nsIp = `198.18.${k}.1`;
    this.vmIp = `198.18.${k}.2`;
    this.mac = `52:54:00:${[0, 0, 0].map(() => Math.floor(Math.random() * 256).toString(16).padStart(2, '0')).join(':')}`;
    this.dir = mkdtempSync(join(tmpdir(), `${this.prefix}-`));
    // If the test process dies half-way (runner timeout, ^C), still leave nothing behind.
    process.on('exit', this.emergency);
    process.once('SIGINT', this.onSignal);
    process.once('SIGTERM', this.onSignal);
  }

  /** The namespace with its address on the far veth (its kernel keeps TSO on) and busybox httpd serving /blob. */
  up(): void {
    const far = `${this.prefix}n`;
    const www = join(this.dir, 'www');
    mkdirSync(www);
    writeFileSync(join(www, 'blob'), this.blob);
    sh('ip', ['netns', 'add', this.ns]);
    sh('ip', ['link', 'add', this.uplink, 'type', 'veth', 'peer', 'name', far]);
    sh('ip', ['link', 'set', far, 'netns', this.ns]);
    sh('ip', ['-n', this.ns, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', this.ns, 'addr', 'add', `${this.nsIp}/24`, 'dev', far]);
    sh('ip', ['-n', this.ns, 'link', 'set', far, 'up']);
    sh('sysctl', ['-q', '-w', `net.ipv6.conf.${this.uplink}.disable_ipv6=1`]);
    sh('ip', ['link', 'set', this.uplink, 'up']);
    this.httpd = spawn('ip', ['netns', 'exec', this.ns, '/bin/busybox', 'httpd', '-f', '-p', `${this.nsIp}:8080`, '-h', www], { stdio: 'ignore' });
  }

  /** Idempotent: the switch (onCleanup), httpd, the namespace, the veth, the directory. */
  cleanup(): void {
    process.off('exit', this.emergency);
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    this.onCleanup?.();
    this.onCleanup = null;
    if (this.httpd !== null && this.httpd.exitCode === null) this.httpd.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', this.ns]);
    if (linkExists(this.uplink)) spawnSync('ip', ['link', 'del', this.uplink]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Nothing of it is left on the machine. */
  assertGone(): void {
    assert.ok(!netnsList().includes(this.ns), 'namespace removed');
    assert.ok(!linkExists(this.uplink), 'veth removed');
  }

  /** The VM got 3 of 3 ping replies. */
  assertPinged(r: BootResult, context: string): void {
    const m = /VSQ-PING rc=(\d+) (\d+) packets received/.exec(r.serial);
    assert.ok(m !== null && m[1] === '0' && m[2] === '3', `ping from the VM: 3 of 3 replies expected\n${context}`);
  }

  /** The VM downloaded the file whole: the SHA-256 it printed is the file's. */
  assertDownloaded(r: BootResult, context: string): void {
    assert.match(r.serial, /VSQ-WGET rc=0/, context);
    const sha = /VSQ-SHA256 ([0-9a-f]{64}) (\d+)/.exec(r.serial);
    assert.ok(sha !== null, context);
    assert.equal(Number(sha[2]), this.blob.length, 'downloaded size');
    assert.equal(sha[1], this.blobHash, 'the VM computed the file\'s SHA-256');
  }
}
