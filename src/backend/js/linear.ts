import { decodeHalf, encodeHalf, f16DecodeTable } from '../../tensor/half.js';
import { quantizeQ8_0 } from '../../tensor/quant.js';
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

/**
 * y = x w^T + b: each weight row is decoded once and dotted with every input row. With f16 (bf16)
 * weights the activations are first rounded to f16 (bf16), as llama.cpp does.
 */
export function linear(p: LinearPlan): void {
  if (p.wtype === 'q8_0' || p.wtype === 'q4_0') return linearQuantized(p);
  const { w, wtype, bias, y, M, N, K } = p;
  const x = wtype === 'f32' ? p.x : decodeHalf(encodeHalf(p.x, wtype), wtype);
  const row = new Float32Array(K);
  for (let n = 0; n < N; n++) {
    const wr = weightsAsF32(w as Float32Array | Uint16Array, wtype, n * K, K, row);
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

/**
 * q8_0 / q4_0 weights, llama.cpp's numerics (ggml_vec_dot_q8_0_q8_0 / _q4_0_q8_0): each input row
 * is quantised to Q8_0 blocks (quantizeQ8_0 'activations' mode), and each block contributes
 * d_w * d_x * sum(q_w * q_x) with an exact integer sum.
 */
function linearQuantized(p: LinearPlan): void {
  const { x, w, bias, y, M, N, K } = p;
  const q4 = p.wtype === 'q4_0';
  const nb = K / 32, wbytes = q4 ? 18 : 34;
  const t = f16DecodeTable();
  const wb = w as Uint8Array;
  const wv = new DataView(wb.buffer, wb.byteOffset, wb.byteLength);
  for (let m = 0; m < M; m++) {
    // The activation row as Q8_0 blocks: f16 scale, then 32 int8.
    const xb = quantizeQ8_0(x.subarray(m * K, (m + 1) * K), 'activations');
    const xv = new DataView(xb.buffer);
    const xq = new Int8Array(xb.buffer);
    const xd = Float32Array.from({ length: nb }, (_, b) => t[xv.getUint16(b * 34, true)]!);
    for (let n = 0; n < N; n++) {
      let sum = 0;
      for (let b = 0; b < nb; b++) {
        const base = (n * nb + b) * wbytes;
        const dw = t[wv.getUint16(base, true)]!;
        let si = 0;
        const xo = b * 34 + 2;
        if (q4) {
          for (let j = 0; j < 16; j++) {
            const byte = wb[base + 2 + j]!;
            si += ((byte & 15) - 8) * xq[xo + j]! + ((byte >> 4) - 8) * xq[xo + j + 16]!;
          }
        } else {
          for (let j = 0; j < 32; j++) si += ((wb[base + 2 + j]! << 24) >> 24) * xq[xo + j]!;
        }
        sum += Math.fround(si * Math.fround(dw * xd[b]!));
      }
      y[m * N + n] = sum + (bias ? bias[n]! : 0);
    }
  }
}
