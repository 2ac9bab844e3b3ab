// The native shim's fd polls and thread teardown: a worker thread terminated
// while its polls still run (the daemon stopping its I/O workers) must end
// cleanly. Node aborts a process whose worker loop closes with a handle still
// open, so each poll closes itself when its environment goes away.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const nativeIndex = fileURLToPath(new URL('../../../src/io/native/index.js', import.meta.url));

test('a worker terminated with native polls running ends cleanly (no abort), ten times over', () => {
  const script = `
    const { Worker } = require('node:worker_threads');
    const body = \`
      import(\${JSON.stringify(${JSON.stringify(nativeIndex)})}).then(({ native, PollEvent }) => {
        const shim = native();
        // Two eventfds polled and never stopped; one of them readable.
        const a = shim.eventfdOpen(), b = shim.eventfdOpen();
        shim.pollStart(a, PollEvent.READABLE, () => shim.eventfdDrain(a));
        shim.pollStart(b, PollEvent.READABLE, () => {});
        shim.eventfdRing(b);
        require('node:worker_threads').parentPort.postMessage('polling');
      });\`;
    let left = 10;
    const next = () => {
      const w = new Worker(body, { eval: true });
      w.once('message', () => w.terminate().then(() => (--left > 0 ? next() : console.log('all terminated'))));
    };
    next();`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.signal, null, `the process was killed by ${r.signal}: ${r.stderr.slice(0, 600)}`);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /all terminated/);
});
