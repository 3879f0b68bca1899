import type { MoeGatherPlan, MoeRoutePlan, MoeScatterPlan } from '../kernels.js';

export function moeRoute(p: MoeRoutePlan): void {
  const { logits, T, E, k, renormalize, weights, experts, expertOffsets, order } = p;
  const prob = new Float64Array(E);
  const taken = new Uint8Array(E);
  for (let t = 0; t < T; t++) {
    let mx = -Infinity;
    for (let e = 0; e < E; e++) mx = Math.max(mx, logits[t * E + e]!);
    let sum = 0;
    for (let e = 0; e < E; e++) sum += prob[e] = Math.exp(logits[t * E + e]! - mx);
    taken.fill(0);
    let sel = 0;
    for (let j = 0; j < k; j++) {
      let best = -1;
      for (let e = 0; e < E; e++) if (!taken[e] && (best < 0 || prob[e]! > prob[best]!)) best = e;
      taken[best] = 1;
      experts[t * k + j] = best;
      weights[t * k + j] = prob[best]! / sum;
      sel += prob[best]! / sum;
    }
    if (renormalize) for (let j = 0; j < k; j++) weights[t * k + j] = weights[t * k + j]! / sel;
  }
  expertOffsets.fill(0);
  for (let a = 0; a < T * k; a++) expertOffsets[experts[a]! + 1]!++;
  for (let e = 0; e < E; e++) expertOffsets[e + 1]! += expertOffsets[e]!;
  const fill = expertOffsets.slice(0, E);
  for (let a = 0; a < T * k; a++) order[fill[experts[a]!]!++] = a;
}

export function moeGather(p: MoeGatherPlan): void {
  const { x, D, k, order, out } = p;
  for (let i = 0; i < order.length; i++) {
    const t = Math.floor(order[i]! / k);
    out.set(x.subarray(t * D, (t + 1) * D), i * D);
  }
}

export function moeScatter(p: MoeScatterPlan): void {
  const { y, order, weights, T, k, D, out } = p;
  const rowOf = new Int32Array(T * k);
  for (let i = 0; i < order.length; i++) rowOf[order[i]!] = i;
  out.fill(0);
  for (let t = 0; t < T; t++)
    for (let j = 0; j < k; j++) {
      const w = weights[t * k + j]!, r = rowOf[t * k + j]! * D;
      for (let d = 0; d < D; d++) out[t * D + d]! += w * y[r + d]!;
    }
}
