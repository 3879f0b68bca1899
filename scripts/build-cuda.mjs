#!/usr/bin/env node
// Builds the CUDA addon (build/cuda/Release/tessera_cuda.node) with cmake-js from CMakeLists.txt,
// when nvcc and cmake are found. Without them it says so and exits 0: tessera runs on `cpu`.
// A compile failure is fatal with --strict or TESSERA_REQUIRE_NATIVE=1 (CI), so a CUDA compile
// error fails CI; otherwise it is reported and `npm install` carries on.
//
// With --install (npm's install script, through build-native.mjs) it compiles only when nothing
// usable is there: a local build is brought up to date where nvcc exists, else the package's
// prebuilt CUDA addon is used when it loads, else it compiles (needs nvcc, cmake and cmake-js,
// which is a devDependency: so a project that depends on tessera gets the prebuild or nothing).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { elapsed, platformTag, prebuildPath, probeAddon, root, run, say } from './native-common.mjs';

const argv = process.argv.slice(2);
const strict = argv.includes('--strict') || process.env.TESSERA_REQUIRE_NATIVE === '1';
const install = argv.includes('--install');
const fromSource = argv.includes('--build-from-source');
const built = path.join(root, 'build/cuda/Release/tessera_cuda.node');

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

if (process.env.TESSERA_SKIP_CUDA === '1') {
  say('tessera: TESSERA_SKIP_CUDA=1, not building the CUDA addon');
  process.exit(0);
}
const nvcc = process.env.CUDACXX || which('nvcc') || (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : null);

if (install && !fromSource && !(existsSync(built) && nvcc && process.env.npm_command !== 'exec')) {
  if (existsSync(built)) {
    say(`tessera: keeping the local CUDA build ${path.relative(root, built)} (${nvcc ? 'npx: as it is' : 'nvcc not found to update it'})`);
    process.exit(0);
  }
  const pre = prebuildPath('tessera_cuda');
  const rel = path.relative(root, pre);
  if (existsSync(pre)) {
    const { info, loadError } = await probeAddon(pre);
    if (!loadError) {
      say(`tessera: using the prebuilt CUDA addon ${rel}${info.devices > 0 ? ` (${info.name})` : ` (no CUDA device now: ${info.error})`}; nothing to compile`);
      process.exit(0);
    }
    say(`tessera: the prebuilt CUDA addon ${rel} does not load here (${loadError})`);
  } else {
    say(`tessera: no prebuilt CUDA addon for ${platformTag()} (${rel})`);
  }
}

if (!nvcc) {
  say('tessera: nvcc not found, not building the CUDA addon (the cuda backend will report itself unavailable)');
  process.exit(0);
}
const cmake = which('cmake');
let cmakeJs = null;
try {
  cmakeJs = createRequire(import.meta.url).resolve('cmake-js/bin/cmake-js');
} catch {
  // cmake-js is a devDependency: absent when tessera is installed as a dependency
}
if (!cmake || !cmakeJs) {
  const why = !cmake ? 'cmake not found' : 'cmake-js is not installed (a devDependency)';
  say(`tessera: nvcc found but ${why}: not building the CUDA addon`);
  process.exit(0);
}
const fresh = !existsSync(built);
say(fresh
  ? `tessera: building the CUDA addon with ${nvcc} (sm_80, sm_90a; takes a few minutes)...`
  : `tessera: updating ${path.relative(root, built)} (cmake-js compile)...`);
const t0 = Date.now();
// `compile` configures only when build/cuda has no CMakeCache.txt, then lets ninja/make rebuild what changed.
const r = await run(process.execPath, [cmakeJs, 'compile', '--out', 'build/cuda', '--parallel', process.env.JOBS ?? '2',
  `--CDCMAKE_CUDA_COMPILER=${nvcc}`], { what: 'compiling the CUDA addon' });
if (r.status !== 0 || !existsSync(built)) {
  const why = r.error ? r.error.message : `cmake-js exited with status ${r.status}`;
  if (strict) {
    console.error(`tessera: CUDA build failed (${why})`);
    process.exit(1);
  }
  say(`tessera: CUDA build failed (${why}); tessera runs without the cuda backend.`);
} else {
  say(fresh ? `tessera: built ${path.relative(root, built)} in ${elapsed(t0)}` : `tessera: ${path.relative(root, built)} is up to date (${elapsed(t0)})`);
}
