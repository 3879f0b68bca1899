/**
 * Token sampling with llama.cpp's default chain order: repetition/presence/frequency penalties
 * -> top-k -> top-p -> min-p -> temperature -> draw. temperature 0 is greedy (argmax, ties to the
 * lower id).
 */
import * as check from '../tensor/check.js';
import { Rng } from './rng.js';

export interface SamplingOptions {
  /** 0 = greedy. Default 0.8. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). Default 40. */
  topK?: number;
  /** Keep the smallest set whose probability reaches p (1 = off). Default 0.95. */
  topP?: number;
  /** Drop tokens below minP * p(most likely) (0 = off). Default 0.05. */
  minP?: number;
  /** Divide positive / multiply negative logits of recent tokens (1 = off). Default 1. */
  repetitionPenalty?: number;
  /** Subtract from logits of tokens seen recently (OpenAI semantics). Default 0. */
  presencePenalty?: number;
  /** Subtract count * this from logits of recent tokens. Default 0. */
  frequencyPenalty?: number;
  /** How many recent tokens the penalties look at. Default 64. */
  penaltyLastN?: number;
  /** RNG seed; default random. */
  seed?: number;
}

export interface Sampled {
  token: number;
  /** log p(token) under the model's unmodified distribution. */
  logprob: number;
}

export class Sampler {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  readonly repetitionPenalty: number;
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
  readonly penaltyLastN: number;
  readonly seed: number;
  readonly #rng: Rng;

  constructor(options: SamplingOptions = {}) {
    const o = check.options<SamplingOptions>(options, 'sampling options');
    this.temperature = check.num(o.temperature ?? 0.8, 'temperature', { min: 0 });
    this.topK = check.int(o.topK ?? 40, 'topK', 0);
    this.topP = check.num(o.topP ?? 0.95, 'topP', { min: 0, max: 1 });
    this.minP = check.num(o.minP ?? 0.05, 'minP', { min: 0, max: 1 });
    this.repetitionPenalty = check.num(o.repetitionPenalty ?? 1, 'repetitionPenalty', { positive: true });
    this.presencePenalty = check.num(o.presencePenalty ?? 0, 'presencePenalty');
    this.frequencyPenalty = check.num(o.frequencyPenalty ?? 0, 'frequencyPenalty');
    this.penaltyLastN = check.int(o.penaltyLastN ?? 64, 'penaltyLastN', 0);
    this.seed = o.seed === undefined ? (Math.random() * 2 ** 32) >>> 0 : check.int(o.seed, 'seed', 0, 2 ** 32 - 1);
    this.#rng = new Rng(this.seed);
  }

  /** Picks the next token from logits (vocab) given the tokens so far. */
  sample(logits: Float32Array, history: readonly number[] = []): Sampled {
    const V = logits.length;
    const l = Float64Array.from(logits);
    // log-softmax of the raw logits for the reported logprob
    let mx0 = -Infinity;
    for (let i = 0; i < V; i++) if (l[i]! > mx0) mx0 = l[i]!;
    let z0 = 0;
    for (let i = 0; i < V; i++) z0 += Math.exp(l[i]! - mx0);
    const lse0 = mx0 + Math.log(z0);
    const done = (token: number): Sampled => ({ token, logprob: logits[token]! - lse0 });

    this.#penalize(l, history);
    if (this.temperature === 0) {
      let best = 0;
      for (let i = 1; i < V; i++) if (l[i]! > l[best]!) best = i;
      return done(best);
    }
    // candidates sorted by logit (desc, ties to lower id)
    let cand = Array.from({ length: V }, (_, i) => i);
    const k = this.topK > 0 ? Math.min(this.topK, V) : V;
    cand.sort((a, b) => l[b]! - l[a]! || a - b);
    cand = cand.slice(0, k);
    const probs = (ids: number[], temp = 1) => {
      const m = l[ids[0]!]! / temp;
      const e = ids.map((i) => Math.exp(l[i]! / temp - m));
      const z = e.reduce((a, b) => a + b, 0);
      return e.map((x) => x / z);
    };
    if (this.topP < 1) {
      const p = probs(cand);
      let acc = 0, n = 0;
      while (n < cand.length) {
        acc += p[n]!;
        n++;
        if (acc >= this.topP) break;
      }
      cand = cand.slice(0, Math.max(1, n));
    }
    if (this.minP > 0) {
      const p = probs(cand);
      const keep = cand.filter((_, i) => p[i]! >= this.minP * p[0]!);
      cand = keep.length ? keep : cand.slice(0, 1);
    }
    const p = probs(cand, this.temperature);
    let r = this.#rng.next();
    for (let i = 0; i < cand.length; i++) {
      r -= p[i]!;
      if (r < 0) return done(cand[i]!);
    }
    return done(cand[cand.length - 1]!);
  }

  #penalize(l: Float64Array, history: readonly number[]): void {
    if (this.penaltyLastN === 0 || (this.repetitionPenalty === 1 && !this.presencePenalty && !this.frequencyPenalty)) return;
    const counts = new Map<number, number>();
    for (const t of history.slice(-this.penaltyLastN)) counts.set(t, (counts.get(t) ?? 0) + 1);
    for (const [t, n] of counts) {
      if (t < 0 || t >= l.length) continue;
      let v = l[t]!;
      v = v > 0 ? v / this.repetitionPenalty : v * this.repetitionPenalty;
      l[t] = v - n * this.frequencyPenalty - this.presencePenalty;
    }
  }
}
