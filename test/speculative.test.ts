// Speculative decoding against independent references: greedy output equals plain greedy
// decoding for every proposer; the acceptance rule reproduces the target distribution (a
// chi-square test that also catches a broken rule); rolled-back caches equal caches filled
// without speculation; bad setups get clear errors.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Engine, getBackend } from '../src/index.js';
import { loadModelFile } from '../src/model/load.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { runBatch } from '../src/runtime/runner.js';
import { Sampler } from '../src/sampling/sampler.js';
import { acceptDraftToken } from '../src/sampling/speculative.js';
import { NgramProposer } from '../src/speculative/proposer.js';
import { nativeAvailable } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const TARGET = path.join(root, 'test/fixtures/shakespeare-target/shakespeare-target-Q8_0.gguf');
const TARGET_Q4 = path.join(root, 'test/fixtures/shakespeare-target/shakespeare-target-Q4_0.gguf');
const DRAFT = path.join(root, 'test/fixtures/shakespeare-draft/shakespeare-draft-F32.gguf');
const backend = nativeAvailable ? 'cpu' : 'js';

describe('n-gram proposer', () => {
  it('proposes what followed the latest earlier occurrence of the last tokens', () => {
    const p = new NgramProposer(3);
    expect(p.propose([1, 2, 3, 4, 5, 9, 2, 3], 3).tokens).toEqual([4, 5, 9]);
    expect(p.propose([7, 1, 2, 8, 1, 2, 9, 5, 1, 2], 2).tokens).toEqual([9, 5]); // the latest match wins
    expect(p.propose([1, 2, 3], 4).tokens).toEqual([]);
    expect(p.propose([4, 4], 5).tokens).toEqual([4]); // only what exists
    expect(() => new NgramProposer(0)).toThrow(RangeError);
  });
});

/** Pearson chi-square of counts against probabilities (bins with expected < 5 merged). */
function chiSquare(counts: Int32Array, p: Float64Array, n: number): { stat: number; df: number } {
  let stat = 0, df = -1, restO = 0, restE = 0;
  for (let i = 0; i < p.length; i++) {
    const e = p[i]! * n;
    if (e >= 5) {
      stat += (counts[i]! - e) ** 2 / e;
      df++;
    } else (restO += counts[i]!), (restE += e);
  }
  if (restE > 0) {
    stat += (restO - restE) ** 2 / Math.max(restE, 1e-9);
    df++;
  }
  return { stat, df };
}

/** Upper 0.1% point of chi-square (Wilson-Hilferty). */
const chiCrit = (df: number) => df * (1 - 2 / (9 * df) + 3.09 * Math.sqrt(2 / (9 * df))) ** 3;

describe('acceptance rule', () => {
  // p: the target's distribution after the prompt under temperature 2 (stories260K; broad enough
  // for many chi-square bins); q: the same logits at temperature 1, a sharper, different draft.
  const { model, tokenizer } = loadModelFile(STORIES, getBackend(backend));
  const c = model.config;
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 8 });
  cache.add(0);
  const prompt = tokenizer.encode('Once upon a time there was', { addBos: true });
  const logits = runBatch(model, cache, [{ seq: 0, tokens: prompt }])[0]!;
  const p = new Sampler({ temperature: 2, topK: 0, topP: 1, minP: 0 }).distribution(logits, prompt);
  const q = new Sampler({ temperature: 1, topK: 0, topP: 1, minP: 0 }).distribution(logits, prompt);
  const N = 20_000;

  const run = (accept: typeof acceptDraftToken, draft: 'model' | 'fixed') => {
    const rng = new Sampler({ seed: 12345, temperature: 1 });
    const counts = new Int32Array(p.length);
    const fixed = Array.from(p.keys()).sort((a, b) => p[b]! - p[a]!)[0]!; // a deterministic guess (the likeliest token)
    for (let s = 0; s < N; s++) {
      const x = draft === 'model' ? rng.draw(q) : fixed;
      counts[accept(p, draft === 'model' ? q : null, x, rng).token]!++;
    }
    return chiSquare(counts, p, N);
  };

  it.each(['model', 'fixed'] as const)('over 20,000 draws the first speculative token is distributed as the target (%s draft)', (draft) => {
    const { stat, df } = run(acceptDraftToken, draft);
    expect(df).toBeGreaterThan(5);
    expect(stat).toBeLessThan(chiCrit(df));
  });

  it('the same test rejects a broken rule (resampling from p instead of the residual)', () => {
    const broken: typeof acceptDraftToken = (pp, qq, x, rng) => {
      const r = acceptDraftToken(pp, qq, x, rng);
      return r.accepted ? r : { token: rng.draw(pp), accepted: false };
    };
    for (const draft of ['model', 'fixed'] as const) {
      const { stat, df } = run(broken, draft);
      expect(stat, draft).toBeGreaterThan(chiCrit(df));
    }
  });

  it('greedy: keeps the draft token iff it is the argmax, else gives the argmax', () => {
    const g = new Sampler({ temperature: 0 }).distribution(logits, prompt);
    const best = g.indexOf(1);
    const rng = new Sampler({ seed: 1 });
    expect(acceptDraftToken(g, null, best, rng)).toEqual({ token: best, accepted: true });
    expect(acceptDraftToken(g, null, (best + 1) % g.length, rng)).toEqual({ token: best, accepted: false });
  });
});

describe('speculative generation in the Engine', () => {
  const plain = async (file: string, prompt: string, maxTokens: number) => {
    const e = await Engine.load(file, { backend });
    try {
      return await e.generate(prompt, { temperature: 0, maxTokens });
    } finally {
      await e.dispose();
    }
  };

  it.each([
    ['n-gram lookup on stories260K', STORIES, { lookupNgram: 3 }, 'Once upon a time, there was a little girl named Lily. She loved to play outside. One day,'],
    ['the shakespeare draft model', TARGET, { draftModel: DRAFT }, 'ROMEO:\nBut soft, what light'],
    ["the target's own Q4_0 (self-speculation)", TARGET, { draftModel: TARGET_Q4, draftMax: 6 }, 'KING HENRY:\nNow, lords,'],
  ])('greedy output with %s equals plain greedy decoding', async (_, file, opts, prompt) => {
    const ref = await plain(file, prompt, 120);
    const e = await Engine.load(file, { backend, ...opts });
    try {
      // Several at once: speculation runs per sequence inside the batch.
      const rs = await Promise.all([e.generate(prompt, { temperature: 0, maxTokens: 120 }), e.generate(prompt, { temperature: 0, maxTokens: 120, speculative: false })]);
      for (const r of rs) {
        expect(r.tokens).toEqual(ref.tokens);
        expect(r.finishReason).toBe(ref.finishReason);
      }
      expect(rs[0]!.speculation!.proposed).toBeGreaterThan(0);
      expect(rs[0]!.speculation!.accepted).toBeGreaterThan(0);
      expect(rs[0]!.speculation!.accepted).toBeLessThanOrEqual(rs[0]!.speculation!.proposed);
      expect(rs[1]!.speculation).toBeUndefined();
      // Stop strings and sampling still work with drafts.
      const stopped = await e.generate(prompt, { temperature: 0, maxTokens: 120, stop: [ref.text.slice(10, 14)] });
      expect(stopped.finishReason).toBe('stop');
      expect(ref.text.startsWith(stopped.text)).toBe(true);
      const sampled = await e.generate(prompt, { temperature: 0.8, seed: 3, maxTokens: 60 });
      expect(sampled.completionTokens).toBeGreaterThan(0);
      expect((await e.stats()).kvBlocksUsed).toBe(0);
    } finally {
      await e.dispose();
    }
  });

  it('near the end of the context drafts are cut to the room left, with the same output as plain decoding', async () => {
    const { tokenizer } = loadModelFile(TARGET, getBackend('js'));
    const ctx = 512;
    const ids = tokenizer.encode('To be, or not to be, that is the question. '.repeat(40), { addBos: true }).slice(0, ctx - 20);
    const e0 = await Engine.load(TARGET, { backend });
    const ref = await e0.generate(ids, { temperature: 0, maxTokens: 100 });
    await e0.dispose();
    expect(ref.finishReason).toBe('context');
    const e = await Engine.load(TARGET, { backend, lookupNgram: 4, draftMax: 8 });
    try {
      const r = await e.generate(ids, { temperature: 0, maxTokens: 100 });
      expect(r.tokens).toEqual(ref.tokens);
      expect(r.finishReason).toBe('context');
    } finally {
      await e.dispose();
    }
  });

  it('a draft with another vocabulary, or a draft size of 0, is refused clearly', async () => {
    await expect(Engine.load(STORIES, { backend, draftModel: DRAFT })).rejects.toThrow(/share the target's vocabulary/);
    await expect(Engine.load(STORIES, { backend, lookupNgram: 3, draftMax: 0 })).rejects.toThrow(/draftMax/);
    await expect(Engine.load(STORIES, { backend, draftModel: '/nope.gguf' })).rejects.toThrow(/nope.gguf/);
  });
});

describe('rollback', () => {
  it('a cache that held rejected drafts, cut back, gives the logits of a cache that never did', () => {
    const { model, tokenizer } = loadModelFile(TARGET, getBackend(backend));
    const c = model.config;
    const mk = () => {
      const k = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 32 });
      k.add(0);
      return k;
    };
    const prompt = tokenizer.encode('ROMEO:\nBut soft, what light', { addBos: true });
    const a = mk(), b = mk();
    runBatch(model, a, [{ seq: 0, tokens: prompt }]);
    runBatch(model, b, [{ seq: 0, tokens: prompt }]);
    // a: the last token plus 5 drafts verified in one forward; 2 accepted, the rest cut off.
    runBatch(model, a, [{ seq: 0, tokens: [11, 22, 33, 44, 55, 66], segments: 'tokens', logits: 6 }]);
    a.truncate(0, prompt.length + 3);
    // b: the same accepted tokens as plain decode steps.
    for (const t of [11, 22, 33]) runBatch(model, b, [{ seq: 0, tokens: [t] }]);
    const la = runBatch(model, a, [{ seq: 0, tokens: [77] }])[0]!;
    const lb = runBatch(model, b, [{ seq: 0, tokens: [77] }])[0]!;
    expect(Array.from(la)).toEqual(Array.from(lb));
    expect(a.blocks.tokens(0)).toEqual(b.blocks.tokens(0));
  });
});
