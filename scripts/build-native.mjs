#!/usr/bin/env node
// Builds the CPU addon (build/Release/tessera.node) with node-gyp from binding.gyp, then hands over
// to scripts/build-cuda.mjs for the CUDA addon.
//
//   node scripts/build-native.mjs            `npm run build:native`: (re)build, incrementally (make
//                                            compiles only what changed; build/cuda is left alone)
//   node scripts/build-native.mjs --install  npm's install script: compile only when nothing usable
//                                            is there. A local build is brought up to date; else
//                                            the package's prebuilt addon is used when it loads;
//                                            else it compiles from source. --build-from-source (npm
//                                            rebuild tessera --build-from-source) always compiles.
//
// A failed build does not fail `npm install`: tessera then runs on the pure-TS `js` backend and
// says why at import. `--strict` (or TESSERA_REQUIRE_NATIVE=1, set by CI) makes a failure fatal.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { elapsed, platformTag, prebuildPath, probeAddon, root, run, say } from './native-common.mjs';

const argv = process.argv.slice(2);
const strict = argv.includes('--strict') || process.env.TESSERA_REQUIRE_NATIVE === '1';
const install = argv.includes('--install');
const fromSource = argv.includes('--build-from-source') || process.env.npm_config_build_from_source === 'true'
  || process.env.TESSERA_BUILD_FROM_SOURCE === '1';
const built = path.join(root, 'build', 'Release', 'tessera.node');

function nodeGypCommand() {
  // npm exports the path of its bundled node-gyp to lifecycle scripts.
  const bundled = process.env.npm_config_node_gyp;
  if (bundled && existsSync(bundled)) return [process.execPath, [bundled]];
  try {
    const require = createRequire(import.meta.url);
    return [process.execPath, [require.resolve('node-gyp/bin/node-gyp.js')]];
  } catch {
    // Run by hand (not through npm): the node-gyp of the npm installed beside node.
    const npmGyp = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    return existsSync(npmGyp) ? [process.execPath, [npmGyp]] : ['node-gyp', []];
  }
}

/** What to do for the CPU addon: 'build' (with the reason to print) or 'keep' (a prebuild works). */
async function decide() {
  if (!install) return { build: true, why: null };
  if (fromSource) return { build: true, why: 'building from source as asked' };
  if (existsSync(built) && existsSync(path.join(root, 'build', 'Makefile'))) {
    // `npx tessera` in a checkout runs this install script on the checkout itself (see prepare.mjs):
    // the developer's build stays as it is.
    if (process.env.npm_command === 'exec') {
      say('tessera: npx: using the local build build/Release/tessera.node as it is');
      return { build: false, why: null };
    }
    return { build: true, why: 'bringing the local build up to date' };
  }
  const pre = prebuildPath('tessera');
  const rel = path.relative(root, pre);
  if (!existsSync(pre)) return { build: true, why: `no prebuilt CPU addon for ${platformTag()} (${rel}); compiling it from source` };
  const { info, loadError } = await probeAddon(pre);
  if (loadError) return { build: true, why: `the prebuilt CPU addon ${rel} does not load here (${loadError}); compiling it from source` };
  say(`tessera: using the prebuilt CPU addon ${rel} (kernel path ${info.isa}); nothing to compile`);
  return { build: false, why: null };
}

async function buildCpu(why) {
  const [cmd, pre] = nodeGypCommand();
  const jobs = process.env.JOBS ?? 'max';
  const fresh = !existsSync(built);
  if (why) say(`tessera: ${why}`);
  // A first build compiles every ISA table (about 3 minutes on 2 cores); an update only what changed.
  say(fresh
    ? `tessera: building the native CPU addon with node-gyp (-j ${jobs}; takes a few minutes)...`
    : `tessera: updating build/Release/tessera.node (node-gyp build -j ${jobs})...`);
  const t0 = Date.now();
  // configure + build rather than `rebuild`: rebuild starts with `clean`, which deletes all of
  // build/, the CUDA addon in build/cuda included. The generated Makefile reruns gyp by itself when
  // binding.gyp changes.
  let r = { status: 0, error: null };
  if (!existsSync(path.join(root, 'build', 'Makefile')) || !existsSync(path.join(root, 'build', 'config.gypi'))) {
    r = await run(cmd, [...pre, 'configure']);
  }
  if (r.status === 0) r = await run(cmd, [...pre, 'build', '-j', jobs], { what: 'compiling the CPU addon' });
  if (r.status !== 0 || !existsSync(built)) {
    const reason = r.error ? r.error.message : `node-gyp exited with status ${r.status}`;
    if (strict) {
      console.error(`tessera: native build failed (${reason})`);
      process.exit(1);
    }
    say(`tessera: native build failed (${reason}); tessera will use the pure-TypeScript 'js' backend.`);
    return;
  }
  say(fresh ? `tessera: built build/Release/tessera.node in ${elapsed(t0)}` : `tessera: build/Release/tessera.node is up to date (${elapsed(t0)})`);
}

const plan = await decide();
if (plan.build) await buildCpu(plan.why);

// Then the CUDA addon (scripts/build-cuda.mjs decides and explains).
const flags = [...(strict ? ['--strict'] : []), ...(install ? ['--install'] : []), ...(fromSource ? ['--build-from-source'] : [])];
const cuda = await run(process.execPath, [path.join(root, 'scripts/build-cuda.mjs'), ...flags]);
if (cuda.status !== 0 && strict) process.exit(1);
