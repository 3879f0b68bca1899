// The package as a user gets it: this repository packed (prebuilds/ assembled as `prepack` does),
// installed into a fresh project with install scripts blocked (--ignore-scripts), must load the
// prebuilt CPU addon from its own node_modules, run the bundled model, and say so in `tessera info`.
// References: the repository's pure-TypeScript `js` backend for the logits and the greedy tokens,
// the repository's own `tessera generate` for the CLI's text, its own cudaStatus() for the CUDA line.
// npm installs from the cache that `npm ci` filled (--prefer-offline); CI has the registry too.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prebuildFile } from '../src/backend/addon-files.js';
import { cudaStatus } from '../src/backend/cuda/device.js';
import { forwardTokens, getBackend, loadModelFile, PagedKvCache, type LlamaModel } from '../src/index.js';
import { relL2, spawnAsync } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const built = existsSync(path.join(root, 'build/Release/tessera.node'));
const cudaBuilt = existsSync(path.join(root, 'build/cuda/Release/tessera_cuda.node'));
const distBuilt = existsSync(path.join(root, 'dist/index.js'));
if (!built) console.log('package test skipped: the native addon is not built here (build/Release/tessera.node; npm run build:native)');

// This machine's prebuild names, relative to the package root (prebuilds/linux-x64/tessera.napi.glibc.node here).
const CPU_PREBUILD = path.relative(root, prebuildFile('tessera'));
const CUDA_PREBUILD = path.relative(root, prebuildFile('tessera_cuda'));

const PROMPT = [1, 403, 407, 261, 378, 432, 269]; // BOS + a few stories260K tokens
const STEPS = 12;

/** Greedy continuation of PROMPT: the first step's logits and the chosen ids (as the consumer script does it). */
function greedy(model: LlamaModel) {
  const c = model.config;
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 16 });
  cache.add(0);
  let logits = forwardTokens(model, cache, 0, Int32Array.from(PROMPT)).data;
  const first = Array.from(logits);
  const ids: number[] = [];
  const margins: number[] = [];
  for (let s = 0; s < STEPS; s++) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    let second = -Infinity;
    for (let i = 0; i < logits.length; i++) if (i !== best && logits[i]! > second) second = logits[i]!;
    ids.push(best);
    margins.push(logits[best]! - second);
    logits = forwardTokens(model, cache, 0, Int32Array.of(best)).data;
  }
  return { first, ids, margins };
}

// The consumer's script: only the public API of the installed package.
const CHECK = `import { fileURLToPath } from 'node:url';
import { forwardTokens, getBackend, loadModelFile, PagedKvCache, runtimeInfo } from 'tessera';
const file = fileURLToPath(new URL('./node_modules/tessera/models/stories260K/stories260K.gguf', import.meta.url));
const backend = getBackend();
const { model } = loadModelFile(file, backend);
const c = model.config;
const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 16 });
cache.add(0);
let logits = forwardTokens(model, cache, 0, Int32Array.from(${JSON.stringify(PROMPT)})).data;
const first = Array.from(logits);
const ids = [];
for (let s = 0; s < ${STEPS}; s++) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  ids.push(best);
  logits = forwardTokens(model, cache, 0, Int32Array.of(best)).data;
}
process.stdout.write(JSON.stringify({ backend: backend.name, info: runtimeInfo(), first, ids }));
`;

describe.runIf(built)('the packed tarball installed with --ignore-scripts', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'tessera-package-'));
  const app = path.join(work, 'app');
  // The consumer's environment: no npm lifecycle variables of this run (npm_package_*, the local
  // prefix), no addon overrides, so it finds its own files.
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) =>
    !/^(npm_(package|lifecycle)_|npm_config_local_prefix$|npm_command$|INIT_CWD$|TESSERA_(ADDON|CUDA_ADDON|DISABLE_NATIVE|ISA)$)/.test(k)));
  const sh = async (cmd: string, args: string[], opts: { cwd?: string } = {}) => {
    const r = await spawnAsync(cmd, args, { env, timeout: 120_000, ...opts });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? `status ${r.status}`}):\n${r.stdout}\n${r.stderr}`);
    return String(r.stdout);
  };
  const tessera = (args: string[]) => (sh(process.execPath, [path.join(app, 'node_modules/tessera/bin/tessera.js'), ...args], { cwd: app }));
  let files: string[] = [];
  let tarball = '';

  beforeAll(async () => {
    if (!distBuilt) throw new Error('dist/ is not built: run `npm run build` (npm test compiles it first)');
    // What `prepack` runs, from the builds as they are (no compile inside a test).
    (await sh(process.execPath, [path.join(root, 'scripts/prebuilds.mjs'), '--no-build'], { cwd: root }));
    // --ignore-scripts: not prepare's tsc, which would rewrite dist/ under the other test files.
    const packed = JSON.parse((await sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root }))) as
      { filename: string; files: { path: string }[] }[];
    tarball = path.join(work, packed[0]!.filename);
    files = packed[0]!.files.map((f) => f.path);
    mkdirSync(app);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'tessera-package-test', version: '1.0.0', private: true, type: 'module' }));
    (await sh('npm', ['install', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: app }));
  }, 180_000);

  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('carries the prebuilt addons, the licences and the compiled API, and nothing of the repository\'s development', async () => {
    for (const f of ['LICENSE', 'README.md', 'package.json', 'bin/tessera.js', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js',
      'binding.gyp', 'native/addon/addon.cpp', 'scripts/build-native.mjs', 'scripts/build-cuda.mjs', 'scripts/native-common.mjs',
      'models/stories260K/stories260K.gguf', 'models/stories260K/LICENSE.md', CPU_PREBUILD]) {
      expect(files, f).toContain(f);
    }
    if (cudaBuilt) expect(files).toContain(CUDA_PREBUILD);
    const stray = files.filter((f) => /^(src|test|bench|fuzz|build|build-asan|node_modules|\.ci)\//.test(f) || /\.(map|o|a|tgz|ts)$/.test(f) && !f.endsWith('.d.ts'));
    expect(stray).toEqual([]);
    // Every compiled file has its source (no leftovers of removed modules).
    const orphans = files.filter((f) => f.startsWith('dist/') && f.endsWith('.js'))
      .filter((f) => !existsSync(path.join(root, 'src', f.slice('dist/'.length).replace(/\.js$/, '.ts'))));
    expect(orphans).toEqual([]);
  });

  it('loads the prebuilt CPU addon and runs the bundled model as the js reference does', async () => {
    writeFileSync(path.join(app, 'check.mjs'), CHECK);
    const out = JSON.parse((await sh(process.execPath, ['check.mjs'], { cwd: app }))) as { backend: string; info: { native: boolean; nativeError: string }; first: number[]; ids: number[] };
    expect(out.info.nativeError).toBe('');
    expect(out.backend).toBe('cpu');

    const ref = greedy(loadModelFile(path.join(root, 'models/stories260K/stories260K.gguf'), getBackend('js')).model);
    expect(relL2(out.first, ref.first)).toBeLessThan(1e-4);
    // Greedy ids agree up to the first step where the reference's top two are too close to call.
    const decisive = ref.margins.findIndex((m) => m < 1e-3);
    const n = decisive < 0 ? STEPS : decisive + 1;
    expect(out.ids.slice(0, n)).toEqual(ref.ids.slice(0, n));
  });

  it('`tessera generate` there prints what the repository\'s own CLI prints', async () => {
    const args = ['generate', '-p', 'Once upon a time', '--temperature', '0', '-n', '24', '--backend', 'cpu'];
    const ours = (await sh(process.execPath, [path.join(root, 'bin/tessera.js'), ...args], { cwd: root }));
    expect(ours.length).toBeGreaterThan('Once upon a time'.length);
    expect((await tessera(args))).toBe(ours);
  });

  it('`tessera info` there names the prebuilt addons and the real reason CUDA is unavailable', async () => {
    const text = (await tessera(['info']));
    const pkg = path.join(app, 'node_modules/tessera');
    expect(text).toContain(`native addon: loaded, prebuilt (${path.join(pkg, CPU_PREBUILD)})`);
    expect(text).toContain('backend: cpu');
    const here = cudaStatus();
    if (cudaBuilt) {
      expect(text).toContain(`cuda addon: prebuilt (${path.join(pkg, CUDA_PREBUILD)})`);
      // The same device, or the same reason for none, as the repository's own build reports.
      expect(text).toContain(here.available ? `cuda: ${here.device!.name}` : `cuda: unavailable — ${here.reason}`);
    } else {
      expect(text).toMatch(/cuda: unavailable — no CUDA addon: .*this package carries no prebuilt tessera_cuda addon; a clone of the repository builds it/);
    }
  });

  it('without a usable prebuild, says to run `npm rebuild tessera`, and falls back to js', async () => {
    const file = path.join(app, 'node_modules/tessera', CPU_PREBUILD);
    renameSync(file, `${file}.off`);
    try {
      const text = (await tessera(['info']));
      expect(text).toContain('native addon: unavailable');
      expect(text).toContain('this package carries no prebuilt tessera addon');
      expect(text).toContain('Run `npm rebuild tessera --foreground-scripts` to compile it');
      expect(text).not.toContain('npm run build:native');
      expect(text).toContain('backend: js');
    } finally {
      renameSync(`${file}.off`, file);
    }
  });
});
