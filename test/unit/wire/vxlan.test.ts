import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  VXLAN_HEADER_LEN, VXLAN_MAX_VNI, VXLAN_PORT, VxlanView, emitVxlan, parseVxlan, vxlanReprLen, type VxlanRepr,
} from '../../../src/wire/vxlan.js';
import { hex } from '../../util/strict-bytes.js';
import { checkDamagedInputs, checkRandomBytes, checkRoundTrip, encoded } from '../../util/wire-props.js';

const vxlanRepr: fc.Arbitrary<VxlanRepr> = fc.record({ vni: fc.integer({ min: 0, max: VXLAN_MAX_VNI }) });

test('header layout: I flag, 24-bit VNI, reserved bytes zero', () => {
  const b = new Uint8Array(VXLAN_HEADER_LEN + 14);
  assert.equal(emitVxlan({ vni: 0x123456 }, b, 0), 8);
  assert.equal(hex(b.subarray(0, 8)), '0800000012345600');
  const v = new VxlanView();
  assert.equal(v.wrap(b, 0, b.length), null);
  assert.deepStrictEqual([v.vni, v.flags, v.payloadOff, v.payloadLen], [0x123456, 0x08, 8, 14]);
  assert.equal(VXLAN_PORT, 4789);
});

test('the I flag must be set; other reserved bits are ignored', () => {
  const b = new Uint8Array(8);
  emitVxlan({ vni: 42 }, b, 0);
  b[0] = 0xf7;
  assert.equal(new VxlanView().wrap(b, 0, 8), 'bad-type');
  b[0] = 0xff;
  b[7] = 0xee;
  const v = new VxlanView();
  assert.equal(v.wrap(b, 0, 8), null);
  assert.equal(v.vni, 42);
  v.vni = VXLAN_MAX_VNI;
  assert.deepStrictEqual([v.vni, b[7]], [VXLAN_MAX_VNI, 0xee]);
  assert.equal(new VxlanView().wrap(b, 0, 7), 'truncated');
});

test('parse∘emit is the identity', () => {
  checkRoundTrip({ arb: vxlanRepr, make: () => new VxlanView(), emit: emitVxlan, reprLen: vxlanReprLen, parse: parseVxlan });
});

test('random, truncated and damaged headers never throw or read out of bounds', () => {
  checkRandomBytes(() => new VxlanView(), 24);
  checkDamagedInputs(() => new VxlanView(), encoded(vxlanRepr, emitVxlan, vxlanReprLen), VXLAN_HEADER_LEN);
});
