// The demo (`./demo.sh`, `vswitch demo`, `node dist/src/cli/demo.js`).
//
// As root: a small data centre in network namespaces — two VMs on synthetic
// vNICs, a host vNIC, a legacy VM without virtio headers, an uplink veth to a
// "physical network" — with vswitch running on it as an operator runs it
// (a YAML file, `vswitch run --config`, the management API). Real TCP between
// the pairs, the path each flow takes and what it costs, the capability map
// and what each guest's kernel sees, the uplink's TSO switched off and on
// under a running flow; then everything removed again.
// Not root: the same scenario on the in-memory backend.
// Last, the offload engines on their own (kernel golden vectors and more).
//
// Exit code 0 only when every check passed; the last line says so, or names
// what failed.

import { performance } from 'node:perf_hooks';
import { Ui } from './demo-ui.js';
import { runEngineSection } from './demo-offload.js';
import { DEMO_USAGE, parseDemoArgs, type DemoArgs } from './demo-args.js';

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let args: DemoArgs;
  try {
    args = parseDemoArgs(argv);
  } catch (e) {
    process.stderr.write(`demo: ${(e as Error).message}\n${DEMO_USAGE}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(DEMO_USAGE);
    return 0;
  }
  const ui = new Ui();
  const t0 = performance.now();
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const mode = args.quick ? 'quick mode' : 'full mode';

  try {
    if (args.engines === 'only') {
      ui.say(ui.bold(`vswitch demo — the offload engines, offline (${mode})`));
      ui.section('The offload engines on one guest TSO super-frame');
      runEngineSection(ui, { quick: args.quick });
    } else {
      if (!root || args.memory) {
        ui.say(ui.bold(`vswitch demo — the switch on its in-memory backend (${mode})`));
        if (!root) {
          ui.say(ui.yellow('not root: the live demo needs root (network namespaces, TAP devices, an AF_PACKET uplink).'));
          ui.say(ui.yellow('Running the same scenario on the in-memory backend instead; `sudo ./demo.sh` runs it live.'));
        }
        const { runMemory } = await import('./demo-memory.js');
        await runMemory(ui, { quick: args.quick });
      } else {
        ui.say(ui.bold(`vswitch demo — a small data centre on vswitch, live (${mode})`));
        const { runLive } = await import('./demo-live.js');
        await runLive(ui, { quick: args.quick, ...(args.prefix !== undefined ? { prefix: args.prefix } : {}) });
      }
      if (args.engines === 'yes') {
        ui.section('The offload engines on their own, offline (engine checks and kernel golden vectors)');
        runEngineSection(ui, { quick: args.quick });
      }
    }
  } catch (e) {
    ui.fail('the demo', (e as Error).stack ?? String(e));
  }
  return ui.summary((performance.now() - t0) / 1000) ? 0 : 1;
}

// Top-level await: `vswitch demo` imports this module and waits for it.
process.exitCode = await main();
