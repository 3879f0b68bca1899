/** Pieces shared by the CLI commands: option parsing, number checks, opening a model. */
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { getBackend, setThreads } from '../backend/index.js';
import { loadModelFile, type LoadedModel } from '../model/load.js';
import { UsageError } from './errors.js';

export function defaultModelPath(): string {
  return fileURLToPath(new URL('../../models/stories260K/stories260K.gguf', import.meta.url));
}

export const MODEL_OPTIONS = {
  model: { type: 'string', short: 'm' },
  backend: { type: 'string' },
  threads: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Options = NonNullable<ParseArgsConfig['options']>;

/** Most tokens a count option (-n, --gen, ...) accepts: far past any context length, short of nonsense like 1e12. */
export const MAX_TOKENS = 2 ** 24;

/**
 * node's parseArgs reads a value that starts with '-' as a missing argument ("ambiguous"), so
 * `-n -5` would never reach the range check. A negative number after an option that takes a
 * value is joined to it (`--max-tokens=-5`), and the number check then names the range.
 */
function joinNegativeValues(argv: string[], options: Options): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!, next = argv[i + 1];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (next !== undefined && /^-(?:\.?\d|Infinity$)/.test(next)) {
      const name = a.startsWith('--') && !a.includes('=') ? a.slice(2)
        : /^-[^-]$/.test(a) ? Object.keys(options).find((k) => options[k]!.short === a[1]) : undefined;
      if (name !== undefined && Object.hasOwn(options, name) && options[name]!.type === 'string') {
        out.push(`--${name}=${next}`);
        i++;
        continue;
      }
    }
    out.push(a);
  }
  return out;
}

export function parse<T extends Options>(cmd: string, argv: string[], options: T, positionals = false): ReturnType<typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: true }>> {
  let r;
  try {
    r = parseArgs({ args: joinNegativeValues(argv, options), options, strict: true, allowPositionals: true });
  } catch (err) {
    throw new UsageError(`${(err as Error).message} (see tessera ${cmd} --help)`);
  }
  if (!positionals && r.positionals.length)
    throw new UsageError(`unexpected argument '${r.positionals[0]}' (options take a flag, e.g. -m FILE; see tessera ${cmd} --help)`);
  return r;
}

export function num(v: string | undefined, name: string, int = false, min = -Infinity, max = Infinity): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (int && !Number.isInteger(n)) || n < min || n > max) {
    const range = min > -Infinity && max < Infinity ? ` in [${min}, ${max}]` : min > -Infinity ? ` >= ${min}` : max < Infinity ? ` <= ${max}` : '';
    throw new UsageError(`--${name} expects ${int ? 'an integer' : 'a number'}${range} but received '${v}'`);
  }
  return n;
}

/** A file named on the command line: it must exist and not be a directory. `what` names it in the error. */
export function inputFile(file: string, what: string): string {
  let st;
  try {
    st = statSync(file);
  } catch {
    throw new UsageError(`${what} not found: ${file}`);
  }
  if (st.isDirectory()) throw new UsageError(`${what} is a directory, not a file: ${file}`);
  return file;
}

/** Writes an output file, turning a directory or an unwritable path into an error that names it. */
export function writeOutput(file: string, data: Uint8Array | string, what = '--out'): void {
  if (existsSync(file) && statSync(file).isDirectory()) throw new UsageError(`${what} is a directory, not a file: ${file}`);
  try {
    writeFileSync(file, data);
  } catch (err) {
    throw new UsageError(`cannot write ${what} ${file}: ${(err as Error).message}`);
  }
}

export function backendName(v: string | undefined): 'cpu' | 'js' | 'auto' {
  const b = v ?? 'auto';
  if (b !== 'cpu' && b !== 'js' && b !== 'auto') throw new UsageError(`--backend expects cpu, js or auto but received '${b}'`);
  return b;
}

/** Opens a model in this process (CLI commands that are not services). */
export function openModel(values: { model?: string; backend?: string; threads?: string }, progress = false): LoadedModel {
  const file = values.model ?? defaultModelPath();
  if (!existsSync(file)) throw new UsageError(`model file not found: ${file}`);
  const threads = num(values.threads, 'threads', true, 1, 1024);
  const backend = getBackend(backendName(values.backend));
  if (threads && backend.name === 'cpu') setThreads(threads); // the js backend is single-threaded
  const m = loadModelFile(file, backend, progress && process.stderr.isTTY
    ? (d, t) => process.stderr.write(`\rloading tensors ${d}/${t}${d === t ? '\n' : ''}`)
    : undefined);
  if (progress && m.quantization) process.stderr.write(`model: ${m.quantization}\n`);
  if (progress) for (const w of m.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
  return m;
}
