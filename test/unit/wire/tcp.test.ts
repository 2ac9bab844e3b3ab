import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  TCP_MIN_HEADER_LEN, TcpFlag, TcpOptionKind, TcpView, checkTcpOptions, emitTcp, parseTcp, tcpOptionsLen,
  tcpReprHeaderLen, type TcpOption, type TcpRepr,
} from '../../../src/wire/tcp.js';
import { Ipv4View, IpProtocol, emitIpv4 } from '../../../src/wire/ipv4.js';
import { emitIpv6 } from '../../../src/wire/ipv6.js';
import { captured } from '../../util/captured-frames.js';
import { hex, wrapStrict } from '../../util/strict-bytes.js';
import { checkDamagedInputs, checkRandomBytes, checkRoundTrip, encoded } from '../../util/wire-props.js';
import { naiveChecksum } from '../../util/naive-checksum.js';

const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });

const tcpOption: fc.Arbitrary<TcpOption> = fc.oneof(
  fc.constant({ kind: 'nop' as const }),
  u16.map((value) => ({ kind: 'mss' as const, value })),
  u8.map((shift) => ({ kind: 'window-scale' as const, shift })),
  fc.constant({ kind: 'sack-permitted' as const }),
  fc.array(fc.record({ left: u32, right: u32 }), { minLength: 1, maxLength: 4 })
    .map((blocks) => ({ kind: 'sack' as const, blocks })),
  fc.record({ tsVal: u32, tsEcr: u32 }).map((t) => ({ kind: 'timestamps' as const, ...t })),
  fc.record({
    type: fc.integer({ min: 6, max: 255 }).filter((t) => t !== TcpOptionKind.Timestamps),
    data: fc.uint8Array({ maxLength: 12 }),
  }).map((u) => ({ kind: 'unknown' as const, ...u })),
);

const tcpRepr: fc.Arbitrary<TcpRepr> = fc.record({
  srcPort: u16, dstPort: u16, seq: u32, ack: u32,
  flags: fc.integer({ min: 0, max: 0x1ff }),
  window: u16, urgent: u16,
  options: fc.array(tcpOption, { maxLength: 8 }).filter((os) => tcpOptionsLen(os) <= 40),
});

/** The TCP segment of a captured IPv4 frame, with the IPv4 view. */
function segmentOf(frame: Uint8Array): { ip: Ipv4View; tcp: TcpView } {
  const ip = new Ipv4View();
  assert.equal(ip.wrap(frame, 14, frame.length - 14), null);
  assert.equal(ip.protocol, IpProtocol.TCP);
  const tcp = new TcpView();
  assert.equal(tcp.wrap(frame, ip.payloadOff, ip.payloadLen), null);
  return { ip, tcp };
}

test('captured SYN: fields, options, checksum, and emit reproduces it byte for byte', () => {
  const { ip, tcp } = segmentOf(captured.tcpSyn);
  const r = parseTcp(tcp);
  assert.deepStrictEqual(r, {
    srcPort: 0xddfe, dstPort: 5001, seq: 0xc3c38789, ack: 0, flags: TcpFlag.SYN, window: 0xfaf0, urgent: 0,
    options: [
      { kind: 'mss', value: 1460 }, { kind: 'sack-permitted' },
      { kind: 'timestamps', tsVal: 0x0eafbd60, tsEcr: 0 }, { kind: 'nop' }, { kind: 'window-scale', shift: 10 },
    ],
  });
  assert.deepStrictEqual([tcp.headerLen, tcp.payloadLen, tcp.mss, tcp.windowScale], [40, 0, 1460, 10]);
  assert.equal(tcp.findOption(TcpOptionKind.Timestamps), tcp.off + 26);
  assert.equal(tcp.findOption(TcpOptionKind.Sack), -1);
  assert.equal(tcp.verifyChecksumV4(ip), true);

  const frame = captured.tcpSyn.slice();
  const seg = segmentOf(frame);
  assert.equal(emitTcp(r, frame, seg.tcp.off), 40);
  seg.tcp.fillChecksumV4(seg.ip);
  assert.equal(hex(frame), hex(captured.tcpSyn));
});

test('captured SYN-ACK and data segment verify; any changed byte fails verification', () => {
  const synAck = segmentOf(captured.tcpSynAck);
  assert.equal(synAck.tcp.flags, TcpFlag.SYN | TcpFlag.ACK);
  assert.equal(synAck.tcp.verifyChecksumV4(synAck.ip), true);
  const frame = captured.tcpData.slice();
  const { ip, tcp } = segmentOf(frame);
  assert.equal(tcp.flags, TcpFlag.PSH | TcpFlag.ACK);
  assert.equal(new TextDecoder().decode(frame.subarray(tcp.payloadOff, tcp.payloadOff + tcp.payloadLen)), 'hello vswitch');
  assert.equal(tcp.verifyChecksumV4(ip), true);
  assert.equal(tcp.checksum, naiveChecksum(frame, ip.srcOff, ip.dstOff, 4, IpProtocol.TCP, tcp.off, tcp.len, tcp.checksumOff));
  for (let i = tcp.off; i < tcp.off + tcp.len; i++) {
    frame[i] ^= 0x10;
    assert.equal(tcp.verifyChecksumV4(ip), false, `byte ${i - tcp.off} changed`);
    frame[i] ^= 0x10;
  }
});

test('options are checked: known kinds need their length, others any length ≥ 2 that fits', () => {
  const opts = (...bytes: number[]) => {
    const b = new Uint8Array(((bytes.length + 3) & ~3));
    b.set(bytes);
    return checkTcpOptions(b, 0, b.length);
  };
  assert.equal(opts(2, 4, 5, 0xb4), null);
  assert.equal(opts(2, 3, 5), 'bad-option');
  assert.equal(opts(3, 3, 7), null);
  assert.equal(opts(3, 4, 7, 0), 'bad-option');
  assert.equal(opts(4, 2), null);
  assert.equal(opts(4, 3, 0), 'bad-option');
  assert.equal(opts(5, 10, 0, 0, 0, 1, 0, 0, 0, 2), null);
  assert.equal(opts(5, 2), 'bad-option');
  assert.equal(opts(5, 6, 0, 0, 0, 1), 'bad-option');
  assert.equal(opts(5, 11, 0, 0, 0, 1, 0, 0, 0, 2, 0), 'bad-option');
  assert.equal(opts(8, 10, 1, 2, 3, 4, 5, 6, 7, 8), null);
  assert.equal(opts(8, 8, 1, 2, 3, 4, 5, 6), 'bad-option');
  assert.equal(opts(30, 2), null);                 // MPTCP-sized unknown, no data
  assert.equal(opts(30, 1), 'bad-option');         // length below 2
  assert.equal(opts(30, 9, 1, 2), 'bad-option');   // runs past the area
  assert.equal(opts(1, 1, 1, 30), 'bad-option');   // kind without its length byte
  assert.equal(opts(0, 30, 1, 2), null);           // after EOL nothing is read
});

test('wrap: data offset and lengths', () => {
  const b = new Uint8Array(24);
  emitTcp({ srcPort: 1, dstPort: 2, seq: 3, ack: 4, flags: TcpFlag.ACK, window: 5, urgent: 0,
    options: [{ kind: 'mss', value: 1400 }] }, b, 0);
  assert.equal(new TcpView().wrap(b, 0, 24), null);
  assert.equal(new TcpView().wrap(b, 0, 23), 'truncated');
  assert.equal(new TcpView().wrap(b, 0, 19), 'truncated');
  assert.equal(new TcpView().wrap(b, 1, 24), 'bad-length');
  b[12] = 0x40;
  assert.equal(new TcpView().wrap(b, 0, 24), 'bad-header-length');
  b[12] = 0xf0;
  assert.equal(new TcpView().wrap(b, 0, 24), 'truncated');
});

test('flags: the AE bit lives in byte 12 and setting flags keeps the data offset', () => {
  const b = new Uint8Array(20);
  emitTcp({ srcPort: 1, dstPort: 2, seq: 3, ack: 4, flags: TcpFlag.AE | TcpFlag.CWR | TcpFlag.FIN, window: 5,
    urgent: 0, options: [] }, b, 0);
  assert.deepStrictEqual([b[12], b[13]], [0x51, 0x81]);
  const v = new TcpView();
  assert.equal(v.wrap(b, 0, 20), null);
  assert.equal(v.flags, TcpFlag.NS | 0x81);
  v.flags = TcpFlag.SYN;
  assert.deepStrictEqual([b[12], b[13], v.headerLen], [0x50, 0x02, 20]);
  v.flags = 0x1ff;
  assert.deepStrictEqual([b[12], b[13], v.headerLen], [0x51, 0xff, 20]);
  assert.deepStrictEqual([v.mss, v.windowScale], [-1, -1]);
});

test('emit pads options with EOL to a multiple of 4 and refuses more than 40 bytes', () => {
  const r: TcpRepr = { srcPort: 1, dstPort: 2, seq: 3, ack: 4, flags: 0, window: 5, urgent: 0,
    options: [{ kind: 'window-scale', shift: 7 }] };
  const b = new Uint8Array(24).fill(0xee);
  assert.equal(emitTcp(r, b, 0), 24);
  assert.equal(hex(b.subarray(20)), '03030700');
  const tooMany: TcpRepr = { ...r, options: Array.from({ length: 5 }, () => ({ kind: 'timestamps', tsVal: 1, tsEcr: 2 })) };
  assert.equal(tcpReprHeaderLen(tooMany), 72);
  assert.throws(() => emitTcp(tooMany, new Uint8Array(72), 0), RangeError);
});

test('parse∘emit is the identity', () => {
  checkRoundTrip({ arb: tcpRepr, make: () => new TcpView(), emit: emitTcp, reprLen: tcpReprHeaderLen, parse: parseTcp,
    numRuns: 500 });
});

test('checksum over IPv4 and IPv6 pseudo-headers: fill then verify, equal to a naive computation', () => {
  fc.assert(fc.property(tcpRepr, fc.uint8Array({ maxLength: 300 }), fc.boolean(), u32, u32,
    fc.uint8Array({ minLength: 32, maxLength: 32 }), (r, payload, v6, src4, dst4, addrs) => {
      const hl = tcpReprHeaderLen(r);
      const ipLen = v6 ? 40 : 20;
      const frame = new Uint8Array(ipLen + hl + payload.length);
      if (v6) {
        emitIpv6({ dscp: 0, ecn: 0, flowLabel: 0, payloadLen: hl + payload.length, nextHeader: IpProtocol.TCP,
          hopLimit: 64, src: addrs.subarray(0, 16), dst: addrs.subarray(16) }, frame, 0);
      } else {
        emitIpv4({ dscp: 0, ecn: 0, ident: 0, dontFragment: true, moreFragments: false, fragOffset: 0, ttl: 64,
          protocol: IpProtocol.TCP, src: src4, dst: dst4, options: new Uint8Array(0), payloadLen: hl + payload.length },
        frame, 0);
      }
      emitTcp(r, frame, ipLen);
      frame.set(payload, ipLen + hl);
      const tcp = new TcpView();
      assert.equal(tcp.wrap(frame, ipLen, hl + payload.length), null);
      const ip = new Ipv4View();
      if (v6) {
        tcp.fillChecksumV6(frame, 8, 24);
        assert.equal(tcp.verifyChecksumV6(frame, 8, 24), true);
        assert.equal(tcp.checksum, naiveChecksum(frame, 8, 24, 16, IpProtocol.TCP, ipLen, tcp.len, tcp.checksumOff));
      } else {
        assert.equal(ip.wrap(frame, 0, frame.length), null);
        tcp.fillChecksumV4(ip);
        assert.equal(tcp.verifyChecksumV4(ip), true);
        assert.equal(tcp.checksum, naiveChecksum(frame, 12, 16, 4, IpProtocol.TCP, ipLen, tcp.len, tcp.checksumOff));
      }
      frame[ipLen + (r.seq % tcp.len)] ^= 1;
      assert.equal(v6 ? tcp.verifyChecksumV6(frame, 8, 24) : tcp.verifyChecksumV4(ip), false);
    }), { numRuns: 300 });
});

test('random bytes never throw or read out of bounds', () => {
  checkRandomBytes(() => new TcpView(), 80, 2000);
  // Random option areas behind a plausible fixed header reach the option checks.
  fc.assert(fc.property(fc.integer({ min: 5, max: 15 }), fc.uint8Array({ maxLength: 40 }), (doff, opts) => {
    const b = new Uint8Array(TCP_MIN_HEADER_LEN + opts.length);
    b[12] = doff << 4;
    b.set(opts, TCP_MIN_HEADER_LEN);
    wrapStrict(() => new TcpView(), b);
  }), { numRuns: 3000 });
});

test('truncated and damaged segments never throw or read out of bounds', () => {
  checkDamagedInputs(() => new TcpView(), encoded(tcpRepr, emitTcp, tcpReprHeaderLen), TCP_MIN_HEADER_LEN, 1000);
});
