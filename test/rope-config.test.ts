// The hyper-parameters real checkpoints set away from the defaults reach the forward pass: RoPE
// base (GGUF rope.freq_base, HF rope_theta), linear RoPE scaling (GGUF rope.scaling.*, HF
// rope_scaling / rope_parameters), the RMSNorm epsilon, Qwen2's q/k/v biases, Mistral's and Qwen2's
// sliding window, and f16 / bf16 safetensors. Small random models are compared with the float64
// reference forward in reference.ts and with llama.cpp (GGUF): its outputs recorded in
// test/fixtures/llamacpp/rope-config.* always, and llama.cpp itself through the peer
// (npm run peer:install) when it is installed. Every case also checks that the reference with the
// key ignored is far outside the tolerance, so a loader that dropped the key would fail.
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/index.js';
import { GGUF_VALUE, readGGUF, writeGGUF, type GGUFMetadataEntry } from '../src/formats/gguf.js';
import { llamaGGUFMetadata, spmVocabOf } from '../src/formats/llama-gguf.js';
import { loadModelFile } from '../src/model/load.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from '../src/model/load-gguf.js';
import { llamaConfigFromHF, llamaWeightsFromHF } from '../src/model/load-hf.js';
import { LlamaModel } from '../src/model/llama.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { nativeAvailable, randn, relL2, rng, writeSafetensors } from './helpers.js';
import { llamaForwardRef, type LlamaRefConfig, type LlamaRefWeights } from './reference.js';
import { LlamaCppReference, needsLlamaCpp, recording, useLlamaCpp } from './llamacpp-peer.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const HF_TOKENIZER = path.join(root, 'test/fixtures/shakespeare-draft/hf/tokenizer.json');
const dir = mkdtempSync(path.join(tmpdir(), 'tessera-rope-'));
const backend = getBackend(nativeAvailable ? 'cpu' : 'js');
const TOKENS = [1, 403, 407, 261, 378, 432, 269, 281, 333, 261, 368, 300, 284, 327, 46, 402, 405, 269, 288, 388, 296, 266, 431, 46];
const S = { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 96, vocab: 512 };
const HD = S.dim / S.heads;

/** Random weights (scaled so activations stay O(1)); the embedding is small so that eps matters. */
function randomWeights(seed: number, biases: boolean): LlamaRefWeights {
  const r = rng(seed);
  const mat = (rows: number, cols: number) => randn(rows * cols, r, 1 / Math.sqrt(cols));
  const norm = () => Float32Array.from({ length: S.dim }, () => 0.8 + 0.4 * r());
  const kvd = S.kvHeads * HD;
  return {
    embed: randn(S.vocab * S.dim, r, 0.1),
    outNorm: norm(),
    output: mat(S.vocab, S.dim),
    layers: Array.from({ length: S.layers }, () => ({
      attnNorm: norm(), ffnNorm: norm(),
      wq: mat(S.dim, S.dim), wk: mat(kvd, S.dim), wv: mat(kvd, S.dim), wo: mat(S.dim, S.dim),
      bq: biases ? randn(S.dim, r, 0.5) : null, bk: biases ? randn(kvd, r, 0.5) : null, bv: biases ? randn(kvd, r, 0.5) : null,
      wGate: mat(S.ffn, S.dim), wUp: mat(S.ffn, S.dim), wDown: mat(S.dim, S.ffn),
    })),
  };
}

function refConfig(o: Partial<LlamaRefConfig>): LlamaRefConfig {
  return { dim: S.dim, heads: S.heads, kvHeads: S.kvHeads, headDim: HD, ffn: S.ffn, vocab: S.vocab, eps: 1e-5, theta: 10000, factor: 1, neox: true, ...o };
}

function ourLogits(m: LlamaModel): Float32Array {
  const c = m.config;
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 8, blockSize: 16 });
  cache.add(0);
  return forwardTokens(m, cache, 0, Int32Array.from(TOKENS), { allLogits: true }).data;
}

/** Ours within tol of the reference, and the reference with the key ignored at least 10 tol away. */
function expectRef(ours: Float32Array, want: LlamaRefConfig, ignored: LlamaRefConfig, w: LlamaRefWeights, tol: number) {
  const ref = llamaForwardRef(want, w, TOKENS);
  expect(relL2(ours, ref)).toBeLessThan(tol);
  expect(relL2(ours, llamaForwardRef(ignored, w, TOKENS))).toBeGreaterThan(10 * tol);
}

// ---- GGUF ----

type GGUFKeys = { freqBase?: number; eps?: number; factor?: number; extra?: GGUFMetadataEntry[] };

function writeGGUFModel(file: string, w: LlamaRefWeights, arch: 'llama' | 'qwen2', k: GGUFKeys) {
  const vocab = spmVocabOf(readGGUF(STORIES));
  const meta = llamaGGUFMetadata({ ...S, ropeFreqBase: k.freqBase, normEps: k.eps, ropeScalingFactor: k.factor }, vocab, 'F32', 'rope-test', arch).concat(k.extra ?? []);
  const t = (name: string, shape: number[], data: ArrayLike<number>) => ({ name, shape, type: 'F32' as const, data: Float32Array.from(data) });
  const kvd = S.kvHeads * HD;
  const tensors = [t('token_embd.weight', [S.vocab, S.dim], w.embed), t('output_norm.weight', [S.dim], w.outNorm), t('output.weight', [S.vocab, S.dim], w.output)];
  w.layers.forEach((L, l) => {
    const p = `blk.${l}.`;
    tensors.push(t(p + 'attn_norm.weight', [S.dim], L.attnNorm), t(p + 'ffn_norm.weight', [S.dim], L.ffnNorm),
      t(p + 'attn_q.weight', [S.dim, S.dim], L.wq), t(p + 'attn_k.weight', [kvd, S.dim], L.wk), t(p + 'attn_v.weight', [kvd, S.dim], L.wv),
      t(p + 'attn_output.weight', [S.dim, S.dim], L.wo),
      t(p + 'ffn_gate.weight', [S.ffn, S.dim], L.wGate), t(p + 'ffn_up.weight', [S.ffn, S.dim], L.wUp), t(p + 'ffn_down.weight', [S.dim, S.ffn], L.wDown));
    if (L.bq) tensors.push(t(p + 'attn_q.bias', [S.dim], L.bq), t(p + 'attn_k.bias', [kvd], L.bk!), t(p + 'attn_v.bias', [kvd], L.bv!));
  });
  writeGGUF(file, meta, tensors);
}

function ggufModel(file: string): LlamaModel {
  const g = readGGUF(file);
  const c = llamaConfigFromGGUF(g);
  return new LlamaModel(c, llamaWeightsFromGGUF(g, c), backend);
}

const llamaCpp = useLlamaCpp();
const reference = new LlamaCppReference('rope-config');

/** llama.cpp's log-probabilities at every position of TOKENS, one flat (positions x vocab) array. */
async function llamaCppLogProbs(file: string): Promise<Float64Array> {
  const rows = await llamaCpp.logProbs(file, TOKENS, S.vocab, 64);
  const out = new Float64Array(TOKENS.length * S.vocab);
  rows.forEach((r, i) => out.set(r, i * S.vocab));
  return out;
}

/** Rows at the recorded positions of a flat (positions x vocab) array, and the recorded rows, flat. */
function atPositions(all: ArrayLike<number>, positions: number[], rows: Float64Array[]): { ours: Float64Array; ref: Float64Array } {
  const ours = new Float64Array(positions.length * S.vocab), ref = new Float64Array(positions.length * S.vocab);
  positions.forEach((p, i) => {
    for (let j = 0; j < S.vocab; j++) ours[i * S.vocab + j] = all[p * S.vocab + j]!;
    ref.set(rows[i]!, i * S.vocab);
  });
  return { ours, ref };
}

/** Relative L2 between rows with each row's mean removed (log-probs and logits differ by a per-row constant). */
function centredError(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let r = 0; r < ref.length / S.vocab; r++) {
    const idx = Array.from({ length: S.vocab }, (_, i) => r * S.vocab + i).filter((i) => Number.isFinite(ref[i]!));
    expect(idx.length).toBeGreaterThan(S.vocab * 0.9);
    const mo = idx.reduce((a, i) => a + ours[i]!, 0) / idx.length, mr = idx.reduce((a, i) => a + ref[i]!, 0) / idx.length;
    for (const i of idx) {
      num += (ours[i]! - mo - (ref[i]! - mr)) ** 2;
      den += (ref[i]! - mr) ** 2;
    }
  }
  return Math.sqrt(num / den);
}

const f32 = Math.fround;
const f32Key = (key: string, value: number): GGUFMetadataEntry => ({ key, type: GGUF_VALUE.FLOAT32, value });
const strKey = (key: string, value: string): GGUFMetadataEntry => ({ key, type: GGUF_VALUE.STRING, value });

describe('GGUF RoPE base, linear scaling and norm epsilon match llama.cpp and the reference', () => {
  // [name, arch, keys written, reference config, reference with the keys ignored]
  const cases: [string, 'llama' | 'qwen2', GGUFKeys, Partial<LlamaRefConfig>, Partial<LlamaRefConfig>][] = [
    ['rope.freq_base 5e5', 'llama', { freqBase: 5e5 }, { theta: 5e5 }, {}],
    ['linear rope.scaling factor 4', 'llama', { factor: 4 }, { factor: 4 }, {}],
    ['layer_norm_rms_epsilon 1e-2', 'llama', { eps: 1e-2 }, { eps: f32(1e-2) }, {}],
    ['all three (Llama 3-like base)', 'llama', { freqBase: 5e5, factor: 4, eps: 1e-2 }, { theta: 5e5, factor: 4, eps: f32(1e-2) }, { theta: 5e5, eps: f32(1e-2) }],
    ['rope.scaling.factor without a type (llama.cpp: linear)', 'llama', { extra: [f32Key('llama.rope.scaling.factor', 4)] }, { factor: 4 }, {}],
    ['the older rope.scale_linear key', 'llama', { extra: [f32Key('llama.rope.scale_linear', 2)] }, { factor: 2 }, {}],
    ['scaling type none ignores the factor', 'llama', { extra: [strKey('llama.rope.scaling.type', 'none'), f32Key('llama.rope.scaling.factor', 4)] }, {}, { factor: 4 }],
    ['qwen2 (NeoX, q/k/v biases) with base 1e6, factor 2, eps 1e-3', 'qwen2', { freqBase: 1e6, factor: 2, eps: 1e-3 }, { theta: 1e6, factor: 2, eps: f32(1e-3) }, { eps: f32(1e-3) }],
  ];
  const file = (name: string) => path.join(dir, `${name.replace(/[^a-z0-9]+/gi, '_')}.gguf`);
  const weights = (name: string, arch: 'llama' | 'qwen2') => randomWeights(name.length * 7 + 1, arch === 'qwen2');
  const ours = new Map<string, Float32Array>();
  /** The case's GGUF, written once, and our logits on it. */
  function oursFor(name: string, arch: 'llama' | 'qwen2', keys: GGUFKeys): Float32Array {
    if (!ours.has(name)) {
      writeGGUFModel(file(name), weights(name, arch), arch, keys);
      ours.set(name, ourLogits(ggufModel(file(name))));
    }
    return ours.get(name)!;
  }

  // Live first: while recording (npm run peer:fixtures) these write what the next test reads.
  it.for(cases)('%s: llama.cpp (live) at every position within 1e-4', async ([name, arch, keys], ctx) => {
    needsLlamaCpp(ctx);
    const o = oursFor(name, arch, keys);
    const live = await llamaCppLogProbs(file(name));
    expect(centredError(o, live)).toBeLessThan(1e-4);
    const rows = Array.from({ length: TOKENS.length }, (_, i) => live.subarray(i * S.vocab, (i + 1) * S.vocab));
    reference.recordLogProbs(name, file(name), TOKENS, rows);
    if (!recording) {
      // The recorded outputs are still llama.cpp's.
      const rec = reference.logProbs(name, file(name), TOKENS);
      const { ours: liveAt, ref } = atPositions(live, rec.positions, rec.rows);
      expect(centredError(liveAt, ref)).toBeLessThan(1e-5);
    }
  });

  it.for(cases)('%s: the reference within 1e-5 and llama.cpp (recorded) within 1e-4', ([name, arch, keys, want, ignored]) => {
    const o = oursFor(name, arch, keys);
    const neox = arch === 'qwen2';
    expectRef(o, refConfig({ neox, ...want }), refConfig({ neox, ...ignored }), weights(name, arch), 1e-5);
    const rec = reference.logProbs(name, file(name), TOKENS);
    const { ours: oAt, ref } = atPositions(o, rec.positions, rec.rows);
    expect(centredError(oAt, ref)).toBeLessThan(1e-4);
  });

  // yarn and longrope load now: test/rope-scaling.test.ts compares them with llama.cpp.
  it.each([
    ['sideways', [], /rope-sideways.gguf: llama.rope.scaling.type = 'sideways' is not supported \(llama.cpp's types: none, linear, yarn, longrope\)/],
    ['longrope', [], /llama.rope.scaling.type = 'longrope' needs tensors 'rope_factors_short.weight' and 'rope_factors_long.weight'/],
    ['linear', [f32Key('llama.rope.scaling.yarn_beta_fast', 16)], /llama.rope.scaling.yarn_beta_fast applies to yarn scaling only, but the type is 'linear'/],
    ['none', [f32Key('llama.rope.scaling.attn_factor', 2)], /llama.rope.scaling.attn_factor = 2 applies to yarn and longrope scaling only, but the type is 'none'/],
  ] as const)('scaling type %s with %j is a load error naming the key', (type, extra, msg) => {
    const file = path.join(dir, `rope-${type}.gguf`);
    writeGGUFModel(file, randomWeights(3, false), 'llama', { extra: [strKey('llama.rope.scaling.type', type), f32Key('llama.rope.scaling.factor', 4), ...extra] });
    expect(() => llamaConfigFromGGUF(readGGUF(file))).toThrow(msg);
  });
});

// ---- Hugging Face ----

/** Round to nearest, ties to even. */
const rne = (v: number) => {
  const f = Math.floor(v), d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
};

/** IEEE half from its definition: sign, 5-bit exponent (bias 15), 10-bit fraction; subnormals below 2^-14. */
function toF16(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === 0) return sign;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  if (e < -14) return sign | rne(a / 2 ** -24); // subnormal (may round up into the smallest normal)
  let m = rne((a / 2 ** e - 1) * 1024);
  if (m === 1024) [e, m] = [e + 1, 0];
  if (e > 15) throw new Error(`${x} overflows f16`);
  return sign | ((e + 15) << 10) | m;
}
const fromF16 = (h: number) => {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
};
/** bfloat16: the high half of the f32 bits, rounded to nearest even. */
function toBF16(x: number): number {
  const b = new Uint32Array(Float32Array.of(x).buffer)[0]!;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}
const fromBF16 = (h: number) => new Float32Array(Uint32Array.of(h << 16).buffer)[0]!;

type Dtype = 'F32' | 'F16' | 'BF16';

/** The weights as the dtype stores them (what any correct reader must see). */
function storedAs(w: LlamaRefWeights, dtype: Dtype): LlamaRefWeights {
  const q = (a: ArrayLike<number> | null | undefined): Float64Array | null =>
    a ? Float64Array.from(a, (v) => (dtype === 'F16' ? fromF16(toF16(v)) : dtype === 'BF16' ? fromBF16(toBF16(v)) : f32(v))) : null;
  return {
    embed: q(w.embed)!, outNorm: q(w.outNorm)!, output: q(w.output)!,
    layers: w.layers.map((L) => ({
      attnNorm: q(L.attnNorm)!, ffnNorm: q(L.ffnNorm)!, wq: q(L.wq)!, wk: q(L.wk)!, wv: q(L.wv)!, wo: q(L.wo)!,
      bq: q(L.bq), bk: q(L.bk), bv: q(L.bv), wGate: q(L.wGate)!, wUp: q(L.wUp)!, wDown: q(L.wDown)!,
    })),
  };
}

/** An HF directory (config.json, model.safetensors in `dtype`, a tokenizer.json) with the weights as stored. */
function writeHF(name: string, w: LlamaRefWeights, arch: string, config: Record<string, unknown>, dtype: Dtype = 'F32'): string {
  const d = path.join(dir, name);
  mkdirSync(d, { recursive: true });
  const bytes = (a: ArrayLike<number>) =>
    dtype === 'F32' ? new Uint8Array(Float32Array.from(a).buffer)
      : new Uint8Array(Uint16Array.from(a, dtype === 'F16' ? toF16 : toBF16).buffer);
  const entries: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[] = [];
  const add = (n: string, shape: number[], a: ArrayLike<number>) => entries.push({ name: n, dtype, shape, bytes: bytes(a) });
  const kvd = S.kvHeads * HD;
  add('model.embed_tokens.weight', [S.vocab, S.dim], w.embed);
  add('model.norm.weight', [S.dim], w.outNorm);
  add('lm_head.weight', [S.vocab, S.dim], w.output);
  w.layers.forEach((L, l) => {
    const p = `model.layers.${l}.`;
    add(p + 'input_layernorm.weight', [S.dim], L.attnNorm);
    add(p + 'post_attention_layernorm.weight', [S.dim], L.ffnNorm);
    add(p + 'self_attn.q_proj.weight', [S.dim, S.dim], L.wq);
    add(p + 'self_attn.k_proj.weight', [kvd, S.dim], L.wk);
    add(p + 'self_attn.v_proj.weight', [kvd, S.dim], L.wv);
    add(p + 'self_attn.o_proj.weight', [S.dim, S.dim], L.wo);
    if (L.bq) {
      add(p + 'self_attn.q_proj.bias', [S.dim], L.bq);
      add(p + 'self_attn.k_proj.bias', [kvd], L.bk!);
      add(p + 'self_attn.v_proj.bias', [kvd], L.bv!);
    }
    add(p + 'mlp.gate_proj.weight', [S.ffn, S.dim], L.wGate);
    add(p + 'mlp.up_proj.weight', [S.ffn, S.dim], L.wUp);
    add(p + 'mlp.down_proj.weight', [S.dim, S.ffn], L.wDown);
  });
  writeSafetensors(path.join(d, 'model.safetensors'), entries);
  writeFileSync(path.join(d, 'config.json'), JSON.stringify({
    architectures: [arch], hidden_size: S.dim, intermediate_size: S.ffn, num_hidden_layers: S.layers, num_attention_heads: S.heads,
    num_key_value_heads: S.kvHeads, vocab_size: S.vocab, max_position_embeddings: 256, rms_norm_eps: 1e-5, tie_word_embeddings: false, ...config,
  }));
  copyFileSync(HF_TOKENIZER, path.join(d, 'tokenizer.json'));
  return d;
}

function hfModel(d: string): LlamaModel {
  const c = llamaConfigFromHF(d);
  return new LlamaModel(c, llamaWeightsFromHF(d, c), backend);
}

describe('Hugging Face config keys and dtypes match the reference forward', () => {
  // [name, architecture, config.json keys, q/k/v biases, reference config, reference with the keys ignored]
  const cases: [string, string, Record<string, unknown>, boolean, Partial<LlamaRefConfig>, Partial<LlamaRefConfig>][] = [
    ['rope_theta 5e5', 'LlamaForCausalLM', { rope_theta: 5e5 }, false, { theta: 5e5 }, {}],
    ['rope_scaling linear factor 4', 'LlamaForCausalLM', { rope_scaling: { type: 'linear', factor: 4 } }, false, { factor: 4 }, {}],
    ['rope_scaling rope_type linear', 'LlamaForCausalLM', { rope_theta: 5e5, rope_scaling: { rope_type: 'linear', factor: 4 } }, false, { theta: 5e5, factor: 4 }, { theta: 5e5 }],
    ['rope_parameters (transformers 5)', 'LlamaForCausalLM', { rope_parameters: { rope_type: 'linear', factor: 4, rope_theta: 5e5 } }, false, { theta: 5e5, factor: 4 }, {}],
    ['rms_norm_eps 1e-2', 'LlamaForCausalLM', { rms_norm_eps: 1e-2 }, false, { eps: 1e-2 }, {}],
    ['Qwen2 q/k/v biases, rope_theta 1e6', 'Qwen2ForCausalLM', { rope_theta: 1e6 }, true, { theta: 1e6 }, { theta: 1e6, dropBiases: true } as never],
    ['Mistral sliding_window 5', 'MistralForCausalLM', { sliding_window: 5 }, false, { window: 5 }, {}],
    ['Mistral sliding_window null', 'MistralForCausalLM', { sliding_window: null, rope_theta: 1e6 }, false, { theta: 1e6 }, { theta: 1e6, window: 5 }],
    ['Qwen2 use_sliding_window on every layer', 'Qwen2ForCausalLM', { use_sliding_window: true, sliding_window: 7, max_window_layers: 0 }, true, { window: 7 }, {}],
    ['Qwen2 sliding_window without use_sliding_window', 'Qwen2ForCausalLM', { sliding_window: 7, max_window_layers: 0 }, true, {}, { window: 7 }],
  ];
  it.each(cases)('%s', (name, arch, config, biases, want, ignored) => {
    const w = randomWeights(name.length * 13 + 5, biases);
    const d = writeHF(name.replace(/[^a-z0-9]+/gi, '_'), w, arch, config);
    const ours = ourLogits(hfModel(d));
    const stored = storedAs(w, 'F32');
    const { dropBiases, ...ign } = ignored as Partial<LlamaRefConfig> & { dropBiases?: boolean };
    const ignoredW = dropBiases ? { ...stored, layers: stored.layers.map((L) => ({ ...L, bq: null, bk: null, bv: null })) } : stored;
    expect(relL2(ours, llamaForwardRef(refConfig(want), stored, TOKENS))).toBeLessThan(1e-5);
    expect(relL2(ours, llamaForwardRef(refConfig(ign), ignoredW, TOKENS))).toBeGreaterThan(1e-4);
  });

  it.each([
    // f16 rounds activations to f16 in linear (as llama.cpp does), bf16 to bf16: the tolerance is theirs.
    ['F16', 3e-3],
    ['BF16', 2e-2],
  ] as const)('%s safetensors (every tensor, norms included) read as stored', (dtype, tol) => {
    const w = randomWeights(dtype.length * 17, true);
    const d = writeHF(`dtype-${dtype}`, w, 'Qwen2ForCausalLM', { rope_theta: 1e6 }, dtype);
    const ours = ourLogits(hfModel(d));
    const ref = llamaForwardRef(refConfig({ theta: 1e6 }), storedAs(w, dtype), TOKENS);
    expect(relL2(ours, ref)).toBeLessThan(tol);
    // The same directory loads through loadModelFile (tokenizer included).
    expect(loadModelFile(d, backend).model.config.vocabSize).toBe(S.vocab);
  });
});
