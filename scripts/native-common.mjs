// Shared by the build and packing scripts: where prebuilt addons live, how to tell whether one
// loads here, and how to report progress during a long compile.
//
// Prebuilds follow prebuildify's layout, read by src/backend/addon-files.ts in the same way:
//   prebuilds/<platform>-<arch>/<addon>.napi[.glibc|.musl].node
import { spawn } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** glibc or musl on Linux (the process report names glibc's version, as detect-libc reads it); null elsewhere. */
export function libcFamily() {
  if (process.platform !== 'linux') return null;
  return process.report.getReport().header.glibcVersionRuntime ? 'glibc' : 'musl';
}

export function platformTag() {
  return `${process.platform}-${process.arch}`;
}

/** prebuilds/<platform>-<arch>/<name>.napi[.<libc>].node for this machine (absolute). */
export function prebuildPath(name) {
  const libc = libcFamily();
  return path.join(root, 'prebuilds', platformTag(), `${name}.napi${libc ? `.${libc}` : ''}.node`);
}

/**
 * Loads `file` in a child node process and calls its info(): { info } with the parsed result, or
 * { loadError } with the loader's message (a missing GLIBC version, a wrong architecture, a broken file).
 */
export async function probeAddon(file) {
  const code = `const a = require(${JSON.stringify(file)}); process.stdout.write(JSON.stringify(a.info()));`;
  const r = await run(process.execPath, ['-e', code], { capture: true });
  if (r.status === 0) {
    try {
      return { info: JSON.parse(r.stdout) };
    } catch {
      return { loadError: `info() printed ${JSON.stringify(r.stdout.slice(0, 200))}` };
    }
  }
  const line = r.stderr.split('\n').find((l) => /Error|error:/.test(l)) ?? r.stderr.trim().split('\n')[0] ?? `exit status ${r.status}`;
  return { loadError: line.trim() };
}

let tty = null;
// npm runs a dependency's install script with its output piped, and shows it only when the script
// fails (or with --foreground-scripts). A few progress lines also go to the terminal, when there is
// one, so that a compile of minutes is not minutes of silence.
if (process.env.npm_lifecycle_event && !process.stdout.isTTY && process.env.npm_config_foreground_scripts !== 'true') {
  try {
    tty = openSync('/dev/tty', 'w');
    process.on('exit', () => closeSync(tty));
  } catch {
    tty = null; // no controlling terminal (CI, a service): stdout alone
  }
}

/** A progress line: stdout, and the terminal when npm hides stdout. */
export function say(line) {
  console.log(line);
  if (tty !== null) {
    try {
      writeSync(tty, `${line}\n`);
    } catch {
      tty = null;
    }
  }
}

/** "2m 05s" */
export function elapsed(t0) {
  const s = Math.round((Date.now() - t0) / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/**
 * Runs a command (inheriting stdio unless capture), saying "still <what>" every minute when `what`
 * is given. Resolves { status, error, stdout, stderr }; never rejects.
 */
export function run(cmd, args, { cwd = root, capture = false, what = null } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let stdout = '';
    let stderr = '';
    const child = spawn(cmd, args, { cwd, stdio: capture ? ['ignore', 'pipe', 'pipe'] : 'inherit' });
    if (capture) {
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
    }
    const beat = what ? setInterval(() => say(`tessera: still ${what} (${elapsed(t0)})`), 60_000) : null;
    child.on('error', (error) => {
      if (beat) clearInterval(beat);
      resolve({ status: null, error, stdout, stderr });
    });
    child.on('close', (status) => {
      if (beat) clearInterval(beat);
      resolve({ status, error: null, stdout, stderr });
    });
  });
}
