/**
 * Weight quantisers producing GPTQ layers (src/tensor/gptq.ts):
 *  - RTN: round to nearest on each group's min/max grid.
 *  - GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
 *    Pre-trained Transformers", Algorithm 1): columns are quantised one at a time and the error
 *    of each is spread over the columns not yet quantised through the inverse Hessian's Cholesky
 *    factor, H = 2 X X^T / n of the layer's real inputs; blocks of 128 columns with lazy batch
 *    updates; dampening of 1% of the mean diagonal; dead inputs (zero diagonal) zeroed; optional
 *    act-order (columns by descending diag(H)), which yields a non-trivial g_idx.
 * The grid is AutoGPTQ's: per output row and group, [min(0, min w), max(0, max w)] split into
 * 2^bits - 1 steps (symmetric: +-max|w| around a fixed zero point of 2^(bits-1)); scales are
 * rounded to f16 before quantising, so the stored checkpoint reproduces exactly what was used.
 */
import type { Backend } from '../backend/backend.js';
import { f16ToF32, f32ToF16 } from '../tensor/half.js';
import { gptqGroups, packCols, packRows, type GptqBits, type GptqLinear, type GptqZeroFormat } from '../tensor/gptq.js';
import { Tensor } from '../tensor/tensor.js';

export interface QuantOptions {
  bits: GptqBits;
  /** Inputs per group, or -1 for one group per output row. */
  groupSize: number;
  /** Symmetric grid (fixed zero point 2^(bits-1)). Default false. */
  sym?: boolean;
  /** Zero-point convention of the result: v1 ('gptq', stores zero - 1; zero points are kept >= 1
   *  so every one is storable) or v2. Default v1. */
  zeroFormat?: GptqZeroFormat;
}

export interface GptqOptions extends QuantOptions {
  /** Quantise columns in order of descending Hessian diagonal. Default false. */
  actOrder?: boolean;
  /** Dampening as a fraction of the mean Hessian diagonal. Default 0.01. */
  dampPercent?: number;
  /** Columns per lazy-update block. Default 128. */
  blockSize?: number;
}

/** Per-row grid of one group: scale (f16-exact) and zero point for each of N rows. */
function findParams(W: Float32Array, N: number, K: number, c0: number, c1: number, o: Required<QuantOptions>, scale: Float32Array, zero: Int32Array): void {
  const maxq = (1 << o.bits) - 1;
  for (let n = 0; n < N; n++) {
    let lo = 0, hi = 0;
    for (let k = c0; k < c1; k++) {
      const v = W[n * K + k]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (o.sym) {
      const m = Math.max(-lo, hi);
      lo = -m;
      hi = m;
    }
    if (lo === 0 && hi === 0) {
      lo = -1;
      hi = 1;
    }
    let s = (hi - lo) / maxq, z: number;
    if (o.sym) z = (maxq + 1) / 2;
    else {
      z = Math.round(-lo / s);
      if (z < 1 && o.zeroFormat === 'v1') {
        // v1 cannot store a zero point of 0: use zero 1 with the max on the top step.
        z = 1;
        s = hi / (maxq - 1);
      }
      z = Math.min(Math.max(z, 0), maxq);
    }
    // The stored scale is f16: quantise with exactly that value (never 0).
    let sh = f16ToF32(f32ToF16(s));
    if (sh === Infinity || Number.isNaN(s))
      throw new RangeError(`quantize: row ${n} has weights in [${lo}, ${hi}]: the scale does not fit f16 (GPTQ stores f16 scales)`);
    if (!(sh > 0)) sh = 6.103515625e-5;
    scale[n] = sh;
    zero[n] = z;
  }
}

function quantValue(v: number, s: number, z: number, maxq: number): number {
  const q = Math.round(v / s) + z;
  return q < 0 ? 0 : q > maxq ? maxq : q;
}

function resolve(o: QuantOptions): Required<QuantOptions> {
  return { bits: o.bits, groupSize: o.groupSize, sym: o.sym ?? false, zeroFormat: o.zeroFormat ?? 'v1' };
}

/** Builds the checkpoint tensors from integer values (K, N) in original input order. */
function toLayer(q: Uint8Array, scales: Float32Array, zeros: Int32Array, gIdx: Int32Array, G: number, K: number, N: number, o: Required<QuantOptions>): GptqLinear {
  const stored = o.zeroFormat === 'v1' ? Int32Array.from(zeros, (z) => z - 1) : zeros;
  return {
    bits: o.bits, groupSize: o.groupSize, K, N,
    qweight: packRows(q, K, N, o.bits),
    qzeros: packCols(stored, G, N, o.bits),
    scales: Uint16Array.from(scales, (s) => f32ToF16(s)),
    gIdx, zeroFormat: o.zeroFormat,
  };
}

/** Round-to-nearest quantisation of W (N, K) with the same grid and grouping as GPTQ. */
export function quantizeRtn(W: Float32Array, N: number, K: number, opts: QuantOptions): GptqLinear {
  const o = resolve(opts);
  const gs = o.groupSize === -1 ? K : o.groupSize, G = gptqGroups(K, o.groupSize), maxq = (1 << o.bits) - 1;
  const scales = new Float32Array(G * N), zeros = new Int32Array(G * N), q = new Uint8Array(K * N);
  const s = new Float32Array(N), z = new Int32Array(N);
  for (let g = 0; g < G; g++) {
    const c0 = g * gs, c1 = Math.min(K, c0 + gs);
    findParams(W, N, K, c0, c1, o, s, z);
    scales.set(s, g * N);
    zeros.set(z, g * N);
    for (let k = c0; k < c1; k++) for (let n = 0; n < N; n++) q[k * N + n] = quantValue(W[n * K + k]!, s[n]!, z[n]!, maxq);
  }
  const gIdx = Int32Array.from({ length: K }, (_, k) => Math.floor(k / gs));
  return toLayer(q, scales, zeros, gIdx, G, K, N, o);
}

/** In-place Cholesky A = L L^T of a symmetric positive definite (n, n) matrix; returns false if not SPD. */
function cholesky(A: Float64Array, n: number): boolean {
  for (let j = 0; j < n; j++) {
    let d = A[j * n + j]!;
    for (let k = 0; k < j; k++) d -= A[j * n + k]! * A[j * n + k]!;
    if (!(d > 0)) return false;
    const ljj = Math.sqrt(d);
    A[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = A[i * n + j]!;
      const ri = i * n, rj = j * n;
      for (let k = 0; k < j; k++) s -= A[ri + k]! * A[rj + k]!;
      A[i * n + j] = s / ljj;
    }
    for (let k = j + 1; k < n; k++) A[j * n + k] = 0;
  }
  return true;
}

/**
 * The upper Cholesky factor U of H^-1 (H^-1 = U^T U), as torch.linalg.cholesky(H^-1, upper=True):
 * H = L L^T, H^-1 = L^-T L^-1, then U = chol(H^-1)^T.
 */
function inverseCholeskyUpper(H: Float64Array, n: number): Float64Array | null {
  const L = H.slice();
  if (!cholesky(L, n)) return null;
  // Li = L^-1 (lower), by forward substitution column by column.
  const Li = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    Li[j * n + j] = 1 / L[j * n + j]!;
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s += L[i * n + k]! * Li[k * n + j]!;
      Li[i * n + j] = -s / L[i * n + i]!;
    }
  }
  // Hinv = Li^T Li (symmetric).
  const Hinv = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = j; k < n; k++) s += Li[k * n + i]! * Li[k * n + j]!;
      Hinv[i * n + j] = Hinv[j * n + i] = s;
    }
  if (!cholesky(Hinv, n)) return null; // now lower M with M M^T = H^-1
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) U[i * n + j] = Hinv[j * n + i]!;
  return U;
}

export interface GptqResult {
  layer: GptqLinear;
  /** GPTQ's own objective: sum over rows of the weighted squared error, (w - q)^2 / [H^-1]_ii. */
  loss: number;
  /** Inputs whose Hessian diagonal was zero (never seen non-zero): their weights were zeroed. */
  deadColumns: number;
  /** Dampening actually added (after retries when H was not positive definite). */
  damp: number;
}

/**
 * GPTQ of W (N, K) given H (K, K) = 2 X X^T / n of the layer's inputs (float64, row-major; it is
 * modified). The lazy batch updates run through `backend.linear` (f32), the rest in float64.
 */
export function quantizeGptq(W0: Float32Array, N: number, K: number, H: Float64Array, opts: GptqOptions, backend: Backend): GptqResult {
  const o = resolve(opts);
  const maxq = (1 << o.bits) - 1;
  const gs = o.groupSize === -1 ? K : o.groupSize, G = gptqGroups(K, o.groupSize);
  const bs = opts.blockSize ?? 128;
  const W = W0.slice();
  // Dead inputs: H_ii = 0 means the input was always 0; its weights cannot matter.
  let dead = 0;
  for (let k = 0; k < K; k++)
    if (H[k * K + k] === 0) {
      dead++;
      H[k * K + k] = 1;
      for (let n = 0; n < N; n++) W[n * K + k] = 0;
    }
  // Act-order: quantise the inputs with the largest Hessian diagonal first.
  let perm: Int32Array | null = null;
  if (opts.actOrder) {
    perm = Int32Array.from({ length: K }, (_, i) => i).sort((a, b) => H[b * K + b]! - H[a * K + a]! || a - b);
    const Wp = new Float32Array(N * K), Hp = new Float64Array(K * K);
    for (let n = 0; n < N; n++) for (let j = 0; j < K; j++) Wp[n * K + j] = W[n * K + perm[j]!]!;
    for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) Hp[i * K + j] = H[perm[i]! * K + perm[j]!]!;
    W.set(Wp);
    H.set(Hp);
  }
  let mean = 0;
  for (let k = 0; k < K; k++) mean += H[k * K + k]!;
  mean /= K;
  let damp = (opts.dampPercent ?? 0.01) * mean;
  let U: Float64Array | null = null;
  for (let attempt = 0; attempt < 6 && !U; attempt++) {
    const Hd = H.slice();
    for (let k = 0; k < K; k++) Hd[k * K + k]! += damp;
    U = inverseCholeskyUpper(Hd, K);
    if (!U) damp *= 10;
  }
  if (!U) throw new Error('GPTQ: the Hessian is not positive definite even after dampening (inputs all zero or not finite?)');

  // Quantised values in quantisation order (K, N), per-group params by group.
  const qv = new Uint8Array(K * N);
  const scales = new Float32Array(G * N), zeros = new Int32Array(G * N);
  const s = new Float32Array(N), z = new Int32Array(N);
  let loss = 0;
  if (o.groupSize === -1) {
    findParams(W, N, K, 0, K, o, s, z);
    scales.set(s);
    zeros.set(z);
  }
  for (let i1 = 0; i1 < K; i1 += bs) {
    const i2 = Math.min(i1 + bs, K), cnt = i2 - i1;
    const Err = new Float32Array(N * cnt); // (N, cnt)
    for (let i = 0; i < cnt; i++) {
      const col = i1 + i;
      if (o.groupSize !== -1 && col % gs === 0) {
        findParams(W, N, K, col, Math.min(K, col + gs), o, s, z);
        scales.set(s, (col / gs) * N);
        zeros.set(z, (col / gs) * N);
      }
      const d = U[col * K + col]!;
      for (let n = 0; n < N; n++) {
        const w = W[n * K + col]!;
        const q = quantValue(w, s[n]!, z[n]!, maxq);
        qv[col * N + n] = q;
        const deq = s[n]! * (q - z[n]!);
        const e = (w - deq) / d;
        loss += ((w - deq) * (w - deq)) / (d * d) / 2;
        Err[n * cnt + i] = e;
        // Spread the error over the rest of the block.
        const row = n * K;
        for (let j = col + 1; j < i2; j++) W[row + j]! -= e * U[col * K + j]!;
      }
    }
    // Lazy batch update of the columns after the block: W[:, i2:] -= Err @ U[i1:i2, i2:].
    const rest = K - i2;
    if (rest > 0) {
      const Ut = new Float32Array(rest * cnt); // (rest, cnt) = U[i1:i2, i2:]^T
      for (let i = 0; i < cnt; i++) for (let j = 0; j < rest; j++) Ut[j * cnt + i] = U[(i1 + i) * K + i2 + j]!;
      const upd = backend.linear(new Tensor('f32', [N, cnt], Err), new Tensor('f32', [rest, cnt], Ut)).data; // (N, rest)
      for (let n = 0; n < N; n++) {
        const row = n * K + i2, ur = n * rest;
        for (let j = 0; j < rest; j++) W[row + j]! -= upd[ur + j]!;
      }
    }
  }
  // Back to the original input order: g_idx says which group each input was quantised in.
  const gIdx = new Int32Array(K);
  const q = new Uint8Array(K * N);
  for (let j = 0; j < K; j++) {
    const k = perm ? perm[j]! : j;
    gIdx[k] = Math.floor(j / gs);
    q.set(qv.subarray(j * N, (j + 1) * N), k * N);
  }
  return { layer: toLayer(q, scales, zeros, gIdx, G, K, N, o), loss, deadColumns: dead, damp };
}
