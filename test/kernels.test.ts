// Every elementwise/norm/GEMM kernel on every path (js, cpu per ISA) against float64 references.
import { describe, expect, it } from 'vitest';
import { encodeHalf, Tensor } from '../src/index.js';
import { onPath, paths, randn, randTensor, relL2, rng } from './helpers.js';
import * as ref from './reference.js';

/** Independent decoders: IEEE half from its definition; bf16 as the top half of a float32. */
function decodeF16Ref(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + m / 1024);
}
function decodeBf16Ref(h: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint32(0, h << 16);
  return dv.getFloat32(0);
}

const ALL = paths();

describe.each(ALL)('kernels on $label', (p) => {
  const r = rng(1234);

  it.each([
    [1, 1, 1], [1, 7, 5], [1, 64, 33], [3, 17, 31], [1, 300, 129], [8, 96, 100], [67, 129, 70], [64, 128, 256], [130, 65, 47],
  ])('linear f32 M=%i N=%i K=%i (with and without bias)', (M, N, K) => {
    if (p.label === 'js' && M * N * K > 3e6) return;
    const x = randTensor([M, K], r), w = randTensor([N, K], r, 0.5), b = randTensor([N], r);
    for (const bias of [null, b]) {
      const y = onPath(p, (be) => be.linear(x, w, bias));
      expect(y.shape).toEqual([M, N]);
      expect(relL2(y.data, ref.linearRef(x.data, w.data, bias?.data ?? null, M, N, K))).toBeLessThan(1e-5);
    }
  });

  it.each(['f16', 'bf16'] as const)('linear with %s weights (decode and prefill shapes)', (dt) => {
    for (const [M, N, K] of [[1, 33, 47], [1, 256, 512], [5, 40, 19], [70, 72, 130]] as const) {
      const x = randTensor([M, K], r);
      const bits = encodeHalf(randn(N * K, r, 0.5), dt);
      const w = new Tensor(dt, [N, K], bits);
      const dec = dt === 'f16' ? decodeF16Ref : decodeBf16Ref;
      const wf = Array.from(bits, dec);
      // activations are rounded to the weight type first (llama.cpp's convention)
      const xr = Array.from(encodeHalf(x.data, dt), dec);
      const y = onPath(p, (be) => be.linear(x, w));
      expect(relL2(y.data, ref.linearRef(xr, wf, null, M, N, K))).toBeLessThan(1e-5);
    }
  });

  it('linear keeps leading dimensions of x', () => {
    const x = randTensor([2, 3, 9], r), w = randTensor([4, 9], r);
    const y = onPath(p, (be) => be.linear(x, w));
    expect(y.shape).toEqual([2, 3, 4]);
    expect(relL2(y.data, ref.linearRef(x.data, w.data, null, 6, 4, 9))).toBeLessThan(1e-6);
  });

  it.each([[1, 1], [3, 7], [5, 64], [2, 4099]])('rmsNorm and layerNorm rows=%i dim=%i', (rows, dim) => {
    const x = randTensor([rows, dim], r, 3), w = randTensor([dim], r), b = randTensor([dim], r);
    const y = onPath(p, (be) => be.rmsNorm(x, w, 1e-5));
    expect(relL2(y.data, ref.rmsNormRef(x.data, w.data, dim, 1e-5))).toBeLessThan(1e-5);
    // Large offset: a one-pass variance would lose precision here.
    const xs = new Tensor('f32', [rows, dim], x.data.map((v) => v + 100));
    for (const [ww, bb] of [[w, b], [null, null], [w, null]] as const) {
      const yl = onPath(p, (be) => be.layerNorm(xs, ww, bb, 1e-5));
      expect(relL2(yl.data, ref.layerNormRef(xs.data, ww?.data ?? null, bb?.data ?? null, dim, 1e-5))).toBeLessThan(1e-4);
    }
  });

  it.each([[1, 1], [4, 13], [3, 512], [2, 1000]])('softmax / logSoftmax rows=%i cols=%i with scale', (rows, cols) => {
    const x = randTensor([rows, cols], r, 4);
    for (const scale of [1, 0.125]) {
      const s = onPath(p, (be) => be.softmax(x, scale));
      expect(relL2(s.data, ref.softmaxRef(x.data, cols, scale, false))).toBeLessThan(1e-5);
      const l = onPath(p, (be) => be.logSoftmax(x, scale));
      expect(relL2(l.data, ref.softmaxRef(x.data, cols, scale, true))).toBeLessThan(1e-5);
    }
  });

  it('softmax of a row with -Infinity entries gives them probability 0', () => {
    const x = Tensor.from('f32', [2, 3], [-Infinity, 0, 0, 1, -Infinity, 1]);
    const s = onPath(p, (be) => be.softmax(x));
    expect(Array.from(s.data)).toEqual([0, 0.5, 0.5, 0.5, 0, 0.5]);
  });

  it.each([1, 15, 16, 17, 1000])('silu, gelu (tanh, erf), swiglu on n=%i', (n) => {
    const x = randTensor([n], r, 4), u = randTensor([n], r);
    // include values where exp over/underflows
    if (n >= 4) x.data.set([-100, 100, -20, 30]);
    const xs = Array.from(x.data);
    expect(relL2(onPath(p, (be) => be.silu(x)).data, xs.map(ref.siluRef))).toBeLessThan(1e-6);
    expect(relL2(onPath(p, (be) => be.gelu(x)).data, xs.map(ref.geluTanhRef))).toBeLessThan(1e-6);
    expect(relL2(onPath(p, (be) => be.gelu(x, 'none')).data, xs.map(ref.geluErfRef))).toBeLessThan(1e-6);
    const sw = onPath(p, (be) => be.swiglu(x, u)).data;
    expect(relL2(sw, xs.map((v, i) => ref.siluRef(v) * u.data[i]!))).toBeLessThan(1e-6);
  });

  it('add / mul, same shape and broadcast over leading dims', () => {
    const a = randTensor([5, 37], r), b = randTensor([5, 37], r), c = randTensor([37], r);
    const A = Array.from(a.data);
    expect(relL2(onPath(p, (be) => be.add(a, b)).data, A.map((v, i) => Math.fround(v + b.data[i]!)))).toBe(0);
    expect(relL2(onPath(p, (be) => be.mul(a, b)).data, A.map((v, i) => Math.fround(v * b.data[i]!)))).toBe(0);
    expect(relL2(onPath(p, (be) => be.add(a, c)).data, A.map((v, i) => Math.fround(v + c.data[i % 37]!)))).toBe(0);
    expect(relL2(onPath(p, (be) => be.mul(a, c)).data, A.map((v, i) => Math.fround(v * c.data[i % 37]!)))).toBe(0);
  });

  it.each(['f32', 'f16', 'bf16'] as const)('embedding from a %s table', (dt) => {
    const vocab = 11, dim = 19;
    const vals = randn(vocab * dim, r);
    const table = Tensor.from(dt, [vocab, dim], vals);
    const dec = dt === 'f32' ? Array.from(vals) : Array.from(table.data as Uint16Array, dt === 'f16' ? decodeF16Ref : decodeBf16Ref);
    const ids = Tensor.from('i32', [2, 3], [0, 10, 5, 5, 3, 1]);
    const out = onPath(p, (be) => be.embedding(table, ids));
    expect(out.shape).toEqual([2, 3, dim]);
    const want = Array.from(ids.data).flatMap((id) => dec.slice(id * dim, (id + 1) * dim));
    expect(Array.from(out.data)).toEqual(want);
  });

  it.each([
    ['neox', 64, 64, 10000, null],
    ['interleaved', 64, 64, 10000, null],
    ['neox', 80, 32, 10000, null],
    ['interleaved', 34, 20, 500000, null],
    ['neox', 128, 128, 10000, 4],
  ] as const)('rope %s D=%i rotaryDim=%i theta=%i linear factor=%s', (style, D, rot, theta, factor) => {
    const T = 5, H = 3;
    const x = randTensor([T, H, D], r);
    const pos = Tensor.from('i32', [T], [0, 1, 7, 1000, 4095]);
    const y = onPath(p, (be) =>
      be.rope(x, pos, { style, rotaryDim: rot, theta, scaling: factor ? { type: 'linear', factor } : null }),
    );
    const want = ref.ropeRef(x.data, pos.data, T, H, D, rot, theta, factor ? 1 / factor : 1, style === 'neox');
    expect(relL2(y.data, want)).toBeLessThan(1e-6);
  });

  it('alibiSlopes: powers of two and BLOOM interleaving for other head counts', () => {
    const s8 = onPath(p, (be) => be.alibiSlopes(8)).data;
    expect(Array.from(s8)).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((i) => Math.fround(2 ** -i)));
    // 12 heads (BLOOM-style): 8 from the 8-head series, then odd powers of 2^-0.5.
    const s12 = onPath(p, (be) => be.alibiSlopes(12)).data;
    const want12 = [...[1, 2, 3, 4, 5, 6, 7, 8].map((i) => 2 ** -i), 2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5];
    expect(relL2(s12, want12)).toBeLessThan(1e-7);
    // maxBias 16 with 4 heads: 2^(-16/4 * i)
    expect(relL2(onPath(p, (be) => be.alibiSlopes(4, 16)).data, [2 ** -4, 2 ** -8, 2 ** -12, 2 ** -16])).toBeLessThan(1e-7);
  });

  it('crossEntropy (mean NLL, ignore index) and logSoftmax agree with the definition', () => {
    const R = 6, V = 50;
    const logits = randTensor([R, V], r, 3);
    const targets = Tensor.from('i32', [R], [3, -100, 49, 0, 7, -100]);
    const lsm = ref.softmaxRef(logits.data, V, 1, true);
    const rows = [0, 2, 3, 4].map((i) => -lsm[i * V + targets.data[i]!]!);
    const mean = rows.reduce((a, b) => a + b, 0) / rows.length;
    const stats = onPath(p, (be) => be.crossEntropyStats(logits, targets));
    expect(stats.count).toBe(4);
    expect(Math.abs(stats.mean - mean) / mean).toBeLessThan(1e-6);
    expect(stats.nll.data[1]).toBe(0);
    expect(onPath(p, (be) => be.crossEntropy(logits, targets, { ignoreIndex: -100 }))).toBeCloseTo(mean, 5);
    const allIgnored = Tensor.from('i32', [R], new Array(R).fill(-1));
    expect(onPath(p, (be) => be.crossEntropy(logits, allIgnored, { ignoreIndex: -1 }))).toBeNaN();
  });

  it('topK: descending values, ties to the lower index, NaN last', () => {
    const x = Tensor.from('f32', [2, 6], [1, 5, 3, 5, -2, 0, NaN, 2, 2, 7, -1, 2]);
    const { values, indices } = onPath(p, (be) => be.topK(x, 4));
    expect(Array.from(indices.data)).toEqual([1, 3, 2, 0, 3, 1, 2, 5]);
    expect(Array.from(values.data)).toEqual([5, 5, 3, 1, 7, 2, 2, 2]);
    const big = randTensor([3, 1001], r);
    const t = onPath(p, (be) => be.topK(big, 10));
    for (let row = 0; row < 3; row++) {
      const sorted = Array.from(big.data.subarray(row * 1001, (row + 1) * 1001)).map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0]);
      expect(Array.from(t.indices.data.subarray(row * 10, row * 10 + 10))).toEqual(sorted.slice(0, 10).map((e) => e[1]));
    }
  });
});
