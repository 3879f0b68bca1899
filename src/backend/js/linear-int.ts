import { f16DecodeTable, f16ToF32, f32ToF16 } from '../../tensor/half.js';
import { rintEven } from '../../tensor/quant.js';
import type { LinearIntPlan } from '../kernels.js';

/**
 * Integer weights (src/tensor/int-weight.ts), the native kernel's quantisation (bit-identical int8
 * activations and integer dots; the float combination is in f64 here, f32 there): each activation row is
 * quantised to int8 per block of 32 (of the permuted, padded inputs), the integer dots per block
 * are exact, and y = colScale * sum_g scale * (sum_b d_b dot_b - zero * sum_b d_b sum(q_x)) + bias.
 */
export function linearInt(p: LinearIntPlan): void {
  const { x, bias, y, M, N, K } = p;
  const { bits, qweight, perm, groupBlocks, meta, colScale, fixedZero, roundDxF16 } = p.w;
  const mw = fixedZero >= 0 ? 16 : 32;
  const G = groupBlocks.length - 1;
  const Kp = Math.ceil(K / 32) * 32, nb = Kp / 32, rows = (Kp * bits) / 32, per = 32 / bits, mask = (1 << bits) - 1;
  const tiles = Math.ceil(N / 16);
  const h = f16DecodeTable();
  const xq = new Int8Array(Kp), xd = new Float32Array(nb);
  const dot = new Int32Array(16);
  for (let m = 0; m < M; m++) {
    const xo = m * K;
    for (let b = 0; b < nb; b++) {
      let amax = 0, finite = true;
      for (let j = 0; j < 32; j++) {
        const k = b * 32 + j;
        const a = Math.abs(k < K ? x[xo + (perm ? perm[k]! : k)]! : 0);
        if (!(a <= 3.4028234663852886e38)) finite = false;
        else if (a > amax) amax = a;
      }
      if (!finite) {
        xd[b] = NaN;
        xq.fill(0, b * 32, b * 32 + 32);
        continue;
      }
      const id = amax !== 0 ? Math.fround(127 / amax) : 0;
      xd[b] = roundDxF16 ? f16ToF32(f32ToF16(Math.fround(amax / 127))) : Math.fround(amax / 127);
      for (let j = 0; j < 32; j++) {
        const k = b * 32 + j;
        xq[k] = rintEven(Math.fround((k < K ? x[xo + (perm ? perm[k]! : k)]! : 0) * id));
      }
    }
    for (let t = 0; t < tiles; t++) {
      const acc = new Float64Array(16);
      for (let g = 0; g < G; g++) {
        const mo = (t * G + g) * mw;
        let sx = 0;
        const gacc = new Float64Array(16);
        for (let b = groupBlocks[g]!; b < groupBlocks[g + 1]!; b++) {
          dot.fill(0);
          let qs = 0;
          for (let kk = b * 32; kk < b * 32 + 32; kk++) {
            const xv = xq[kk]!;
            qs += xv;
            if (xv === 0) continue;
            const row = (t * rows + Math.floor(kk / per)) * 16, shift = (kk % per) * bits;
            for (let l = 0; l < 16; l++) dot[l]! += ((qweight[row + l]! >>> shift) & mask) * xv;
          }
          sx += xd[b]! * qs;
          for (let l = 0; l < 16; l++) gacc[l]! += xd[b]! * dot[l]!;
        }
        for (let l = 0; l < 16; l++) acc[l]! += h[meta[mo + l]!]! * (gacc[l]! - (fixedZero >= 0 ? fixedZero : h[meta[mo + 16 + l]!]!) * sx);
      }
      for (let l = 0; l < 16 && t * 16 + l < N; l++) {
        const n = t * 16 + l;
        y[m * N + n] = acc[l]! * (colScale ? colScale[n]! : 1) + (bias ? bias[n]! : 0);
      }
    }
  }
}
