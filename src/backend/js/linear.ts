import { f16DecodeTable } from '../../tensor/half.js';
import type { LinearPlan } from '../kernels.js';

/** Weights as f32: f16 through the decode table, bf16 by shifting into the high half. */
export function weightsAsF32(w: Float32Array | Uint16Array, wtype: 'f32' | 'f16' | 'bf16', start: number, len: number, out: Float32Array): Float32Array {
  if (wtype === 'f32') return (w as Float32Array).subarray(start, start + len);
  if (wtype === 'f16') {
    const t = f16DecodeTable();
    for (let i = 0; i < len; i++) out[i] = t[w[start + i]!]!;
  } else {
    const o = new Uint32Array(out.buffer, out.byteOffset, len);
    for (let i = 0; i < len; i++) o[i] = w[start + i]! << 16;
  }
  return out;
}

/** y = x w^T + b: each weight row is decoded once and dotted with every input row. */
export function linear(p: LinearPlan): void {
  const { x, w, wtype, bias, y, M, N, K } = p;
  const row = new Float32Array(K);
  for (let n = 0; n < N; n++) {
    const wr = weightsAsF32(w, wtype, n * K, K, row);
    const b = bias ? bias[n]! : 0;
    for (let m = 0; m < M; m++) {
      const xo = m * K;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      let k = 0;
      for (; k + 4 <= K; k += 4) {
        s0 += x[xo + k]! * wr[k]!;
        s1 += x[xo + k + 1]! * wr[k + 1]!;
        s2 += x[xo + k + 2]! * wr[k + 2]!;
        s3 += x[xo + k + 3]! * wr[k + 3]!;
      }
      for (; k < K; k++) s0 += x[xo + k]! * wr[k]!;
      y[m * N + n] = s0 + s1 + s2 + s3 + b;
    }
  }
}
