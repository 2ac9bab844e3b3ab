// A tiny Linux VM for end-to-end tests, assembled at test time from Debian
// packages already on the machine — nothing binary is committed:
//
//   kernel     /boot/vmlinuz-<release> from linux-image-amd64
//   driver     the e1000 module of that kernel (+ what modules.dep says it needs)
//   userland   /bin/busybox from busybox-static
//
// packed into a gzip'd newc cpio by the writer below (so device nodes such as
// /dev/console need no mknod and no root), and booted with
// qemu-system-x86_64 under TCG — software emulation, never KVM. The /init
// mounts /proc, /sys and /dev, loads the modules, exports every `vsq.KEY=VALUE`
// of the kernel command line as VSQ_KEY, runs the test's script (baked into
// the initramfs as /vsq/run), prints `VSQ-EXIT <status>` and powers off.
//
// A test may add files of its own (`files`), e.g. a dynamically linked host
// binary with the shared libraries ldd names for it (`executableWithLibraries`:
// iproute2's `ip`, since busybox's has no `ip xfrm`).
//
// Builds are cached by kernel release and package version plus a hash of
// everything that goes in, under $XDG_CACHE_HOME/vswitch-vm or
// /var/tmp/vswitch-vm-cache.

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';

export const QEMU = 'qemu-system-x86_64';
export const BUSYBOX = '/bin/busybox';

/** Debian packages the VM needs on the test machine. */
export const VM_PACKAGES = ['qemu-system-x86', 'linux-image-amd64', 'busybox-static'] as const;

export interface KernelInfo {
  release: string;
  vmlinuz: string;
  modulesDir: string;
  /** Debian package version of linux-image-<release> (cache key). */
  packageVersion: string;
}

/** The newest Debian kernel that has its modules installed, or null. */
export function findDebianKernel(): KernelInfo | null {
  let names: string[];
  try {
    names = readdirSync('/boot').filter((n) => n.startsWith('vmlinuz-'));
  } catch {
    return null;
  }
  const found = names
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((rel) => existsSync(join('/lib/modules', rel, 'modules.dep')))
    .sort(compareRelease);
  const release = found[found.length - 1];
  if (release === undefined) return null;
  const q = spawnSync('dpkg-query', ['-W', '-f=${Version}', `linux-image-${release}`], { encoding: 'utf8' });
  return {
    release,
    vmlinuz: join('/boot', `vmlinuz-${release}`),
    modulesDir: join('/lib/modules', release),
    packageVersion: q.status === 0 && q.stdout.trim() !== '' ? q.stdout.trim() : 'unknown',
  };
}

function compareRelease(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((x) => Number.parseInt(x, 10));
  const pb = b.split(/[.-]/).map((x) => Number.parseInt(x, 10));
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? -1;
    const y = pb[i] ?? -1;
    if (Number.isNaN(x) || Number.isNaN(y)) continue;
    if (x !== y) return x - y;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Why the VM cannot run here, or null when it can. */
export function vmUnavailable(): string | null {
  if (spawnSync('sh', ['-c', `command -v ${QEMU}`], { stdio: 'ignore' }).status !== 0) return `${QEMU} missing (apt-get install qemu-system-x86)`;
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} missing (apt-get install busybox-static)`;
  const k = findDebianKernel();
  if (k === null) return 'no Debian kernel with modules in /boot and /lib/modules (apt-get install linux-image-amd64)';
  if (modulePath(k, 'e1000') === null) return `kernel ${k.release} has no e1000 module`;
  return null;
}

export function cacheRoot(): string {
  const x = process.env['XDG_CACHE_HOME'];
  return x !== undefined && x !== '' ? join(x, 'vswitch-vm') : '/var/tmp/vswitch-vm-cache';
}

// --- newc cpio ---------------------------------------------------------------

interface CpioEntry {
  name: string;
  mode: number;
  data?: Uint8Array;
  rdevMajor?: number;
  rdevMinor?: number;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/** The "new ASCII" (newc, magic 070701) cpio format the kernel unpacks an initramfs from. */
export function newcArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad4 = (n: number) => (4 - (n % 4)) % 4;
  let ino = 1;
  const push = (e: CpioEntry) => {
    const data = e.data ?? new Uint8Array(0);
    const name = Buffer.from(`${e.name}\0`);
    const fields = [
      ino++, e.mode, 0, 0, (e.mode & 0o170000) === S_IFDIR ? 2 : 1, 0, data.length,
      0, 0, e.rdevMajor ?? 0, e.rdevMinor ?? 0, name.length, 0,
    ];
    const header = `070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`;
    parts.push(Buffer.from(header, 'ascii'), name, Buffer.alloc(pad4(110 + name.length)));
    parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength), Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) push(e);
  push({ name: 'TRAILER!!!', mode: 0 });
  return Buffer.concat(parts);
}

// --- the initramfs -----------------------------------------------------------

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in $(cat /vsq/modules); do insmod "/lib/modules/$m" || echo "VSQ-INSMOD-FAILED $m"; done
for w in $(cat /proc/cmdline); do
  case "$w" in
    vsq.*=*) k=\${w%%=*}; k=\${k#vsq.}; export "VSQ_$(echo "$k" | tr a-z. A-Z_)=\${w#*=}" ;;
  esac
done
echo "VSQ-BOOTED $(cut -d' ' -f1 /proc/uptime)"
sh /vsq/run
echo "VSQ-EXIT $?"
sync
poweroff -f
`;

/** A file to put into the initramfs. */
export interface ExtraFile {
  /** Absolute path inside the VM (its directories are created). */
  path: string;
  data: Uint8Array;
  /** Permission bits (default 0o755). */
  mode?: number;
}

/**
 * A dynamically linked host executable and every shared library `ldd` names
 * for it (the dynamic loader included), each at the path ldd gives, so it
 * runs inside the VM as it does on the host. `at` places the executable
 * elsewhere (default: where it is on the host).
 */
export function executableWithLibraries(bin: string, at?: string): ExtraFile[] {
  const files: ExtraFile[] = [{ path: at ?? bin, data: readFileSync(bin), mode: 0o755 }];
  const r = spawnSync('ldd', [bin], { encoding: 'utf8' });
  if (r.status !== 0) {
    // a static executable: ldd says "not a dynamic executable" and fails
    if (/not a dynamic executable|statically linked/.test(`${r.stdout}${r.stderr}`)) return files;
    throw new Error(`ldd ${bin} failed: ${r.stderr || r.error?.message}`);
  }
  for (const line of r.stdout.split('\n')) {
    // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (/not found/.test(line)) throw new Error(`ldd ${bin}: ${line.trim()}`);
    if (m === null) continue;
    const lib = m[1]!;
    if (!files.some((f) => f.path === lib)) files.push({ path: lib, data: readFileSync(lib), mode: 0o755 });
  }
  return files;
}

export interface InitramfsOptions {
  /** Shell script (busybox sh) run after boot, with VSQ_* from the command line in its environment. */
  script: string;
  /** Kernel modules to load, in order, with their dependencies first (default: e1000). */
  modules?: readonly string[];
  /** More files (executables, libraries, data) to put in. */
  files?: readonly ExtraFile[];
  kernel?: KernelInfo;
  cacheDir?: string;
}

export interface BuiltVm {
  kernel: KernelInfo;
  /**
   * What QEMU boots (-kernel): the uncompressed ELF vmlinux when it could be
   * extracted and the kernel has PVH (QEMU then jumps straight in, skipping
   * the seconds TCG spends decompressing it), else the bzImage.
   */
  kernelImage: string;
  pvh: boolean;
  initramfs: string;
  cached: boolean;
}

/** modules.dep path (relative to the modules dir) of a module, or null. */
function modulePath(k: KernelInfo, name: string): string | null {
  const dep = readFileSync(join(k.modulesDir, 'modules.dep'), 'utf8');
  const want = name.replace(/-/g, '_');
  for (const line of dep.split('\n')) {
    const file = line.split(':')[0]!;
    const base = file.slice(file.lastIndexOf('/') + 1).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
    if (base === want) return file;
  }
  return null;
}

/** The module files to load for `names`, dependencies first (per modules.dep). */
function moduleLoadOrder(k: KernelInfo, names: readonly string[]): string[] {
  const deps = new Map<string, string[]>();
  for (const line of readFileSync(join(k.modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    deps.set(line.slice(0, i), line.slice(i + 1).trim().split(/\s+/).filter((s) => s !== ''));
  }
  const order: string[] = [];
  const visit = (file: string) => {
    if (order.includes(file)) return;
    for (const d of deps.get(file) ?? []) visit(d);
    order.push(file);
  };
  for (const n of names) {
    const f = modulePath(k, n);
    if (f === null) throw new Error(`kernel ${k.release} has no module ${n}`);
    visit(f);
  }
  return order;
}

function readModule(path: string): Uint8Array {
  if (path.endsWith('.ko')) return readFileSync(path);
  if (path.endsWith('.ko.gz')) return gunzipSync(readFileSync(path));
  const tool = path.endsWith('.ko.xz') ? 'xz' : path.endsWith('.ko.zst') ? 'zstd' : null;
  if (tool === null) throw new Error(`unknown module format: ${path}`);
  const r = spawnSync(tool, ['-dc', path], { maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${tool} -dc ${path} failed: ${r.stderr?.toString() ?? r.error?.message}`);
  return r.stdout;
}

/** Build (or take from the cache) the kernel and an initramfs running `opts.script`. */
export function buildInitramfs(opts: InitramfsOptions): BuiltVm {
  const k = opts.kernel ?? findDebianKernel();
  if (k === null) throw new Error('no Debian kernel installed (apt-get install linux-image-amd64)');
  const dir = join(opts.cacheDir ?? cacheRoot(), `${k.release}_${k.packageVersion}`.replace(/[^A-Za-z0-9._+-]/g, '_'));
  mkdirSync(dir, { recursive: true });
  const modules = moduleLoadOrder(k, opts.modules ?? ['e1000']);
  const bb = statSync(BUSYBOX);
  const files = opts.files ?? [];
  const h = createHash('sha256')
    .update(INIT).update('\0').update(opts.script).update('\0').update(modules.join(' '))
    .update(`\0${bb.size}:${bb.mtimeMs}`);
  for (const f of files) h.update(`\0${f.path}:${(f.mode ?? 0o755).toString(8)}:`).update(createHash('sha256').update(f.data).digest());
  const key = h.digest('hex').slice(0, 16);
  const { image: kernelImage, pvh } = kernelImageFor(k, dir);
  const initramfs = join(dir, `initramfs-${key}.cpio.gz`);
  if (existsSync(initramfs)) return { kernel: k, kernelImage, pvh, initramfs, cached: true };

  const dirs = ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'root', 'lib', 'lib/modules', 'vsq'];
  const entries: CpioEntry[] = dirs.map((d) => ({ name: d, mode: S_IFDIR | 0o755 }));
  entries.push({ name: 'dev/console', mode: S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1 });
  entries.push({ name: 'dev/null', mode: S_IFCHR | 0o666, rdevMajor: 1, rdevMinor: 3 });
  entries.push({ name: 'bin/busybox', mode: S_IFREG | 0o755, data: readFileSync(BUSYBOX) });
  entries.push({ name: 'bin/sh', mode: S_IFLNK | 0o777, data: Buffer.from('busybox') });
  entries.push({ name: 'init', mode: S_IFREG | 0o755, data: Buffer.from(INIT) });
  entries.push({ name: 'vsq/run', mode: S_IFREG | 0o755, data: Buffer.from(opts.script) });
  const names: string[] = [];
  for (const m of modules) {
    const base = m.slice(m.lastIndexOf('/') + 1).replace(/\.(xz|zst|gz)$/, '');
    names.push(base);
    entries.push({ name: `lib/modules/${base}`, mode: S_IFREG | 0o644, data: readModule(join(k.modulesDir, m)) });
  }
  entries.push({ name: 'vsq/modules', mode: S_IFREG | 0o644, data: Buffer.from(`${names.join('\n')}\n`) });
  const have = new Set(entries.map((e) => e.name));
  for (const f of files) {
    const rel = f.path.replace(/^\/+/, '');
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!have.has(d)) { have.add(d); entries.push({ name: d, mode: S_IFDIR | 0o755 }); }
    }
    if (have.has(rel)) throw new Error(`initramfs: ${f.path} is there already`);
    have.add(rel);
    entries.push({ name: rel, mode: S_IFREG | (f.mode ?? 0o755), data: f.data });
  }
  atomicWrite(initramfs, gzipSync(newcArchive(entries), { level: 6 }));
  return { kernel: k, kernelImage, pvh, initramfs, cached: false };
}

/**
 * The ELF vmlinux inside a bzImage, for a PVH boot. The compressed kernel
 * sits at payload_offset (setup header 0x248, boot protocol ≥ 2.08) after the
 * real-mode setup sectors; its format is told by its magic. Null when any of
 * that does not hold (then the bzImage is booted as it is).
 */
function extractVmlinux(bz: Buffer): Buffer | null {
  if (bz.length < 0x250 || bz.toString('latin1', 0x202, 0x206) !== 'HdrS' || bz.readUInt16LE(0x206) < 0x208) return null;
  const setupSects = bz[0x1f1] === 0 ? 4 : bz[0x1f1]!;
  const start = (setupSects + 1) * 512 + bz.readUInt32LE(0x248);
  const payload = bz.subarray(start, start + bz.readUInt32LE(0x24c));
  const magic = payload.subarray(0, 6).toString('hex');
  let out: Buffer | null = null;
  if (magic.startsWith('1f8b')) {
    out = gunzipSync(payload);
  } else {
    const tool = magic === 'fd377a585a00' ? ['xz', '-dc', '--single-stream'] : magic.startsWith('28b52ffd') ? ['zstd', '-dcq'] : null;
    if (tool === null) return null;
    const r = spawnSync(tool[0]!, tool.slice(1), { input: payload, maxBuffer: 512 << 20 });
    if (r.error !== undefined || r.stdout === null || r.stdout.length === 0) return null;
    out = r.stdout;
  }
  return out.length > 4 && out.readUInt32BE(0) === 0x7f454c46 ? out : null;
}

function kernelImageFor(k: KernelInfo, dir: string): { image: string; pvh: boolean } {
  const elf = join(dir, 'vmlinux');
  const bz = join(dir, 'vmlinuz');
  if (existsSync(elf)) return { image: elf, pvh: true };
  if (existsSync(bz)) return { image: bz, pvh: false };
  const image = readFileSync(k.vmlinuz);
  let config = '';
  try {
    config = readFileSync(join('/boot', `config-${k.release}`), 'utf8');
  } catch {
    // no config: assume no PVH
  }
  const vmlinux = /^CONFIG_PVH=y$/m.test(config) ? extractVmlinux(image) : null;
  if (vmlinux !== null) {
    atomicWrite(elf, vmlinux);
    return { image: elf, pvh: true };
  }
  atomicWrite(bz, image);
  return { image: bz, pvh: false };
}

function atomicWrite(path: string, data: Uint8Array): void {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

// --- booting -----------------------------------------------------------------

/** QEMUs running now: killed if this process exits before bootVm could. */
const running = new Set<ReturnType<typeof spawn>>();
process.on('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

export interface BootOptions {
  vm: BuiltVm;
  /** Exported to the script as VSQ_<KEY> (values must not contain spaces). */
  params?: Record<string, string>;
  /** QEMU arguments for the network, e.g. ['-netdev', 'stream,…', '-device', 'e1000,…']. */
  net: string[];
  memoryMb?: number;
  /** Serial output that means the script is done (default /VSQ-EXIT \d+/). */
  marker?: RegExp;
  /** Whole run, boot included (default 120 s). */
  timeoutMs?: number;
  /** Each serial line as it arrives. */
  onLine?: (line: string) => void;
}

export interface BootResult {
  serial: string;
  stderr: string;
  exitCode: number | null;
  signal: string | null;
  markerSeen: boolean;
  timedOut: boolean;
  /** From spawning QEMU to the /init's first line (VSQ-BOOTED). */
  bootMs: number | null;
  elapsedMs: number;
  args: string[];
}

/** The QEMU command line for a boot (TCG only: KVM is never used). */
export function qemuArgs(o: BootOptions): string[] {
  const params = Object.entries(o.params ?? {}).map(([k, v]) => {
    if (/\s/.test(v) || /\s/.test(k)) throw new Error(`vsq.${k}: no spaces on the kernel command line`);
    return `vsq.${k}=${v}`;
  });
  return [
    '-M', 'pc', '-accel', 'tcg', '-m', String(o.memoryMb ?? 256), '-smp', '1',
    '-nographic', '-nodefaults', '-serial', 'stdio', '-no-reboot',
    '-kernel', o.vm.kernelImage, '-initrd', o.vm.initramfs,
    '-append', ['console=ttyS0', 'quiet', 'panic=-1', 'loglevel=3', ...params].join(' '),
    ...o.net,
  ];
}

/**
 * Boot, stream the serial console, and resolve when the marker appears and
 * QEMU has powered off, or on timeout. QEMU is always gone when this returns.
 */
export async function bootVm(o: BootOptions): Promise<BootResult> {
  const args = qemuArgs(o);
  const marker = o.marker ?? /VSQ-EXIT \d+/;
  const timeoutMs = o.timeoutMs ?? 120_000;
  const t0 = Date.now();
  const child = spawn(QEMU, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  running.add(child);
  let serial = '';
  let stderr = '';
  let pending = '';
  let bootMs: number | null = null;
  let markerSeen = false;
  let timedOut = false;
  let onMarker: (() => void) | null = null;
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (s: string) => {
    const text = s.replace(/\r/g, '');
    serial += text;
    pending += text;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (bootMs === null && line.includes('VSQ-BOOTED')) bootMs = Date.now() - t0;
      o.onLine?.(line);
    }
    if (!markerSeen && marker.test(serial)) {
      markerSeen = true;
      onMarker?.();
    }
  });
  child.stderr.on('data', (s: string) => { stderr += s; });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (e) => {
      stderr += `spawn: ${e.message}\n`;
      resolve({ code: null, signal: null });
    });
  });
  let timer: ReturnType<typeof setTimeout> | null = null;
  try {
    const timeout = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs); });
    const seen = new Promise<'marker'>((resolve) => { onMarker = () => resolve('marker'); if (markerSeen) resolve('marker'); });
    const first = await Promise.race([exited.then(() => 'exit' as const), seen, timeout]);
    if (first === 'timeout') timedOut = true;
    if (first === 'marker') {
      // the script is done: give the guest a moment to power off by itself
      const grace = new Promise<'grace'>((resolve) => setTimeout(() => resolve('grace'), 10_000).unref());
      await Promise.race([exited, grace]);
    }
  } finally {
    if (timer !== null) clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  const { code, signal } = await exited;
  running.delete(child);
  return { serial, stderr, exitCode: code, signal, markerSeen, timedOut, bootMs, elapsedMs: Date.now() - t0, args };
}
