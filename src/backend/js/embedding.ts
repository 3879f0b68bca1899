import type { AlibiPlan, EmbeddingPlan, RopePlan } from '../kernels.js';
import { dequantizeBlocks } from '../../tensor/quant.js';
import { weightsAsF32 } from './linear.js';

export function embedding(p: EmbeddingPlan): void {
  const { table, dtype, dim, ids, out } = p;
  if (dtype === 'q8_0' || dtype === 'q4_0') return embeddingBlocks(table as Uint8Array, dtype, dim, ids, out);
  for (let i = 0; i < ids.length; i++) {
    const dst = out.subarray(i * dim, (i + 1) * dim);
    const row = weightsAsF32(table as Float32Array | Uint16Array, dtype, ids[i]! * dim, dim, dst);
    if (row !== dst) dst.set(row);
  }
}

/** Rows of a Q8_0 / Q4_0 table: only each looked-up row's dim / 32 blocks are dequantised, as the whole table would be. */
function embeddingBlocks(table: Uint8Array, dtype: 'q8_0' | 'q4_0', dim: number, ids: Int32Array, out: Float32Array): void {
  const rowBytes = (dim / 32) * (dtype === 'q8_0' ? 34 : 18);
  for (let i = 0; i < ids.length; i++) out.set(dequantizeBlocks(dtype, table.subarray(ids[i]! * rowBytes, (ids[i]! + 1) * rowBytes), dim), i * dim);
}

/** RoPE with ggml's extensions (freq_factors, YaRN ramp, attention factor); angles in float64. */
export function rope(p: RopePlan): void {
  const { x, y, positions, T, H, D, rotDim, neox, attnFactor } = p;
  const half = rotDim / 2;
  const freq = ropeFrequencies(p);
  const cos = new Float64Array(half), sin = new Float64Array(half);
  for (let t = 0; t < T; t++) {
    const pos = positions[t]!;
    for (let i = 0; i < half; i++) {
      cos[i] = Math.cos(pos * freq[i]!) * attnFactor;
      sin[i] = Math.sin(pos * freq[i]!) * attnFactor;
    }
    for (let h = 0; h < H; h++) {
      const o = (t * H + h) * D;
      for (let i = 0; i < half; i++) {
        const i0 = o + (neox ? i : 2 * i), i1 = o + (neox ? i + half : 2 * i + 1);
        const a = x[i0]!, b = x[i1]!;
        y[i0] = a * cos[i]! - b * sin[i]!;
        y[i1] = a * sin[i]! + b * cos[i]!;
      }
      for (let d = rotDim; d < D; d++) y[o + d] = x[o + d]!;
    }
  }
}

/** Angle per position of each rotated pair (rotDim/2): ggml's rope_yarn with freq_factors, the mscale left to attnFactor. */
export function ropeFrequencies(p: Pick<RopePlan, 'rotDim' | 'theta' | 'freqScale' | 'freqFactors' | 'extFactor' | 'corrLow' | 'corrHigh'>): Float64Array {
  const { rotDim, theta, freqScale, freqFactors, extFactor, corrLow, corrHigh } = p;
  const half = rotDim / 2;
  const out = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    const extrap = Math.pow(theta, (-2 * i) / rotDim) / (freqFactors ? freqFactors[i]! : 1);
    const interp = freqScale * extrap;
    if (extFactor === 0) out[i] = interp;
    else {
      const mix = (1 - Math.min(1, Math.max(0, (i - corrLow) / Math.max(0.001, corrHigh - corrLow)))) * extFactor;
      out[i] = interp * (1 - mix) + extrap * mix;
    }
  }
  return out;
}

/** ALiBi slopes: powers of 2^(-maxBias/m) for the first m = 2^floor(log2 n) heads, then odd
 *  powers of 2^(-maxBias/2m) (Press et al. 2022; BLOOM for non-power-of-two counts). */
export function alibiSlopes(p: AlibiPlan): void {
  const { nHeads, maxBias, out } = p;
  const m = 2 ** Math.floor(Math.log2(nHeads));
  const m0 = 2 ** (-maxBias / m), m1 = 2 ** (-maxBias / 2 / m);
  for (let h = 0; h < nHeads; h++) out[h] = h < m ? m0 ** (h + 1) : m1 ** (2 * (h - m) + 1);
}
