// The batched runtime against independent references: every batched result is compared with the
// same sequence computed alone, one plain forward per step (greedyAlone in helpers.ts), which shares
// no scheduling code with what it checks.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend, Tensor } from '../src/index.js';
import { linearCalls } from '../src/model/batch.js';
import type { LlamaModel } from '../src/model/llama.js';
import { loadModelFile } from '../src/model/load.js';
import { beamSearch, BeamJob } from '../src/runtime/beam.js';
import { SampleJob, type FinishReason } from '../src/runtime/generate.js';
import { BlockManager, KvCacheFullError } from '../src/runtime/kv/block-manager.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { forwardTokens, runBatch } from '../src/runtime/runner.js';
import { Scheduler } from '../src/runtime/scheduler.js';
import { IntWeight } from '../src/tensor/int-weight.js';
import type { TextTokenizer } from '../src/tokenizer/text.js';
import { greedyAlone, nativeAvailable, rng } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const F32 = path.join(root, 'models/stories260K/stories260K.gguf');
const F16 = path.join(root, 'test/fixtures/stories260K/stories260K-F16.gguf');
const Q4 = path.join(root, 'test/fixtures/stories260K/stories260K-Q4_0.gguf');
const backends = nativeAvailable ? (['cpu', 'js'] as const) : (['js'] as const);

const newCache = (m: LlamaModel, numBlocks = 256, prefixCaching = true) =>
  new PagedKvCache({ layers: m.config.layers, kvHeads: m.config.kvHeads, headDim: m.config.headDim, numBlocks, prefixCaching });

/** Random token ids in [3, vocab). */
function randomTokens(n: number, r: () => number, vocab: number): number[] {
  return Array.from({ length: n }, () => 3 + Math.floor(r() * (vocab - 3)));
}

interface Req {
  prompt: number[];
  maxTokens: number;
  stop?: string[];
}

/** Runs requests through one scheduler at once; returns each one's tokens and finish reason. */
function runScheduled(m: LlamaModel, tok: TextTokenizer, reqs: Req[], cache: PagedKvCache, opts: { maxBatchTokens?: number; maxSequences?: number } = {}) {
  const sched = new Scheduler(m, cache, opts);
  const res = reqs.map(() => ({ tokens: [] as number[], text: '', reason: null as FinishReason | null, error: null as Error | null }));
  reqs.forEach((q, i) => {
    sched.submit(new SampleJob(sched, tok, q.prompt, { temperature: 0, maxTokens: q.maxTokens, stop: q.stop }, {
      onDelta: (d) => {
        res[i]!.text += d.text;
        if (d.token !== null) res[i]!.tokens.push(d.token);
      },
      onDone: (r) => (res[i]!.reason = r),
      onError: (e) => (res[i]!.error = e),
    }));
  });
  sched.runToCompletion();
  return { res, stats: sched.stats() };
}

describe('kernel facts the batch invariance rests on', () => {
  it.runIf(nativeAvailable)('cpu linear: a row computes the same for every M up to linearGemvRows, and for every M beyond', () => {
    const be = getBackend('cpu');
    const r = rng(3);
    const K = 320, N = 72;
    const vals = Array.from({ length: N * K }, () => r() * 2 - 1);
    const xs = Array.from({ length: 40 * K }, () => r() * 2 - 1);
    const row0 = (w: Tensor | IntWeight, M: number) => be.linear(Tensor.from('f32', [M, K], xs.slice(0, M * K)), w).data.slice(0, N);
    for (const dt of ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const) {
      const w = Tensor.from(dt, [N, K], vals);
      const g = be.linearGemvRows(w);
      const small = row0(w, 1);
      for (let M = 2; M <= Math.min(g, 14); M++) expect(row0(w, M), `${dt} M=${M}`).toEqual(small);
      if (Number.isFinite(g)) {
        const big = row0(w, g + 1);
        for (const M of [g + 2, 16, 17, 33, 40]) expect(row0(w, M), `${dt} M=${M}`).toEqual(big);
      } else for (const M of [16, 17, 33, 40]) expect(row0(w, M), `${dt} M=${M}`).toEqual(small);
    }
    const q4 = Tensor.from('q4_0', [N, K], vals);
    const iw = IntWeight.fromQ4_0(q4.data as Uint8Array, N, K);
    expect(be.linearGemvRows(iw)).toBe(Infinity);
    for (const M of [2, 9, 13, 40]) expect(row0(iw, M)).toEqual(row0(iw, 1));
  });

  it.each(backends)('elementwise activations on %s: an element computes the same wherever it falls in the array', (bn) => {
    const be = getBackend(bn);
    const r = rng(4);
    const W = 172; // not a multiple of any vector width
    const g = Array.from({ length: 5 * W }, () => r() * 8 - 4), u = Array.from({ length: 5 * W }, () => r() * 2 - 1);
    const one = (n: number, f: (a: Tensor, b: Tensor) => Tensor) =>
      Array.from(f(Tensor.from('f32', [n, W], g.slice(0, n * W)), Tensor.from('f32', [n, W], u.slice(0, n * W))).data.slice(0, W));
    for (const f of [(a: Tensor, b: Tensor) => be.swiglu(a, b), (a: Tensor) => be.silu(a), (a: Tensor) => be.gelu(a)])
      for (const n of [2, 3, 5]) expect(one(n, f)).toEqual(one(1, f));
  });

  it('linearCalls keeps short segments in calls of at most gemvRows rows and long ones apart', () => {
    expect(linearCalls([0, 1, 2, 3], Infinity)).toEqual([[0, 3]]);
    expect(linearCalls([0, 1, 2, 3], 12)).toEqual([[0, 3]]);
    // 14 decode rows, then a 20-row chunk, a 3-row prompt, a 16-row chunk
    const starts = [...Array.from({ length: 15 }, (_, i) => i), 34, 37, 53];
    const calls = linearCalls(starts, 12);
    expect(calls).toEqual([[0, 12], [12, 2], [14, 20], [34, 3], [37, 16]]);
    // Every row covered once, no call mixes classes.
    const covered = calls.flatMap(([a, n]) => Array.from({ length: n }, (_, i) => a + i));
    expect(covered).toEqual(Array.from({ length: 53 }, (_, i) => i));
    expect(linearCalls([0, 20, 40, 41], 12)).toEqual([[0, 40], [40, 1]]);
    expect(linearCalls([0], 12)).toEqual([]);
  });
});

describe('block manager', () => {
  const copies: [number, number][] = [];
  const mk = (n: number, prefixCaching = true) => new BlockManager(n, 4, { prefixCaching, copyBlock: (s, d) => copies.push([s, d]) });

  it('reuses committed prompt blocks by exact prefix, and only committed ones', () => {
    const m = mk(8);
    const p = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
    m.add(1);
    m.append(1, p, true);
    m.add(2);
    expect(m.matchPrefix(2, p)).toBe(0); // not committed yet
    m.commit(1);
    m.free(2);
    m.add(2);
    expect(m.matchPrefix(2, p)).toBe(8);
    expect(m.blockTable(2)).toEqual(m.blockTable(1).slice(0, 2));
    m.add(3);
    expect(m.matchPrefix(3, [5, 6, 7, 8, 9, 10, 11, 99, 13])).toBe(4); // second block differs
    m.add(4);
    expect(m.matchPrefix(4, [6, 5, 7, 8, 9, 10, 11, 12])).toBe(0);
    m.add(5);
    expect(m.matchPrefix(5, p, 7)).toBe(4); // capped
    for (const s of [1, 2, 3, 4, 5]) m.free(s);
    expect(m.stats()).toMatchObject({ used: 0, cached: 2, free: 6 });
    const m2 = mk(8, false);
    m2.add(1);
    m2.append(1, p, true);
    m2.commit(1);
    m2.free(1);
    m2.add(2);
    expect(m2.matchPrefix(2, p)).toBe(0);
    expect(m2.stats()).toMatchObject({ used: 0, cached: 0, free: 8 });
  });

  it('evicts unreferenced cached blocks least recently used first, only when blocks run out', () => {
    const m = mk(4);
    const a = [1, 2, 3, 4], b = [5, 6, 7, 8], c = [9, 10, 11, 12];
    for (const [s, t] of [[1, a], [2, b], [3, c]] as const) {
      m.add(s);
      m.append(s, t, true);
      m.commit(s);
    }
    m.free(1);
    m.free(2);
    m.free(3);
    m.add(4);
    expect(m.matchPrefix(4, [...a, 0])).toBe(4); // a is used again: now the most recent
    m.free(4);
    expect(m.stats()).toMatchObject({ cached: 3, free: 1 });
    m.add(5);
    m.append(5, [20, 21, 22, 23, 24, 25, 26, 27, 28], false); // 3 blocks: the free one, then b and c evicted
    expect(m.stats()).toMatchObject({ used: 3, cached: 1, free: 0 });
    m.add(6);
    expect(m.matchPrefix(6, [...a, 0])).toBe(4);
    m.add(7);
    expect(m.matchPrefix(7, [...b, 0])).toBe(0);
    expect(() => m.append(7, [1], false)).toThrow(KvCacheFullError);
    for (const s of [5, 6, 7]) m.free(s);
    expect(m.stats().used).toBe(0);
  });

  it('forks share blocks and copy a shared partial block before writing it', () => {
    copies.length = 0;
    const m = mk(8);
    m.add(1);
    m.append(1, [1, 2, 3, 4, 5, 6], false);
    m.fork(1, 2);
    expect(m.stats().used).toBe(2);
    const slots = m.append(2, [7], false);
    expect(copies).toEqual([[m.blockTable(1)[1]!, m.blockTable(2)[1]!]]);
    expect(m.blockTable(2)[0]).toBe(m.blockTable(1)[0]);
    expect(Math.floor(slots[0]! / 4)).toBe(m.blockTable(2)[1]);
    m.append(1, [9], false); // the parent's block is its own again: no copy
    expect(copies.length).toBe(1);
    m.free(1);
    m.free(2);
    expect(m.stats()).toMatchObject({ used: 0, free: 8 });
  });
});

describe.each(backends)('batched forward on %s', (bn) => {
  it.each([['F32', F32], ['F16', F16], ['Q4_0', Q4]])('mixed prefill and decode rows give bitwise the logits of each sequence alone (%s)', (_, file) => {
    const { model: m } = loadModelFile(file, getBackend(bn));
    const V = m.config.vocabSize;
    const r = rng(11);
    const hist = [randomTokens(20, r, V), randomTokens(7, r, V), [], []];
    const fresh = [randomTokens(1, r, V), randomTokens(3, r, V), randomTokens(40, r, V), randomTokens(5, r, V)];
    // Alone: history then the new tokens as the batch would run them.
    const alone = (i: number, split: boolean) => {
      const cache = newCache(m);
      cache.add(0);
      if (hist[i]!.length) forwardTokens(m, cache, 0, hist[i]!);
      if (!split) return forwardTokens(m, cache, 0, fresh[i]!).data;
      let l: Float32Array = new Float32Array();
      for (const t of fresh[i]!) l = forwardTokens(m, cache, 0, [t]).data;
      return l;
    };
    const cache = newCache(m);
    hist.forEach((h, i) => {
      cache.add(i);
      if (h.length) forwardTokens(m, cache, i, h);
    });
    const out = runBatch(m, cache, [
      { seq: 0, tokens: fresh[0]! },
      { seq: 1, tokens: fresh[1]!, segments: 'tokens' }, // a recomputed tail: three decode steps
      { seq: 2, tokens: fresh[2]!, segments: [16, 24] }, // a prompt in two chunks
      { seq: 3, tokens: fresh[3]! }, // a short prompt
    ]);
    expect(Array.from(out[0]!)).toEqual(Array.from(alone(0, false)));
    expect(Array.from(out[1]!)).toEqual(Array.from(alone(1, true)));
    expect(Array.from(out[2]!)).toEqual(Array.from(alone(2, false)));
    expect(Array.from(out[3]!)).toEqual(Array.from(alone(3, false)));
  });
});

describe.each(backends)('scheduler on %s', (bn) => {
  const files = [['F32', F32], ['Q4_0', Q4]] as const;

  it.each(files)('concurrent greedy requests equal the same requests alone (%s)', (_, file) => {
    const { model: m, tokenizer: tok } = loadModelFile(file, getBackend(bn));
    const r = rng(5);
    const texts = ['Once upon a time', 'The dog ran to the park and saw a big red ball. He wanted to play with it', 'Lily', 'One day, a little girl named Sue went to the store with her mom. They saw many toys, and Sue wanted a doll. Her mom said no.'];
    const reqs: Req[] = texts.map((t, i) => ({ prompt: tok.encode(t, { addBos: true }), maxTokens: 10 + Math.floor(r() * 40) + i }));
    reqs.push({ prompt: tok.encode('Tom and Sam were friends.', { addBos: true }), maxTokens: 60, stop: ['.'] });
    reqs.push({ prompt: randomTokens(70, r, m.config.vocabSize), maxTokens: 25 });
    const refs = reqs.map((q) => greedyAlone(m, q.prompt, q.maxTokens, tok.eogIds));
    for (const maxBatchTokens of [512, 32]) {
      const { res, stats } = runScheduled(m, tok, reqs, newCache(m), { maxBatchTokens });
      res.forEach((x, i) => {
        expect(x.error).toBeNull();
        if (reqs[i]!.stop) {
          expect(x.reason).toBe('stop');
          expect(refs[i]!.slice(0, x.tokens.length)).toEqual(x.tokens);
          expect(x.text).not.toContain('.');
          expect(x.text.length).toBeGreaterThan(0);
        } else {
          expect(x.tokens, `request ${i} with maxBatchTokens ${maxBatchTokens}`).toEqual(refs[i]);
          expect(x.reason).toBe(refs[i]!.length === reqs[i]!.maxTokens ? 'length' : 'stop');
        }
      });
      expect(stats.kvBlocksUsed).toBe(0);
    }
  });

  it('prefix cache on and off give identical greedy outputs; a shared system prompt hits', () => {
    const { model: m, tokenizer: tok } = loadModelFile(F32, getBackend(bn));
    const system = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her dog Max. ';
    const reqs: Req[] = ['One day', 'Max saw a cat', 'It was a hot day and', 'Lily found a box'].map((u) => ({ prompt: tok.encode(system + u, { addBos: true }), maxTokens: 30 }));
    const refs = reqs.map((q) => greedyAlone(m, q.prompt, q.maxTokens, tok.eogIds));
    const off = runScheduled(m, tok, reqs, newCache(m, 256, false));
    const on = runScheduled(m, tok, reqs, newCache(m, 256, true));
    // The later ones start after the first finished its prompt: run them again on the warm cache.
    const cache = newCache(m, 256, true);
    runScheduled(m, tok, reqs.slice(0, 1), cache);
    const warm = runScheduled(m, tok, reqs.slice(1), cache);
    expect(off.res.map((x) => x.tokens)).toEqual(refs);
    expect(on.res.map((x) => x.tokens)).toEqual(refs);
    expect(warm.res.map((x) => x.tokens)).toEqual(refs.slice(1));
    expect(off.stats.prefixHitRate).toBe(0);
    expect(warm.stats.prefixHitRate).toBeGreaterThan(0);
    expect(warm.stats.kvBlocksUsed).toBe(0);
    expect(warm.stats.kvBlocksCached).toBeGreaterThan(0);
  });

  it('n samples of one prompt submitted together compute the prompt once and share its blocks; outputs as without sharing', () => {
    const { model: m, tokenizer: tok } = loadModelFile(F32, getBackend(bn));
    const prompt = randomTokens(90, rng(33), m.config.vocabSize);
    const run = (prefixCaching: boolean) => {
      const cache = newCache(m, 256, prefixCaching);
      const sched = new Scheduler(m, cache);
      const out: number[][] = [[], [], [], []];
      out.forEach((o, i) => sched.submit(new SampleJob(sched, tok, prompt, { temperature: 0.9, seed: 100 + i, maxTokens: 20 }, {
        onDelta: (d) => d.token !== null && o.push(d.token), onDone: () => {}, onError: (e) => { throw e; },
      })));
      sched.runToCompletion();
      return { out, stats: sched.stats() };
    };
    const shared = run(true), alone = run(false);
    expect(shared.out).toEqual(alone.out);
    expect(new Set(shared.out.map((o) => o.join())).size).toBeGreaterThan(1); // different seeds, different samples
    // Three of the four start on the first one's cached blocks: 64 of their 90 prompt tokens each.
    expect(shared.stats.prefixHitRate).toBeCloseTo((3 * 64) / (4 * 90), 6);
    expect(shared.stats.kvBlocksUsed).toBe(0);
  });

  it('a KV budget too small for all requests at once: all 32 finish, identical to an unconstrained run, no block left in use', () => {
    const { model: m, tokenizer: tok } = loadModelFile(F32, getBackend(bn));
    const r = rng(9);
    const reqs: Req[] = Array.from({ length: 32 }, (_, i) => ({ prompt: randomTokens(5 + Math.floor(r() * 40), r, m.config.vocabSize), maxTokens: 20 + (i % 7) * 5 }));
    const big = runScheduled(m, tok, reqs, newCache(m, 1024));
    const small = runScheduled(m, tok, reqs, newCache(m, 12)); // 192 tokens: room for about three requests
    expect(small.res.every((x) => x.error === null)).toBe(true);
    expect(small.res.map((x) => x.tokens)).toEqual(big.res.map((x) => x.tokens));
    expect(small.res.map((x) => x.reason)).toEqual(big.res.map((x) => x.reason));
    expect(small.stats.preemptions).toBeGreaterThan(0);
    expect(small.stats.kvBlocksUsed).toBe(0);
    expect(big.stats.preemptions).toBe(0);
    // Spot-check against the plain loop.
    for (const i of [0, 13, 31]) expect(small.res[i]!.tokens).toEqual(greedyAlone(m, reqs[i]!.prompt, reqs[i]!.maxTokens, tok.eogIds));
  });

  it('beam searches batched with sampling under a small KV budget (preempted and restarted) equal standalone beam search', () => {
    const { model: m, tokenizer: tok } = loadModelFile(F32, getBackend(bn));
    const r = rng(21);
    const beamPrompts = [tok.encode('Once upon a time', { addBos: true }), randomTokens(40, r, m.config.vocabSize)];
    const refs = beamPrompts.map((p) => {
      const c = newCache(m);
      c.add(0);
      return beamSearch(m, c, 0, p, { beams: 3, maxTokens: 15, eogIds: tok.eogIds })[0]!.tokens;
    });
    for (const blocks of [1024, 14]) {
      const cache = newCache(m, blocks);
      const sched = new Scheduler(m, cache);
      const got: number[][] = beamPrompts.map(() => []);
      const errors: Error[] = [];
      beamPrompts.forEach((p, i) => sched.submit(new BeamJob(sched, tok, p, { beams: 3, maxTokens: 15 }, {
        onDelta: (d) => d.token !== null && got[i]!.push(d.token), onDone: () => {}, onError: (e) => errors.push(e),
      })));
      for (let i = 0; i < 6; i++)
        sched.submit(new SampleJob(sched, tok, randomTokens(10 + 5 * i, r, m.config.vocabSize), { temperature: 0, maxTokens: 30 }, {
          onDelta: () => {}, onDone: () => {}, onError: (e) => errors.push(e),
        }));
      sched.runToCompletion();
      expect(errors).toEqual([]);
      expect(got).toEqual(refs);
      if (blocks === 14) expect(sched.stats().preemptions).toBeGreaterThan(0);
      expect(sched.stats().kvBlocksUsed).toBe(0);
    }
  });

  it('a job that throws while planning fails alone; the others finish', () => {
    const { model: m, tokenizer: tok } = loadModelFile(F32, getBackend(bn));
    const sched = new Scheduler(m, newCache(m));
    let failed: Error | null = null, released = 0;
    const bad = {
      width: 1, done: false,
      work(): never { throw new RangeError('broken proposer'); },
      advance() {}, reset() {}, release() { released++; },
      fail(e: Error) { failed = e; this.done = true; },
    };
    const got: number[] = [];
    const prompt = tok.encode('Once upon a time', { addBos: true });
    sched.submit(bad);
    sched.submit(new SampleJob(sched, tok, prompt, { temperature: 0, maxTokens: 6 }, {
      onDelta: (d) => d.token !== null && got.push(d.token), onDone: () => {}, onError: (e) => { throw e; },
    }));
    sched.runToCompletion();
    expect(failed).toBeInstanceOf(RangeError);
    expect(released).toBe(1);
    expect(got).toEqual(greedyAlone(m, prompt, 6, tok.eogIds));
  });

  it('a request alone larger than the whole cache fails with KvCacheFullError; the others finish', () => {
    const { model: m, tokenizer: tok } = loadModelFile(F32, getBackend(bn));
    const reqs: Req[] = [{ prompt: tok.encode('Once upon a time', { addBos: true }), maxTokens: 8 }, { prompt: randomTokens(100, rng(1), m.config.vocabSize), maxTokens: 5 }];
    const { res, stats } = runScheduled(m, tok, reqs, newCache(m, 4));
    expect(res[0]!.error).toBeNull();
    expect(res[0]!.tokens).toEqual(greedyAlone(m, reqs[0]!.prompt, 8, tok.eogIds));
    expect(res[1]!.error).toBeInstanceOf(KvCacheFullError);
    expect(res[1]!.error!.message).toMatch(/more than the whole cache/);
    expect(stats.kvBlocksUsed).toBe(0);
  });
});
