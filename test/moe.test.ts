// moeRoute / moeGather / moeScatter against a direct implementation written here, and moeStats
// (load histogram, mean router probabilities, balance loss) against routing recomputed here.
import { describe, expect, it } from 'vitest';
import { getBackend, LlamaModel, PagedKvCache, Tensor, forwardTokens, type LlamaConfig } from '../src/index.js';
import { moeStats } from '../src/runtime/moe-stats.js';
import { nativeAvailable, onPath, paths, randTensor, relL2, rng } from './helpers.js';

/** Direct routing: softmax in double, sort experts by (prob desc, id asc), take k. */
function routeRef(logits: Float32Array, T: number, E: number, k: number, renorm: boolean) {
  const experts: number[] = [], weights: number[] = [];
  for (let t = 0; t < T; t++) {
    const l = Array.from(logits.subarray(t * E, (t + 1) * E));
    const mx = Math.max(...l);
    const z = l.reduce((a, v) => a + Math.exp(v - mx), 0);
    const pr = l.map((v, e) => ({ e, p: Math.exp(v - mx) / z })).sort((a, b) => b.p - a.p || a.e - b.e).slice(0, k);
    const s = pr.reduce((a, x) => a + x.p, 0);
    for (const x of pr) {
      experts.push(x.e);
      weights.push(renorm ? x.p / s : x.p);
    }
  }
  return { experts, weights };
}

describe.each(paths())('MoE routing on $label', (p) => {
  it.each([[1, 4, 1], [7, 8, 2], [33, 8, 2], [16, 60, 4], [5, 3, 3]])('T=%i E=%i k=%i matches the direct routing', (T, E, k) => {
    const r = rng(T * 100 + E);
    const logits = randTensor([T, E], r, 2);
    for (const renormalize of [true, false]) {
      const route = onPath(p, (be) => be.moeRoute(logits, k, { renormalize }));
      const want = routeRef(logits.data, T, E, k, renormalize);
      expect(Array.from(route.experts.data)).toEqual(want.experts);
      expect(relL2(route.weights.data, want.weights)).toBeLessThan(1e-6);
      // Grouping: offsets count each expert's assignments; order lists them by expert, tokens ascending.
      const offsets = Array.from(route.expertOffsets.data);
      const order = Array.from(route.order.data);
      expect(offsets[0]).toBe(0);
      expect(offsets[E]).toBe(T * k);
      for (let e = 0; e < E; e++) {
        const group = order.slice(offsets[e], offsets[e + 1]);
        expect(group.every((a) => want.experts[a] === e)).toBe(true);
        expect(group).toEqual([...group].sort((a, b) => a - b));
      }
      expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: T * k }, (_, i) => i));
    }
  });

  it('ties go to the lower expert id, deterministically', () => {
    const logits = Tensor.from('f32', [3, 5], [1, 3, 3, 0, 3, 2, 2, 2, 2, 2, 0, 0, 5, 5, 1]);
    const route = onPath(p, (be) => be.moeRoute(logits, 2));
    expect(Array.from(route.experts.data)).toEqual([1, 2, 0, 1, 2, 3]);
    expect(Array.from(route.weights.data)).toEqual([0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
  });

  it('gather then per-expert transform then weighted scatter equals the per-token mixture', () => {
    const r = rng(9);
    const T = 11, E = 6, k = 2, D = 13;
    const x = randTensor([T, D], r), logits = randTensor([T, E], r);
    const scalesPerExpert = Array.from({ length: E }, (_, e) => e + 1);
    const route = onPath(p, (be) => be.moeRoute(logits, k));
    const grouped = onPath(p, (be) => be.moeGather(x, route));
    expect(grouped.shape).toEqual([T * k, D]);
    // "Expert e" multiplies its rows by e + 1.
    const y = new Tensor('f32', [T * k, D], grouped.data.slice());
    const off = route.expertOffsets.data;
    for (let e = 0; e < E; e++) for (let i = off[e]!; i < off[e + 1]!; i++) for (let d = 0; d < D; d++) y.data[i * D + d]! *= scalesPerExpert[e]!;
    const out = onPath(p, (be) => be.moeScatter(y, route));
    const want = new Float64Array(T * D);
    for (let t = 0; t < T; t++)
      for (let j = 0; j < k; j++) {
        const e = route.experts.data[t * k + j]!, w = route.weights.data[t * k + j]!;
        for (let d = 0; d < D; d++) want[t * D + d]! += w * scalesPerExpert[e]! * x.data[t * D + d]!;
      }
    expect(relL2(out.data, want)).toBeLessThan(1e-6);
  });
});

describe('moeStats against routing recomputed from the router weights', () => {
  // A 2-layer Mixtral-style model whose attention output projections are zero: every token's
  // residual stream then depends on the token alone, so the router input of layer 0 is
  // rmsNorm(embedding) and that of layer 1 is rmsNorm of the residual after layer 0.
  const r = rng(77);
  const V = 32, dim = 16, hd = 8, ffn = 24, E = 5, k = 2;
  const config: LlamaConfig = {
    architecture: 'llama', dim, layers: 2, heads: 2, kvHeads: 1, headDim: hd, ffnDim: ffn, vocabSize: V, contextLength: 64,
    normEps: 1e-5, ropeTheta: 10000, ropeDim: hd, ropeStyle: 'neox', ropeScale: 1, slidingWindow: 0, experts: E, expertsUsed: k, normTopK: true,
  };
  const mat = (n: number, kk: number, scale = 1 / Math.sqrt(kk)) => randTensor([n, kk], r, scale);
  const norm = () => new Tensor('f32', [dim], Float32Array.from({ length: dim }, () => 0.6 + 0.8 * r()));
  const layers = Array.from({ length: 2 }, () => ({
    attnNorm: norm(), wq: mat(dim, dim), wk: mat(hd, dim), wv: mat(hd, dim), wo: new Tensor('f32', [dim, dim]), ffnNorm: norm(),
    moe: {
      router: mat(E, dim, 1), // spread: no near ties among the top-k
      gate: Array.from({ length: E }, () => mat(ffn, dim)), up: Array.from({ length: E }, () => mat(ffn, dim)), down: Array.from({ length: E }, () => mat(dim, ffn)),
    },
  }));
  const model = new LlamaModel(config, { tokEmbd: randTensor([V, dim], r), outNorm: norm(), output: mat(V, dim), layers }, getBackend(nativeAvailable ? 'cpu' : 'js'));
  const tokens = Array.from({ length: 23 }, () => Math.floor(r() * V));

  /** Residual stream (T, dim) entering layer l's FFN: the embedding, or the model's output of layer l - 1. */
  function residual(l: number): Float32Array {
    if (l === 0) {
      const x = new Float32Array(tokens.length * dim);
      tokens.forEach((t, i) => x.set(model.weights.tokEmbd.data.subarray(t * dim, (t + 1) * dim) as Float32Array, i * dim));
      return x;
    }
    const cache = new PagedKvCache({ layers: 2, kvHeads: 1, headDim: hd, numBlocks: 8 });
    cache.add(0);
    return forwardTokens(model, cache, 0, tokens, { observer: { stopAfterLayer: l - 1 } }).data.slice();
  }

  /** Switch Transformers / Mixtral (HF load_balancing_loss_func per layer): softmax router
   *  probabilities in double, top-k by (probability, lower id), counts per expert, the mean
   *  probability per expert, loss = E * sum_e (count_e / T) * meanProb_e. */
  function reference(l: number) {
    const x = residual(l), T = tokens.length;
    const w = layers[l]!.ffnNorm.data as Float32Array, router = layers[l]!.moe.router.data as Float32Array;
    const counts = new Array<number>(E).fill(0), meanProb = new Array<number>(E).fill(0);
    for (let t = 0; t < T; t++) {
      const row = x.subarray(t * dim, (t + 1) * dim);
      const rms = Math.sqrt(row.reduce((a, v) => a + v * v, 0) / dim + config.normEps);
      const h = Array.from(row, (v, d) => (v / rms) * w[d]!);
      const logits = Array.from({ length: E }, (_, e) => h.reduce((a, v, d) => a + v * router[e * dim + d]!, 0));
      const m = Math.max(...logits), z = logits.reduce((a, v) => a + Math.exp(v - m), 0);
      const p = logits.map((v) => Math.exp(v - m) / z);
      p.forEach((v, e) => (meanProb[e]! += v / T));
      const order = p.map((v, e) => [v, e] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      expect(order[k - 1]![0] - order[k]![0], 'no near tie at the top-k boundary').toBeGreaterThan(1e-4);
      for (const [, e] of order.slice(0, k)) counts[e]!++;
    }
    return { counts, meanProb, balanceLoss: E * counts.reduce((a, c, e) => a + (c / T) * meanProb[e]!, 0) };
  }

  it.each([64, 7])('counts, mean probabilities and balance loss per layer (ctx %i)', (ctx) => {
    const st = moeStats(model, tokens, { ctx });
    expect(st).toMatchObject({ tokens: tokens.length, experts: E, k });
    expect(st.layers.map((L) => L.layer)).toEqual([0, 1]);
    for (const L of st.layers) {
      const want = reference(L.layer);
      expect(L.counts, `layer ${L.layer}`).toEqual(want.counts);
      expect(relL2(L.meanProb, want.meanProb)).toBeLessThan(1e-5);
      expect(Math.abs(L.balanceLoss - want.balanceLoss) / want.balanceLoss).toBeLessThan(1e-5);
      expect(new Set(want.counts).size).toBeGreaterThan(1); // an uneven load, so the loss is not its uniform value
    }
  });
});
