import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ESP_HEADER_LEN, EspTrailer, EspView, emitEsp, emitEspTrailer, espPadLen, espPlaintextLen, espReprLen, parseEsp,
  parseEspTrailer, type EspRepr,
} from '../../../src/wire/esp.js';
import { IpProtocol } from '../../../src/wire/ipv4.js';
import { assertWireResult, hex, strictBytes } from '../../util/strict-bytes.js';
import { checkDamagedInputs, checkRandomBytes, checkRoundTrip, encoded } from '../../util/wire-props.js';

const espRepr: fc.Arbitrary<EspRepr> = fc.record({
  spi: fc.integer({ min: 1, max: 0xffffffff }),
  seq: fc.integer({ min: 0, max: 0xffffffff }),
});

test('header: SPI and sequence number; SPI 0 is not ESP', () => {
  const b = new Uint8Array(ESP_HEADER_LEN + 24);
  emitEsp({ spi: 0x00000101, seq: 7 }, b, 0);
  assert.equal(hex(b.subarray(0, 8)), '0000010100000007');
  const v = new EspView();
  assert.equal(v.wrap(b, 0, b.length), null);
  assert.deepStrictEqual([v.spi, v.seq, v.payloadOff, v.payloadLen], [0x101, 7, 8, 24]);
  v.seq = 0xffffffff;
  assert.equal(v.seq, 0xffffffff);
  v.spi = 0;
  assert.equal(new EspView().wrap(b, 0, b.length), 'bad-type');
  assert.equal(new EspView().wrap(b, 0, 7), 'truncated');
});

test('trailer: RFC 4303 default padding 1, 2, 3, ... to the alignment', () => {
  const b = new Uint8Array(16).fill(0xaa);
  // 5 bytes of data + 2 trailer bytes = 7: one padding byte reaches 8.
  assert.equal(emitEspTrailer(b, 0, 5, IpProtocol.TCP), 8);
  assert.equal(hex(b.subarray(0, 8)), 'aaaaaaaaaa010106');
  assert.equal(emitEspTrailer(b, 0, 1, IpProtocol.IPv6NoNxt, 16), 16);
  assert.equal(hex(b), 'aa0102030405060708090a0b0c0d0d3b');
  const t = new EspTrailer();
  assert.equal(parseEspTrailer(b, 0, 16, t), null);
  assert.deepStrictEqual([t.dataLen, t.padLen, t.nextHeader], [1, 13, IpProtocol.IPv6NoNxt]);
  assert.equal(espPadLen(2), 0);
  assert.equal(espPlaintextLen(2), 4);
  for (const bad of [0, 257, 3.5, -4]) assert.throws(() => espPadLen(10, bad), RangeError);
});

test('trailer: wrong padding, overlong pad length and short plaintexts are errors', () => {
  const t = new EspTrailer();
  const b = new Uint8Array([9, 9, 1, 2, 3, 3, 4]);
  assert.equal(parseEspTrailer(b, 0, b.length, t), null);
  assert.deepStrictEqual([t.dataLen, t.padLen, t.nextHeader], [2, 3, 4]);
  b[3] = 0;
  assert.equal(parseEspTrailer(b, 0, b.length, t), 'bad-option');
  assert.equal(parseEspTrailer(new Uint8Array([1, 2, 3, 3, 4]), 0, 5, t), null);
  assert.equal(parseEspTrailer(new Uint8Array([1, 2, 3, 4]), 0, 4, t), 'bad-length');
  assert.equal(parseEspTrailer(new Uint8Array([0, 4]), 0, 2, t), null);
  assert.equal(parseEspTrailer(new Uint8Array([4]), 0, 1, t), 'truncated');
  assert.equal(parseEspTrailer(new Uint8Array([0, 4]), 1, 2, t), 'bad-length');
});

test('trailer: emit then parse gives back data length and next header, aligned (property)', () => {
  const t = new EspTrailer();
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 255 }),
    fc.constantFrom(1, 4, 8, 16, 64, 255, 256), fc.integer({ min: 0, max: 7 }), (data, nh, align, off) => {
      const len = espPlaintextLen(data.length, align);
      const b = new Uint8Array(off + len);
      b.set(data, off);
      assert.equal(emitEspTrailer(b, off, data.length, nh, align), len);
      assert.equal(len % align, 0);
      assert.ok(len - data.length - 2 < align && len - data.length - 2 <= 255);
      assert.equal(parseEspTrailer(strictBytes(b, off, off + len), off, len, t), null);
      assert.deepStrictEqual([t.dataLen, t.nextHeader, t.padLen], [data.length, nh, len - data.length - 2]);
      assert.deepStrictEqual(b.subarray(off, off + data.length), data);
    }));
});

test('trailer: random plaintexts never throw or read out of bounds', () => {
  const t = new EspTrailer();
  fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
    const e = parseEspTrailer(strictBytes(b), 0, b.length, t);
    assertWireResult(e);
    if (e === null) assert.equal(t.dataLen + t.padLen + 2, b.length);
  }), { numRuns: 2000 });
});

test('parse∘emit is the identity (header)', () => {
  checkRoundTrip({ arb: espRepr, make: () => new EspView(), emit: emitEsp, reprLen: espReprLen, parse: parseEsp });
});

test('random, truncated and damaged headers never throw or read out of bounds', () => {
  checkRandomBytes(() => new EspView(), 24);
  checkDamagedInputs(() => new EspView(), encoded(espRepr, emitEsp, espReprLen), ESP_HEADER_LEN);
});
