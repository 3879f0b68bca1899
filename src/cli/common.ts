/** Pieces shared by the CLI commands: option parsing (llama.cpp aliases, "did you mean"), number checks, progress, opening a model. */
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { getBackend, setThreads } from '../backend/index.js';
import { loadModelFile, type LoadedModel } from '../model/load.js';
import { UsageError } from './errors.js';
import { bundledModelPath } from '../engine/bundled.js';

/** The bundled stories260K, the model every command uses without -m. */
export function defaultModelPath(): string {
  return bundledModelPath;
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
 * llama.cpp's spellings of tessera options (flag -> option name). `parse` applies one to every
 * command that has the option and does not spell the flag itself, so a command gets them by
 * naming its options as the others do (temperature, threads, ctx, seed).
 */
export const LLAMA_ALIASES: Readonly<Record<string, string>> = {
  '--temp': 'temperature',
  '-t': 'threads',
  '-c': 'ctx',
  '--ctx-size': 'ctx',
  '-s': 'seed',
};

/** llama.cpp's GPU layer count: accepted (with a note) by commands that take --backend. */
const GPU_LAYER_FLAGS = ['-ngl', '--n-gpu-layers', '--gpu-layers'];

/** A value that reads as a negative number (so `-n -5` reaches the range check, not "needs a value"). */
const NEGATIVE = /^-(?:\.?\d|Infinity$)/;

/** Levenshtein distance with adjacent transpositions (optimal string alignment). */
function editDistance(a: string, b: string): number {
  let prev2: number[] = [], prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) cur[j] = Math.min(cur[j]!, prev2[j - 2]! + 1);
    }
    prev2 = prev;
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * The candidate closest to `input` (leading dashes and case ignored): within about a third of
 * its length in edits, or one that starts with it. undefined when nothing is close.
 */
export function didYouMean(input: string, candidates: Iterable<string>): string | undefined {
  const bare = (s: string) => s.replace(/^-+/, '').toLowerCase();
  const x = bare(input);
  if (!x) return undefined;
  const list = [...candidates];
  let best: string | undefined, bestD = Infinity;
  for (const c of list) {
    const d = editDistance(x, bare(c));
    if (d < bestD || (d === bestD && bare(c).length > bare(best!).length)) [best, bestD] = [c, d]; // ties: the longer name
  }
  // One letter is too little to guess from unless it matches outright (-P for -p).
  if (best !== undefined && (bestD === 0 || (x.length > 1 && bestD <= Math.max(1, Math.floor(x.length / 3))))) return best;
  return x.length >= 3 ? list.find((c) => bare(c).startsWith(x)) : undefined;
}

/**
 * Rewrites argv into `--name=value` / `--name` / positionals over the command's own option names,
 * so node's parseArgs never sees an alias, an unknown flag or a missing value and every mistake
 * is a UsageError in our words (with "did you mean" for a near miss). Recognises:
 * `--name value`, `--name=value`, `-x value`, `-xVALUE`, boolean groups `-vh`, the aliases
 * (LLAMA_ALIASES and the command's own), `--` (the rest are positionals), and -ngl N (dropped
 * with a note, for commands that take --backend).
 */
function normalize(cmd: string, argv: string[], options: Options, extraAliases: Readonly<Record<string, string>>): string[] {
  const flags = new Map<string, string>(); // flag as typed -> option name
  for (const [name, o] of Object.entries(options)) {
    flags.set(`--${name}`, name);
    if (o.short) flags.set(`-${o.short}`, name);
  }
  for (const [flag, name] of [...Object.entries(extraAliases), ...Object.entries(LLAMA_ALIASES)])
    if (Object.hasOwn(options, name) && !flags.has(flag)) flags.set(flag, name);
  const gpuLayers = Object.hasOwn(options, 'backend');
  const see = `(see tessera ${cmd} --help)`;
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (!a.startsWith('-') || a === '-' || (NEGATIVE.test(a) && !flags.has(a))) {
      out.push(a);
      continue;
    }
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    let flag = eq > 0 ? a.slice(0, eq) : a;
    let value = eq > 0 ? a.slice(eq + 1) : undefined;
    if (gpuLayers && GPU_LAYER_FLAGS.includes(flag)) {
      value ??= argv[++i];
      if (value === undefined || !/^(?:-?\d+|auto|all)$/.test(value))
        throw new UsageError(`${flag} expects a layer count (an integer, auto or all) but received ${value === undefined ? 'nothing' : `'${value}'`} ${see}`);
      process.stderr.write(`tessera: note: ${flag} ${value} ignored — tessera has no per-layer GPU offload; the whole model runs on the --backend chosen (cpu, js or auto)\n`);
      continue;
    }
    let name = flags.get(flag);
    // -temp is --temp with a dash missing, not -t with the value 'emp'.
    if (name === undefined && !a.startsWith('--') && flags.has(`-${a}`))
      throw new UsageError(`unknown option '${a}' for ${cmd}; did you mean -${a}? ${see}`);
    if (name === undefined && !a.startsWith('--') && a.length > 2) {
      const first = flags.get(a.slice(0, 2));
      if (first !== undefined && options[first]!.type === 'string') {
        [name, flag, value] = [first, a.slice(0, 2), a.slice(2)]; // -n5
      } else {
        const group = [...a.slice(1)].map((ch) => flags.get(`-${ch}`));
        if (group.every((n) => n !== undefined && options[n]!.type === 'boolean')) {
          out.push(...group.map((n) => `--${n}`)); // -vh
          continue;
        }
      }
    }
    if (name === undefined) {
      const known = gpuLayers ? [...flags.keys(), ...GPU_LAYER_FLAGS] : [...flags.keys()];
      const near = didYouMean(flag, known);
      throw new UsageError(`unknown option '${flag}' for ${cmd}${near ? `; did you mean ${near}?` : ''} ${see}`);
    }
    if (options[name]!.type === 'boolean') {
      if (value !== undefined) throw new UsageError(`${flag} takes no value but received '${value}' ${see}`);
      out.push(`--${name}`);
      continue;
    }
    if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError(`${flag} needs a value ${see}`);
      if (next.startsWith('-') && next !== '-' && !NEGATIVE.test(next))
        throw new UsageError(`${flag} needs a value but is followed by the option '${next}' (a value starting with '-' is written --${name}=${next}) ${see}`);
      value = next;
      i++;
    }
    out.push(`--${name}=${value}`);
  }
  return out;
}

/**
 * Parses a command's argv (see normalize for what is accepted). `aliases` adds the command's own
 * alternative spellings (flag -> option name) to LLAMA_ALIASES.
 */
export function parse<T extends Options>(cmd: string, argv: string[], options: T, positionals = false, aliases: Readonly<Record<string, string>> = {}): ReturnType<typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: true }>> {
  let r;
  const args = normalize(cmd, argv, options, aliases);
  try {
    r = parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (err) {
    // normalize leaves parseArgs nothing to refuse; this is a guard, in our words all the same.
    throw new UsageError(`cannot read the options of ${cmd}: ${(err as Error).message.split('.')[0]} (see tessera ${cmd} --help)`);
  }
  if (!positionals && r.positionals.length)
    throw new UsageError(`unexpected argument '${r.positionals[0]}' (options take a flag, e.g. -m FILE; see tessera ${cmd} --help)`);
  return r;
}

/** Where progress goes: process.stderr, or anything with write (and isTTY when a terminal). */
export interface ProgressStream {
  isTTY?: boolean;
  write(s: string): unknown;
}

/**
 * A progress reporter for `total` steps of something named `label`. On a terminal it redraws one
 * line with a bar (and ends it at the last step); otherwise (a pipe, a log file) it writes plain
 * lines, one at the first step, at each tenth and at the last, so logs stay short and readable.
 */
export function progress(label: string, stream: ProgressStream = process.stderr): (done: number, total: number, detail?: string) => void {
  let tenth = -1;
  return (done, total, detail) => {
    const text = `${done}/${total}${detail ? ` ${detail}` : ''}`;
    if (stream.isTTY) {
      const width = 24, fill = total > 0 ? Math.round((width * Math.min(done, total)) / total) : width;
      stream.write(`\r${label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${text}\x1b[K${done >= total ? '\n' : ''}`);
      return;
    }
    const t = total > 0 ? Math.floor((10 * done) / total) : 10;
    if (t > tenth || done >= total) {
      tenth = t;
      stream.write(`${label} ${text}\n`);
    }
  };
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
export function openModel(values: { model?: string; backend?: string; threads?: string }, showProgress = false): LoadedModel {
  const file = values.model ?? defaultModelPath();
  if (!existsSync(file)) throw new UsageError(`model file not found: ${file}`);
  const threads = num(values.threads, 'threads', true, 1, 1024);
  const backend = getBackend(backendName(values.backend));
  if (threads && backend.name === 'cpu') setThreads(threads); // the js backend is single-threaded
  const m = loadModelFile(file, backend, showProgress ? progress('loading tensors') : undefined);
  if (showProgress && m.quantization) process.stderr.write(`model: ${m.quantization}\n`);
  if (showProgress) for (const w of m.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
  return m;
}
