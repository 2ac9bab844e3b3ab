// The ARP request the agent sends so the switch learns where a peer is
// (instead of sending the peer anything in plaintext).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { arpRequestFrame } from '../../../src/agent/neighbour.js';
import { ArpView, ArpOperation } from '../../../src/wire/arp.js';
import { getMac, get16, ipv4FromString, macFromString } from '../../../src/wire/bytes.js';

test('who-has PEER tell LOCAL, broadcast from the NIC\'s MAC', () => {
  const f = arpRequestFrame('02:00:c6:12:0a:01', '198.18.10.1', '198.18.10.9');
  assert.equal(f.length, 42);
  assert.equal(getMac(f, 0), 0xffffffffffff);
  assert.equal(getMac(f, 6), macFromString('02:00:c6:12:0a:01'));
  assert.equal(get16(f, 12), 0x0806);
  const v = new ArpView();
  assert.equal(v.wrap(f, 14, 28), null, 'a well-formed Ethernet/IPv4 ARP request');
  assert.equal(v.operation, ArpOperation.Request);
  assert.equal(v.sha, macFromString('02:00:c6:12:0a:01'));
  assert.equal(v.spa, ipv4FromString('198.18.10.1'));
  assert.equal(v.tpa, ipv4FromString('198.18.10.9'));
  assert.equal(v.tha, 0);
  assert.throws(() => arpRequestFrame('nope', '198.18.10.1', '2001:db8::9'), /MAC and IPv4/);
});
