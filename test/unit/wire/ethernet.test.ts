import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ETHERNET_HEADER_LEN, EtherType, EthernetView, emitEthernet, ethernetReprLen, parseEthernet, vlanTci,
  type EthernetRepr,
} from '../../../src/wire/ethernet.js';
import { BROADCAST_MAC } from '../../../src/wire/bytes.js';
import { captured } from '../../util/captured-frames.js';
import { hex } from '../../util/strict-bytes.js';
import { checkDamagedInputs, checkRandomBytes, checkRoundTrip, encoded } from '../../util/wire-props.js';

const mac = fc.integer({ min: 0, max: 0xffffffffffff });
const tag = fc.record({
  tpid: fc.constantFrom(EtherType.VLAN, EtherType.QINQ),
  pcp: fc.integer({ min: 0, max: 7 }),
  dei: fc.boolean(),
  vid: fc.integer({ min: 0, max: 4095 }),
});
const ethRepr: fc.Arbitrary<EthernetRepr> = fc.record({
  dst: mac, src: mac,
  tags: fc.array(tag, { maxLength: 2 }),
  etherType: fc.integer({ min: 0, max: 0xffff }).filter((t) => t !== EtherType.VLAN && t !== EtherType.QINQ),
});

test('captured frames: addresses and EtherType', () => {
  const v = new EthernetView();
  assert.equal(v.wrap(captured.arpRequest, 0, captured.arpRequest.length), null);
  assert.deepStrictEqual(parseEthernet(v), { dst: BROADCAST_MAC, src: 0x02000000000a, tags: [], etherType: EtherType.ARP });
  assert.deepStrictEqual([v.headerLen, v.payloadOff, v.payloadLen], [14, 14, 28]);
  assert.equal(v.wrap(captured.udp6, 0, captured.udp6.length), null);
  assert.equal(v.etherType, EtherType.IPv6);
});

test('VLAN tags: fields, 802.1ad + 802.1Q, a third tag is too many', () => {
  const r: EthernetRepr = { dst: 1, src: 2, etherType: EtherType.IPv4,
    tags: [{ tpid: EtherType.QINQ, pcp: 5, dei: true, vid: 100 }, { tpid: EtherType.VLAN, pcp: 0, dei: false, vid: 4095 }] };
  const b = new Uint8Array(ethernetReprLen(r));
  assert.equal(emitEthernet(r, b, 0), 22);
  assert.equal(hex(b.subarray(12)), '88a8b0648100' + '0fff0800');
  const v = new EthernetView();
  assert.equal(v.wrap(b, 0, b.length), null);
  assert.deepStrictEqual([v.tagCount, v.tagVid(0), v.tagPcp(0), v.tagDei(0), v.tagTci(1)], [2, 100, 5, true, 0x0fff]);
  v.setTagTci(1, vlanTci(7, false, 7));
  assert.deepStrictEqual([v.tagPcp(1), v.tagVid(1)], [7, 7]);
  assert.equal(new EthernetView().wrap(b, 0, 21), 'truncated');
  const three = new Uint8Array(26);
  three.set(b.subarray(0, 20));
  three.set([0x81, 0x00, 0, 1, 0x08, 0x00], 20);
  assert.equal(new EthernetView().wrap(three, 0, 26), 'too-many-tags');
  assert.equal(new EthernetView().wrap(b, 0, 13), 'truncated');
  assert.equal(new EthernetView().wrap(b, 10, 13), 'bad-length');
});

test('parse∘emit is the identity', () => {
  checkRoundTrip({ arb: ethRepr, make: () => new EthernetView(), emit: emitEthernet, reprLen: ethernetReprLen,
    parse: parseEthernet });
});

test('random, truncated and damaged headers never throw or read out of bounds', () => {
  checkRandomBytes(() => new EthernetView(), 32, 2000);
  checkDamagedInputs(() => new EthernetView(), encoded(ethRepr, emitEthernet, ethernetReprLen), ETHERNET_HEADER_LEN);
});
