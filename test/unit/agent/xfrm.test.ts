// The agent's kernel path: the `ip xfrm` commands it runs for an SA (this
// machine's kernel has no ESP, so the commands are checked as commands; a
// QEMU guest with Debian's kernel runs them for real), the probe, and that a
// half-made install is undone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSaFile } from '../../../src/agent/sa-file.js';
import { policySelector, probeXfrm, xfrmPolicyArgs, xfrmStateArgs, XfrmIpsec } from '../../../src/agent/xfrm.js';
import type { Runner } from '../../../src/agent/system.js';

const KEY = '000102030405060708090a0b0c0d0e0f';
const [out, inb, tun] = parseSaFile(JSON.stringify({
  sas: [
    { direction: 'out', spi: 0x1001, key: KEY, salt: 'cafe0001', src: '198.18.10.1', dst: '198.18.10.9' },
    { direction: 'in', spi: 0x2001, key: KEY, salt: 'cafe0002', src: '198.18.10.9', dst: '198.18.10.1', replayWindow: 128 },
    { direction: 'in', spi: 0x3001, mode: 'tunnel', key: KEY, salt: 'cafe0003', src: '2001:db8::9', dst: '2001:db8::1', selector: { src: '2001:db8:99::/48', protocol: 6, dstPort: 443 } },
  ],
})) as [ReturnType<typeof parseSaFile>[number], ReturnType<typeof parseSaFile>[number], ReturnType<typeof parseSaFile>[number]];

function recorder(fail: (argv: string[]) => string | null = () => null): { run: Runner; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    run: (argv) => {
      calls.push(argv.join(' '));
      const e = fail(argv);
      return e === null ? { ok: true, stdout: '', stderr: '' } : { ok: false, stdout: '', stderr: e };
    },
  };
}

test('state: RFC 4106 AEAD with key‖salt and a 128-bit ICV; counters continue from an upload', () => {
  assert.equal(xfrmStateArgs(out, 7).join(' '),
    `ip xfrm state add src 198.18.10.1 dst 198.18.10.9 proto esp spi 0x00001001 reqid 7 mode transport aead rfc4106(gcm(aes)) 0x${KEY}cafe0001 128`);
  // Uploaded outbound SA: the kernel keeps the last number sent.
  assert.match(xfrmStateArgs({ ...out, seq: 4326 }, 7).join(' '), / replay-oseq 0x10e5 aead /);
  // Inbound: the window's size and top.
  assert.match(xfrmStateArgs(inb, 8).join(' '), / replay-window 128 aead /);
  assert.match(xfrmStateArgs(inb, 8, { top: 399, size: 128, bitmap: '00'.repeat(16) }).join(' '), / replay-window 128 replay-seq 0x18f aead /);
});

test('policies: transport between the hosts, a tunnel by its selector, inbound tunnels also forwarded', () => {
  assert.deepEqual(policySelector(out), { src: '198.18.10.1/32', dst: '198.18.10.9/32' });
  assert.equal(xfrmPolicyArgs(out, 7, 'out').join(' '),
    'ip xfrm policy add src 198.18.10.1/32 dst 198.18.10.9/32 dir out tmpl src 198.18.10.1 dst 198.18.10.9 proto esp reqid 7 mode transport');
  assert.equal(xfrmPolicyArgs(tun, 9, 'fwd').join(' '),
    'ip xfrm policy add src 2001:db8:99::/48 dst 2001:db8::1/128 proto 6 dport 443 dir fwd tmpl src 2001:db8::9 dst 2001:db8::1 proto esp reqid 9 mode tunnel');
  assert.deepEqual(policySelector({ ...tun, selector: { src: 'any', dst: '2001:db8:1::/64' } }), { src: '::/0', dst: '2001:db8:1::/64' });
});

test('install and remove run the commands in order; a failed policy undoes the state', () => {
  const r = recorder();
  const x = new XfrmIpsec(r.run, 100);
  x.install(tun);
  assert.deepEqual(r.calls.map((c) => c.split(' ').slice(0, 4).join(' ') + ' ' + (c.match(/dir (\w+)/)?.[1] ?? '')),
    ['ip xfrm state add ', 'ip xfrm policy add in', 'ip xfrm policy add fwd']);
  assert.throws(() => x.install(tun), /installed already/);
  r.calls.length = 0;
  x.close();
  assert.deepEqual(r.calls, [
    'ip xfrm policy delete src 2001:db8:99::/48 dst 2001:db8::1/128 proto 6 dport 443 dir in',
    'ip xfrm policy delete src 2001:db8:99::/48 dst 2001:db8::1/128 proto 6 dport 443 dir fwd',
    'ip xfrm state delete src 2001:db8::9 dst 2001:db8::1 proto esp spi 0x00003001',
  ]);

  const f = recorder((argv) => (argv[2] === 'policy' && argv[3] === 'add' ? 'RTNETLINK answers: File exists' : null));
  const y = new XfrmIpsec(f.run);
  assert.throws(() => y.install(out), /File exists/);
  assert.deepEqual(f.calls.slice(-1), ['ip xfrm state delete src 198.18.10.1 dst 198.18.10.9 proto esp spi 0x00001001']);
});

test('the probe: a throw-away state added and deleted when the kernel can; the kernel\'s words when it cannot', () => {
  const ok = recorder();
  assert.equal(probeXfrm(ok.run).ok, true);
  assert.match(ok.calls[0]!, /^ip xfrm state add src 198\.18\.255\.254 .* aead rfc4106\(gcm\(aes\)\) 0x0{40} 128$/);
  assert.match(ok.calls[1]!, /^ip xfrm state delete /);
  const no = recorder(() => 'Error: Requested AEAD algorithm not found.');
  const p = probeXfrm(no.run);
  assert.equal(p.ok, false);
  assert.match(p.why, /AEAD algorithm not found/);
  assert.equal(no.calls.length, 1);
});
