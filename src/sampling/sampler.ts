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
    const lse0 = logSumExp(logits);
    const done = (token: number): Sampled => ({ token, logprob: logits[token]! - lse0 });
    const { ids, probs } = this.#candidates(logits, history);
    if (probs === null) return done(ids[0]!);
    let r = this.#rng.next();
    for (let i = 0; i < ids.length; i++) {
      r -= probs[i]!;
      if (r < 0) return done(ids[i]!);
    }
    return done(ids[ids.length - 1]!);
  }

  /**
   * The distribution sample() draws from, as a dense (vocab) array: penalties, top-k, top-p, min-p
   * and temperature applied; one-hot at the argmax when greedy. (Speculative decoding compares the
   * target's and the draft's distributions under the same options.)
   */
  distribution(logits: Float32Array, history: readonly number[] = []): Float64Array {
    const out = new Float64Array(logits.length);
    const { ids, probs } = this.#candidates(logits, history);
    if (probs === null) out[ids[0]!] = 1;
    else ids.forEach((t, i) => (out[t] = probs[i]!));
    return out;
  }

  /** Draws a token from a (possibly unnormalised, non-negative) dense distribution with this sampler's RNG. */
  draw(p: Float64Array): number {
    let z = 0;
    for (let i = 0; i < p.length; i++) z += p[i]!;
    if (!(z > 0)) throw new RangeError('Expected a distribution with positive mass');
    let r = this.#rng.next() * z, last = -1;
    for (let i = 0; i < p.length; i++) {
      if (p[i]! <= 0) continue;
      last = i;
      r -= p[i]!;
      if (r < 0) return i;
    }
    return last;
  }

  /** A uniform number in [0, 1) from this sampler's RNG. */
  random(): number {
    return this.#rng.next();
  }

  /** Log-softmax of the raw logits at `token` (the reported logprob). */
  static logprob(logits: Float32Array, token: number): number {
    return logits[token]! - logSumExp(logits);
  }

  /** Candidate ids (best first) and their probabilities; probs null when greedy (ids[0] is the argmax). */
  #candidates(logits: Float32Array, history: readonly number[]): { ids: number[]; probs: number[] | null } {
    const V = logits.length;
    const l = Float64Array.from(logits);
    this.#penalize(l, history);
    if (this.temperature === 0) {
      let best = 0;
      for (let i = 1; i < V; i++) if (l[i]! > l[best]!) best = i;
      return { ids: [best], probs: null };
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
    return { ids: cand, probs: probs(cand, this.temperature) };
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

function logSumExp(logits: Float32Array): number {
  let mx = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > mx) mx = logits[i]!;
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i]! - mx);
  return mx + Math.log(z);
}

/** The k most likely tokens of logits with their log-probabilities (ties to the lower id). */
export function topLogprobs(logits: Float32Array, k: number): { token: number; logprob: number }[] {
  const lse = logSumExp(logits);
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
