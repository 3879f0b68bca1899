/**
 * The generation loop: prefill the prompt, then sample one token at a time until max tokens, a
 * stop token (EOS/EOT by default) or a stop string. Yields text deltas that never contain half a
 * UTF-8 character or the beginning of a stop string that may still complete.
 */
import type { LlamaModel } from '../model/llama.js';
import { beamSearchSteps } from '../sampling/beam.js';
import { Sampler, type SamplingOptions } from '../sampling/sampler.js';
import * as check from '../tensor/check.js';
import type { PagedKvCache } from './kv-cache.js';
import { forwardTokens } from './runner.js';

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

/** Index of the earliest stop string in text, or -1. */
function firstStop(text: string, stops: string[]): number {
  let cut = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (cut < 0 || i < cut)) cut = i;
  }
  return cut;
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
 * return value is the finish reason. `shouldStop()` is polled between tokens (abort); beam search
 * takes more cache sequences from `newSeq`.
 */
export function* generateTokens(
  model: LlamaModel,
  tok: TextTokenizer,
  cache: PagedKvCache,
  seq: number,
  prompt: readonly number[],
  options: GenerateOptions,
  shouldStop: () => boolean = () => false,
  newSeq?: () => number,
): Generator<Delta, FinishReason> {
  const r = resolveGenerateOptions(options, tok);
  if (prompt.length === 0) throw new RangeError('Expected a non-empty prompt (at least one token)');
  if (options.beams !== undefined && check.int(options.beams, 'beams', 1, 64) > 1) {
    // Beams stop at the context length like sampling does; they are searched whole, then the best
    // one is returned as deltas, cut at the first stop string.
    const room = model.config.contextLength - prompt.length;
    const maxTokens = Math.min(r.maxTokens, room);
    if (maxTokens <= 0) return r.maxTokens === 0 ? 'length' : 'context';
    const steps = beamSearchSteps(model, cache, seq, prompt, {
      beams: options.beams, maxTokens, lengthPenalty: options.lengthPenalty, earlyStopping: options.earlyStopping, eogIds: r.stopTokens,
    }, newSeq);
    let res = steps.next();
    while (!res.done) {
      if (shouldStop()) {
        steps.return([]);
        return 'abort';
      }
      yield { text: '', token: null, logprob: null }; // lets the host see an abort between steps
      res = steps.next();
    }
    const best = res.value[0]!;
    const dec = tok.createStreamDecoder({ skipSpecial: true });
    let text = '';
    for (const t of best.tokens) {
      const piece = dec.push(t);
      const stopAt = r.stop.length ? firstStop(text + piece, r.stop) : -1;
      if (stopAt >= 0) {
        yield { text: (text + piece).slice(text.length, stopAt), token: t, logprob: null };
        return 'stop';
      }
      text += piece;
      yield { text: piece, token: t, logprob: null };
    }
    const tail = dec.flush();
    if (tail) yield { text: tail, token: null, logprob: null };
    return best.finished ? 'stop' : maxTokens < r.maxTokens ? 'context' : 'length';
  }
  const sampler = new Sampler(options);
  if (shouldStop()) return 'abort';
  const history = [...prompt];
  const decoder = tok.createStreamDecoder({ skipSpecial: true }); // control tokens (BOS, ...) are not text
  let pending = '';
  if (r.maxTokens === 0) return 'length';
  let logits = forwardTokens(model, cache, seq, Int32Array.from(prompt)).data;
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
      const cut = firstStop(pending, r.stop);
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
    logits = forwardTokens(model, cache, seq, Int32Array.of(token)).data;
  }
  pending += decoder.flush();
  if (pending) yield { text: pending, token: null, logprob: null };
  return 'length';
}
