// The demo's command line (`./demo.sh [options]`, `node dist/src/cli/demo.js
// [options]`, `vswitch demo -- [options]`).

export const DEMO_USAGE = `usage: demo.js [--quick] [--memory] [--engines | --no-engines] [--prefix NAME]

  --quick       short run (CI): ~1.5 s per flow, well under a minute in all
  --memory      the in-memory scenario even as root (it is what runs without root)
  --engines     only the offline offload-engine checks (no devices, no root)
  --no-engines  leave the offline engine checks out
  --prefix NAME the per-run prefix of namespaces and devices (default: generated; 2-8 of a-z0-9)
`;

export interface DemoArgs {
  quick: boolean;
  memory: boolean;
  engines: 'only' | 'yes' | 'no';
  prefix?: string;
  help: boolean;
}

export function parseDemoArgs(argv: readonly string[]): DemoArgs {
  const a: DemoArgs = { quick: false, memory: false, engines: 'yes', help: false };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i]!;
    if (x === 'demo' && i === 0) continue; // `vswitch demo …`
    if (x === '--') continue; // `vswitch demo -- --quick`
    if (x === '--quick') a.quick = true;
    else if (x === '--memory') a.memory = true;
    else if (x === '--engines') a.engines = 'only';
    else if (x === '--no-engines') a.engines = 'no';
    else if (x === '--help' || x === '-h') a.help = true;
    else if (x === '--prefix' || x.startsWith('--prefix=')) {
      const v = x.includes('=') ? x.slice(x.indexOf('=') + 1) : argv[++i];
      if (v === undefined || !/^[a-z][a-z0-9]{1,7}$/.test(v)) throw new Error('--prefix needs 2-8 characters of a-z0-9, starting with a letter');
      a.prefix = v;
    } else throw new Error(`unknown option ${x}`);
  }
  return a;
}
