/**
 * Beam search (as Hugging Face's BeamSearchScorer): keep `beams` running hypotheses; each step
 * extends each by its 2 x beams best next tokens, keeps the best `beams` non-final candidates, and
 * moves candidates ending in an end-of-generation token (ranked within the top `beams`) to the
 * finished list, scored by sum(log p) / length^lengthPenalty. Beams share their prefix in the
 * paged KV cache (fork + copy-on-write).
 */
import type { LlamaModel } from '../model/llama.js';
import type { PagedKvCache } from '../runtime/kv-cache.js';
import * as check from '../tensor/check.js';
import { Tensor } from '../tensor/tensor.js';
import { forwardTokens } from '../runtime/runner.js';

export interface BeamSearchOptions {
  beams: number;
  maxTokens?: number;
  /** Exponent of the length normalisation (> 0 favours longer outputs). Default 1. */
  lengthPenalty?: number;
  /** true: stop once `beams` hypotheses are finished; false: stop when no running beam can beat
   *  the worst finished one. Default true. */
  earlyStopping?: boolean;
  eogIds?: ReadonlySet<number>;
}

export interface BeamHypothesis {
  tokens: number[];
  /** Sum of token log-probabilities. */
  logprob: number;
  /** logprob / length^lengthPenalty, the ranking score. */
  score: number;
  finished: boolean;
}

interface Beam {
  seq: number;
  tokens: number[];
  logprob: number;
  logits: Float32Array;
}

/** Beam search to completion. */
export function beamSearch(model: LlamaModel, cache: PagedKvCache, firstSeq: number, prompt: readonly number[], options: BeamSearchOptions, newSeq?: () => number): BeamHypothesis[] {
  const it = beamSearchSteps(model, cache, firstSeq, prompt, options, newSeq);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
  }
}

/**
 * Beam search one step per iteration (so a host can poll for abort between steps: stop iterating
 * and call return()). Beams fork `firstSeq` in the cache under ids from newSeq (default: counting
 * up from firstSeq + 1); every sequence it creates is freed when it finishes, throws or is returned.
 */
export function* beamSearchSteps(model: LlamaModel, cache: PagedKvCache, firstSeq: number, prompt: readonly number[], options: BeamSearchOptions, newSeq?: () => number): Generator<void, BeamHypothesis[]> {
  const o = check.options<BeamSearchOptions>(options, 'beam options');
  const B = check.int(o.beams, 'beams', 1, 64);
  const maxTokens = check.int(o.maxTokens ?? 64, 'maxTokens', 1);
  const lp = check.num(o.lengthPenalty ?? 1, 'lengthPenalty');
  const early = o.earlyStopping ?? true;
  const eog = o.eogIds ?? new Set<number>();
  const be = model.backend;
  const V = model.config.vocabSize;
  const norm = (logprob: number, len: number) => logprob / Math.pow(Math.max(1, len), lp);
  let counter = firstSeq + 1;
  const allocSeq = newSeq ?? (() => counter++);
  const owned = new Set<number>(); // forks this search made (firstSeq belongs to the caller)
  const finished: BeamHypothesis[] = [];
  let beams: Beam[] = [{ seq: firstSeq, tokens: [], logprob: 0, logits: forwardTokens(model, cache, firstSeq, Int32Array.from(prompt)).data }];
  try {
    for (let step = 0; step < maxTokens; step++) {
      if (step > 0) yield;
      const cands: { beam: Beam; token: number; logprob: number }[] = [];
      const k = Math.min(2 * B, V);
      for (const b of beams) {
        const ls = be.logSoftmax(new Tensor('f32', [1, V], b.logits));
        const top = be.topK(ls, k);
        for (let j = 0; j < k; j++) cands.push({ beam: b, token: top.indices.data[j]!, logprob: b.logprob + top.values.data[j]! });
      }
      cands.sort((a, c) => c.logprob - a.logprob);
      const next: { beam: Beam; token: number; logprob: number }[] = [];
      for (let r = 0; r < cands.length && next.length < B; r++) {
        const c = cands[r]!;
        if (eog.has(c.token)) {
          if (r < B) finished.push({ tokens: c.beam.tokens, logprob: c.logprob, score: norm(c.logprob, c.beam.tokens.length + 1), finished: true });
        } else next.push(c);
      }
      const cur = step + 1;
      if (finished.length >= B) {
        if (early) break;
        const worst = Math.min(...finished.map((h) => h.score));
        if (next.length === 0 || norm(next[0]!.logprob, cur) <= worst) break;
      }
      if (next.length === 0) break;
      // Fork the cache for every selected continuation; the first taker of a beam reuses its sequence.
      const used = new Set<number>();
      const plan = next.map((c) => {
        let seq = c.beam.seq;
        if (used.has(seq)) {
          seq = allocSeq();
          cache.fork(c.beam.seq, seq);
          owned.add(seq);
        }
        used.add(c.beam.seq);
        return { c, seq };
      });
      for (const b of beams)
        if (!used.has(b.seq) && b.seq !== firstSeq) {
          cache.free(b.seq);
          owned.delete(b.seq);
        }
      beams = plan.map(({ c, seq }) => ({
        seq, tokens: [...c.beam.tokens, c.token], logprob: c.logprob,
        logits: forwardTokens(model, cache, seq, Int32Array.of(c.token)).data,
      }));
    }
    const all = [...finished];
    if (finished.length < B) for (const b of beams) all.push({ tokens: b.tokens, logprob: b.logprob, score: norm(b.logprob, b.tokens.length), finished: false });
    return all.sort((a, b) => b.score - a.score).slice(0, B);
  } finally {
    for (const s of owned) cache.free(s);
  }
}
