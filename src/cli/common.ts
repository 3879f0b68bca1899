/** Pieces shared by the CLI commands: option parsing, number checks, opening a model. */
import { existsSync } from 'node:fs';
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

export function parse<T extends Options>(cmd: string, argv: string[], options: T, positionals = false): ReturnType<typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: true }>> {
  let r;
  try {
    r = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
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
