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

export function parse<T extends Options>(cmd: string, argv: string[], options: T): ReturnType<typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: true }>> {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: true });
  } catch (err) {
    throw new UsageError(`${(err as Error).message} (see tessera ${cmd} --help)`);
  }
}

export function num(v: string | undefined, name: string, int = false, min = -Infinity): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (int && !Number.isInteger(n)) || n < min)
    throw new UsageError(`--${name} expects ${int ? 'an integer' : 'a number'}${min > -Infinity ? ` >= ${min}` : ''} but received '${v}'`);
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
  const threads = num(values.threads, 'threads', true, 1);
  if (threads) setThreads(threads);
  const m = loadModelFile(file, getBackend(backendName(values.backend)), progress && process.stderr.isTTY
    ? (d, t) => process.stderr.write(`\rloading tensors ${d}/${t}${d === t ? '\n' : ''}`)
    : undefined);
  return m;
}
