/**
 * Where the two native addons are found, in order: the file an environment variable names
 * (TESSERA_ADDON / TESSERA_CUDA_ADDON, and then only that one), a local build (build/Release for
 * developers and after `npm rebuild tessera`), then the binary prebuilt into the package. The
 * prebuilds follow prebuildify's layout, `prebuilds/<platform>-<arch>/<addon>.napi[.glibc|.musl].node`
 * (scripts/prebuilds.mjs writes the same names at `npm pack`). Loading never throws: every file
 * tried is recorded with why it was not used, so the caller can say what is wrong and what to run.
 */
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (this file is src/backend/ or dist/backend/). */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A git checkout with the TypeScript sources (a developer), as opposed to the installed package. */
export function isSourceCheckout(): boolean {
  return existsSync(path.join(PACKAGE_ROOT, 'src', 'index.ts'));
}

export type AddonOrigin = 'env' | 'build' | 'prebuild';

export interface AddonAttempt {
  file: string;
  origin: AddonOrigin;
  /** 'not found', or the loader's first line of error. */
  problem: string;
}

export interface AddonLoad<T> {
  addon: T | null;
  /** The file that loaded. */
  file: string | null;
  origin: AddonOrigin | null;
  /** The files tried before it (all of them when nothing loaded). */
  failed: AddonAttempt[];
  /** When no prebuild was looked at because none fits this platform: why. */
  noPrebuild: string | null;
}

let libc: 'glibc' | 'musl' | null | undefined;

/** glibc or musl on Linux (as detect-libc decides: the process report names glibc's version). */
function libcFamily(): 'glibc' | 'musl' | null {
  if (libc !== undefined) return libc;
  if (process.platform !== 'linux') return (libc = null);
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return (libc = header?.glibcVersionRuntime ? 'glibc' : 'musl');
}

/** This process's prebuild folder name, e.g. linux-x64. */
export function platformTag(): string {
  return `${process.platform}-${process.arch}`;
}

/** The prebuilt file for `name` on this platform (it may not exist). */
export function prebuildFile(name: string): string {
  const c = libcFamily();
  return path.join(PACKAGE_ROOT, 'prebuilds', platformTag(), `${name}.napi${c ? `.${c}` : ''}.node`);
}

/** The platform folders the package carries a prebuild of `name` for. */
export function prebuiltPlatforms(name: string): string[] {
  const dir = path.join(PACKAGE_ROOT, 'prebuilds');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((p) => {
    try {
      return readdirSync(path.join(dir, p)).some((f) => f.startsWith(`${name}.napi`) && f.endsWith('.node'));
    } catch {
      return false;
    }
  }).sort();
}

/**
 * Loads the first file that works: `env` when that variable is set, else each local build, then the
 * prebuild. `check` runs on a loaded module (an addon whose self-test throws counts as failed).
 */
export function loadAddon<T>(opts: { name: string; envVar: string; builds: string[]; check?: (addon: T) => void }): AddonLoad<T> {
  const explicit = process.env[opts.envVar];
  const candidates: { file: string; origin: AddonOrigin }[] = [];
  let noPrebuild: string | null = null;
  if (explicit) {
    candidates.push({ file: path.resolve(explicit), origin: 'env' });
  } else {
    for (const b of opts.builds) candidates.push({ file: path.join(PACKAGE_ROOT, b), origin: 'build' });
    const pre = prebuildFile(opts.name);
    if (existsSync(pre)) {
      candidates.push({ file: pre, origin: 'prebuild' });
    } else {
      const have = prebuiltPlatforms(opts.name);
      const here = `${platformTag()}${libcFamily() === 'musl' ? ' (musl)' : ''}`;
      noPrebuild = have.length
        ? `no prebuilt ${opts.name} addon for ${here} (the package has ${have.join(', ')})`
        : isSourceCheckout()
          ? `no prebuilds/ (a source checkout: \`npm pack\` assembles them)`
          : `this package carries no prebuilt ${opts.name} addon`;
    }
  }
  const require = createRequire(import.meta.url);
  const failed: AddonAttempt[] = [];
  for (const c of candidates) {
    if (!existsSync(c.file)) {
      failed.push({ ...c, problem: 'not found' });
      continue;
    }
    try {
      const addon = require(c.file) as T;
      opts.check?.(addon);
      return { addon, file: c.file, origin: c.origin, failed, noPrebuild };
    } catch (err) {
      failed.push({ ...c, problem: String((err as Error)?.message ?? err).split('\n')[0]! });
    }
  }
  return { addon: null, file: null, origin: null, failed, noPrebuild };
}

/**
 * Why nothing loaded, in words: each file that exists but failed (with the loader's message), that
 * there is no local build, and why no prebuild was tried.
 */
export function explainFailure(load: AddonLoad<unknown>): string {
  const parts: string[] = [];
  for (const a of load.failed) {
    if (a.origin === 'env') parts.push(`${a.file} (${a.problem})`);
    else if (a.problem !== 'not found') parts.push(`${a.file} failed to load (${a.problem})`);
  }
  const builds = load.failed.filter((a) => a.origin === 'build');
  if (builds.length && builds.every((a) => a.problem === 'not found')) parts.push(`no local build (${builds[0]!.file})`);
  if (load.noPrebuild) parts.push(load.noPrebuild);
  return parts.join('; ');
}
