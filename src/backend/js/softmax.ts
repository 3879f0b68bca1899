import type { CrossEntropyPlan, SoftmaxPlan, TopKPlan } from '../kernels.js';

export function softmax(p: SoftmaxPlan): void {
  const { x, y, rows, cols, scale, log } = p;
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let mx = -Infinity;
    for (let i = 0; i < cols; i++) mx = Math.max(mx, x[o + i]! * scale);
    if (mx === -Infinity) mx = 0;
    let sum = 0;
    for (let i = 0; i < cols; i++) sum += Math.exp(x[o + i]! * scale - mx);
    if (log) {
      const lse = mx + Math.log(sum);
      for (let i = 0; i < cols; i++) y[o + i] = x[o + i]! * scale - lse;
    } else {
      // sum is 0 only for an all -Infinity row (zeros out); NaN (a NaN or +Infinity in the row)
      // makes the whole row NaN, as the native kernel does.
      const inv = sum === 0 ? 0 : 1 / sum;
      for (let i = 0; i < cols; i++) y[o + i] = Math.exp(x[o + i]! * scale - mx) * inv;
    }
  }
}

export function crossEntropy(p: CrossEntropyPlan): { sum: number; count: number } {
  const { logits, rows, cols, targets, ignoreIndex, nll } = p;
  let sum = 0, count = 0;
  for (let r = 0; r < rows; r++) {
    const t = targets[r]!;
    if (t === ignoreIndex) { nll[r] = 0; continue; }
    const o = r * cols;
    let mx = -Infinity;
    for (let i = 0; i < cols; i++) mx = Math.max(mx, logits[o + i]!);
    let s = 0;
    for (let i = 0; i < cols; i++) s += Math.exp(logits[o + i]! - mx);
    const l = mx + Math.log(s) - logits[o + t]!;
    nll[r] = l;
    sum += l;
    count++;
  }
  return { sum, count };
}

export function topK(p: TopKPlan): void {
  const { x, rows, cols, k, values, indices } = p;
  const idx = new Int32Array(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let i = 0; i < cols; i++) idx[i] = i;
    // NaN last; equal values keep the lower index first (sort is stable, indices ascending).
    const sorted = Array.from(idx).sort((a, b) => {
      const va = x[o + a]!, vb = x[o + b]!;
      const na = Number.isNaN(va), nb = Number.isNaN(vb);
      if (na || nb) return na === nb ? a - b : na ? 1 : -1;
      return vb - va || a - b;
    });
    for (let j = 0; j < k; j++) {
      values[r * k + j] = x[o + sorted[j]!]!;
      indices[r * k + j] = sorted[j]!;
    }
  }
}
