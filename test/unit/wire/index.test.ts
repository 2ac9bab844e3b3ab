import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as wire from '../../../src/wire/index.js';
import * as ipv4 from '../../../src/wire/ipv4.js';
import * as ipv6 from '../../../src/wire/ipv6.js';
import * as bytes from '../../../src/wire/bytes.js';
import { captured } from '../../util/captured-frames.js';
import { gcCountDuring } from '../../util/alloc.js';

test('the index exports every module, header parsers under parseX and text parsers under xFromString', () => {
  assert.equal(wire.parseIpv4, ipv4.parseIpv4);
  assert.equal(wire.parseIpv6, ipv6.parseIpv6);
  assert.equal(wire.ipv4FromString, bytes.ipv4FromString);
  assert.equal(wire.ipv6FromString, bytes.ipv6FromString);
  assert.equal(wire.macFromString, bytes.macFromString);
  for (const name of [
    'EthernetView', 'ArpView', 'Ipv4View', 'Ipv6View', 'Ipv6OptionsView', 'Ipv6RoutingView', 'Ipv6FragmentView',
    'Ipv6ExtWalker', 'TcpView', 'UdpView', 'Icmpv4View', 'Icmpv6View', 'EspView', 'EspTrailer', 'VxlanView',
    'FrameLayout', 'parseFrame', 'buildFrame', 'sum', 'checksum', 'simdChecksumKernel', 'EMPTY', 'get16',
    'emitTcp', 'emitUdp', 'emitIcmpv6', 'emitEspTrailer', 'parseEspTrailer', 'emitVxlan', 'emitArp', 'VXLAN_PORT',
  ]) {
    assert.ok(name in wire, name);
  }
});

test('the hot path allocates nothing: wrap, walk, getters and checksum checks on reused views', async () => {
  const tcpFrame = captured.tcpData;
  const udpFrame = captured.udp6;
  const ndFrame = captured.neighborSolicit;
  const eth = new wire.EthernetView();
  const ip4 = new wire.Ipv4View();
  const ip6 = new wire.Ipv6View();
  const walker = new wire.Ipv6ExtWalker();
  const tcp = new wire.TcpView();
  const udp = new wire.UdpView();
  const icmp6 = new wire.Icmpv6View();
  // Each scenario is its own loop (its own call sites, so V8 can inline) and
  // counts successes in a small integer. Values above 2^31 (sequence numbers,
  // 48-bit MACs) are left out on purpose: returned from a call V8 chose not
  // to inline, a double is boxed — an allocation that depends on the
  // caller's inlining budget (it came and went between runs here), not on the
  // views, which create no objects.
  const scenarios: Record<string, (n: number) => number> = {
    'Ethernet + IPv4 + TCP wrap': (n) => {
      let ok = 0;
      for (let i = 0; i < n; i++) {
        const e = eth.wrap(tcpFrame, 0, tcpFrame.length) ?? ip4.wrap(tcpFrame, eth.payloadOff, eth.payloadLen) ??
          tcp.wrap(tcpFrame, ip4.payloadOff, ip4.payloadLen);
        if (e === null) ok++;
      }
      return ok;
    },
    'TCP getters and options': (n) => {
      let ok = 0;
      for (let i = 0; i < n; i++) {
        if (tcp.srcPort !== tcp.dstPort && tcp.flags !== 0 && tcp.mss === -1 && tcp.windowScale === -1 && tcp.payloadLen > 0) ok++;
      }
      return ok;
    },
    'TCP checksum over IPv4': (n) => {
      let ok = 0;
      for (let i = 0; i < n; i++) if (tcp.verifyChecksumV4(ip4)) ok++;
      return ok;
    },
    'IPv6 + walker + UDP + checksum': (n) => {
      let ok = 0;
      for (let i = 0; i < n; i++) {
        const e = ip6.wrap(udpFrame, 14, udpFrame.length - 14) ?? walker.walk(ip6) ??
          udp.wrap(udpFrame, walker.upperOff, walker.upperLen);
        if (e === null && udp.verifyChecksumV6(udpFrame, ip6.srcOff, ip6.dstOff)) ok++;
      }
      return ok;
    },
    'IPv6 + walker + ICMPv6 ND options': (n) => {
      let ok = 0;
      for (let i = 0; i < n; i++) {
        const e = ip6.wrap(ndFrame, 14, ndFrame.length - 14) ?? walker.walk(ip6) ??
          icmp6.wrap(ndFrame, walker.upperOff, walker.upperLen);
        if (e === null && icmp6.findNdOption(1) === icmp6.nextNdOption(-1) && icmp6.ndOptionsLen === 8) ok++;
      }
      return ok;
    },
  };
  for (const [name, run] of Object.entries(scenarios)) {
    assert.equal(run(20000), 20000, `${name}: every iteration succeeded`); // warm up: optimized code first
    let ok = 0;
    const gcs = await gcCountDuring(() => { ok = run(300000); });
    assert.equal(ok, 300000, `${name}: every iteration succeeded`);
    assert.equal(gcs, 0, `${name}: garbage collections during 300k packets`);
  }
});
