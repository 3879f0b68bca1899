/**
 * Scoring as a scheduler job: the log-probability of every token of a given continuation under
 * the model, teacher-forced (each token conditioned on the true tokens before it), as
 * lm-evaluation-harness's loglikelihood requests and OpenAI's `echo` + `logprobs` do. The job is
 * prefill only: the whole text runs as prompt chunks (long segments, so the rows compute exactly
 * as they would alone or in any batch) and asks the scheduler for the logits of every chunk that
 * reaches the row before the first scored token (SeqWork.logitsFrom).
 */
import { Sampler, topLogprobs } from '../sampling/sampler.js';
import * as check from '../tensor/check.js';
import { checkFiniteLogits } from './errors.js';
import { checkPrompt } from './generate.js';
import type { Job, JobContext, SeqWork } from './scheduler.js';

export interface ScoreOptions {
  /** Also the this many most likely tokens (0-20) at each scored position, best first. Default 0. */
  topLogprobs?: number;
}

/** One scored token: log p(token | the tokens before it). */
export interface TokenScore {
  token: number;
  logprob: number;
  /** With options.topLogprobs: the most likely tokens at this position, best first. */
  topLogprobs?: { token: number; logprob: number }[];
}

export interface ScoreEvents {
  /** Every scored token, in order (tokens[from], ..., tokens[N - 1]). */
  onDone(scores: TokenScore[]): void;
  onError(err: Error): void;
}

/**
 * Scores tokens[from..] of `tokens` (from >= 1: the first token has nothing before it). A
 * preempted job recomputes its rows and overwrites them with the same values (batch invariance).
 */
export class ScoreJob implements Job {
  readonly width = 1;
  readonly #seq: number;
  readonly #tokens: readonly number[];
  readonly #from: number;
  readonly #top: number;
  readonly #vocab: number;
  readonly #events: ScoreEvents;
  readonly #scores: (TokenScore | undefined)[];
  #done = false;

  constructor(ctx: JobContext, tokens: readonly number[], from: number, options: ScoreOptions, events: ScoreEvents) {
    this.#vocab = ctx.model.config.vocabSize;
    const n = ctx.model.config.contextLength;
    if (tokens.length > n) throw new RangeError(`Expected prompt and completion of at most the model's context length ${n} tokens together but received ${tokens.length}`);
    checkPrompt(tokens, n, this.#vocab);
    this.#from = check.int(from, 'from', 1, tokens.length - 1);
    this.#top = check.int(options.topLogprobs ?? 0, 'topLogprobs', 0, 20);
    this.#tokens = [...tokens];
    this.#scores = new Array<TokenScore | undefined>(tokens.length - from);
    this.#events = events;
    this.#seq = ctx.newSeq();
  }

  get done(): boolean {
    return this.#done;
  }

  work(): SeqWork[] {
    if (this.#done) return [];
    // Row p predicts token p + 1: the rows from - 1 .. N - 2 are needed (N - 1 comes along as the last).
    return [{ seq: this.#seq, tokens: this.#tokens, promptLength: this.#tokens.length, logitsFrom: this.#from - 1 }];
  }

  advance(logits: Map<number, Float32Array>, ctx: JobContext): void {
    const l = logits.get(this.#seq);
    if (!l || this.#done) return;
    const V = this.#vocab, N = this.#tokens.length;
    const rows = l.length / V;
    const end = ctx.cache.length(this.#seq); // this step's rows are positions [end - rows, end)
    for (let r = 0; r < rows; r++) {
      const p = end - rows + r;
      if (p < this.#from - 1 || p + 1 >= N) continue;
      const row = l.subarray(r * V, (r + 1) * V);
      checkFiniteLogits(row, p);
      const token = this.#tokens[p + 1]!;
      this.#scores[p + 1 - this.#from] = {
        token, logprob: Sampler.logprob(row, token), ...(this.#top ? { topLogprobs: topLogprobs(row, this.#top) } : {}),
      };
    }
    if (end === N) {
      this.#done = true;
      this.#events.onDone(this.#scores as TokenScore[]);
    }
  }

  /** Stops the job without a word: the caller already answered for it (the Engine's abort). */
  abort(): void {
    this.#done = true;
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
