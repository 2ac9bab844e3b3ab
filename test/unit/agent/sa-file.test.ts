// The guest agent's SA file: what it accepts, each refusal with where and
// why, and that what the agent POSTs is what the daemon's guest API parses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalIp, parseSaFile, peerOf, localOf, saRequestBody, SaFileError } from '../../../src/agent/sa-file.js';
import { parseSaRequest } from '../../../src/control/guest-api.js';
import { uploadedSa } from '../../../src/agent/agent.js';

const KEY16 = '000102030405060708090a0b0c0d0e0f';
const KEY32 = KEY16 + KEY16;

const out = { direction: 'out', spi: 0x1001, mode: 'transport', algorithm: 'aes-gcm-128', key: KEY16, salt: 'cafe0001', src: '198.18.10.1', dst: '198.18.10.9' };
const inb = { direction: 'in', spi: 0x2001, mode: 'transport', algorithm: 'aes-gcm-256', key: KEY32, salt: '0xCAFE0002', src: '198.18.10.9', dst: '198.18.10.1', replayWindow: 128 };

test('a file of two SAs parses into SecurityAssociations (keys as bytes, addresses canonical)', () => {
  const sas = parseSaFile(JSON.stringify({ sas: [out, { ...inb, src: '2001:0db8:0:0::9', dst: '2001:db8::1' }] }));
  assert.equal(sas.length, 2);
  assert.equal(sas[0]!.spi, 0x1001);
  assert.deepEqual([...sas[0]!.key], [...Buffer.from(KEY16, 'hex')]);
  assert.deepEqual([...sas[1]!.salt], [0xca, 0xfe, 0x00, 0x02], '0x prefix and upper case accepted');
  assert.equal(sas[1]!.src, '2001:db8::9', 'IPv6 compressed');
  assert.equal(sas[1]!.replayWindow, 128);
  assert.equal(peerOf(sas[0]!), '198.18.10.9');
  assert.equal(localOf(sas[0]!), '198.18.10.1');
  assert.equal(peerOf(sas[1]!), '2001:db8::9');
  // A bare list, mode and algorithm defaulting to transport / AES-GCM-128.
  const [d] = parseSaFile(JSON.stringify([{ direction: 'out', spi: 7, key: KEY16, salt: '01020304', src: '198.18.0.1', dst: '198.18.0.2' }]));
  assert.equal(d!.mode, 'transport');
  assert.equal(d!.algorithm, 'aes-gcm-128');
});

test('every mistake is refused with the SA and the reason', () => {
  const bad: [unknown, RegExp][] = [
    ['not json', /not JSON/],
    [{ sas: [] }, /no SAs/],
    [{ nope: 1 }, /expected \{"sas"/],
    [{ sas: [{ ...out, colour: 'red' }] }, /sas\[0\]: unknown field "colour"/],
    [{ sas: [{ ...out, direction: 'both' }] }, /direction must be/],
    [{ sas: [{ ...out, spi: 0 }] }, /spi must be an integer 1\.\.0xffffffff/],
    [{ sas: [{ ...out, spi: 2 ** 32 }] }, /spi must be/],
    [{ sas: [{ ...out, mode: 'beet' }] }, /out 0x1001.*mode must be/],
    [{ sas: [{ ...out, algorithm: 'aes-cbc' }] }, /algorithm must be/],
    [{ sas: [{ ...out, key: KEY32 }] }, /aes-gcm-128 takes a 16-byte key, this one has 32/],
    [{ sas: [{ ...out, key: 'xyz' }] }, /key must be hex bytes/],
    [{ sas: [{ ...out, salt: 'cafe' }] }, /salt is 4 bytes, this one has 2/],
    [{ sas: [{ ...out, src: '198.18.10.300' }] }, /src must be an IPv4 or IPv6 address/],
    [{ sas: [{ ...out, dst: '2001:db8::9' }] }, /one address family/],
    [{ sas: [{ ...out, selector: { dst: '198.18.0.0/33' } }] }, /prefix length/],
    [{ sas: [{ ...out, selector: { port: 80 } }] }, /unknown selector field "port"/],
    [{ sas: [{ ...out, selector: { dstPort: 70000 } }] }, /dstPort must be an integer 0\.\.65535/],
    [{ sas: [{ ...inb, replayWindow: 5000 }] }, /replayWindow must be an integer 0\.\.1024/],
    [{ sas: [out, { ...out, src: '198.18.10.2' }] }, /two outbound SAs with SPI 0x1001/],
  ];
  for (const [json, re] of bad) {
    assert.throws(() => parseSaFile(typeof json === 'string' ? json : JSON.stringify(json), 'f.json'), (e: unknown) => {
      assert.ok(e instanceof SaFileError, String(e));
      assert.match(e.message, re);
      assert.match(e.message, /^f\.json/);
      return true;
    }, JSON.stringify(json));
  }
  // The same SPI in both directions is two different SAs.
  assert.equal(parseSaFile(JSON.stringify({ sas: [out, { ...inb, spi: out.spi }] })).length, 2);
});

test('the body the agent POSTs is what the daemon\'s guest API parses, field for field', () => {
  const sas = parseSaFile(JSON.stringify({ sas: [out, { ...inb, selector: { protocol: 6, dstPort: 5001 } }] }));
  for (const sa of sas) {
    const parsed = parseSaRequest(JSON.parse(JSON.stringify(saRequestBody(sa))));
    assert.deepEqual(parsed, sa);
  }
});

test('an upload event\'s SA: sequence number and replay window carried over, malformed ones refused', () => {
  const u = uploadedSa({ ...out, seq: 4326 });
  assert.equal(u.sa.seq, 4326);
  assert.equal(u.replay, undefined);
  const r = uploadedSa({ ...inb, replay: { top: 399, bitmap: 'ffffffff' + '7fffffff' + '0'.repeat(16), size: 128 } });
  assert.deepEqual(r.replay, { top: 399, bitmap: 'ffffffff7fffffff' + '0'.repeat(16), size: 128 });
  assert.throws(() => uploadedSa({ ...out, seq: 0 }), /seq/);
  assert.throws(() => uploadedSa({ ...inb, replay: { top: 'x' } }), /replay must be/);
  assert.throws(() => uploadedSa({ ...out, key: 'zz' }), /key must be hex/);
});

test('canonical addresses', () => {
  assert.equal(canonicalIp('198.018.000.001'), '198.18.0.1');
  assert.equal(canonicalIp('2001:DB8:0::1'), '2001:db8::1');
  assert.equal(canonicalIp('nope'), null);
});
