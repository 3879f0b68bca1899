#!/usr/bin/env node
// Builds the CUDA addon (build/cuda/Release/tessera_cuda.node) with cmake-js from CMakeLists.txt,
// when nvcc and cmake are found. Without them it says so and exits 0: tessera runs on `cpu`.
// A compile failure is fatal with --strict or TESSERA_REQUIRE_NATIVE=1 (CI), so a CUDA compile
// error fails CI; otherwise it is reported and `npm install` carries on.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const strict = process.argv.includes('--strict') || process.env.TESSERA_REQUIRE_NATIVE === '1';

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

const nvcc = process.env.CUDACXX || which('nvcc') || (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : null);
if (process.env.TESSERA_SKIP_CUDA === '1') {
  console.log('tessera: TESSERA_SKIP_CUDA=1, not building the CUDA addon');
  process.exit(0);
}
if (!nvcc) {
  console.log('tessera: nvcc not found, not building the CUDA addon (the cuda backend will report itself unavailable)');
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
  console.warn(`tessera: nvcc found but ${why}: not building the CUDA addon`);
  process.exit(0);
}
console.log(`tessera: building the CUDA addon with ${nvcc} (sm_80, sm_90a)`);
const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build/cuda', '--parallel', process.env.JOBS ?? '2',
  `--CDCMAKE_CUDA_COMPILER=${nvcc}`], { cwd: root, stdio: 'inherit' });
const built = path.join(root, 'build/cuda/Release/tessera_cuda.node');
if (r.status !== 0 || !existsSync(built)) {
  const why = r.error ? r.error.message : `cmake-js exited with status ${r.status}`;
  if (strict) {
    console.error(`tessera: CUDA build failed (${why})`);
    process.exit(1);
  }
  console.warn(`tessera: CUDA build failed (${why}); tessera runs without the cuda backend.`);
} else {
  console.log(`tessera: built ${path.relative(root, built)}`);
}
