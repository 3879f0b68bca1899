// Beam search against a naive beam search that recomputes every prefix from scratch (no cache
// sharing), and copy-on-write forks of the paged KV cache against separately computed sequences.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/index.js';
import { loadModelFile } from '../src/model/load.js';
import { beamSearch } from '../src/runtime/beam.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { nativeAvailable, relL2 } from './helpers.js';
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
