// DESIGN.md §4: dependencies point one way, and the core layers import
// nothing from Node (they must run wherever typed arrays and WebAssembly do).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const src = join(root, 'src');
const order = ['types', 'wire', 'packet', 'offload', 'switch', 'io', 'control', 'agent', 'cli'];
const core = new Set(['wire', 'packet', 'offload', 'switch']);

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function layerOf(file: string): string {
  return relative(src, file).split('/')[0]!;
}

const importRe = /(?:^|\n)\s*(?:import|export)[^'"\n;]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

test('layers only import from themselves or layers below them', () => {
  const bad: string[] = [];
  for (const f of files(src)) {
    const layer = layerOf(f);
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(importRe)) {
      const spec = (m[1] ?? m[2])!;
      if (spec.startsWith('.')) {
        const target = layerOf(resolve(dirname(f), spec));
        if (order.indexOf(target) > order.indexOf(layer)) bad.push(`${relative(root, f)} imports ${spec} (${target} is above ${layer})`);
      } else if (core.has(layer)) {
        bad.push(`${relative(root, f)} imports ${spec}: core layers import nothing from Node or npm`);
      }
    }
  }
  assert.deepEqual(bad, []);
});

test('the layering check sees imports (it can fail)', () => {
  const sample = "import { x } from '../switch/a.js';\nexport { y } from 'node:fs';";
  const specs = [...sample.matchAll(importRe)].map((m) => m[1] ?? m[2]);
  assert.deepEqual(specs, ['../switch/a.js', 'node:fs']);
});
