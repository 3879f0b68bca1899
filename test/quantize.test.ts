// GPTQ / RTN quantisers, GPTQ checkpoints and `tessera quantize`.
//  - GPTQ's lazy-batch Cholesky form against an independent float64 reference written from the
//    paper's sequential form (OBQ update with the explicit inverse Hessian, row/column removal).
//  - GPTQ with H = c * I has nothing to trade off: it must equal RTN exactly.
//  - On correlated inputs GPTQ's reconstruction error ||(W - Q) X^T|| must beat RTN's.
//  - Checkpoints: write -> read gives identical tensors; v1 / v2 zero points; bad files.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/backend/index.js';
import { gptqTensors, readGptqConfig, readGptqLinear } from '../src/formats/gptq-checkpoint.js';
import { readSafetensorsHeader, writeSafetensors } from '../src/formats/safetensors.js';
import { readGGUF } from '../src/formats/gguf.js';
import { quantizeGptq, quantizeRtn } from '../src/quant/gptq.js';
import { dequantizeGptq, gptqZeros, unpackRows, type GptqLinear } from '../src/tensor/gptq.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/half.js';
import { loadModelFile } from '../src/model/load.js';
import { perplexity } from '../src/runtime/perplexity.js';
import { randn, rng } from './helpers.js';

const be = getBackend('auto');

/** Correlated inputs (T, K): 8 shared factors (mixed by `mix`, one per K-sized row) plus noise, and a few high-variance inputs. */
function inputs(T: number, K: number, r: () => number, mix = randn(8 * K, r)): Float32Array {
  const F = 8, f = randn(T * F, r), x = randn(T * K, r, 0.3);
  for (let t = 0; t < T; t++)
    for (let k = 0; k < K; k++) {
      let s = x[t * K + k]!;
      for (let j = 0; j < F; j++) s += f[t * F + j]! * mix[j * K + k]!;
      x[t * K + k] = s * (k % 17 === 0 ? 4 : 1);
    }
  return x;
}

function hessian(x: Float32Array, T: number, K: number): Float64Array {
  const H = new Float64Array(K * K);
  for (let t = 0; t < T; t++)
    for (let i = 0; i < K; i++) {
      const xi = x[t * K + i]!;
      for (let j = 0; j < K; j++) H[i * K + j]! += (2 * xi * x[t * K + j]!) / T;
    }
  return H;
}

/** ||(W - Q) X^T||_F / ||W X^T||_F. */
function reconError(W: Float32Array, Q: Float32Array, x: Float32Array, N: number, K: number, T: number): number {
  let num = 0, den = 0;
  for (let n = 0; n < N; n++)
    for (let t = 0; t < T; t++) {
      let a = 0, b = 0;
      for (let k = 0; k < K; k++) {
        a += (W[n * K + k]! - Q[n * K + k]!) * x[t * K + k]!;
        b += W[n * K + k]! * x[t * K + k]!;
      }
      num += a * a;
      den += b * b;
    }
  return Math.sqrt(num / den);
}

/** AutoGPTQ's grid for one row of a group, written independently: returns [scale (f16-exact), zero]. */
function grid(vals: number[], bits: number, sym: boolean): [number, number] {
  const maxq = 2 ** bits - 1;
  let lo = Math.min(0, ...vals), hi = Math.max(0, ...vals);
  if (sym) {
    hi = Math.max(-lo, hi);
    lo = -hi;
  }
  if (lo === 0 && hi === 0) [lo, hi] = [-1, 1];
  let s = (hi - lo) / maxq;
  let z = sym ? (maxq + 1) / 2 : Math.round(-lo / s);
  if (!sym && z < 1) [z, s] = [1, hi / (maxq - 1)]; // v1 keeps zero points >= 1
  return [f16ToF32(f32ToF16(s)), Math.min(Math.max(z, 0), maxq)];
}

/** Sequential GPTQ/OBQ in float64: quantise column i, W[:, j>i] -= err * Hinv[i, j] / Hinv[i, i], drop i from Hinv. */
function referenceGptq(W0: Float32Array, N: number, K: number, H0: Float64Array, bits: number, gs: number, sym: boolean): Int32Array {
  const W = Float64Array.from(W0), maxq = 2 ** bits - 1;
  const H = H0.slice();
  let mean = 0;
  for (let k = 0; k < K; k++) mean += H[k * K + k]!;
  for (let k = 0; k < K; k++) H[k * K + k]! += (0.01 * mean) / K;
  // Explicit inverse by Gauss-Jordan.
  const A = H.slice(), Hi = new Float64Array(K * K);
  for (let i = 0; i < K; i++) Hi[i * K + i] = 1;
  for (let c = 0; c < K; c++) {
    const p = A[c * K + c]!;
    for (let j = 0; j < K; j++) {
      A[c * K + j]! /= p;
      Hi[c * K + j]! /= p;
    }
    for (let r2 = 0; r2 < K; r2++) {
      if (r2 === c) continue;
      const f = A[r2 * K + c]!;
      if (f === 0) continue;
      for (let j = 0; j < K; j++) {
        A[r2 * K + j]! -= f * A[c * K + j]!;
        Hi[r2 * K + j]! -= f * Hi[c * K + j]!;
      }
    }
  }
  const q = new Int32Array(N * K);
  const s = new Float64Array(N), z = new Float64Array(N);
  for (let i = 0; i < K; i++) {
    if (i % gs === 0)
      for (let n = 0; n < N; n++) [s[n], z[n]] = grid(Array.from(W.subarray(n * K + i, n * K + Math.min(K, i + gs))), bits, sym);
    const d = Hi[i * K + i]!;
    for (let n = 0; n < N; n++) {
      const w = W[n * K + i]!;
      const qq = Math.min(Math.max(Math.round(w / s[n]!) + z[n]!, 0), maxq);
      q[n * K + i] = qq;
      const err = (w - s[n]! * (qq - z[n]!)) / d;
      for (let j = i + 1; j < K; j++) W[n * K + j]! -= err * Hi[i * K + j]!;
    }
    // Remove input i: Hinv <- Hinv - Hinv[:, i] Hinv[i, :] / Hinv[i, i].
    for (let a = i + 1; a < K; a++) {
      const f = Hi[a * K + i]! / d;
      for (let b = i + 1; b < K; b++) Hi[a * K + b]! -= f * Hi[i * K + b]!;
    }
  }
  return q;
}

/** Integer values (N, K) of a layer, from its packed (K, N) qweight. */
function ints(l: GptqLinear): Int32Array {
  const u = unpackRows(l.qweight, l.K, l.N, l.bits), out = new Int32Array(l.N * l.K);
  for (let k = 0; k < l.K; k++) for (let n = 0; n < l.N; n++) out[n * l.K + k] = u[k * l.N + n]!;
  return out;
}

describe('GPTQ quantiser', () => {
  for (const [bits, gs] of [[4, 32], [4, 128], [3, 64], [8, 128]] as const) {
    it(`matches the sequential float64 reference (${bits}-bit, group ${gs})`, () => {
      const r = rng(bits * 100 + gs), N = 32, K = 256, T = 400;
      const x = inputs(T, K, r), W = randn(N * K, r, 0.1), H = hessian(x, T, K);
      const got = ints(quantizeGptq(W, N, K, H.slice(), { bits, groupSize: gs }, be).layer);
      const ref = referenceGptq(W, N, K, H, bits, gs, false);
      let same = 0;
      for (let i = 0; i < ref.length; i++) same += got[i] === ref[i] ? 1 : 0;
      expect(same / ref.length).toBeGreaterThan(0.995); // float32 vs float64 rounding ties only
    });
  }

  it('equals RTN when the Hessian is a multiple of the identity', () => {
    const r = rng(3), N = 16, K = 128;
    const W = randn(N * K, r);
    const H = new Float64Array(K * K);
    for (let k = 0; k < K; k++) H[k * K + k] = 2.5;
    for (const o of [{ bits: 4 as const, groupSize: 32 }, { bits: 8 as const, groupSize: -1, sym: true }]) {
      const g = quantizeGptq(W, N, K, H.slice(), o, be).layer, t = quantizeRtn(W, N, K, o);
      expect(Array.from(g.qweight)).toEqual(Array.from(t.qweight));
      expect(Array.from(g.scales)).toEqual(Array.from(t.scales));
      expect(Array.from(g.qzeros)).toEqual(Array.from(t.qzeros));
    }
  });

  for (const o of [
    { bits: 4 as const, groupSize: 128 }, { bits: 4 as const, groupSize: 32 }, { bits: 4 as const, groupSize: -1 },
    { bits: 4 as const, groupSize: 128, actOrder: true }, { bits: 4 as const, groupSize: 64, sym: true }, { bits: 3 as const, groupSize: 128 },
  ])
    it(`beats RTN on held-out correlated inputs (${JSON.stringify(o)})`, () => {
      const r = rng(11), N = 32, K = 256;
      const mix = randn(8 * K, r);
      const calib = inputs(512, K, r, mix), held = inputs(256, K, r, mix); // same distribution, fresh samples
      const W = randn(N * K, r, 0.05);
      const g = quantizeGptq(W, N, K, hessian(calib, 512, K), o, be);
      const t = quantizeRtn(W, N, K, o);
      const eg = reconError(W, dequantizeGptq(g.layer), held, N, K, 256), et = reconError(W, dequantizeGptq(t), held, N, K, 256);
      expect(eg).toBeLessThan(0.8 * et);
      if (o.actOrder) expect(Array.from(g.layer.gIdx!).some((v, k) => v !== Math.floor(k / 128))).toBe(true);
    });

  it('dead inputs (never non-zero) get zero weight; v1 zero points are never 0', () => {
    const r = rng(4), N = 8, K = 64, T = 100;
    const x = inputs(T, K, r);
    for (let t = 0; t < T; t++) x[t * K + 5] = 0;
    const W = Float32Array.from(randn(N * K, r), (v) => Math.abs(v)); // all positive: zero point would be 0
    const g = quantizeGptq(W, N, K, hessian(x, T, K), { bits: 4, groupSize: 32 }, be);
    expect(g.deadColumns).toBe(1);
    const dq = dequantizeGptq(g.layer);
    for (let n = 0; n < N; n++) expect(dq[n * K + 5]).toBe(0);
    expect(Math.min(...gptqZeros(g.layer))).toBeGreaterThanOrEqual(1);
    const v2 = quantizeRtn(W, N, K, { bits: 4, groupSize: 32, zeroFormat: 'v2' });
    expect(Math.min(...gptqZeros(v2))).toBe(0);
    expect(Math.max(...dequantizeGptq(v2).map((v, i) => Math.abs(v - W[i]!)))).toBeLessThan(0.2);
  });
});

describe('GPTQ checkpoints', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tessera-gptq-'));
  const r = rng(9);
  const W = randn(64 * 96, r, 0.1);
  const layer = quantizeGptq(W, 64, 96, hessian(inputs(200, 96, r), 200, 96), { bits: 4, groupSize: 32, actOrder: true }, be).layer;

  it('write -> read gives identical tensors, v1 and v2', () => {
    for (const fmt of ['gptq', 'gptq_v2'] as const) {
      const l = fmt === 'gptq' ? layer : { ...layer, zeroFormat: 'v2' as const, qzeros: quantizeRtn(W, 64, 96, { bits: 4, groupSize: 32, zeroFormat: 'v2' }).qzeros };
      const file = path.join(dir, 'model.safetensors');
      writeSafetensors(file, gptqTensors('model.layers.0.self_attn.q_proj', l));
      writeFileSync(path.join(dir, 'quantize_config.json'), JSON.stringify({ bits: 4, group_size: 32, desc_act: true, sym: false, checkpoint_format: fmt }));
      const cfg = readGptqConfig(dir)!;
      expect(cfg).toMatchObject({ bits: 4, groupSize: 32, descAct: true, sym: false, zeroFormat: fmt === 'gptq' ? 'v1' : 'v2', source: 'quantize_config.json' });
      const tensors = readSafetensorsHeader(file).tensors;
      const back = readGptqLinear((n) => tensors.get(n), 'model.layers.0.self_attn.q_proj', 64, 96, cfg);
      for (const k of ['qweight', 'qzeros', 'scales', 'gIdx'] as const) expect(Array.from(back[k]!)).toEqual(Array.from(l[k]!));
      expect(Array.from(gptqZeros(back))).toEqual(Array.from(gptqZeros(l)));
    }
  });

  it('bad checkpoints give errors naming the tensor or setting', () => {
    const file = path.join(dir, 'model.safetensors');
    const p = 'model.layers.0.mlp.up_proj';
    writeSafetensors(file, gptqTensors(p, layer));
    writeFileSync(path.join(dir, 'quantize_config.json'), JSON.stringify({ bits: 4, group_size: 32 }));
    const t = readSafetensorsHeader(file).tensors, cfg = readGptqConfig(dir)!;
    expect(cfg.zeroFormat).toBe('v1'); // checkpoint_format absent: AutoGPTQ's v1
    const look = (n: string) => t.get(n);
    expect(() => readGptqLinear(look, p, 64, 128, cfg)).toThrow(/qweight' has shape \[12, 64\], expected \[16, 64\]/);
    expect(() => readGptqLinear((n) => (n.endsWith('qzeros') ? undefined : look(n)), p, 64, 96, cfg)).toThrow(/missing tensor 'model.layers.0.mlp.up_proj.qzeros'/);
    expect(() => readGptqLinear(look, p, 32, 96, cfg)).toThrow(/shape/);
    for (const [bad, msg] of [[{ bits: 5 }, /bits 5 is not supported/], [{ bits: 4, group_size: 0 }, /group_size 0/], [{ bits: 4, checkpoint_format: 'marlin' }, /checkpoint_format "marlin"/], [{ bits: 4, quant_method: 'awq' }, /quant_method "awq"/]] as const) {
      writeFileSync(path.join(dir, 'quantize_config.json'), JSON.stringify(bad));
      expect(() => readGptqConfig(dir)).toThrow(msg);
    }
    rmSync(path.join(dir, 'quantize_config.json'));
    expect(readGptqConfig(dir)).toBeNull();
  });
});

describe('tessera quantize', () => {
  const cli = new URL('../bin/tessera.js', import.meta.url).pathname;
  const draft = new URL('./fixtures/shakespeare-draft/hf', import.meta.url).pathname;
  const text = readFileSync(new URL('./fixtures/text/shakespeare-val.txt', import.meta.url), 'utf8');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tessera-quantize-'));
  const calib = path.join(dir, 'calib.txt'), evalf = path.join(dir, 'eval.txt');
  writeFileSync(calib, text.slice(0, text.length / 2));
  writeFileSync(evalf, text.slice(text.length / 2));
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'quantize', ...args], { encoding: 'utf8' });

  it('GPTQ 4-bit g128 act-order: a checkpoint that loads, on the integer kernels, close to f32', () => {
    const out = path.join(dir, 'gptq');
    const res = run('-m', draft, '--method', 'gptq', '--bits', '4', '--group-size', '128', '--act-order', '--calib', calib, '--samples', '16', '--seq-len', '128', '-o', out, '--json');
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/\[14\/14\] layer 1 wDown \[128x384\]: loss .* \(packed\)/);
    const rep = JSON.parse(res.stdout) as { layers: { status: string }[] };
    expect(rep.layers.every((l) => l.status === 'packed')).toBe(true);
    const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(cfg.quantization_config).toMatchObject({ quant_method: 'gptq', bits: 4, group_size: 128, desc_act: true, sym: false, checkpoint_format: 'gptq' });
    expect(existsSync(path.join(out, 'tokenizer.json'))).toBe(true);
    const q = loadModelFile(out, be), f = loadModelFile(draft, be);
    expect(q.model.weights.layers[0]!.wq.constructor.name).toBe('IntWeight');
    expect(q.quantization).toBe('GPTQ 4-bit g128 act-order, checkpoint_format gptq (v1: stored zero points are zero - 1), from config.json');
    const toks = f.tokenizer.encode(readFileSync(evalf, 'utf8'), { addBos: true });
    const pf = perplexity(f.model, toks, { ctx: 128, bosId: 1 }).ppl, pq = perplexity(q.model, toks, { ctx: 128, bosId: 1 }).ppl;
    expect(pq).toBeLessThan(pf * 1.05);
    expect(pq).toBeGreaterThan(pf * 0.95);
  });

  it('3-bit is simulated and says so; shapes that cannot pack stay unquantised', () => {
    const res = run('-m', draft, '--method', 'rtn', '--bits', '3', '--group-size', '128', '-o', path.join(dir, 'rtn3'));
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/3-bit has no packed kernel: .*simulated/);
    const q = loadModelFile(path.join(dir, 'rtn3'), be);
    expect(q.model.weights.layers[0]!.wq.constructor.name).toBe('Tensor');
    expect(q.warnings![0]).toMatch(/14 GPTQ projections have no packed kernel and run as dequantised f32 weights \(simulated\), e.g. model.layers.0.self_attn.q_proj: 3-bit GPTQ has no packed kernel/);
  });

  it('names the projections other GPTQ loaders refuse (N or K not a multiple of 32)', () => {
    const stories = new URL('../models/stories260K/stories260K.gguf', import.meta.url).pathname;
    const res = run('-m', stories, '--method', 'rtn', '--bits', '4', '--group-size', '32', '-o', path.join(dir, 'stories-rtn'));
    expect(res.status, res.stderr).toBe(0);
    // From the file's shapes ([N, K], row-major): a projection packs at 4 bits when K % 8 == 0.
    const proj = readGGUF(stories).tensors.filter((t) => /^blk\.\d+\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight$/.test(t.name));
    const odd = proj.filter(({ shape: [N, K] }) => K! % 8 === 0 && (N! % 32 !== 0 || K! % 32 !== 0));
    expect(odd.length).toBeGreaterThan(0);
    expect(res.stdout).toContain(`${odd.length} projections have N or K not a multiple of 32 (e.g. [${odd[0]!.shape[0]}x${odd[0]!.shape[1]}]): tessera reads them, but AutoGPTQ / GPTQModel / transformers / vLLM refuse them`);
  });

  it('RTN to GGUF Q8_0 from a GGUF', () => {
    const out = path.join(dir, 'q8.gguf');
    const res = run('-m', new URL('../models/stories260K/stories260K.gguf', import.meta.url).pathname, '--format', 'gguf', '--method', 'rtn', '--bits', '8', '-o', out);
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/tensors as Q8_0/);
    const m = loadModelFile(out, be);
    expect(m.model.weights.layers[0]!.wq.constructor.name).toBe('Tensor');
    expect((m.model.weights.layers[0]!.wq as { dtype: string }).dtype).toBe('q8_0');
  });

  it('usage errors', () => {
    expect(run('-m', draft, '--bits', '5', '-o', dir).stderr).toMatch(/--bits expects 2, 3, 4 or 8/);
    expect(run('-m', draft, '-o', path.join(dir, 'x')).stderr).toMatch(/--method gptq needs --calib/);
    expect(run('-m', draft, '--method', 'rtn', '--act-order', '-o', path.join(dir, 'x')).stderr).toMatch(/--act-order applies to --method gptq/);
    expect(run('-m', draft, '--group-size', '0', '-o', dir).stderr).toMatch(/--group-size/);
    expect(run('--method', 'rtn', '-m', draft).stderr).toMatch(/missing -o/);
    expect(run('-m', draft, '--calib', calib, '--seq-len', '100000', '-o', dir).stderr).toMatch(/--seq-len expects an integer in \[2, 512\]/);
  });
});
