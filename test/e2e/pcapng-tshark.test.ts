// A capture of a running switch, read by real tshark: it must open the file
// without complaint, see every packet on the right interface in the right
// direction, find the checksums the frames were built with Good, see the
// 802.1Q tag the uplink sent, and show the offload comments — also to
// display filters, which is how a user finds the offloaded packets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RxCsum } from '../../src/packet/meta.js';
import { inject } from '../../src/io/memory.js';
import { PcapngWriter, capturePort } from '../../src/io/pcapng.js';
import { buildFrame, type FrameSpec } from '../../src/wire/builder.js';
import { hasCommand, need } from '../util/env.js';
import { topology, tso, tcpFrame, MAC, IP4, IP6 } from '../util/topology.js';

const CHECKSUM_PREFS = ['-o', 'tcp.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-o', 'ip.check_checksum:TRUE'];

/**
 * A Wireshark tool with its exit status checked. As root they warn on
 * stderr ("Running as user root … could be dangerous"): expected;
 * complaints about the file are not.
 */
function run(cmd: 'tshark' | 'capinfos', args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.error, undefined, `${cmd} did not run: ${r.error?.message}`);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /damaged|corrupt|isn't a capture file|cut short|unknown|invalid/i, `${cmd} complained:\n${r.stderr}`);
  return r.stdout;
}
const tshark = (args: string[]) => run('tshark', args);

test('tshark reads a switch capture: every packet, interfaces, directions, VLAN, Good checksums, offload comments', async (t) => {
  if (!need(t, hasCommand('tshark'), 'needs tshark')) return;
  if (!need(t, hasCommand('capinfos'), 'needs capinfos (wireshark-common, a dependency of tshark)')) return;
  const dir = mkdtempSync(join(tmpdir(), 'vswitch-pcapng-'));
  try {
    const file = join(dir, 'switch.pcapng');
    // vm1 and vm2 in VLAN 100; the uplink trunks VLAN 100 tagged.
    const sw = topology({
      overrides: {
        vm1: { vlan: { mode: 'access', vlan: 100 } },
        vm2: { vlan: { mode: 'access', vlan: 100 } },
        peer: { vlan: { mode: 'trunk', allowed: [100] } },
      },
    });
    const tag100 = [{ tpid: 0x8100, pcp: 0, dei: false, vid: 100 }];
    const frame = (s: Omit<FrameSpec, 'checksum'>) => buildFrame({ checksum: 'full', ...s }).frame;
    // Teach the switch where vm2 and the uplink are (before capturing).
    const bcast = { dstMac: 0xffffffffffff, ip: { version: 4, src: IP4.vm2, dst: '198.18.255.255' }, l4: { kind: 'udp', sport: 1, dport: 1 } } as const;
    inject(sw.sw, sw.ports.vm2, [frame({ ...bcast, srcMac: MAC.vm2 })]);
    inject(sw.sw, sw.ports.peer, [frame({ ...bcast, srcMac: MAC.peer, vlans: tag100 })]);
    for (const be of Object.values(sw.be)) be.take();

    const w = new PcapngWriter(file);
    for (const n of ['vm1', 'vm2', 'peer'] as const) capturePort(sw.ports[n], w);
    // 1. TCP/IPv4, correct checksums, vm1 → vm2.
    const tcp4 = frame({
      srcMac: MAC.vm1, dstMac: MAC.vm2, ip: { version: 4, src: IP4.vm1, dst: IP4.vm2 },
      l4: { kind: 'tcp', sport: 40000, dport: 5201, seq: 1000, flags: 0x18 }, payload: 200,
    });
    // 2. A TSO super-frame (partial checksum, gso metadata), vm1 → vm2: passed through whole.
    const superFrame = tcpFrame('vm1', 'vm2', 8000, { seq: 1200 });
    // 3. TCP/IPv4, correct checksums, vm1 → the uplink: sent tagged with VLAN 100.
    const toUplink = frame({
      srcMac: MAC.vm1, dstMac: MAC.peer, ip: { version: 4, src: IP4.vm1, dst: IP4.peer },
      l4: { kind: 'tcp', sport: 40001, dport: 443, seq: 5, flags: 0x02 }, payload: 0,
    });
    // 4. UDP/IPv6, correct checksum, vm1 → vm2.
    const udp6 = frame({
      srcMac: MAC.vm1, dstMac: MAC.vm2, ip: { version: 6, src: IP6.vm1, dst: IP6.vm2 },
      l4: { kind: 'udp', sport: 5353, dport: 5000 }, payload: 120,
    });
    // 5. UDP/IPv6 from the uplink, tagged 100, checksum verified by the NIC → vm1 (untagged).
    const fromUplink = frame({
      srcMac: MAC.peer, dstMac: MAC.vm1, vlans: tag100, ip: { version: 6, src: IP6.peer, dst: IP6.vm1 },
      l4: { kind: 'udp', sport: 5000, dport: 5353 }, payload: 64,
    });
    // 6. UDP/IPv4 from the uplink whose NIC stripped the tag (VLAN 100 out of band) → vm1.
    const stripped = frame({
      srcMac: MAC.peer, dstMac: MAC.vm1, ip: { version: 4, src: IP4.peer, dst: IP4.vm1 },
      l4: { kind: 'udp', sport: 53, dport: 5353 }, payload: 40,
    });
    inject(sw.sw, sw.ports.vm1, [tcp4]);
    inject(sw.sw, sw.ports.vm1, [superFrame], tso());
    inject(sw.sw, sw.ports.vm1, [toUplink, udp6]);
    inject(sw.sw, sw.ports.peer, [fromUplink], (p) => { p.meta.rxCsum = RxCsum.VERIFIED; });
    inject(sw.sw, sw.ports.peer, [stripped], (p) => { p.meta.vlanPresent = true; p.meta.vlanTci = (5 << 13) | 100; });
    await w.close();

    const out = tshark([
      '-r', file, ...CHECKSUM_PREFS, '-T', 'fields', '-E', 'separator=|',
      '-e', 'frame.number', '-e', 'frame.interface_name', '-e', 'frame.interface_description',
      '-e', 'frame.packet_flags_direction', '-e', 'frame.len', '-e', 'vlan.id',
      '-e', 'ip.checksum.status', '-e', 'tcp.checksum.status', '-e', 'udp.checksum.status', '-e', 'frame.comment',
    ]);
    // Wireshark's checksum status values: 0 Bad, 1 Good, 2 Unverified.
    const G = '1';
    const B = '0';
    const rows = out.trim().split('\n').map((l) => l.split('|'));
    const expected: string[][] = [
      // number, interface, kind, direction, length, vlan, ip, tcp, udp, comment
      ['1', 'vm1', 'synthetic', '0x00000001', `${tcp4.length}`, '', G, G, '', 'vswitch: dir=rx gso=none csum=none'],
      ['2', 'vm2', 'synthetic', '0x00000002', `${tcp4.length}`, '', G, G, '', 'vswitch: dir=tx gso=none csum=none'],
      ['3', 'vm1', 'synthetic', '0x00000001', `${superFrame.length}`, '', G, B, '', 'vswitch: dir=rx gso=tcpv4 gso_size=1448 hdr_len=54 csum=partial(34+16)'],
      ['4', 'vm2', 'synthetic', '0x00000002', `${superFrame.length}`, '', G, B, '', 'vswitch: dir=tx gso=tcpv4 gso_size=1448 hdr_len=54 csum=partial(34+16)'],
      ['5', 'vm1', 'synthetic', '0x00000001', `${toUplink.length}`, '', G, G, '', 'vswitch: dir=rx gso=none csum=none'],
      ['6', 'vm1', 'synthetic', '0x00000001', `${udp6.length}`, '', '', '', G, 'vswitch: dir=rx gso=none csum=none'],
      ['7', 'peer', 'external', '0x00000002', `${toUplink.length + 4}`, '100', G, G, '', 'vswitch: dir=tx gso=none csum=none'],
      ['8', 'vm2', 'synthetic', '0x00000002', `${udp6.length}`, '', '', '', G, 'vswitch: dir=tx gso=none csum=none'],
      ['9', 'peer', 'external', '0x00000001', `${fromUplink.length}`, '100', '', '', G, 'vswitch: dir=rx gso=none csum=none rx_csum=verified'],
      ['10', 'vm1', 'synthetic', '0x00000002', `${fromUplink.length - 4}`, '', '', '', G, 'vswitch: dir=tx gso=none csum=none rx_csum=verified'],
      // The out-of-band tag is put back into the captured frame; the comment says where it was.
      ['11', 'peer', 'external', '0x00000001', `${stripped.length + 4}`, '100', G, '', G, 'vswitch: dir=rx gso=none csum=none vlan=100 vlan_pcp=5'],
      ['12', 'vm1', 'synthetic', '0x00000002', `${stripped.length}`, '', G, '', G, 'vswitch: dir=tx gso=none csum=none'],
    ];
    assert.deepEqual(rows, expected, `tshark saw:\n${out}`);

    // The comments are what a user filters on.
    const gso = tshark(['-r', file, '-Y', 'frame.comment contains "gso=tcpv4"', '-T', 'fields', '-e', 'frame.number']);
    assert.deepEqual(gso.trim().split('\n'), ['3', '4']);
    // Every frame built with correct checksums is Good; the only Bad ones are the partial-checksum super-frames.
    const bad = tshark(['-r', file, ...CHECKSUM_PREFS, '-Y', 'tcp.checksum.status == "Bad" || udp.checksum.status == "Bad" || ip.checksum.status == "Bad"', '-T', 'fields', '-e', 'frame.number']);
    assert.deepEqual(bad.trim().split('\n'), ['3', '4']);
    // The file as a whole: the application, three described interfaces, and their statistics blocks.
    const info = run('capinfos', ['-c', '-I', '-F', file]);
    assert.match(info, /^Number of packets: +12$/m, info);
    assert.match(info, /^Number of interfaces in file: 3$/m, info);
    assert.match(info, /^Capture application: +vswitch$/m, info);
    assert.match(info, /^Capture oper-sys: +\S+/m, info);
    const ifaces = [...info.matchAll(/Name = (\S+)\n\s+Description = (\S+)[\s\S]*?Comment = (.*)\n\s+Number of stat entries = (\d+)\n\s+Number of packets = (\d+)/g)]
      .map((m) => m.slice(1).join(' '));
    assert.deepEqual(ifaces, [
      'vm1 synthetic vswitch port 0: kind=synthetic mtu=1500 vlan=access:100 1 6',
      'vm2 synthetic vswitch port 1: kind=synthetic mtu=1500 vlan=access:100 1 3',
      'peer external vswitch port 4: kind=external mtu=1500 vlan=trunk:100 1 3',
    ], info);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
