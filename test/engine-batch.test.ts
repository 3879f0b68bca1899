// The Engine with concurrent callers: results against per-request greedy loops and standalone
// beam search, aborts, and the scheduler's block accounting (engine.stats()).
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Engine, getBackend } from '../src/index.js';
import { loadModelFile } from '../src/model/load.js';
import { beamSearch } from '../src/runtime/beam.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { greedyAlone, nativeAvailable, rng } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const backends = nativeAvailable ? (['cpu', 'js'] as const) : (['js'] as const);

describe.each(backends)('Engine with concurrent requests on %s', (backend) => {
  const { model, tokenizer } = loadModelFile(STORIES, getBackend(backend));
  const prompts = ['Once upon a time', 'The cat', 'Tom had a red ball. He', 'One day, Lily and her mom went to the park to see the ducks. The ducks', 'Sue was sad', 'Ben liked to run', 'The sun was hot and', 'A big dog'];

  it('greedy results equal each request run alone; beams equal a standalone beam search; no block stays in use', async () => {
    const engine = await Engine.load(STORIES, { backend });
    try {
      const ids = prompts.map((p) => tokenizer.encode(p, { addBos: true }));
      const maxTokens = prompts.map((_, i) => 15 + 7 * i);
      const beamPrompt = ids[2]!;
      const [results, beam] = await Promise.all([
        Promise.all(prompts.map((p, i) => engine.generate(p, { temperature: 0, maxTokens: maxTokens[i] }))),
        engine.generate(beamPrompt, { beams: 3, maxTokens: 12 }),
      ]);
      results.forEach((r, i) => expect(r.tokens, prompts[i]).toEqual(greedyAlone(model, ids[i]!, maxTokens[i]!, tokenizer.eogIds)));
      const cache = new PagedKvCache({ layers: model.config.layers, kvHeads: model.config.kvHeads, headDim: model.config.headDim, numBlocks: 256 });
      cache.add(0);
      const [best] = beamSearch(model, cache, 0, beamPrompt, { beams: 3, maxTokens: 12, eogIds: tokenizer.eogIds });
      expect(beam.tokens).toEqual(best!.tokens);
      const s = await engine.stats();
      expect(s).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0 });
      expect(s.kvBlocksFree + s.kvBlocksCached).toBeGreaterThan(0);
      expect(s.tokensPerSecond).toBeGreaterThanOrEqual(0);
    } finally {
      await engine.dispose();
    }
  });

  it('random aborts among 32 concurrent streams: every promise settles and no block leaks', async () => {
    const engine = await Engine.load(STORIES, { backend, kvCacheBytes: 2 ** 20 });
    try {
      const r = rng(17);
      const runs = Array.from({ length: 32 }, async (_, i) => {
        const ac = new AbortController();
        const abortAfter = r() < 0.5 ? Math.floor(r() * 20) : -1;
        if (abortAfter === 0) ac.abort(); // aborted before it starts
        let n = 0;
        const it = engine.stream(prompts[i % prompts.length]!, { maxTokens: 40, ignoreEos: true, temperature: 0.7, seed: i, signal: ac.signal });
        try {
          let x;
          while (!(x = await it.next()).done) if (++n === abortAfter) ac.abort();
          return { aborted: abortAfter >= 0, reason: x.value.finishReason, n: x.value.completionTokens };
        } catch (err) {
          return { aborted: abortAfter >= 0, reason: 'error', err };
        }
      });
      const settled = await Promise.all(runs);
      for (const s of settled) {
        if (!s.aborted) expect(s).toMatchObject({ reason: 'length', n: 40 });
        else expect(['abort', 'length', 'error']).toContain(s.reason);
      }
      expect(settled.filter((s) => s.reason === 'abort').length).toBeGreaterThan(5);
      expect(settled.some((s) => s.reason === 'error' && (s as { err?: Error }).err?.name !== 'AbortError')).toBe(false);
      const st = await engine.stats();
      expect(st).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0 });
      // The engine still works afterwards.
      const after = await engine.generate('Once upon a time', { temperature: 0, maxTokens: 10 });
      expect(after.tokens).toEqual(greedyAlone(model, tokenizer.encode('Once upon a time', { addBos: true }), 10, tokenizer.eogIds));
    } finally {
      await engine.dispose();
    }
  });
});

describe('Engine options', () => {
  it('rejects bad scheduler options by name', async () => {
    await expect(Engine.load(STORIES, { maxBatchTokens: 4 })).rejects.toThrow(/maxBatchTokens/);
    await expect(Engine.load(STORIES, { maxSequences: 0 })).rejects.toThrow(/maxSequences/);
    await expect(Engine.load(STORIES, { prefixCaching: 'yes' as unknown as boolean })).rejects.toThrow(/prefixCaching/);
  });
});
