// moeRoute / moeGather / moeScatter against a direct implementation written here.
import { describe, expect, it } from 'vitest';
import { Tensor } from '../src/index.js';
import { onPath, paths, randTensor, relL2, rng } from './helpers.js';

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
