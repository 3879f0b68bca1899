/**
 * The generation loop: prefill the prompt, then sample one token at a time until max tokens, a
 * stop token (EOS/EOT by default) or a stop string. Yields text deltas that never contain half a
 * UTF-8 character or the beginning of a stop string that may still complete.
 */
import type { LlamaModel } from '../model/llama.js';
import { beamSearch } from '../sampling/beam.js';
import { Sampler, type SamplingOptions } from '../sampling/sampler.js';
import * as check from '../tensor/check.js';
import type { PagedKvCache } from './kv-cache.js';

export interface StreamDecoder {
  push(id: number): string;
  flush(): string;
}

/** What the loop needs from a tokenizer. */
export interface TextTokenizer {
  encode(text: string, options?: { addBos?: boolean; parseSpecial?: boolean }): number[];
  createStreamDecoder(options?: { skipSpecial?: boolean }): StreamDecoder;
  /** Tokens that end generation (EOS, EOT, ...). */
  readonly eogIds: ReadonlySet<number>;
}

export interface GenerateOptions extends SamplingOptions {
  /** Maximum tokens to generate. Default 256. */
  maxTokens?: number;
  /** Generation stops before any of these strings (they are not returned). */
  stop?: string[];
  /** Extra token ids that end generation (besides the tokenizer's EOS/EOT). */
  stopTokens?: number[];
  /** Keep generating through EOS. Default false. */
  ignoreEos?: boolean;
  /** Beam search with this many beams (> 1); sampling options are then ignored. */
  beams?: number;
  /** Beam search: exponent of the length normalisation. Default 1. */
  lengthPenalty?: number;
  /** Beam search: stop once `beams` hypotheses finished (default true). */
  earlyStopping?: boolean;
}

export type FinishReason = 'length' | 'stop' | 'abort' | 'context';

export interface Delta {
  /** New text (may be empty while a character or a possible stop string is incomplete). */
  text: string;
  /** The generated token; null for text flushed at the end without a new token. */
  token: number | null;
  /** log p(token) under the unmodified model distribution; null with token null (and in beam search). */
  logprob: number | null;
}

export interface ResolvedGenerate {
  maxTokens: number;
  stop: string[];
  stopTokens: Set<number>;
}

export function resolveGenerateOptions(o: GenerateOptions, tok: TextTokenizer): ResolvedGenerate {
  const maxTokens = check.int(o.maxTokens ?? 256, 'maxTokens', 0);
  const stop = o.stop ?? [];
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s.length === 0))
    throw new TypeError('Expected an array of non-empty strings for stop');
  const stopTokens = new Set<number>(o.ignoreEos ? [] : tok.eogIds);
  for (const t of o.stopTokens ?? []) stopTokens.add(check.int(t, 'stopTokens[]', 0));
  return { maxTokens, stop, stopTokens };
}

/** Longest suffix of text that is a proper prefix of some stop string. */
function heldBack(text: string, stops: string[]): number {
  let keep = 0;
  for (const s of stops)
    for (let n = Math.min(s.length - 1, text.length); n > keep; n--)
      if (text.endsWith(s.slice(0, n))) {
        keep = n;
        break;
      }
  return keep;
}

/**
 * Runs generation for sequence `seq` (which must be empty in the cache) and yields deltas; the
 * return value is the finish reason. `shouldStop()` is polled between tokens (abort).
 */
export function* generateTokens(
  model: LlamaModel,
  tok: TextTokenizer,
  cache: PagedKvCache,
  seq: number,
  prompt: readonly number[],
  options: GenerateOptions,
  shouldStop: () => boolean = () => false,
): Generator<Delta, FinishReason> {
  const r = resolveGenerateOptions(options, tok);
  if (prompt.length === 0) throw new RangeError('Expected a non-empty prompt (at least one token)');
  if (options.beams !== undefined && check.int(options.beams, 'beams', 1, 64) > 1) {
    if (r.maxTokens === 0) return 'length';
    const [best] = beamSearch(model, cache, seq, prompt, {
      beams: options.beams, maxTokens: r.maxTokens, lengthPenalty: options.lengthPenalty, earlyStopping: options.earlyStopping, eogIds: r.stopTokens,
    }, shouldStop);
    const dec = tok.createStreamDecoder({ skipSpecial: true });
    for (const t of best!.tokens) yield { text: dec.push(t), token: t, logprob: null };
    const tail = dec.flush();
    if (tail) yield { text: tail, token: null, logprob: null };
    return shouldStop() ? 'abort' : best!.finished ? 'stop' : 'length';
  }
  const sampler = new Sampler(options);
  const history = [...prompt];
  const decoder = tok.createStreamDecoder({ skipSpecial: true }); // control tokens (BOS, ...) are not text
  let pending = '';
  if (r.maxTokens === 0) return 'length';
  let logits = model.forward(Int32Array.from(prompt), cache, seq).data;
  for (let n = 0; n < r.maxTokens; n++) {
    if (shouldStop()) return 'abort';
    const { token, logprob } = sampler.sample(logits, history);
    if (r.stopTokens.has(token)) {
      pending += decoder.flush();
      if (pending) yield { text: pending, token: null, logprob: null };
      return 'stop';
    }
    history.push(token);
    pending += decoder.push(token);
    if (r.stop.length) {
      let cut = -1;
      for (const s of r.stop) {
        const i = pending.indexOf(s);
        if (i >= 0 && (cut < 0 || i < cut)) cut = i;
      }
      if (cut >= 0) {
        yield { text: pending.slice(0, cut), token, logprob };
        return 'stop';
      }
    }
    const hold = heldBack(pending, r.stop);
    yield { text: pending.slice(0, pending.length - hold), token, logprob };
    pending = pending.slice(pending.length - hold);
    if (n + 1 === r.maxTokens) break;
    if (cache.length(seq) >= model.config.contextLength) {
      pending += decoder.flush();
      if (pending) yield { text: pending, token: null, logprob: null };
      return 'context';
    }
    logits = model.forward(Int32Array.of(token), cache, seq).data;
  }
  pending += decoder.flush();
  if (pending) yield { text: pending, token: null, logprob: null };
  return 'length';
}
