/**
 * Option names the Engine's API accepts. Options cross to the worker as plain data and the runtime
 * reads only the names it knows, so a misspelt name (`maxToken`, `max_tokens`) or a feature tessera
 * lacks (`grammar`, `tools`) would be silently ignored; each entry point checks the names here
 * first and throws a TypeError naming the option, with "did you mean" when one is close.
 */
import type { EngineGenerateOptions, EngineOptions, EngineScoreOptions } from './engine.js';

/** Every key of T, so adding an option to the interface without listing it here fails to compile. */
type Names<T> = { readonly [K in keyof Required<T>]: true };

const LOAD: Names<EngineOptions> = {
  backend: true, kvCacheBytes: true, threads: true, maxBatchTokens: true, maxSequences: true, prefixCaching: true,
  draftModel: true, lookupNgram: true, draftMax: true, onProgress: true,
};

const GENERATE: Names<EngineGenerateOptions> = {
  temperature: true, topK: true, topP: true, minP: true, repetitionPenalty: true, presencePenalty: true, frequencyPenalty: true,
  penaltyLastN: true, seed: true, maxTokens: true, stop: true, stopTokens: true, ignoreEos: true, topLogprobs: true, beams: true,
  lengthPenalty: true, earlyStopping: true, addBos: true, tokenTexts: true, speculative: true, signal: true,
};

const SCORE: Names<EngineScoreOptions> = { topLogprobs: true, promptLogprobs: true, addBos: true, signal: true };

export const LOAD_OPTIONS: readonly string[] = Object.keys(LOAD);
export const SCORE_OPTIONS: readonly string[] = Object.keys(SCORE);
export const GENERATE_OPTIONS: readonly string[] = Object.keys(GENERATE);
export const CHAT_OPTIONS: readonly string[] = [...GENERATE_OPTIONS, 'template'];

/** Names other libraries use for things tessera does not do (yet): said so instead of "unknown". */
const UNSUPPORTED: Record<string, string> = {
  grammar: 'constrained sampling (grammar, JSON schema) is not supported yet',
  jsonSchema: 'constrained sampling (grammar, JSON schema) is not supported yet',
  responseFormat: 'constrained sampling (grammar, JSON schema) is not supported yet',
  tools: 'tool calling is not supported yet',
  toolChoice: 'tool calling is not supported yet',
  functions: 'tool calling is not supported yet',
  logitBias: 'logit bias is not supported yet',
  n: 'several samples per call are not supported; make one call per sample (concurrent calls are batched)',
  gpuLayers: "the Engine runs on the CPU backends ('cpu' or 'js'); GPU offload is not supported yet",
  contextSize: "the context length is the model's own (info.config.contextLength); the KV cache budget is kvCacheBytes",
  onToken: 'callbacks cannot reach the model worker; read the deltas of stream() instead',
  onTextChunk: 'callbacks cannot reach the model worker; read the deltas of stream() instead',
};

/** Levenshtein distance, stopping early once it passes `max`. */
function distance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      best = Math.min(best, cur[j]!);
    }
    if (best > max) return max + 1;
    prev = cur;
  }
  return prev[b.length]!;
}

/** The known name `name` was probably meant as: same letters ignoring case and '_'/'-' (max_tokens), or a small edit away. */
export function closestName(name: string, known: readonly string[]): string | undefined {
  const flat = (s: string) => s.toLowerCase().replace(/[_-]/g, '');
  const exact = known.find((k) => flat(k) === flat(name));
  if (exact) return exact;
  const max = Math.max(1, Math.floor(name.length / 4));
  let best: string | undefined, bestD = max + 1;
  for (const k of known) {
    const d = distance(flat(name), flat(k), max);
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best;
}

/**
 * Throws a TypeError for the first own key of `o` not in `known` (keys whose value is undefined
 * are let through: they ask for nothing). `where` names the options object in the message.
 */
export function checkOptionNames(o: object, known: readonly string[], where: string): void {
  for (const key of Object.keys(o)) {
    if (known.includes(key) || (o as Record<string, unknown>)[key] === undefined) continue;
    if (Object.hasOwn(UNSUPPORTED, key)) throw new TypeError(`Unsupported option '${key}' in ${where}: ${UNSUPPORTED[key]}`);
    const near = closestName(key, known);
    throw new TypeError(`Unknown option '${key}' in ${where}${near ? `; did you mean '${near}'?` : ''} (known: ${known.join(', ')})`);
  }
}
