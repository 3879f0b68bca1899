#!/usr/bin/env node
// npm's `prepare`: compiles src/ to dist/ (tsc) after `npm install` in a checkout and before `npm pack`.
//
// Except under `npx tessera` inside this checkout when dist/ is built: npm exec links the checkout
// into its npx cache to run its bin and runs prepare and install there, and npm 10 does so on
// every call (npm 11 only on the first). A developer's `npx tessera` then runs dist/ as it is, as
// `node bin/tessera.js` would, instead of recompiling for ten seconds first.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

if (process.env.npm_command === 'exec' && existsSync(path.join(root, 'dist', 'index.js'))) process.exit(0);
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
