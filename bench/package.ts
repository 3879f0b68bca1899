/**
 * What installing tessera costs, measured the way a user and a contributor meet it:
 *
 *   contributor  `git clone` + `npm ci`: node_modules size (MB) and the install's wall time (the
 *                addon compiles are skipped with --ignore-scripts, so the figure is the download /
 *                unpack part that the dependency list decides);
 *   tarball      `npm pack`: packed and unpacked size, file count (prebuilt addons included);
 *   user         a fresh project installing the tarball, with install scripts and with
 *                --ignore-scripts: wall time, node_modules size, and which backend `tessera info`
 *                reports (the prebuilt native addon in both cases);
 *   npx          `npx tessera info` inside the checkout (npm links the checkout into its npx cache;
 *                tessera's scripts must not recompile there) next to `node bin/tessera.js info`.
 *
 *   npm run bench:package [-- --runs 3] [-- --json FILE]
 *
 * Needs a built checkout (npm install / npm test ran: dist/ and build/Release). The npm cache
 * should hold the dependencies (it does after npm ci); --prefer-offline keeps registry traffic out
 * of the timings. Takes 2-4 minutes.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const args = process.argv.slice(2);
const arg = (n: string) => {
  const i = args.indexOf(n);
  return i >= 0 ? args[i + 1] : undefined;
};
const runs = Number(arg('--runs') ?? 3);
const jsonOut = arg('--json');
if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs expects a positive integer but received '${arg('--runs')}'`);

// npm lifecycle variables of `npm run` would make the child npm commands act on this package.
const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) =>
  !/^(npm_(package|lifecycle)_|npm_config_local_prefix$|npm_command$|INIT_CWD$|TESSERA_(ADDON|CUDA_ADDON|DISABLE_NATIVE|ISA)$)/.test(k)));

function sh(cmd: string, argv: string[], cwd: string): { out: string; seconds: number } {
  const t0 = performance.now();
  const r = spawnSync(cmd, argv, { cwd, env, encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} (in ${cwd}) failed: ${r.error?.message ?? `status ${r.status}`}\n${r.stderr}`);
  return { out: r.stdout, seconds };
}
const du = (dir: string) => Number(sh('du', ['-sm', dir], root).out.split('\t')[0]);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const npmFlags = ['--prefer-offline', '--no-audit', '--no-fund'];

const work = mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-package-'));
try {
  const npmVersion = sh('npm', ['--version'], root).out.trim();
  console.log(`tessera package bench: node ${process.version}, npm ${npmVersion}, ${os.cpus().length} cores, ${runs} runs (median)`);

  // contributor: a clean clone, npm ci without install scripts.
  const ciTimes: number[] = [];
  let ciMB = 0;
  for (let i = 0; i < runs; i++) {
    const clone = path.join(work, `clone-${i}`);
    sh('git', ['clone', '-q', root, clone], work);
    ciTimes.push(sh('npm', ['ci', '--ignore-scripts', ...npmFlags], clone).seconds);
    ciMB = du(path.join(clone, 'node_modules'));
    rmSync(clone, { recursive: true, force: true });
  }

  // tarball: prebuilds from the builds as they are, then npm pack (no prepare: dist/ is built).
  sh(process.execPath, [path.join(root, 'scripts/prebuilds.mjs'), '--no-build'], root);
  const packed = JSON.parse(sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], root).out) as
    { filename: string; size: number; unpackedSize: number; entryCount: number }[];
  const tarball = path.join(work, packed[0]!.filename);

  // user: a fresh project installing the tarball, with and without install scripts.
  const user = (ignoreScripts: boolean) => {
    const times: number[] = [];
    let mb = 0, backend = '';
    for (let i = 0; i < runs; i++) {
      const app = path.join(work, `app-${ignoreScripts ? 'noscripts' : 'scripts'}-${i}`);
      mkdirSync(app);
      writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
      times.push(sh('npm', ['install', ...(ignoreScripts ? ['--ignore-scripts'] : []), ...npmFlags, tarball], app).seconds);
      mb = du(path.join(app, 'node_modules'));
      const info = JSON.parse(sh(process.execPath, [path.join(app, 'node_modules/tessera/bin/tessera.js'), 'info', '--json'], app).out) as { native: boolean; nativeAddon?: { origin?: string } };
      backend = info.native ? `native (${info.nativeAddon?.origin ?? 'loaded'})` : 'js';
      rmSync(app, { recursive: true, force: true });
    }
    return { seconds: median(times), nodeModulesMB: mb, backend };
  };
  const withScripts = user(false);
  const noScripts = user(true);

  // npx inside the checkout vs the bin directly.
  const npx: number[] = [], direct: number[] = [];
  sh('npx', ['tessera', 'info'], root); // the first call links the checkout into npx's cache
  for (let i = 0; i < runs; i++) {
    npx.push(sh('npx', ['tessera', 'info'], root).seconds);
    direct.push(sh(process.execPath, [path.join(root, 'bin/tessera.js'), 'info'], root).seconds);
  }

  const rows: [string, string][] = [
    ['contributor: npm ci --ignore-scripts, node_modules', `${ciMB} MB`],
    ['contributor: npm ci --ignore-scripts, wall', `${median(ciTimes).toFixed(1)} s`],
    ['tarball: packed / unpacked / files', `${(packed[0]!.size / 2 ** 20).toFixed(1)} MiB / ${(packed[0]!.unpackedSize / 2 ** 20).toFixed(1)} MiB / ${packed[0]!.entryCount}`],
    ['user: npm install TARBALL, wall', `${withScripts.seconds.toFixed(1)} s (${withScripts.backend})`],
    ['user: npm install --ignore-scripts TARBALL, wall', `${noScripts.seconds.toFixed(1)} s (${noScripts.backend})`],
    ['user: node_modules', `${withScripts.nodeModulesMB} MB`],
    ['checkout: npx tessera info', `${median(npx).toFixed(2)} s`],
    ['checkout: node bin/tessera.js info', `${median(direct).toFixed(2)} s`],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  console.log(`| ${'measure'.padEnd(w)} | value |\n| ${'-'.repeat(w)} | --- |`);
  for (const [k, v] of rows) console.log(`| ${k.padEnd(w)} | ${v} |`);
  if (jsonOut)
    writeFileSync(jsonOut, JSON.stringify({ node: process.version, npm: npmVersion, runs, ciMB, ciSeconds: ciTimes, tarball: packed[0], withScripts, noScripts, npxSeconds: npx, directSeconds: direct }, null, 1));
} finally {
  rmSync(work, { recursive: true, force: true });
}
