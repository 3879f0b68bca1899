/**
 * Generation as a scheduler job: prefill the prompt, then sample one token per step until max
 * tokens, a stop token (EOS/EOT by default), a stop string or the context length. Emits text deltas
 * that never contain half a UTF-8 character or the beginning of a stop string that may still
 * complete. Beam search is the other job (beam.ts); `createGenerateJob` picks one from the options.
 */
import { Sampler, topLogprobs, type SamplingOptions } from '../sampling/sampler.js';
import { acceptDraftToken } from '../sampling/speculative.js';
import type { Draft, Proposer } from '../speculative/proposer.js';
import * as check from '../tensor/check.js';
import type { StreamDecoder, TextTokenizer } from '../tokenizer/text.js';
import { BeamJob } from './beam.js';
import { checkFiniteLogits } from './errors.js';
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
  /** Beam search: stop once `beams` hypotheses finished (default true); false: run on while a
   *  running beam could still beat the worst finished one (as Hugging Face's default, false). */
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

/** A prompt this model can run: non-empty, within the context, every id in the vocabulary (checked here, so a bad id fails its own request, not the batch it would join). */
export function checkPrompt(prompt: readonly number[], contextLength: number, vocabSize: number): void {
  if (prompt.length === 0) throw new RangeError('Expected a non-empty prompt (at least one token)');
  if (prompt.length > contextLength)
    throw new RangeError(`Expected a prompt of at most the model's context length ${contextLength} tokens but received ${prompt.length}`);
  for (let i = 0; i < prompt.length; i++) {
    const t = prompt[i]!;
    if (!Number.isInteger(t) || t < 0 || t >= vocabSize)
      throw new RangeError(`Expected token ids in [0, ${vocabSize}) in the prompt but received ${String(t)} at index ${i}`);
  }
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
  onDone(reason: FinishReason, usage: { promptTokens: number; completionTokens: number; speculation?: SpeculationStats }): void;
  onError(err: Error): void;
}

/** A job that can be stopped between steps. */
export interface GenerationJob extends Job {
  abort(): void;
}

/** Speculative decoding for a sampling job: where drafts come from and how many at most. */
export interface Speculation {
  proposer: Proposer;
  /** Most draft tokens per step (k adapts between 1 and this). */
  draftMax: number;
  /** false: always draft draftMax tokens. Default true (grow on full acceptance, shrink on early rejection). */
  adaptive?: boolean;
}

/** Draft tokens proposed and accepted over a request. */
export interface SpeculationStats {
  proposed: number;
  accepted: number;
}

/**
 * Sampling one sequence. With a Speculation, each decode step scores the last token plus k draft
 * tokens in one forward (as k + 1 one-token segments, so every row computes exactly as plain
 * decoding would), keeps the drafts the acceptance rule accepts (sampling/speculative.ts), adds
 * one token of its own, and cuts the rejected drafts' K/V off the cache.
 */
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
  readonly #vocab: number;
  readonly #topLogprobs: number;
  #spec: Speculation | null;
  #k: number;
  #draft: Draft | null = null;
  readonly #stats: SpeculationStats = { proposed: 0, accepted: 0 };
  #pending = '';
  #done = false;

  constructor(ctx: JobContext, tok: TextTokenizer, prompt: readonly number[], options: GenerateOptions, events: JobEvents, spec: Speculation | null = null) {
    this.#r = resolveGenerateOptions(options, tok);
    this.#contextLength = ctx.model.config.contextLength;
    this.#vocab = ctx.model.config.vocabSize;
    checkPrompt(prompt, this.#contextLength, this.#vocab);
    this.#sampler = new Sampler(options);
    this.#topLogprobs = check.int(options.topLogprobs ?? 0, 'topLogprobs', 0, 20);
    if (spec) check.int(spec.draftMax, 'draftMax', 1, 64);
    this.#spec = spec;
    this.#k = spec ? (spec.adaptive === false ? spec.draftMax : Math.min(4, spec.draftMax)) : 0;
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

  /** Draft tokens proposed and accepted so far. */
  get speculation(): SpeculationStats {
    return { ...this.#stats };
  }

  work(ctx: JobContext): SeqWork[] {
    if (this.#done) return [];
    const base = { seq: this.#seq, tokens: this.#tokens, promptLength: this.#promptLength };
    // Drafts only in steady decoding: everything but the last sampled token is in the cache.
    const decoding = this.#tokens.length > this.#promptLength && ctx.cache.has(this.#seq) && ctx.cache.length(this.#seq) === this.#tokens.length - 1;
    if (!this.#spec || !decoding) return [base];
    if (!this.#draft) {
      const room = Math.min(this.#k, this.#contextLength - this.#tokens.length, this.#r.maxTokens - (this.#tokens.length - this.#promptLength) - 1);
      try {
        this.#draft = room > 0 ? this.#spec.proposer.propose(this.#tokens, room) : { tokens: [], q: [] };
      } catch {
        // A draft that cannot run (e.g. its own KV cache is full) only costs speed: plain decoding from here.
        this.#spec.proposer.release?.();
        this.#spec = null;
        return [base];
      }
      this.#draft.tokens.forEach((t) => {
        if (!Number.isInteger(t) || t < 0 || t >= this.#vocab) throw new RangeError(`Expected draft tokens in [0, ${this.#vocab}) but received ${t}`);
      });
    }
    const d = this.#draft;
    if (d.tokens.length === 0) return [base];
    return [{ ...base, tokens: [...this.#tokens, ...d.tokens], logitRows: d.tokens.length + 1 }];
  }

  advance(logits: Map<number, Float32Array>, ctx: JobContext): void {
    const l = logits.get(this.#seq);
    if (!l || this.#done) return;
    const d = this.#draft;
    this.#draft = null;
    // Each row is checked before it is sampled: its token sits at position tokens.length - 1.
    if (!d || d.tokens.length === 0) {
      checkFiniteLogits(l, this.#tokens.length - 1);
      const { token, logprob } = this.#sampler.sample(l, this.#tokens);
      this.#emit(token, logprob, l);
      return;
    }
    const V = this.#vocab;
    const row = (i: number) => l.subarray(i * V, (i + 1) * V);
    let accepted = 0, finished = false;
    for (let i = 0; i < d.tokens.length && !finished; i++) {
      checkFiniteLogits(row(i), this.#tokens.length - 1);
      const p = this.#sampler.distribution(row(i), this.#tokens);
      const { token, accepted: ok } = acceptDraftToken(p, d.q[i] ?? null, d.tokens[i]!, this.#sampler);
      finished = this.#emit(token, Sampler.logprob(row(i), token), row(i));
      if (!ok) break;
      accepted++;
    }
    if (!finished && accepted === d.tokens.length) {
      const last = row(d.tokens.length);
      checkFiniteLogits(last, this.#tokens.length - 1);
      const { token, logprob } = this.#sampler.sample(last, this.#tokens);
      this.#emit(token, logprob, last);
    }
    this.#stats.proposed += d.tokens.length;
    this.#stats.accepted += accepted;
    const max = this.#spec?.draftMax ?? 1;
    if (this.#spec?.adaptive === false) this.#k = max;
    else if (accepted === d.tokens.length) this.#k = Math.min(max, this.#k + 1);
    else if (accepted < d.tokens.length / 2) this.#k = Math.max(1, this.#k - 1);
    // Rejected drafts' K/V leave the cache: it holds every token but the newest.
    if (!this.#done && ctx.cache.length(this.#seq) > this.#tokens.length - 1) ctx.cache.truncate(this.#seq, this.#tokens.length - 1);
  }

  /** Emits one sampled token (stop tokens and strings, max tokens, context); true when the request ended. */
  #emit(token: number, logprob: number, logits: Float32Array): boolean {
    const r = this.#r;
    if (r.stopTokens.has(token)) {
      this.#flushAndFinish('stop');
      return true;
    }
    const top = this.#topLogprobs ? { topLogprobs: topLogprobs(logits, this.#topLogprobs) } : {};
    this.#tokens.push(token);
    this.#pending += this.#decoder.push(token);
    if (r.stop.length) {
      const cut = firstStop(this.#pending, r.stop);
      if (cut >= 0) {
        this.#events.onDelta({ text: this.#pending.slice(0, cut), token, logprob, ...top });
        this.#finish('stop');
        return true;
      }
    }
    const hold = heldBack(this.#pending, r.stop);
    this.#events.onDelta({ text: this.#pending.slice(0, this.#pending.length - hold), token, logprob, ...top });
    this.#pending = this.#pending.slice(this.#pending.length - hold);
    const generated = this.#tokens.length - this.#promptLength;
    if (generated === r.maxTokens) {
      this.#flushAndFinish('length');
      return true;
    }
    // The new token would sit at position tokens.length - 1: past the context, stop.
    if (this.#tokens.length - 1 >= this.#contextLength) {
      this.#flushAndFinish('context');
      return true;
    }
    return false;
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
    this.#events.onDone(reason, {
      promptTokens: this.#promptLength, completionTokens: this.#tokens.length - this.#promptLength,
      ...(this.#spec || this.#stats.proposed ? { speculation: { ...this.#stats } } : {}),
    });
  }

  abort(): void {
    this.#finish('abort');
  }

  reset(ctx: JobContext): void {
    this.#draft = null;
    ctx.cache.free(this.#seq);
  }

  fail(err: Error): void {
    if (this.#done) return;
    this.#done = true;
    this.#events.onError(err);
  }

  release(ctx: JobContext): void {
    ctx.cache.free(this.#seq);
    this.#spec?.proposer.release?.();
  }
}

/** The job the options ask for: beam search with beams > 1, else sampling (speculative when `spec` gives a proposer). */
export function createGenerateJob(ctx: JobContext, tok: TextTokenizer, prompt: readonly number[], options: GenerateOptions, events: JobEvents, spec: (() => Speculation) | null = null): GenerationJob {
  if (options.beams !== undefined && check.int(options.beams, 'beams', 1, 64) > 1) return new BeamJob(ctx, tok, prompt, options, events);
  return new SampleJob(ctx, tok, prompt, options, events, spec?.() ?? null);
}
