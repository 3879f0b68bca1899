// Beam search against a naive beam search that recomputes every prefix from scratch (no cache
// sharing), against Hugging Face's BeamSearchScorer semantics (length penalty, early stopping) on
// a tiny random model whose end token comes up often, and copy-on-write forks of the paged KV
// cache against separately computed sequences.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend, LlamaModel, Tensor, type LlamaConfig } from '../src/index.js';
import { loadModelFile } from '../src/model/load.js';
import { beamSearch } from '../src/runtime/beam.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { nativeAvailable, randTensor, relL2, rng } from './helpers.js';
import { forwardTokens } from '../src/runtime/runner.js';

const root = path.resolve(import.meta.dirname, '..');
const { model } = loadModelFile(path.join(root, 'models/stories260K/stories260K.gguf'), getBackend(nativeAvailable ? 'cpu' : 'js'));
const c = model.config;
const newCache = (blocks = 64, blockSize = 4) => new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: blocks, blockSize });

/** log-softmax of the next-token distribution after `ids`, from a fresh cache. */
function nextLogProbs(ids: number[]): Float64Array {
  const cache = newCache();
  cache.add(0);
  const l = forwardTokens(model, cache, 0, Int32Array.from(ids)).data;
  const m = Math.max(...l);
  const lse = m + Math.log(l.reduce((a, x) => a + Math.exp(x - m), 0));
  return Float64Array.from(l, (x) => x - lse);
}

/** Textbook beam search without early stopping heuristics beyond the HF rules used in beam.ts. */
function naiveBeams(prompt: number[], B: number, steps: number, eog: Set<number>, lp: number) {
  let beams = [{ tokens: [] as number[], logprob: 0 }];
  const finished: { tokens: number[]; score: number }[] = [];
  for (let s = 0; s < steps; s++) {
    const cands: { tokens: number[]; token: number; logprob: number }[] = [];
    for (const b of beams) {
      const lp0 = nextLogProbs([...prompt, ...b.tokens]);
      const order = Array.from(lp0.keys()).sort((x, y) => lp0[y]! - lp0[x]! || x - y).slice(0, 2 * B);
      for (const t of order) cands.push({ tokens: b.tokens, token: t, logprob: b.logprob + lp0[t]! });
    }
    cands.sort((a, b) => b.logprob - a.logprob);
    const next: typeof beams = [];
    for (let r = 0; r < cands.length && next.length < B; r++) {
      const cd = cands[r]!;
      if (eog.has(cd.token)) {
        if (r < B) finished.push({ tokens: cd.tokens, score: cd.logprob / Math.pow(Math.max(1, cd.tokens.length + 1), lp) });
      } else next.push({ tokens: [...cd.tokens, cd.token], logprob: cd.logprob });
    }
    if (finished.length >= B) break;
    beams = next;
  }
  const all = [...finished];
  if (finished.length < B) for (const b of beams) all.push({ tokens: b.tokens, score: b.logprob / Math.pow(b.tokens.length, lp) });
  return all.sort((a, b) => b.score - a.score).slice(0, B);
}

describe('beam search', () => {
  it.each([[3, 8], [4, 6]])('beams=%i over %i steps equals a from-scratch beam search', (B, steps) => {
    const prompt = [1, 403, 407, 261, 378];
    const cache = newCache(256);
    cache.add(0);
    const ours = beamSearch(model, cache, 0, prompt, { beams: B, maxTokens: steps, eogIds: new Set([2]) });
    const ref = naiveBeams(prompt, B, steps, new Set([2]), 1);
    expect(ours.map((h) => h.tokens)).toEqual(ref.map((h) => h.tokens));
    ours.forEach((h, i) => expect(h.score).toBeCloseTo(ref[i]!.score, 4));
    cache.free(0); // the prompt's sequence belongs to the caller
    expect(cache.freeBlocks).toBe(256); // every beam the search forked is released
  });

  it('one beam is greedy decoding', () => {
    const prompt = [1, 403, 407, 261, 378];
    const cache = newCache();
    cache.add(0);
    const [best] = beamSearch(model, cache, 0, prompt, { beams: 1, maxTokens: 10 });
    const greedy: number[] = [];
    for (let i = 0; i < 10; i++) {
      const l = nextLogProbs([...prompt, ...greedy]);
      greedy.push(l.indexOf(Math.max(...l)));
    }
    expect(best!.tokens).toEqual(greedy);
  });
});

/** A one-layer Llama with random weights and a 10-token vocabulary: the end token (2) is often among the best. */
function tinyModel(seed: number): LlamaModel {
  const r = rng(seed);
  const V = 10, dim = 16, hd = 8, ffn = 24;
  const config: LlamaConfig = {
    architecture: 'llama', dim, layers: 1, heads: 2, kvHeads: 1, headDim: hd, ffnDim: ffn, vocabSize: V, contextLength: 64,
    normEps: 1e-5, ropeTheta: 10000, ropeDim: hd, ropeStyle: 'neox', ropeScale: 1, slidingWindow: 0,
  };
  const ones = new Tensor('f32', [dim], new Float32Array(dim).fill(1));
  const mat = (n: number, k: number) => randTensor([n, k], r, 1 / Math.sqrt(k));
  return new LlamaModel(config, {
    tokEmbd: randTensor([V, dim], r), outNorm: ones, output: randTensor([V, dim], r, 0.4),
    layers: [{ attnNorm: ones, wq: mat(dim, dim), wk: mat(hd, dim), wv: mat(hd, dim), wo: mat(dim, dim), ffnNorm: ones, wGate: mat(ffn, dim), wUp: mat(ffn, dim), wDown: mat(dim, ffn) }],
  }, getBackend(nativeAvailable ? 'cpu' : 'js'));
}

/**
 * Hugging Face transformers' beam search (BeamSearchScorer.process / BeamHypotheses / finalize),
 * transcribed: `beams` copies of the prompt with scores [0, -1e9, ...]; each step the top
 * 2 x beams of all beams x vocab continuations; an end token ranked within the top `beams` adds
 * the beam to the hypotheses (score sum / generated_len^lengthPenalty, generated_len counting the
 * end token), which keep the best `beams`; done when `beams` hypotheses exist and early stopping
 * is on, or (early stopping off) the worst kept score >= best candidate sum / cur_len^lengthPenalty;
 * at max length the running beams are added unless done. Every prefix is scored from scratch.
 */
function hfBeamSearch(model: LlamaModel, prompt: number[], B: number, maxNew: number, eos: number, lengthPenalty: number, earlyStopping: boolean) {
  const V = model.config.vocabSize;
  const memo = new Map<string, Float64Array>();
  const logProbs = (ids: number[]) => {
    let v = memo.get(ids.join(','));
    if (!v) {
      const c = model.config;
      const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 16 });
      cache.add(0);
      const l = forwardTokens(model, cache, 0, Int32Array.from(ids)).data;
      const m = Math.max(...l);
      const lse = m + Math.log(l.reduce((a, x) => a + Math.exp(x - m), 0));
      memo.set(ids.join(','), (v = Float64Array.from(l, (x) => x - lse)));
    }
    return v;
  };
  const hyps: { tokens: number[]; score: number }[] = [];
  let worst = 1e9;
  const add = (tokens: number[], sum: number, generatedLen: number) => {
    const score = sum / generatedLen ** lengthPenalty;
    if (hyps.length < B || score > worst) {
      hyps.push({ tokens, score });
      if (hyps.length > B) {
        const sorted = hyps.map((h, i) => [h.score, i] as const).sort((a, b) => a[0] - b[0]);
        hyps.splice(sorted[0]![1], 1);
        worst = sorted[1]![0];
      } else worst = Math.min(score, worst);
    }
  };
  let beams = Array.from({ length: B }, (_, i) => ({ tokens: [] as number[], score: i === 0 ? 0 : -1e9 }));
  let done = false;
  for (let cur = 1; cur <= maxNew && !done; cur++) {
    const all: { beam: number; token: number; score: number }[] = [];
    beams.forEach((b, i) => logProbs([...prompt, ...b.tokens]).forEach((lp, t) => all.push({ beam: i, token: t, score: b.score + lp })));
    const top = all.sort((a, b) => b.score - a.score || a.beam * V + a.token - (b.beam * V + b.token)).slice(0, 2 * B);
    const next: typeof beams = [];
    for (const [rank, c] of top.entries()) {
      if (c.token === eos) {
        if (rank < B) add(beams[c.beam]!.tokens, c.score, cur);
      } else next.push({ tokens: [...beams[c.beam]!.tokens, c.token], score: c.score });
      if (next.length === B) break;
    }
    done = hyps.length >= B && (earlyStopping || worst >= top[0]!.score / cur ** lengthPenalty);
    beams = next;
  }
  if (!done) for (const b of beams) add(b.tokens, b.score, b.tokens.length);
  return hyps.sort((a, b) => b.score - a.score);
}

describe('beam search: Hugging Face semantics for lengthPenalty and earlyStopping', () => {
  const prompt = [1, 5, 3], B = 3, maxNew = 10, eos = 2;
  const tokensOf = (r: { tokens: number[] }[]) => r.map((h) => h.tokens);
  it.each([4, 5])('tiny random model %i', (seed) => {
    const m = tinyModel(seed);
    const ours = (o: { lengthPenalty?: number; earlyStopping?: boolean }) => {
      const cache = new PagedKvCache({ layers: 1, kvHeads: 1, headDim: 8, numBlocks: 128, blockSize: 4 });
      cache.add(0);
      const r = beamSearch(m, cache, 0, prompt, { beams: B, maxTokens: maxNew, eogIds: new Set([eos]), ...o });
      cache.free(0);
      expect(cache.freeBlocks).toBe(128);
      return r;
    };
    const ref: Record<string, ReturnType<typeof hfBeamSearch>> = {};
    for (const lengthPenalty of [0, 1, 2, -0.5])
      for (const earlyStopping of [true, false]) {
        const want = (ref[`${lengthPenalty}/${earlyStopping}`] = hfBeamSearch(m, prompt, B, maxNew, eos, lengthPenalty, earlyStopping));
        const got = ours({ lengthPenalty, earlyStopping });
        expect(tokensOf(got), `lengthPenalty ${lengthPenalty}, earlyStopping ${earlyStopping}`).toEqual(tokensOf(want));
        got.forEach((h, i) => expect(h.score).toBeCloseTo(want[i]!.score, 4));
      }
    // The cases discriminate: some length penalty and the early-stopping flag change the answer
    // here (so a search that ignored either, or flipped the default, would fail above or below).
    const key = (k: string) => JSON.stringify(tokensOf(ref[k]!));
    expect(['0', '2', '-0.5'].some((lp) => key(`${lp}/true`) !== key('1/true'))).toBe(true);
    expect(['0', '2', '-0.5'].some((lp) => key(`${lp}/false`) !== key('1/false'))).toBe(true);
    expect(key('1/true')).not.toBe(key('1/false'));
    // Defaults as documented: lengthPenalty 1, earlyStopping true.
    expect(tokensOf(ours({}))).toEqual(tokensOf(ref['1/true']!));
    expect(tokensOf(ours({ lengthPenalty: 2 }))).toEqual(tokensOf(ref['2/true']!));
    expect(() => ours({ earlyStopping: 'never' as never })).toThrow(/Expected a boolean for earlyStopping/);
  });
});

describe('KV cache fork (copy-on-write)', () => {
  it('forked sequences continue independently and match sequences computed alone', () => {
    const cache = newCache(32, 4);
    cache.add(0);
    const prefix = [1, 403, 407, 261, 378, 269]; // 6 tokens: the second block is partly filled
    forwardTokens(model, cache, 0, Int32Array.from(prefix));
    const free0 = cache.freeBlocks;
    cache.fork(0, 1);
    expect(cache.freeBlocks).toBe(free0); // nothing copied yet
    const a = forwardTokens(model, cache, 0, Int32Array.of(281, 333), { allLogits: true }).data;
    const b = forwardTokens(model, cache, 1, Int32Array.of(300, 284, 327), { allLogits: true }).data;
    expect(cache.freeBlocks).toBe(free0 - 2); // one copied block + one new block for seq 1
    const alone = (ids: number[], n: number) => {
      const c2 = newCache(32, 4);
      c2.add(0);
      return forwardTokens(model, c2, 0, Int32Array.from(ids), { allLogits: true }).data.slice(-n * c.vocabSize);
    };
    expect(relL2(a, alone([...prefix, 281, 333], 2))).toBeLessThan(1e-6);
    expect(relL2(b, alone([...prefix, 300, 284, 327], 3))).toBeLessThan(1e-6);
    cache.free(0);
    cache.free(1);
    expect(cache.freeBlocks).toBe(32);
  });
});
