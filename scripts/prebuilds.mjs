#!/usr/bin/env node
// `npm pack` / `npm publish` (prepack): puts this machine's addons into prebuilds/<platform>-<arch>/
// so that the package installs without a compiler, and removes dist files whose source is gone.
//
//   1. brings build/Release/tessera.node up to date (build-native.mjs: make compiles only what
//      changed) and checks it is portable: no -march=native anywhere, ISA flags only on the per-ISA
//      tables (the addon picks one at run time);
//   2. the same for build/cuda/Release/tessera_cuda.node where nvcc exists, and checks that it needs
//      no CUDA library at load (cudart static, libcuda opened by cudart at first use);
//   3. loads each in a child process, then writes prebuilds/<platform>-<arch>/ anew (other
//      platforms' folders, copied in from other machines before publishing, are kept).
//
// --no-build assembles from the builds as they are (test/package.test.ts). Without a CUDA build
// the package carries the CPU addon only, with a warning; TESSERA_PREBUILD_REQUIRE_CUDA=1 (a release)
// makes that an error.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { platformTag, prebuildPath, probeAddon, root, run } from './native-common.mjs';

const noBuild = process.argv.includes('--no-build');
const requireCuda = process.env.TESSERA_PREBUILD_REQUIRE_CUDA === '1';
const cpuBuilt = path.join(root, 'build/Release/tessera.node');
const cudaBuilt = path.join(root, 'build/cuda/Release/tessera_cuda.node');

function fail(message) {
  console.error(`tessera prebuilds: ${message}`);
  process.exit(1);
}

const mib = (file) => `${(statSync(file).size / 2 ** 20).toFixed(1)} MiB`;

/** Every file under dir (recursively). */
function walk(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : [p];
  });
}

/**
 * The compile commands node-gyp recorded for the CPU addon (the first line of each .o.d file) must
 * not tie it to the build machine's CPU. Returns the problems found.
 */
function portabilityProblems() {
  const deps = walk(path.join(root, 'build/Release/.deps/Release/obj.target')).filter((f) => f.endsWith('.o.d'));
  if (!deps.length) return ['build/Release/.deps has no compile commands to check (was it built with node-gyp?)'];
  const problems = [];
  for (const f of deps) {
    const cmd = readFileSync(f, 'utf8').split('\n', 1)[0];
    const rel = path.relative(path.join(root, 'build/Release/.deps/Release/obj.target'), f);
    if (/-m(arch|tune|cpu)=native\b/.test(cmd)) problems.push(`${rel} was compiled with -march/-mtune=native`);
    const isaTable = rel.startsWith('tessera_isa_');
    if (!isaTable && /\s-m(avx|fma|f16c|bmi|sse4|popcnt)\S*/.test(cmd)) problems.push(`${rel} was compiled with ISA flags outside the per-ISA tables`);
  }
  return problems;
}

/** Shared libraries the file needs at load (readelf -d), or null when readelf is missing. */
function needed(file) {
  const r = spawnSync('readelf', ['-d', file], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  return [...r.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
}

/** dist files whose TypeScript source no longer exists, and source maps (tsconfig emits none). */
function pruneDist() {
  const dist = path.join(root, 'dist');
  let removed = 0;
  for (const f of walk(dist)) {
    const rel = path.relative(dist, f);
    const stem = rel.replace(/(\.d\.ts|\.js)(\.map)?$/, '');
    if (stem === rel) continue;
    if (rel.endsWith('.map') || !existsSync(path.join(root, 'src', `${stem}.ts`))) {
      unlinkSync(f);
      removed++;
    }
  }
  return removed;
}

// 1. CPU addon
if (!noBuild) {
  const r = await run(process.execPath, [path.join(root, 'scripts/build-native.mjs'), '--strict'], {});
  if (r.status !== 0) fail('the CPU addon did not build');
} else if (!existsSync(cpuBuilt)) {
  fail('no build/Release/tessera.node (npm run build:native)');
}
const problems = portabilityProblems();
if (problems.length) fail(`build/Release/tessera.node is not portable: ${problems.join('; ')}. Rebuild without CFLAGS/CXXFLAGS (npm run build:native).`);
const { info: cpuInfo, loadError: cpuError } = await probeAddon(cpuBuilt);
if (cpuError) fail(`build/Release/tessera.node does not load: ${cpuError}`);

// 2. CUDA addon (build-native.mjs above already brought it up to date where nvcc exists)
const cuda = existsSync(cudaBuilt) ? cudaBuilt : null;
if (cuda) {
  const libs = needed(cuda);
  if (libs === null) console.warn('tessera prebuilds: readelf not found, cannot check the CUDA addon\'s libraries');
  else {
    const cudaLibs = libs.filter((l) => /^lib(cudart|cuda|cublas|nvrtc)\b/.test(l));
    if (cudaLibs.length) fail(`build/cuda/Release/tessera_cuda.node needs ${cudaLibs.join(', ')} at load; it must link cudart statically (CMakeLists.txt)`);
  }
  const { loadError } = await probeAddon(cuda);
  if (loadError) fail(`build/cuda/Release/tessera_cuda.node does not load: ${loadError}`);
} else if (requireCuda) {
  fail('TESSERA_PREBUILD_REQUIRE_CUDA=1 but there is no build/cuda/Release/tessera_cuda.node (npm run build:cuda)');
} else {
  console.warn('tessera prebuilds: no CUDA build (build/cuda/Release/tessera_cuda.node): the package carries the CPU addon only');
}

// 3. prebuilds/<platform>-<arch>/, written beside and swapped in
const dir = path.dirname(prebuildPath('tessera'));
const staging = `${dir}.tmp-${process.pid}`;
rmSync(staging, { recursive: true, force: true });
mkdirSync(staging, { recursive: true });
const out = [[cpuBuilt, prebuildPath('tessera')]];
if (cuda) out.push([cuda, prebuildPath('tessera_cuda')]);
for (const [from, to] of out) copyFileSync(from, path.join(staging, path.basename(to)));
rmSync(dir, { recursive: true, force: true });
renameSync(staging, dir);
const removed = pruneDist();

for (const [, to] of out) console.log(`tessera prebuilds: ${path.relative(root, to)} (${mib(to)})`);
console.log(`tessera prebuilds: ${platformTag()} CPU addon with kernel paths ${cpuInfo.isas.join(', ')}${cuda ? ' and the CUDA addon' : ''}`
  + (removed ? `; removed ${removed} stale file(s) from dist/` : ''));
