// linear with q8_0 / q4_0 weights on every path (js, cpu per ISA) against an independent float64
// reference written from the definition (llama.cpp's ggml_vec_dot_q8_0_q8_0 / _q4_0_q8_0): each
// activation row is quantised to Q8_0 as llama.cpp's x86 quantize_row_q8_0 does (d = max|x| / 127
// stored as f16; q = x * (127 / max|x|) in float32, rounded to nearest with halves to even), and
// each block contributes (exact integer sum of q_w * q_x) * d_w * d_x.
import { describe, expect, it } from 'vitest';
import { loadNative } from '../src/backend/cpu/native.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/half.js';
import { Tensor } from '../src/index.js';
import { nativeAvailable, onPath, paths, randn, relL2, rng } from './helpers.js';

type QType = 'q8_0' | 'q4_0';

/** Weight blocks -> per block: f32 scale and the 32 integer values (q, or nibble - 8). */
function decodeWeights(type: QType, bytes: Uint8Array, N: number, K: number): { d: Float64Array; q: Int32Array } {
  const nb = (N * K) / 32, bb = type === 'q8_0' ? 34 : 18;
  const d = new Float64Array(nb), q = new Int32Array(N * K);
  for (let b = 0; b < nb; b++) {
    const o = b * bb;
    d[b] = f16ToF32(bytes[o]! | (bytes[o + 1]! << 8));
    for (let j = 0; j < 32; j++) {
      if (type === 'q8_0') {
        const v = bytes[o + 2 + j]!;
        q[b * 32 + j] = v >= 128 ? v - 256 : v;
      } else {
        const v = bytes[o + 2 + (j % 16)]!;
        q[b * 32 + j] = (j < 16 ? v & 15 : v >> 4) - 8;
      }
    }
  }
  return { d, q };
}

/** x86 quantize_row_q8_0 in float32 arithmetic: _mm256_round_ps(_MM_ROUND_NEAREST) = halves to even. */
function quantizeActivations(x: Float32Array, M: number, K: number): { d: Float64Array; q: Int32Array } {
  const nb = (M * K) / 32;
  const d = new Float64Array(nb), q = new Int32Array(M * K);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
    const dd = Math.fround(amax / 127), id = amax !== 0 ? Math.fround(127 / amax) : 0;
    for (let j = 0; j < 32; j++) {
      const v = Math.fround(x[b * 32 + j]! * id);
      const fl = Math.floor(v), frac = v - fl; // exact for |v| <= 128
      q[b * 32 + j] = frac > 0.5 || (frac === 0.5 && fl % 2 !== 0) ? fl + 1 : fl;
    }
    d[b] = f16ToF32(f32ToF16(dd));
  }
  return { d, q };
}

function quantLinearRef(type: QType, x: Float32Array, w: Uint8Array, bias: Float32Array | null, M: number, N: number, K: number): Float64Array {
  const wd = decodeWeights(type, w, N, K), xa = quantizeActivations(x, M, K);
  const nb = K / 32, y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let b = 0; b < nb; b++) {
        let si = 0;
        const wo = (n * nb + b) * 32, xo = (m * nb + b) * 32;
        for (let j = 0; j < 32; j++) si += wd.q[wo + j]! * xa.q[xo + j]!;
        s += si * wd.d[n * nb + b]! * xa.d[m * nb + b]!;
      }
      y[m * N + n] = s + (bias ? bias[n]! : 0);
    }
  return y;
}

/** Random activations with awkward blocks: an all-zero block, a block of exact halves. */
function activations(M: number, K: number, r: () => number): Float32Array {
  const x = randn(M * K, r);
  for (let j = 0; j < 32; j++) x[j] = 0; // an all-zero block in row 0
  if (M > 2) {
    // 127 / max|x| = 64 exactly, so x * 64 hits exact halves: they must round to even.
    x[2 * K] = 127 / 64;
    for (let j = 1; j < 32; j++) x[2 * K + j] = (j - 16 + 0.5) / 64;
  }
  return x;
}

/** Random weights with a zero block, a block at the int8 extremes (+-127) and a tiny one. */
function weights(N: number, K: number, r: () => number): Float32Array {
  const w = randn(N * K, r, 0.5);
  for (let j = 0; j < 32; j++) w[j] = 0;
  if (N * K >= 64) for (let j = 32; j < 64; j++) w[j] = j % 2 ? 1.5 : -1.5;
  if (N * K >= 96) for (let j = 64; j < 96; j++) w[j] = (j - 80) * 1e-6;
  return w;
}

/**
 * Inputs where one block dominates a row (weights of +-60000, an activation spike of 1e4): the
 * float32 accumulation error of the dominant output is then a few ulps of it, so this checks
 * each output against a float summation bound instead (the SIMD paths split a block's exact
 * integer sum into int32 lanes, each scaled in float, as llama.cpp does):
 * |y - ref| <= 4e-6 * sum over blocks of d_w * d_x * sum_j |q_w q_x|.
 */
function extremeCase(type: QType, M: number, N: number, K: number, r: () => number) {
  const x = randn(M * K, r), wf = randn(N * K, r, 0.5);
  for (let j = 32; j < 64; j++) wf[j] = j % 2 ? 60000 : -60000;
  for (let j = 96; j < 128; j++) wf[j] = -1 + (j === 100 ? -7 : 0);
  if (M > 1) x[K + 37] = 1e4;
  const w = Tensor.from(type, [N, K], wf);
  const wd = decodeWeights(type, w.data as Uint8Array, N, K), xa = quantizeActivations(x, M, K);
  const nb = K / 32, bound = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++)
      for (let b = 0; b < nb; b++) {
        let sa = 0;
        for (let j = 0; j < 32; j++) sa += Math.abs(wd.q[(n * nb + b) * 32 + j]! * xa.q[(m * nb + b) * 32 + j]!);
        bound[m * N + n] += sa * Math.abs(wd.d[n * nb + b]! * xa.d[m * nb + b]!);
      }
  return { x: new Tensor('f32', [M, K], x), w, ref: quantLinearRef(type, x, w.data as Uint8Array, null, M, N, K), bound };
}

const ALL = paths();
const SHAPES: [number, number, number][] = [];
// K = 64 and 160 add the partial 2- and 1-block tails of the 4-block AVX-512 q4_0 step; K = 8288
// (259 blocks) spans three K chunks of the prefill path.
for (const M of [1, 2, 5, 8, 13, 64, 67]) for (const N of [1, 7, 32, 129]) for (const K of [32, 64, 96, 160, 256, 4096]) SHAPES.push([M, N, K]);
SHAPES.push([67, 33, 8288], [3, 17, 8288]);

describe.each(ALL)('quantised linear on $label', (p) => {
  it.each(['q8_0', 'q4_0'] as const)('%s weights, M x N x K over the shape grid, with and without bias', (type) => {
    const r = rng(type === 'q8_0' ? 77 : 78);
    for (const [M, N, K] of SHAPES) {
      if (p.label === 'js' && M * N * K > 2e6) continue;
      const x = new Tensor('f32', [M, K], activations(M, K, r));
      const w = Tensor.from(type, [N, K], weights(N, K, r));
      const b = new Tensor('f32', [N], randn(N, r));
      for (const bias of [null, b]) {
        const y = onPath(p, (be) => be.linear(x, w, bias));
        expect(y.shape).toEqual([M, N]);
        const ref = quantLinearRef(type, x.data, w.data as Uint8Array, bias?.data ?? null, M, N, K);
        const err = relL2(y.data, ref);
        if (!(err <= 1e-6)) throw new Error(`${type} M=${M} N=${N} K=${K} bias=${!!bias}: relative L2 ${err}`);
      }
    }
  });

  it.each(['q8_0', 'q4_0'] as const)('%s with extreme magnitudes (within the float summation bound)', (type) => {
    const r = rng(11);
    for (const [M, N, K] of [[1, 9, 4096], [5, 33, 256], [67, 20, 4096]] as const) {
      const c = extremeCase(type, M, N, K, r);
      const y = onPath(p, (be) => be.linear(c.x, c.w));
      for (let i = 0; i < y.data.length; i++) {
        const err = Math.abs(y.data[i]! - c.ref[i]!);
        if (!(err <= 4e-6 * c.bound[i]!)) throw new Error(`${type} M=${M} N=${N} K=${K} output ${i}: ${y.data[i]} vs ${c.ref[i]}`);
      }
    }
  });

  it.each(['q8_0', 'q4_0'] as const)('%s: an all-zero activation row gives exactly the bias', (type) => {
    const r = rng(5);
    const M = 3, N = 9, K = 64;
    const w = Tensor.from(type, [N, K], randn(N * K, r));
    const b = new Tensor('f32', [N], randn(N, r));
    const y = onPath(p, (be) => be.linear(new Tensor('f32', [M, K]), w, b));
    for (let m = 0; m < M; m++) expect(Array.from(y.data.subarray(m * N, (m + 1) * N))).toEqual(Array.from(b.data));
  });

  it.each(['q8_0', 'q4_0'] as const)('%s: one-hot weights read back every quantised activation exactly', (type) => {
    // Row n of w is 1 at column n: y[m][n] = q_x[m][n] * d_x * (127 * f16(1/127) or 1), so any
    // activation quantised differently from quantize_row_q8_0 (rounding, ties, scale) shows.
    const r = rng(8);
    const K = 64, N = 64;
    const wv = new Float32Array(N * K);
    for (let n = 0; n < N; n++) wv[n * K + n] = 1;
    const w = Tensor.from(type, [N, K], wv);
    for (const M of [3, 13]) {
      const xv = randn(M * K, r, 3);
      for (let m = 0; m < M; m += 2) {
        xv[m * K] = 127; // 127 / max|x| = 1: the other values, integers + 0.5, are exact ties
        for (let j = 1; j < 32; j++) xv[m * K + j] = Math.floor(r() * 250) - 125 + 0.5;
      }
      const y = onPath(p, (be) => be.linear(new Tensor('f32', [M, K], xv), w));
      const ref = quantLinearRef(type, xv, w.data as Uint8Array, null, M, N, K);
      for (let i = 0; i < M * N; i++)
        if (!(Math.abs(y.data[i]! - ref[i]!) <= 1e-6 * Math.abs(ref[i]!))) throw new Error(`M=${M} output ${i}: ${y.data[i]} vs ${ref[i]}`);
    }
  });

  it.each(['q8_0', 'q4_0'] as const)('%s: a NaN activation makes its row NaN, other rows stay finite', (type) => {
    const r = rng(6);
    const M = 3, N = 5, K = 96;
    const w = Tensor.from(type, [N, K], randn(N * K, r));
    const xv = randn(M * K, r);
    xv[K + 40] = NaN;
    const y = onPath(p, (be) => be.linear(new Tensor('f32', [M, K], xv), w));
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) expect(Number.isNaN(y.data[m * N + n]!)).toBe(m === 1);
  });

  it('q8_0 raw bytes of -128 (never produced by the quantiser) are exact', () => {
    const N = 3, K = 64;
    const bytes = new Uint8Array(N * 2 * 34);
    const r = rng(9);
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(r() * 256);
    for (let b = 0; b < N * 2; b++) {
      bytes[b * 34] = 0x00; bytes[b * 34 + 1] = 0x3c; // d = 1
      bytes[b * 34 + 2 + (b % 32)] = 0x80; // -128
    }
    const w = new Tensor('q8_0', [N, K], bytes);
    const x = new Tensor('f32', [2, K], randn(2 * K, r));
    const y = onPath(p, (be) => be.linear(x, w));
    expect(relL2(y.data, quantLinearRef('q8_0', x.data, bytes, null, 2, N, K))).toBeLessThan(1e-6);
  });
});

describe('quantised linear: bad inputs', () => {
  it('K not a multiple of 32 is a RangeError when the tensor is built', () => {
    expect(() => Tensor.from('q8_0', [4, 48], new Float32Array(4 * 48))).toThrow(RangeError);
    expect(() => new Tensor('q4_0', [4, 40])).toThrow(RangeError);
  });

  it.skipIf(!nativeAvailable)('the native binding checks the block buffer length and K', () => {
    const n = loadNative()!;
    const M = 2, N = 3, K = 64;
    const x = new Float32Array(M * K), y = new Float32Array(M * N);
    // Right sizes work.
    n.linear(x, new Uint8Array(N * 2 * 34), 6, null, y, M, N, K);
    n.linear(x, new Uint8Array(N * 2 * 18), 7, null, y, M, N, K);
    expect(() => n.linear(x, new Uint8Array(N * 2 * 34 - 1), 6, null, y, M, N, K)).toThrow(/'w'/);
    expect(() => n.linear(x, new Uint8Array(N * 2 * 34), 7, null, y, M, N, K)).toThrow(/'w'/);
    expect(() => n.linear(x, new Uint16Array(N * 2 * 17), 6, null, y, M, N, K)).toThrow(/'w'/);
    const x48 = new Float32Array(M * 48);
    expect(() => n.linear(x48, new Uint8Array(N * 34), 6, null, y, M, N, 48)).toThrow(/K = 48/);
    expect(() => n.linear(x, new Uint8Array(N * 2 * 34), 8, null, y, M, N, K)).toThrow(/wtype/);
  });
});
