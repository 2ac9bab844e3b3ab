import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ARP_LEN, ArpOperation, ArpView, arpReprLen, emitArp, parseArp, type ArpRepr } from '../../../src/wire/arp.js';
import { EthernetView } from '../../../src/wire/ethernet.js';
import { captured } from '../../util/captured-frames.js';
import { wrapStrict } from '../../util/strict-bytes.js';
import { checkDamagedInputs, checkRandomBytes, checkRoundTrip, encoded } from '../../util/wire-props.js';

const mac = fc.integer({ min: 0, max: 0xffffffffffff });
const ipv4 = fc.integer({ min: 0, max: 0xffffffff });
const arpRepr: fc.Arbitrary<ArpRepr> = fc.record({
  operation: fc.constantFrom(ArpOperation.Request, ArpOperation.Reply),
  sha: mac, spa: ipv4, tha: mac, tpa: ipv4,
});

function arpOf(frame: Uint8Array): ArpView {
  const eth = new EthernetView();
  assert.equal(eth.wrap(frame, 0, frame.length), null);
  const v = new ArpView();
  assert.equal(v.wrap(frame, eth.payloadOff, eth.payloadLen), null);
  return v;
}

test('captured ARP request and reply parse to what the kernel sent', () => {
  assert.deepStrictEqual(parseArp(arpOf(captured.arpRequest)), {
    operation: ArpOperation.Request, sha: 0x02000000000a, spa: 0xc6120001, tha: 0, tpa: 0xc6120002,
  });
  const reply = arpOf(captured.arpReply);
  assert.deepStrictEqual(parseArp(reply), {
    operation: ArpOperation.Reply, sha: 0x02000000000b, spa: 0xc6120002, tha: 0x02000000000a, tpa: 0xc6120001,
  });
  assert.equal(reply.isGratuitous, false);
  assert.equal(reply.payloadLen, 0);
});

test('emit reproduces the captured request byte for byte', () => {
  const v = arpOf(captured.arpRequest);
  const out = new Uint8Array(ARP_LEN);
  emitArp(parseArp(v), out, 0);
  assert.deepStrictEqual(out, captured.arpRequest.slice(14, 14 + ARP_LEN));
});

test('non-Ethernet/IPv4 ARP and other operations are unsupported; short is truncated', () => {
  const body = captured.arpRequest.slice(14);
  const cases: [number, number, string][] = [
    [1, 0x06, 'htype 6'], [3, 0x86, 'ptype 0x86dd'], [4, 8, 'hlen 8'], [5, 16, 'plen 16'], [7, 3, 'RARP request'],
  ];
  for (const [i, value, what] of cases) {
    const b = body.slice();
    b[i] = value;
    assert.equal(new ArpView().wrap(b, 0, b.length), 'unsupported', what);
  }
  assert.equal(new ArpView().wrap(body, 0, ARP_LEN - 1), 'truncated');
  assert.equal(new ArpView().wrap(body, 1, ARP_LEN), 'bad-length');
});

test('setters write the fields getters read', () => {
  const b = new Uint8Array(ARP_LEN);
  emitArp({ operation: ArpOperation.Request, sha: 1, spa: 2, tha: 3, tpa: 4 }, b, 0);
  const v = new ArpView();
  assert.equal(v.wrap(b, 0, b.length), null);
  v.operation = ArpOperation.Reply;
  v.sha = 0xfedcba987654; v.spa = 0xc6120063; v.tha = 0x020000000001; v.tpa = 0xc6120063;
  assert.deepStrictEqual(parseArp(v), {
    operation: ArpOperation.Reply, sha: 0xfedcba987654, spa: 0xc6120063, tha: 0x020000000001, tpa: 0xc6120063,
  });
  assert.equal(v.isGratuitous, true);
});

test('parse∘emit is the identity', () => {
  checkRoundTrip({ arb: arpRepr, make: () => new ArpView(), emit: emitArp, reprLen: arpReprLen, parse: parseArp });
});

test('random bytes never throw or read out of bounds', () => {
  checkRandomBytes(() => new ArpView(), 64);
});

test('truncated and damaged ARP never throw or read out of bounds', () => {
  checkDamagedInputs(() => new ArpView(), encoded(arpRepr, emitArp, arpReprLen), ARP_LEN);
  assert.equal(wrapStrict(() => new ArpView(), captured.arpReply.slice(14)).error, null);
});
