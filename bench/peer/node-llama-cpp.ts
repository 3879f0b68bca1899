/**
 * llama.cpp, the peer the comparison benches and tests measure against: node-llama-cpp (its
 * prebuilt CPU binaries) installed into bench/peer/node_modules by `npm run peer:install`, never by
 * the project's own install (its GPU binaries are ~700 MB that only these comparisons use).
 *
 * Only the part of node-llama-cpp's API that tessera's benches and tests call is typed here, so
 * that they type-check without the peer installed. Run llama.cpp with UV_THREADPOOL_SIZE=1 on a
 * 2-core host: every decode call is an AsyncWorker, and with libuv's default 4 pool threads they
 * land on different threads and decode ran 3x slower (see the bench:* scripts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/** bench/peer: its package.json pins the node-llama-cpp version. */
export const peerDir = import.meta.dirname;

export interface LlamaCppContextOptions {
  contextSize?: number;
  batchSize?: number;
  /** Sequences served by one context (node-llama-cpp batches their tokens into one decode). */
  sequences?: number;
  flashAttention?: boolean;
  threads?: { ideal: number; min: number };
  /** 'F32' for tight comparisons: llama.cpp's default F16 KV cache alone moves F32 logits ~1e-3. */
  experimentalKvCacheKeyType?: 'F32' | 'F16';
  experimentalKvCacheValueType?: 'F32' | 'F16';
}

/** One input token, optionally asking for the full next-token distribution after it. */
export type LlamaCppEvaluateItem = number | [token: number, options: { generateNext?: { probabilities?: boolean } }];

export interface LlamaCppSequence {
  /** Per input position (where asked), next.probabilities: token -> softmax probability over the vocabulary. */
  controlledEvaluate(input: LlamaCppEvaluateItem[]): Promise<(undefined | { next: { probabilities?: Map<number, number> } })[]>;
  evaluate(tokens: number[], options?: { temperature?: number }): AsyncGenerator<number, void, void | number | number[]>;
  evaluateWithoutGeneratingNewTokens(tokens: number[]): Promise<void>;
}

export interface LlamaCppContext {
  getSequence(): LlamaCppSequence;
  dispose(): Promise<void>;
}

export interface LlamaCppModel {
  createContext(options: LlamaCppContextOptions): Promise<LlamaCppContext>;
  dispose(): Promise<void>;
}

export interface LlamaCpp {
  loadModel(options: { modelPath: string }): Promise<LlamaCppModel>;
  dispose(): Promise<void>;
}

export interface NodeLlamaCpp {
  getLlama(options: { gpu: false; build: 'never'; logLevel?: 'error' | 'warn' | 'info' | 'debug' }): Promise<LlamaCpp>;
}

const pinned: string = JSON.parse(readFileSync(path.join(peerDir, 'package.json'), 'utf8')).dependencies['node-llama-cpp'];

/** The node-llama-cpp version the peer pins (and the reference outputs were recorded with). */
export const llamaCppPeerVersion = pinned;

/** Why the peer cannot be used, or null when node-llama-cpp at the pinned version is installed. */
export function llamaCppPeerMissing(): string | null {
  const pkg = path.join(peerDir, 'node_modules/node-llama-cpp/package.json');
  if (!existsSync(pkg)) return `llama.cpp peer not installed (node-llama-cpp ${pinned} in bench/peer): run \`npm run peer:install\``;
  const version: string = JSON.parse(readFileSync(pkg, 'utf8')).version;
  if (version !== pinned) return `bench/peer has node-llama-cpp ${version} but bench/peer/package.json pins ${pinned}: run \`npm run peer:install\``;
  return null;
}

/** node-llama-cpp from bench/peer; throws, saying how to install it, when it is missing. */
export async function importLlamaCpp(): Promise<NodeLlamaCpp> {
  const missing = llamaCppPeerMissing();
  if (missing) throw new Error(missing);
  // Resolved from bench/peer through the package's own exports, not from the project's node_modules.
  const entry = createRequire(path.join(peerDir, 'package.json')).resolve('node-llama-cpp');
  return (await import(pathToFileURL(entry).href)) as NodeLlamaCpp;
}

/** llama.cpp on the CPU, quiet but for errors. */
export async function getLlamaCpp(): Promise<LlamaCpp> {
  const { getLlama } = await importLlamaCpp();
  return getLlama({ gpu: false, build: 'never', logLevel: 'error' });
}

/** For a bench's start: exits with the install command when the peer is missing (before any slow setup). */
export function requireLlamaCppPeer(bench: string, skipFlag?: string): void {
  const missing = llamaCppPeerMissing();
  if (!missing) return;
  console.error(`${bench} compares with llama.cpp: ${missing}${skipFlag ? `, or pass ${skipFlag} to run tessera alone` : ''}.`);
  process.exit(2);
}
