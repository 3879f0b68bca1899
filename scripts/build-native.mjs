#!/usr/bin/env node
// Builds the CPU addon (build/Release/tessera.node) with node-gyp from binding.gyp.
// A failed build does not fail `npm install`: tessera then runs on the pure-TS `js` backend and
// says why at import. `--strict` (or TESSERA_REQUIRE_NATIVE=1, set by CI) makes a failure fatal.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const strict = process.argv.includes('--strict') || process.env.TESSERA_REQUIRE_NATIVE === '1';

function nodeGypCommand() {
  // npm exports the path of its bundled node-gyp to lifecycle scripts.
  const bundled = process.env.npm_config_node_gyp;
  if (bundled && existsSync(bundled)) return [process.execPath, [bundled]];
  try {
    const require = createRequire(import.meta.url);
    return [process.execPath, [require.resolve('node-gyp/bin/node-gyp.js')]];
  } catch {
    return ['node-gyp', []];
  }
}

const [cmd, pre] = nodeGypCommand();
const jobs = process.env.JOBS ?? 'max';
console.log(`tessera: building the native CPU addon (node-gyp rebuild -j ${jobs})`);
const r = spawnSync(cmd, [...pre, 'rebuild', '-j', jobs], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  const why = r.error ? r.error.message : `node-gyp exited with status ${r.status}`;
  if (strict) {
    console.error(`tessera: native build failed (${why})`);
    process.exit(1);
  }
  console.warn(`tessera: native build failed (${why}); tessera will use the pure-TypeScript 'js' backend.`);
}

// Then the CUDA addon, when nvcc is available (scripts/build-cuda.mjs decides and explains).
const cuda = spawnSync(process.execPath, [path.join(root, 'scripts/build-cuda.mjs'), ...(strict ? ['--strict'] : [])], { cwd: root, stdio: 'inherit' });
if (cuda.status !== 0 && strict) process.exit(1);
