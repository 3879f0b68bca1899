// GPTQ layers and integer-weight kernels.
//  - Unpacking and dequantisation against test/fixtures/gptq (packed by AutoGPTQ's published loop
//    from known integers in scripts/fixtures/make_gptq_layers.py, independently of tessera).
//  - linear with IntWeight on every path against float64 references written from the definition:
//    (a) dequantise then multiply, within the int8-activation error; (b) the documented numerics
//    (activations quantised to int8 per block of 32, exact integer dots), tightly.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadSafetensor, readSafetensorsHeader } from '../src/formats/safetensors.js';
import {
  dequantizeGptq, gptqZeros, packCols, packRows, unpackRows, validateGptq, GptqFormatError, type GptqLinear, type GptqBits,
} from '../src/tensor/gptq.js';
import { f32ToF16 } from '../src/tensor/half.js';
import { IntWeight, gptqKernelSupport } from '../src/tensor/int-weight.js';
import { Tensor } from '../src/index.js';
import { onPath, paths, randn, relL2, rng } from './helpers.js';

const FIX = new URL('./fixtures/gptq/', import.meta.url).pathname;
const META = JSON.parse(readFileSync(FIX + 'layers.json', 'utf8')) as Record<string, { K: number; N: number; bits: GptqBits; group_size: number; sym: boolean; desc_act: boolean; checkpoint_format: string }>;
const FILE = readSafetensorsHeader(FIX + 'layers.safetensors');
const get = (name: string) => loadSafetensor(FILE.tensors.get(name)!);

function fixtureLayer(v: string): { layer: GptqLinear; q: Int32Array; zeros: Int32Array; expected: Float32Array } {
  const m = META[v]!;
  const layer: GptqLinear = {
    bits: m.bits, groupSize: m.group_size, K: m.K, N: m.N,
    qweight: get(`${v}.qweight`).data as Int32Array,
    qzeros: get(`${v}.qzeros`).data as Int32Array,
    scales: get(`${v}.scales`).data as Uint16Array,
    gIdx: get(`${v}.g_idx`).data as Int32Array,
    zeroFormat: m.checkpoint_format === 'gptq_v2' ? 'v2' : 'v1',
  };
  return { layer, q: get(`${v}.intweight`).data as Int32Array, zeros: get(`${v}.zeros`).data as Int32Array, expected: get(`${v}.expected`).data as Float32Array };
}

describe('GPTQ checkpoint tensors (AutoGPTQ packing fixtures)', () => {
  for (const v of Object.keys(META)) {
    it(`${v}: unpacks the known integers and zero points, dequantises exactly`, () => {
      const { layer, q, zeros, expected } = fixtureLayer(v);
      validateGptq(layer, v);
      const u = unpackRows(layer.qweight, layer.K, layer.N, layer.bits);
      expect(Array.from(u)).toEqual(Array.from(q));
      expect(Array.from(gptqZeros(layer))).toEqual(Array.from(zeros));
      expect(Array.from(dequantizeGptq(layer))).toEqual(Array.from(expected));
      // Packing the integers again gives the checkpoint's words bit for bit.
      expect(Array.from(packRows(u, layer.K, layer.N, layer.bits))).toEqual(Array.from(layer.qweight));
      const stored = Int32Array.from(zeros, (z) => z - (layer.zeroFormat === 'v1' ? 1 : 0));
      expect(Array.from(packCols(stored, zeros.length / layer.N, layer.N, layer.bits))).toEqual(Array.from(layer.qzeros));
      if (layer.bits === 4 || layer.bits === 8) {
        const w = IntWeight.fromGptq(layer);
        expect(Array.from(w.dequantize())).toEqual(Array.from(expected));
        expect(w.label).toContain(META[v]!.desc_act ? 'act-order' : `int${layer.bits}`);
      } else {
        expect(gptqKernelSupport(layer)).toMatch(/no packed kernel/);
      }
    });
  }
  it('reading v2 zero points as v1 shifts every zero point by one', () => {
    const { layer, zeros } = fixtureLayer('int4_perchannel_asym_v2');
    const asV1 = gptqZeros({ ...layer, zeroFormat: 'v1' });
    expect(Array.from(asV1)).toEqual(Array.from(zeros, (z) => z + 1));
  });
  it('bad layers give GptqFormatError naming the problem', () => {
    const { layer } = fixtureLayer('int4_g32_sym');
    expect(() => validateGptq({ ...layer, bits: 5 as GptqBits }, 'q_proj')).toThrow(/q_proj: bits = 5 is not supported/);
    expect(() => validateGptq({ ...layer, qweight: layer.qweight.subarray(8) }, 'q_proj')).toThrow(/expected qweight to have 512 elements but it has 504/);
    expect(() => validateGptq({ ...layer, scales: layer.scales.subarray(32) }, 'q_proj')).toThrow(/scales/);
    expect(() => validateGptq({ ...layer, gIdx: layer.gIdx!.subarray(1) })).toThrow(/g_idx to have 128/);
    expect(() => validateGptq({ ...layer, gIdx: Int32Array.from(layer.gIdx!, (g) => g + 3) })).toThrow(/names group 6/);
    expect(() => validateGptq({ ...layer, K: 100 })).toThrow(GptqFormatError);
    // A group starting off a 32-input boundary cannot run on the integer kernels.
    const g16 = Int32Array.from({ length: 128 }, (_, k) => Math.floor(k / 16) % 4);
    expect(gptqKernelSupport({ ...layer, gIdx: g16 })).toBeNull(); // sorted: groups of 32
    const g48 = Int32Array.from({ length: 128 }, (_, k) => (k < 48 ? 0 : k < 96 ? 1 : k < 112 ? 2 : 3));
    expect(gptqKernelSupport({ ...layer, gIdx: g48 })).toMatch(/group 1 starts at input 48/);
    expect(() => IntWeight.fromGptq({ ...layer, gIdx: g48 })).toThrow(/not a multiple of 32/);
  });
});

// ---- kernels ------------------------------------------------------------------------------------

/** A random GPTQ layer from integers (packed with the tested packers, whose bits the fixtures pin). */
function randomLayer(K: number, N: number, bits: 4 | 8, groupSize: number, sym: boolean, actOrder: boolean, r: () => number): GptqLinear {
  const maxq = (1 << bits) - 1, gs = groupSize === -1 ? K : groupSize, G = Math.ceil(K / gs);
  let gIdx = Int32Array.from({ length: K }, (_, k) => Math.floor(k / gs));
  if (actOrder) {
    const perm = Array.from({ length: K }, (_, i) => i);
    for (let i = K - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [perm[i], perm[j]] = [perm[j]!, perm[i]!];
    }
    const g = new Int32Array(K);
    perm.forEach((k, i) => (g[k] = Math.floor(i / gs)));
    gIdx = g;
  }
  const q = Uint8Array.from({ length: K * N }, () => Math.floor(r() * (maxq + 1)));
  const z = Int32Array.from({ length: G * N }, () => (sym ? (maxq + 1) / 2 : Math.floor(r() * (maxq + 1))));
  const scales = Uint16Array.from({ length: G * N }, () => f32ToF16(0.002 + 0.02 * r()));
  return { bits, groupSize, K, N, qweight: packRows(q, K, N, bits), qzeros: packCols(z, G, N, bits), scales, gIdx, zeroFormat: 'v2' };
}

/** f64 reference of the documented numerics: per-32-block int8 activations, exact integer dots. */
function intReference(x: Float32Array, layer: GptqLinear, M: number, bias: Float32Array | null): Float64Array {
  const { K, N } = layer;
  const wf = dequantizeGptq(layer); // (N, K); equal to scale * (q - z) exactly in f32
  // Group members in sorted order (act-order moves inputs): the kernel quantises the inputs in that order.
  const g = layer.gIdx!;
  const order = Array.from({ length: K }, (_, k) => k).sort((a, b) => g[a]! - g[b]! || a - b);
  const Kp = Math.ceil(K / 32) * 32;
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    const xs = new Float64Array(Kp), src = new Int32Array(Kp).fill(-1);
    for (let i = 0; i < K; i++) {
      xs[i] = x[m * K + order[i]!]!;
      src[i] = order[i]!;
    }
    const xdq = new Float64Array(K); // dequantised activations, by original input
    for (let b = 0; b < Kp / 32; b++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(xs[b * 32 + j]!));
      const d = Math.fround(amax / 127), id = amax ? Math.fround(127 / amax) : 0;
      for (let j = 0; j < 32; j++) {
        const v = Math.fround(xs[b * 32 + j]! * id);
        const fl = Math.floor(v), fr = v - fl;
        const qv = fr > 0.5 || (fr === 0.5 && fl % 2 !== 0) ? fl + 1 : fl;
        if (src[b * 32 + j]! >= 0) xdq[src[b * 32 + j]!] = qv * d;
      }
    }
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += wf[n * K + k]! * xdq[k]!;
      y[m * N + n] = s + (bias ? bias[n]! : 0);
    }
  }
  return y;
}

function denseReference(x: Float32Array, w: Float32Array, M: number, N: number, K: number, bias: Float32Array | null): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k]! * w[n * K + k]!;
      y[m * N + n] = s + (bias ? bias[n]! : 0);
    }
  return y;
}

const ALL = paths();
describe('linear with GPTQ int4 / int8 weights, every path', () => {
  const cases: [string, number, number, 4 | 8, number, boolean, boolean][] = [];
  for (const bits of [4, 8] as const)
    for (const gs of [32, 64, 128, -1])
      for (const sym of [true, false]) cases.push([`int${bits} g${gs} ${sym ? 'sym' : 'asym'}`, 256, 40, bits, gs, sym, false]);
  cases.push(['int4 g128 act-order, N = 24 (partial tile)', 384, 24, 4, 128, false, true]);
  cases.push(['int8 g32 act-order', 128, 20, 8, 32, true, true]);
  cases.push(['int4 g128, K = 200 (partial last block)', 200, 64, 4, 128, false, false]);
  cases.push(['int4 g32 act-order, wide', 512, 104, 4, 32, false, true]);
  let seed = 1;
  for (const [label, K, N, bits, gs, sym, act] of cases) {
    const r = rng(seed++);
    const layer = randomLayer(K, N, bits, gs, sym, act, r);
    const wq = IntWeight.fromGptq(layer);
    const wf = dequantizeGptq(layer);
    for (const M of [1, 3, 9, 70]) {
      const x = randn(M * K, r);
      if (M >= 3) for (let k = 0; k < K; k++) x[2 * K + k] = 0; // an all-zero row
      const bias = M === 3 ? randn(N, r) : null;
      const exact = intReference(x, layer, M, bias);
      const dense = denseReference(x, wf, M, N, K, bias);
      for (const p of ALL) {
        it(`${label}, M=${M} on ${p.label}`, () => {
          const y = onPath(p, (be) => be.linear(new Tensor('f32', [M, K], x), wq, bias ? new Tensor('f32', [N], bias) : null));
          expect(y.shape).toEqual([M, N]);
          expect(relL2(y.data, exact)).toBeLessThan(2e-6);
          // Against dequantise-then-multiply: int8 activations per block of 32 cost ~0.6% relative.
          expect(relL2(y.data, dense)).toBeLessThan(2.5e-2);
          if (M >= 3) for (let n = 0; n < N; n++) expect(y.data[2 * N + n]).toBe(bias ? Math.fround(bias[n]!) : 0);
        });
      }
    }
  }

  it('int8 per-channel weights (i8 + f32 scales)', () => {
    const r = rng(77);
    const N = 33, K = 70, M = 5;
    const q = Int8Array.from({ length: N * K }, () => Math.floor(r() * 255) - 127);
    q[5] = -128;
    const s = Float32Array.from({ length: N }, () => 0.001 + r() * 0.01);
    const w = IntWeight.fromInt8(q, s, N, K);
    const wf = Float32Array.from(q, (v, i) => v * s[Math.floor(i / K)]!);
    expect(Array.from(w.dequantize())).toEqual(Array.from(wf));
    const x = randn(M * K, r);
    const dense = denseReference(x, wf, M, N, K, null);
    for (const p of ALL) {
      const y = onPath(p, (be) => be.linear(new Tensor('f32', [M, K], x), w));
      expect(relL2(y.data, dense), p.label).toBeLessThan(1e-2);
    }
    const yj = onPath(ALL[0]!, (be) => be.linear(new Tensor('f32', [M, K], x), w)).data;
    for (const p of ALL.slice(1)) expect(relL2(onPath(p, (be) => be.linear(new Tensor('f32', [M, K], x), w)).data, yj), p.label).toBeLessThan(2e-6);
  });

  it('NaN in a block poisons only that row; shape errors name the operand', () => {
    const r = rng(5);
    const layer = randomLayer(64, 16, 4, 32, false, false, r);
    const w = IntWeight.fromGptq(layer);
    const x = randn(2 * 64, r);
    x[3] = NaN;
    for (const p of ALL) {
      const y = onPath(p, (be) => be.linear(new Tensor('f32', [2, 64], x), w)).data;
      expect(Number.isNaN(y[0]), p.label).toBe(true);
      expect(y.subarray(16).every(Number.isFinite), p.label).toBe(true);
      expect(() => onPath(p, (be) => be.linear(new Tensor('f32', [2, 32]), w))).toThrow(/x's last dimension to equal w's K = 64 but received 32/);
      expect(() => onPath(p, (be) => be.linear(new Tensor('f32', [2, 64]), w, new Tensor('f32', [15])))).toThrow(/bias/);
    }
    w.dispose();
    expect(() => ALL[0]!.backend.linear(new Tensor('f32', [2, 64]), w)).toThrow(/disposed/);
  });
});

describe('Q4_0 repacked into column tiles (IntWeight.fromQ4_0)', () => {
  for (const [M, N, K] of [[1, 37, 64], [3, 16, 4096], [9, 100, 160], [70, 33, 256]] as const) {
    it(`dequantises exactly and computes what the q4_0 kernels compute, M=${M} N=${N} K=${K}, every path`, () => {
      const r = rng(M * 1000 + N + K);
      const w = Tensor.from('q4_0', [N, K], randn(N * K, r, 0.3));
      const iw = IntWeight.fromQ4_0(w.data as Uint8Array, N, K);
      expect(Array.from(iw.dequantize())).toEqual(Array.from(w.toFloat32()));
      const x = randn(M * K, r);
      if (M >= 3) for (let j = 0; j < 32; j++) x[2 * K + j] = (j - 16 + 0.5) / 64; // exact halves round to even
      const X = new Tensor('f32', [M, K], x);
      for (const p of ALL) {
        // The q4_0 Tensor path is llama.cpp's numerics (tested against a float64 reference in
        // quant-kernels.test.ts); the repacked weight must compute the same values.
        const ref = onPath(p, (be) => be.linear(X, w)).data;
        const got = onPath(p, (be) => be.linear(X, iw)).data;
        expect(relL2(got, ref), p.label).toBeLessThan(2e-6);
      }
    });
  }
  it('rejects bad shapes', () => {
    expect(() => IntWeight.fromQ4_0(new Uint8Array(18), 1, 48)).toThrow(/multiple of 32/);
    expect(() => IntWeight.fromQ4_0(new Uint8Array(17), 1, 32)).toThrow(/Expected 18 bytes/);
  });
});
