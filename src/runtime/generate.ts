/**
 * Generation as a scheduler job: prefill the prompt, then sample one token per step until max
 * tokens, a stop token (EOS/EOT by default), a stop string or the context length. Emits text deltas
 * that never contain half a UTF-8 character or the beginning of a stop string that may still
 * complete. Beam search is the other job (beam.ts); `createGenerateJob` picks one from the options.
 */
import { Sampler, type SamplingOptions } from '../sampling/sampler.js';
import * as check from '../tensor/check.js';
import type { StreamDecoder, TextTokenizer } from '../tokenizer/text.js';
import { BeamJob } from './beam.js';
import type { Job, JobContext, SeqWork } from './scheduler.js';

export type { StreamDecoder, TextTokenizer } from '../tokenizer/text.js';

export interface GenerateOptions extends SamplingOptions {
  /** Maximum tokens to generate. Default 256. */
  maxTokens?: number;
  /** Generation stops before any of these strings (they are not returned). */
  stop?: string[];
  /** Extra token ids that end generation (besides the tokenizer's EOS/EOT). */
  stopTokens?: number[];
  /** Keep generating through EOS. Default false. */
  ignoreEos?: boolean;
  /** Also report the this many most likely tokens (0-20) and their log-probabilities with each token. Default 0. */
  topLogprobs?: number;
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
  /** With options.topLogprobs: the most likely tokens at this step, best first (unmodified distribution). */
  topLogprobs?: { token: number; logprob: number; text?: string }[];
  /** The token's own text (Engine option tokenTexts). */
  tokenText?: string;
}

/** The k most likely tokens of logits with their log-probabilities (ties to the lower id). */
export function topLogprobs(logits: Float32Array, k: number): { token: number; logprob: number }[] {
  let mx = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > mx) mx = logits[i]!;
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i]! - mx);
  const lse = mx + Math.log(z);
  const top: number[] = []; // ids, best first
  for (let i = 0; i < logits.length; i++) {
    if (top.length === k && logits[i]! <= logits[top[k - 1]!]!) continue;
    let j = Math.min(top.length, k - 1);
    if (top.length < k) top.push(i);
    while (j > 0 && logits[top[j - 1]!]! < logits[i]!) {
      top[j] = top[j - 1]!;
      j--;
    }
    top[j] = i;
  }
  return top.map((t) => ({ token: t, logprob: logits[t]! - lse }));
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
export function firstStop(text: string, stops: string[]): number {
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

/** Where a job's output goes (the Engine's worker posts these to the caller). */
export interface JobEvents {
  onDelta(d: Delta): void;
  onDone(reason: FinishReason, usage: { promptTokens: number; completionTokens: number }): void;
  onError(err: Error): void;
}

/** A job that can be stopped between steps. */
export interface GenerationJob extends Job {
  abort(): void;
}

/** Sampling one sequence. */
export class SampleJob implements GenerationJob {
  readonly width = 1;
  readonly #seq: number;
  readonly #tokens: number[];
  readonly #promptLength: number;
  readonly #r: ResolvedGenerate;
  readonly #sampler: Sampler;
  readonly #decoder: StreamDecoder;
  readonly #events: JobEvents;
  readonly #contextLength: number;
  readonly #topLogprobs: number;
  #pending = '';
  #done = false;

  constructor(ctx: JobContext, tok: TextTokenizer, prompt: readonly number[], options: GenerateOptions, events: JobEvents) {
    this.#r = resolveGenerateOptions(options, tok);
    if (prompt.length === 0) throw new RangeError('Expected a non-empty prompt (at least one token)');
    this.#contextLength = ctx.model.config.contextLength;
    if (prompt.length > this.#contextLength)
      throw new RangeError(`Expected a prompt of at most the model's context length ${this.#contextLength} tokens but received ${prompt.length}`);
    this.#sampler = new Sampler(options);
    this.#topLogprobs = check.int(options.topLogprobs ?? 0, 'topLogprobs', 0, 20);
    this.#decoder = tok.createStreamDecoder({ skipSpecial: true }); // control tokens (BOS, ...) are not text
    this.#events = events;
    this.#seq = ctx.newSeq();
    this.#tokens = [...prompt];
    this.#promptLength = prompt.length;
    if (this.#r.maxTokens === 0) this.#finish('length');
  }

  get done(): boolean {
    return this.#done;
  }

  work(): SeqWork[] {
    return this.#done ? [] : [{ seq: this.#seq, tokens: this.#tokens, promptLength: this.#promptLength }];
  }

  advance(logits: Map<number, Float32Array>): void {
    const l = logits.get(this.#seq);
    if (!l || this.#done) return;
    const r = this.#r;
    const { token, logprob } = this.#sampler.sample(l, this.#tokens);
    if (r.stopTokens.has(token)) return this.#flushAndFinish('stop');
    const top = this.#topLogprobs ? { topLogprobs: topLogprobs(l, this.#topLogprobs) } : {};
    this.#tokens.push(token);
    this.#pending += this.#decoder.push(token);
    if (r.stop.length) {
      const cut = firstStop(this.#pending, r.stop);
      if (cut >= 0) {
        this.#events.onDelta({ text: this.#pending.slice(0, cut), token, logprob, ...top });
        return this.#finish('stop');
      }
    }
    const hold = heldBack(this.#pending, r.stop);
    this.#events.onDelta({ text: this.#pending.slice(0, this.#pending.length - hold), token, logprob, ...top });
    this.#pending = this.#pending.slice(this.#pending.length - hold);
    const generated = this.#tokens.length - this.#promptLength;
    if (generated === r.maxTokens) return this.#flushAndFinish('length');
    // The new token would sit at position tokens.length - 1: past the context, stop.
    if (this.#tokens.length - 1 >= this.#contextLength) return this.#flushAndFinish('context');
  }

  #flushAndFinish(reason: FinishReason): void {
    this.#pending += this.#decoder.flush();
    if (this.#pending) this.#events.onDelta({ text: this.#pending, token: null, logprob: null });
    this.#pending = '';
    this.#finish(reason);
  }

  #finish(reason: FinishReason): void {
    if (this.#done) return;
    this.#done = true;
    this.#events.onDone(reason, { promptTokens: this.#promptLength, completionTokens: this.#tokens.length - this.#promptLength });
  }

  abort(): void {
    this.#finish('abort');
  }

  reset(ctx: JobContext): void {
    ctx.cache.free(this.#seq);
  }

  fail(err: Error): void {
    if (this.#done) return;
    this.#done = true;
    this.#events.onError(err);
  }

  release(ctx: JobContext): void {
    ctx.cache.free(this.#seq);
  }
}

/** The job the options ask for: beam search with beams > 1, else sampling. */
export function createGenerateJob(ctx: JobContext, tok: TextTokenizer, prompt: readonly number[], options: GenerateOptions, events: JobEvents): GenerationJob {
  if (options.beams !== undefined && check.int(options.beams, 'beams', 1, 64) > 1) return new BeamJob(ctx, tok, prompt, options, events);
  return new SampleJob(ctx, tok, prompt, options, events);
}
