import type { NormPlan } from '../kernels.js';

export function rmsNorm(p: NormPlan): void {
  const { x, weight, y, rows, dim, eps } = p;
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[o + i]! * x[o + i]!;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[o + i] = x[o + i]! * inv * weight![i]!;
  }
}

export function layerNorm(p: NormPlan): void {
  const { x, weight, bias, y, rows, dim, eps } = p;
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let sum = 0;
    for (let i = 0; i < dim; i++) sum += x[o + i]!;
    const mean = sum / dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += (x[o + i]! - mean) ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) {
      let v = (x[o + i]! - mean) * inv;
      if (weight) v *= weight[i]!;
      if (bias) v += bias[i]!;
      y[o + i] = v;
    }
  }
}
