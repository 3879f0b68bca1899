#!/usr/bin/env node
// `npm run test:asan`: builds the CPU addon with AddressSanitizer + UndefinedBehaviorSanitizer into
// build-asan/ (never touching build/) and runs the native-heavy test suites against it.
//
// How: build-asan/ gets a copy of binding.gyp with -O3 replaced by sanitizer flags and a link to
// native/; node-gyp builds there (node-gyp always writes to <dir>/build). The tests load that
// addon through TESSERA_ADDON, with libasan/libubsan preloaded into node (node itself is not
// instrumented, so the runtime must come first) and:
//   ASAN_OPTIONS=allow_user_segv_handler=0:detect_leaks=0  (node installs its own SEGV handler;
//     V8's heap looks like leaks)
//   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
// Any report aborts the test process, so the vitest run fails.
//
// Usage: node scripts/asan.mjs [--build-only] [--no-build] [vitest test files...]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = path.join(root, 'build-asan');
const addon = path.join(dir, 'build', 'Release', 'tessera.node');
const args = process.argv.slice(2);
const buildOnly = args.includes('--build-only');
const noBuild = args.includes('--no-build');
const files = args.filter((a) => !a.startsWith('--'));

const SUITES = ['native', 'kernels', 'attention', 'robustness', 'quant-kernels', 'aliasing'].map((s) => `test/${s}.test.ts`);
const SAN = ['-O1', '-g', '-fsanitize=address,undefined', '-fno-sanitize=vptr', '-fno-omit-frame-pointer', '-fno-sanitize-recover=undefined'];

function gccLib(name) {
  const r = spawnSync('gcc', [`-print-file-name=${name}`], { encoding: 'utf8' });
  const p = r.status === 0 ? r.stdout.trim() : '';
  if (!p || !path.isAbsolute(p) || !existsSync(p)) throw new Error(`cannot find ${name} (gcc -print-file-name=${name} gave '${p}'); install gcc's sanitizer runtimes`);
  return p;
}

function nodeGyp() {
  const bundled = process.env.npm_config_node_gyp;
  if (bundled && existsSync(bundled)) return [process.execPath, [bundled]];
  const npmGyp = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (existsSync(npmGyp)) return [process.execPath, [npmGyp]];
  try {
    return [process.execPath, [createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js')]];
  } catch {
    return ['node-gyp', []];
  }
}

/** binding.gyp with the optimisation flags swapped for the sanitizer ones (and linked with them). */
function asanGyp() {
  let gyp = readFileSync(path.join(root, 'binding.gyp'), 'utf8');
  const flags = SAN.map((f) => JSON.stringify(f)).join(', ');
  const before = gyp;
  gyp = gyp.replace(/"cflags": \["-O3",/, `"cflags": [${flags},`).replace(/"cflags_cc": \["-std=c\+\+17", "-O3",/, `"cflags_cc": ["-std=c++17", ${flags},`);
  gyp = gyp.replace(/"target_defaults": \{/, `"target_defaults": {\n    "ldflags": ["-fsanitize=address,undefined"],`);
  if (gyp === before || !gyp.includes('"ldflags"') || (gyp.match(/-fsanitize=address/g) ?? []).length < 3)
    throw new Error('scripts/asan.mjs: binding.gyp no longer has the target_defaults cflags/cflags_cc this script rewrites; update the patterns');
  // The per-ISA libraries repeat -O3 in xcode_settings only (not used on Linux); their cflags_cc
  // are appended to the defaults above, so they are instrumented too.
  return gyp;
}

function build() {
  mkdirSync(dir, { recursive: true });
  const link = path.join(dir, 'native');
  if (!existsSync(link)) symlinkSync(path.join('..', 'native'), link);
  const gyp = asanGyp();
  const gypFile = path.join(dir, 'binding.gyp');
  const changed = !existsSync(gypFile) || readFileSync(gypFile, 'utf8') !== gyp;
  if (changed) writeFileSync(gypFile, gyp);
  const [cmd, pre] = nodeGyp();
  const jobs = process.env.JOBS ?? 'max';
  const run = (sub) => {
    console.log(`test:asan: node-gyp ${sub.join(' ')} (in build-asan/)`);
    const r = spawnSync(cmd, [...pre, ...sub], { cwd: dir, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`node-gyp ${sub[0]} failed (${r.error?.message ?? `status ${r.status}`})`);
  };
  if (changed || !existsSync(path.join(dir, 'build', 'Makefile'))) {
    // Use the headers of the running node when they are installed beside it (no download).
    const prefix = path.resolve(path.dirname(process.execPath), '..');
    const nodedir = process.env.npm_config_nodedir ?? (existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : null);
    run(['configure', ...(nodedir ? [`--nodedir=${nodedir}`] : [])]);
  }
  run(['build', '-j', jobs]); // make: only what changed since the last sanitizer build
}

const t0 = performance.now();
try {
  if (!noBuild) build();
  else if (!existsSync(addon)) throw new Error(`--no-build but ${path.relative(root, addon)} does not exist`);
} catch (err) {
  console.error(`test:asan: ${err.message}`);
  process.exit(1);
}
const tBuild = (performance.now() - t0) / 1000;
console.log(`test:asan: addon ${path.relative(root, addon)} (build step ${tBuild.toFixed(0)} s)`);
if (buildOnly) process.exit(0);

const suites = files.length ? files : SUITES.filter((f) => existsSync(path.join(root, f)));
const env = {
  ...process.env,
  TESSERA_ADDON: addon,
  TESSERA_REQUIRE_NATIVE: '1',
  LD_PRELOAD: [gccLib('libasan.so'), gccLib('libubsan.so'), process.env.LD_PRELOAD].filter(Boolean).join(' '),
  ASAN_OPTIONS: 'allow_user_segv_handler=0:detect_leaks=0',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
};
console.log(`test:asan: vitest run ${suites.join(' ')}`);
const t1 = performance.now();
const vitest = path.join(root, 'node_modules', 'vitest', 'vitest.mjs');
// Instrumented code runs several times slower (and every child process the tests spawn loads the
// sanitizer runtime too): give tests ten minutes instead of the suite's 60 s.
const r = spawnSync(process.execPath, [vitest, 'run', '--testTimeout=600000', '--hookTimeout=600000', ...suites], { cwd: root, stdio: 'inherit', env });
const tTest = (performance.now() - t1) / 1000;
console.log(`test:asan: tests ${tTest.toFixed(0)} s, total ${((performance.now() - t0) / 1000).toFixed(0)} s; ${r.status === 0 ? 'no sanitizer reports' : `FAILED (status ${r.status ?? r.signal})`}`);
process.exit(r.status ?? 1);
