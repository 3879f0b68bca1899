// RoPE scaling (linear, dynamic NTK, YaRN, Llama 3, LongRoPE): the frequencies and attention
// factors tessera derives from a config, against a float64 computation written here from the
// formulas and against transformers' own functions (fixtures/rope-scaling/reference.json, made by
// make-reference.py); the rope kernel's new plan fields on js and cpu against a float64 reference;
// every config spelling and error; and whole models: random-weight GGUFs of each type against
// llama.cpp (recorded in test/fixtures/llamacpp/rope-scaling.*, live with the peer) at positions
// past the original context, and HF configs against the float64 reference forward and against
// the same weights as a GGUF.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Backend } from '../src/backend/backend.js';
import { jsKernels } from '../src/backend/js/index.js';
import { ropeFrequencies } from '../src/backend/js/embedding.js';
import type { RopePlan } from '../src/backend/kernels.js';
import { getBackend } from '../src/index.js';
import { GGUF_VALUE, readGGUF, writeGGUF, type GGUFMetadataEntry } from '../src/formats/gguf.js';
import { llamaGGUFMetadata, spmVocabOf } from '../src/formats/llama-gguf.js';
import type { LlamaConfig } from '../src/model/config.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from '../src/model/load-gguf.js';
import { llamaConfigFromHF, llamaWeightsFromHF } from '../src/model/load-hf.js';
import { LlamaModel } from '../src/model/llama.js';
import { RopeSetup } from '../src/model/rope-scaling.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { nativeAvailable, randn, relL2, rng, writeSafetensors } from './helpers.js';
import { llamaForwardRef, type LlamaRefWeights } from './reference.js';
import { LlamaCppReference, needsLlamaCpp, useLlamaCpp } from './llamacpp-peer.js';

const root = path.resolve(import.meta.dirname, '..');
const dir = mkdtempSync(path.join(tmpdir(), 'tessera-rope-scaling-'));
const backend = getBackend(nativeAvailable ? 'cpu' : 'js');

// ---- float64 frequencies from the formulas ----

type Params = Record<string, unknown>;
const invFreqs = (dim: number, theta: number) => Array.from({ length: dim / 2 }, (_, i) => theta ** (-(2 * i) / dim));
const mscaleOf = (s: number, m = 1) => (s <= 1 ? 1 : 0.1 * m * Math.log(s) + 1);

/** Frequencies (dim/2) and cos/sin factor of transformers' rope types, for a sequence of seqLen tokens (maxPos: max_position_embeddings). */
function reference(p: Params, dim: number, theta: number, maxPos: number, seqLen: number): { freqs: number[]; attn: number } {
  const type = (p.rope_type ?? p.type) as string;
  const f = p.factor as number;
  const orig = (p.original_max_position_embeddings as number | undefined) ?? maxPos;
  switch (type) {
    case 'linear':
      return { freqs: invFreqs(dim, theta).map((v) => v / f), attn: 1 };
    case 'dynamic': {
      const L = Math.max(seqLen, maxPos);
      return { freqs: invFreqs(dim, theta * ((f * L) / maxPos - (f - 1)) ** (dim / (dim - 2))), attn: 1 };
    }
    case 'yarn': {
      // The pair index at which a wavelength fits `rot` times into the original context.
      const at = (rot: number) => (dim * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(theta));
      const trunc = p.truncate !== false;
      const lo = Math.max(0, trunc ? Math.floor(at((p.beta_fast as number) ?? 32)) : at((p.beta_fast as number) ?? 32));
      let hi = Math.min(dim - 1, trunc ? Math.ceil(at((p.beta_slow as number) ?? 1)) : at((p.beta_slow as number) ?? 1));
      if (hi === lo) hi += 0.001;
      const freqs = invFreqs(dim, theta).map((v, i) => {
        const extrapolate = 1 - Math.min(1, Math.max(0, (i - lo) / (hi - lo)));
        return (v / f) * (1 - extrapolate) + v * extrapolate;
      });
      const attn = p.mscale && p.mscale_all_dim ? mscaleOf(f, p.mscale as number) / mscaleOf(f, p.mscale_all_dim as number) : mscaleOf(f);
      return { freqs, attn };
    }
    case 'llama3': {
      const low = p.low_freq_factor as number, high = p.high_freq_factor as number;
      const freqs = invFreqs(dim, theta).map((v) => {
        const wavelen = (2 * Math.PI) / v;
        if (wavelen < orig / high) return v;
        if (wavelen > orig / low) return v / f;
        const s = (orig / wavelen - low) / (high - low);
        return (1 - s) * (v / f) + s * v;
      });
      return { freqs, attn: 1 };
    }
    case 'longrope': {
      const ext = (seqLen > orig ? p.long_factor : p.short_factor) as number[];
      const factor = (p.factor as number | undefined) ?? maxPos / orig;
      return { freqs: invFreqs(dim, theta).map((v, i) => v / ext[i]!), attn: factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(orig)) };
    }
  }
  throw new Error(`no reference for ${type}`);
}

/** The rope plan tessera's model hands the kernel for a sequence whose last position is maxPosition. */
function planFor(c: LlamaConfig, maxPosition: number): RopePlan {
  let plan: RopePlan | null = null;
  const spy = new Backend('js', { ...jsKernels, rope: (p) => void (plan = p) });
  const x = new Tensor('f32', [1, 1, c.headDim]);
  spy.rope(x, Tensor.from('i32', [1], [0]), { ...new RopeSetup(c).forSequence(maxPosition), out: x });
  return plan!;
}

const relMax = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!) / Math.abs(b[i]!)));

/** A config.json (no weights needed to read the config). */
function hfConfigDir(name: string, extra: Params, base: Params = {}): string {
  const d = path.join(dir, name);
  mkdirSync(d, { recursive: true });
  writeFileSync(path.join(d, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], hidden_size: 128, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 4, head_dim: 32,
    vocab_size: 32, max_position_embeddings: 256, ...base, ...extra,
  }));
  return d;
}

describe("frequencies and attention factors match transformers' functions and the float64 formulas", () => {
  const fixture = JSON.parse(readFileSync(path.join(root, 'test/fixtures/rope-scaling/reference.json'), 'utf8')) as {
    headDim: number; config: { max_position_embeddings: number };
    cases: Record<string, { configJson: { rope_theta: number; rope_scaling: Params }; results: { seqLen: number | null; invFreq: number[]; attentionFactor: number }[] }>;
  };
  const rows = Object.entries(fixture.cases).flatMap(([name, c]) => c.results.map((r) => [name, r.seqLen ?? 'none', c, r] as const));
  it.each(rows)('%s, seq_len %s', (name, _seq, c, r) => {
    const maxPos = fixture.config.max_position_embeddings, dim = fixture.headDim;
    const config = llamaConfigFromHF(hfConfigDir(`freqs-${name}`, c.configJson, { max_position_embeddings: maxPos, head_dim: dim }));
    // transformers' seq_len None is max_position_embeddings for dynamic and "not past the original" for LongRoPE.
    const seqLen = r.seqLen ?? 1;
    const plan = planFor(config, seqLen - 1);
    const ours = ropeFrequencies(plan);
    const want = reference(c.configJson.rope_scaling, dim, c.configJson.rope_theta, maxPos, seqLen);
    // The float64 formulas are transformers' (which computes in float32), and tessera's are the formulas.
    expect(relMax(r.invFreq, want.freqs)).toBeLessThan(2e-6);
    expect(r.attentionFactor).toBeCloseTo(want.attn, 12);
    // Llama 3 and LongRoPE factors travel as f32 (as llama.cpp's rope_freqs): 1e-7 relative.
    expect(relMax(ours, want.freqs)).toBeLessThan(2e-7);
    expect(plan.attnFactor).toBeCloseTo(want.attn, 12);
  });

  it('dynamic NTK keeps theta up to max_position_embeddings and grows it past (per sequence, from its last position)', () => {
    const c = llamaConfigFromHF(hfConfigDir('dyn', { rope_scaling: { type: 'dynamic', factor: 2 } }));
    expect(c.contextLength).toBe(512); // factor * max_position_embeddings
    expect(planFor(c, 255).theta).toBe(10000);
    expect(planFor(c, 511).theta).toBeCloseTo(10000 * ((2 * 512) / 256 - 1) ** (32 / 30), 6);
  });
});

// ---- the kernel ----

/** ggml's rope_yarn with freq_factors, in float64. */
function ropeF64(x: Float32Array, pos: Int32Array, T: number, H: number, D: number, rot: number, theta: number, o: { scale: number; ff: Float32Array | null; ext: number; lo: number; hi: number; attn: number }, neox: boolean): Float64Array {
  const y = Float64Array.from(x), half = rot / 2;
  for (let t = 0; t < T; t++)
    for (let i = 0; i < half; i++) {
      const extrap = (pos[t]! * theta ** ((-2 * i) / rot)) / (o.ff ? o.ff[i]! : 1);
      const ramp = (1 - Math.min(1, Math.max(0, (i - o.lo) / Math.max(0.001, o.hi - o.lo)))) * o.ext;
      const ang = o.scale * extrap * (1 - ramp) + extrap * ramp;
      for (let h = 0; h < H; h++) {
        const b = (t * H + h) * D, [i0, i1] = neox ? [b + i, b + i + half] : [b + 2 * i, b + 2 * i + 1];
        y[i0] = o.attn * (x[i0]! * Math.cos(ang) - x[i1]! * Math.sin(ang));
        y[i1] = o.attn * (x[i0]! * Math.sin(ang) + x[i1]! * Math.cos(ang));
      }
    }
  return y;
}

describe('rope kernel with frequency factors, YaRN and an attention factor', () => {
  const backends = [['js', getBackend('js')], ...(nativeAvailable ? [['cpu', getBackend('cpu')] as const] : [])] as const;
  const T = 7, H = 3, D = 38, rot = 26;
  const r = rng(5);
  const x = new Tensor('f32', [T, H, D], randn(T * H * D, r));
  const pos = Tensor.from('i32', [T], [0, 1, 17, 255, 1000, 4093, 65535]);
  const ff = Float32Array.from({ length: rot / 2 }, () => 0.5 + 3 * r());
  it.each(backends.flatMap(([n, be]) => (['neox', 'interleaved'] as const).map((style) => [n, style, be] as const)))('%s %s', (_n, style, be) => {
    const neox = style === 'neox';
    // YaRN from origContext and betas (ggml_rope_yarn_corr_dims: [floor, ceil] of the rotation dims).
    const at = (rotations: number) => (rot * Math.log(512 / (rotations * 2 * Math.PI))) / (2 * Math.log(5000));
    const [lo, hi] = [Math.max(0, Math.floor(at(32))), Math.min(rot - 1, Math.ceil(at(1)))];
    const yarn = be.rope(x, pos, { style, theta: 5000, rotaryDim: rot, freqFactors: Tensor.from('f32', [rot / 2], ff), yarn: { factor: 8, origContext: 512 }, attnFactor: 1.3 });
    expect(relL2(yarn.data, ropeF64(x.data, pos.data, T, H, D, rot, 5000, { scale: 1 / 8, ff, ext: 1, lo, hi, attn: 1.3 }, neox))).toBeLessThan(1e-6);
    // Explicit corrDims, a partial extFactor, in place.
    const y = new Tensor('f32', [T, H, D], x.data.slice());
    be.rope(y, pos, { style, theta: 5000, rotaryDim: rot, yarn: { factor: 3, extFactor: 0.5, corrDims: [2.5, 9] }, out: y });
    expect(relL2(y.data, ropeF64(x.data, pos.data, T, H, D, rot, 5000, { scale: 1 / 3, ff: null, ext: 0.5, lo: 2.5, hi: 9, attn: 1 }, neox))).toBeLessThan(1e-6);
    // Factors with linear scaling; the dims past rotaryDim pass through.
    const lin = be.rope(x, pos, { style, theta: 5000, rotaryDim: rot, freqFactors: Tensor.from('f32', [rot / 2], ff), scaling: { type: 'linear', factor: 2 } });
    expect(relL2(lin.data, ropeF64(x.data, pos.data, T, H, D, rot, 5000, { scale: 0.5, ff, ext: 0, lo: 0, hi: 0, attn: 1 }, neox))).toBeLessThan(1e-6);
  });

  it.each(backends)('%s: bad options are errors naming them', (_n, be) => {
    const o = { rotaryDim: rot };
    expect(() => be.rope(x, pos, { ...o, freqFactors: new Tensor('f32', [rot]) })).toThrow(/options.freqFactors/);
    expect(() => be.rope(x, pos, { ...o, freqFactors: Tensor.from('f32', [rot / 2], ff.map((v, i) => (i === 4 ? 0 : v))) })).toThrow(/Expected finite options.freqFactors > 0 but element 4 is 0/);
    expect(() => be.rope(x, pos, { ...o, yarn: { factor: 0, origContext: 8 } })).toThrow(/options.yarn.factor/);
    expect(() => be.rope(x, pos, { ...o, yarn: { factor: 2 } })).toThrow(/options.yarn.origContext/);
    expect(() => be.rope(x, pos, { ...o, yarn: { factor: 2, origContext: 8, extFactor: 2 } })).toThrow(/options.yarn.extFactor <= 1/);
    expect(() => be.rope(x, pos, { ...o, yarn: { factor: 2, corrDims: [1, 2], origContext: 8 } })).toThrow(/corrDims or options.yarn.origContext/);
    expect(() => be.rope(x, pos, { ...o, yarn: { factor: 2, origContext: 8 }, scaling: { type: 'linear', factor: 2 } })).toThrow(/options.scaling or options.yarn/);
    expect(() => be.rope(x, pos, { ...o, attnFactor: -1 })).toThrow(/options.attnFactor/);
  });
});

// ---- config spellings and errors ----

describe('config.json RoPE scaling spellings and errors', () => {
  const yarn = { factor: 4, original_max_position_embeddings: 64 };
  it.each([
    ['rope_scaling.type', { rope_scaling: { type: 'yarn', ...yarn } }],
    ['rope_scaling.rope_type', { rope_scaling: { rope_type: 'yarn', ...yarn } }],
    ['both type keys', { rope_scaling: { type: 'yarn', rope_type: 'yarn', ...yarn } }],
    ['rope_parameters (transformers 5)', { rope_parameters: { rope_type: 'yarn', rope_theta: 10000, ...yarn } }],
    ['both objects', { rope_scaling: { type: 'yarn', ...yarn }, rope_parameters: { rope_type: 'yarn', ...yarn } }],
    ['original_max_position_embeddings at the top level', { original_max_position_embeddings: 64, rope_scaling: { type: 'yarn', factor: 4 } }],
  ])('%s', (name, extra) => {
    const c = llamaConfigFromHF(hfConfigDir(`spell-${name.replace(/\W+/g, '_')}`, extra));
    expect(c.ropeScaling).toEqual({ type: 'yarn', factor: 4, origContext: 64, betaFast: 32, betaSlow: 1, extFactor: 1, attnFactor: mscaleOf(4), truncate: true });
    expect(c.contextLength).toBe(256); // max(max_position_embeddings, factor * original)
  });

  const list = (n: number, v = 1) => Array.from({ length: n }, () => v);
  it.each([
    ['unknown type', { rope_scaling: { type: 'ntk-by-parts', factor: 2 } }, /rope_scaling.type "ntk-by-parts" is not supported \(supported: default, linear, dynamic, yarn, llama3, longrope\)/],
    ['a key the type does not read', { rope_scaling: { type: 'linear', factor: 2, low_freq_factor: 1 } }, /rope_scaling.low_freq_factor is not a parameter of RoPE scaling type 'linear'/],
    ['disagreeing type keys', { rope_scaling: { type: 'yarn', rope_type: 'linear', factor: 2 } }, /rope_scaling.type "yarn" and rope_scaling.rope_type "linear" disagree/],
    ['yarn without original_max_position_embeddings', { rope_scaling: { type: 'yarn', factor: 2 } }, /rope_scaling.original_max_position_embeddings is missing/],
    ['yarn factor 0', { rope_scaling: { type: 'yarn', ...yarn, factor: 0 } }, /rope_scaling.factor = 0 must be a finite number > 0/],
    ['yarn beta_slow >= beta_fast', { rope_scaling: { type: 'yarn', ...yarn, beta_fast: 2, beta_slow: 4 } }, /rope_scaling.beta_slow = 4 must be less than rope_scaling.beta_fast = 2/],
    ['yarn truncate not a bool', { rope_scaling: { type: 'yarn', ...yarn, truncate: 'yes' } }, /rope_scaling.truncate must be true or false/],
    ['linear factor -1', { rope_scaling: { type: 'linear', factor: -1 } }, /rope_scaling.factor = -1 must be a finite number > 0/],
    ['dynamic without factor', { rope_scaling: { type: 'dynamic' } }, /missing rope_scaling.factor/],
    ['llama3 low >= high', { rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 64 } }, /rope_scaling.low_freq_factor = 4 must be less than rope_scaling.high_freq_factor = 1/],
    ['llama3 missing high_freq_factor', { rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, original_max_position_embeddings: 64 } }, /missing rope_scaling.high_freq_factor/],
    ['longrope list length', { rope_scaling: { type: 'longrope', short_factor: list(16), long_factor: list(15), original_max_position_embeddings: 64 } }, /rope_scaling.long_factor has 15 entries, expected head_dim \/ 2 = 16/],
    ['longrope entry 0', { rope_scaling: { type: 'longrope', short_factor: list(16, 0), long_factor: list(16), original_max_position_embeddings: 64 } }, /rope_scaling.short_factor\[0\] = 0 must be a finite number > 0/],
    ['longrope list of strings', { rope_scaling: { type: 'longrope', short_factor: ['1'], long_factor: list(16), original_max_position_embeddings: 64 } }, /rope_scaling.short_factor must be a list of numbers/],
    ['disagreeing objects', { rope_scaling: { type: 'yarn', ...yarn }, rope_parameters: { rope_type: 'yarn', ...yarn, factor: 2 } }, /rope_scaling = \{"type":"yarn","factor":4,"original_max_position_embeddings":64\} and rope_parameters = \{"rope_type":"yarn","factor":2,"original_max_position_embeddings":64\} disagree/],
    ['disagreeing original contexts', { original_max_position_embeddings: 32, rope_scaling: { type: 'yarn', ...yarn } }, /original_max_position_embeddings = 32 and rope_scaling.original_max_position_embeddings = 64 disagree/],
  ])('%s is an error naming the key', (name, extra, msg) => {
    expect(() => llamaConfigFromHF(hfConfigDir(`err-${name.replace(/\W+/g, '_')}`, extra))).toThrow(msg);
  });
});

// ---- whole models ----

const S = { dim: 64, layers: 2, heads: 2, kvHeads: 1, ffn: 96, vocab: 512, contextLength: 512 };
const HD = S.dim / S.heads; // 32: 16 rotated pairs
const ORIG = 128; // original context: the later tokens are past it
const TOKENS = (() => {
  const r = rng(77);
  return Array.from({ length: 256 }, (_, i) => (i === 0 ? 1 : 3 + Math.floor(r() * (S.vocab - 3))));
})();
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const HF_TOKENIZER = path.join(root, 'test/fixtures/shakespeare-draft/hf/tokenizer.json');

function randomWeights(seed: number): LlamaRefWeights {
  const r = rng(seed);
  const mat = (rows: number, cols: number) => randn(rows * cols, r, 1 / Math.sqrt(cols));
  const norm = () => Float32Array.from({ length: S.dim }, () => 0.8 + 0.4 * r());
  const kvd = S.kvHeads * HD;
  return {
    embed: randn(S.vocab * S.dim, r, 0.5), outNorm: norm(), output: mat(S.vocab, S.dim),
    layers: Array.from({ length: S.layers }, () => ({
      attnNorm: norm(), ffnNorm: norm(),
      // Large Q/K so that attention depends sharply on the rotation.
      wq: randn(S.dim * S.dim, r, 4 / Math.sqrt(S.dim)), wk: randn(kvd * S.dim, r, 4 / Math.sqrt(S.dim)), wv: mat(kvd, S.dim), wo: mat(S.dim, S.dim),
      wGate: mat(S.ffn, S.dim), wUp: mat(S.ffn, S.dim), wDown: mat(S.dim, S.ffn),
    })),
  };
}

const f32Key = (key: string, value: number): GGUFMetadataEntry => ({ key, type: GGUF_VALUE.FLOAT32, value });
const u32Key = (key: string, value: number): GGUFMetadataEntry => ({ key, type: GGUF_VALUE.UINT32, value });
const strKey = (key: string, value: string): GGUFMetadataEntry => ({ key, type: GGUF_VALUE.STRING, value });

function writeGGUFModel(file: string, w: LlamaRefWeights, arch: 'llama' | 'qwen2', extra: GGUFMetadataEntry[], ropeTensors: [string, number[]][]) {
  const vocab = spmVocabOf(readGGUF(STORIES));
  const meta = llamaGGUFMetadata(S, vocab, 'F32', 'rope-scaling-test', arch).concat(extra);
  const t = (name: string, shape: number[], data: ArrayLike<number>) => ({ name, shape, type: 'F32' as const, data: Float32Array.from(data) });
  const kvd = S.kvHeads * HD;
  const tensors = [t('token_embd.weight', [S.vocab, S.dim], w.embed), t('output_norm.weight', [S.dim], w.outNorm), t('output.weight', [S.vocab, S.dim], w.output)];
  for (const [name, v] of ropeTensors) tensors.push(t(name, [v.length], v));
  w.layers.forEach((L, l) => {
    const p = `blk.${l}.`;
    tensors.push(t(p + 'attn_norm.weight', [S.dim], L.attnNorm), t(p + 'ffn_norm.weight', [S.dim], L.ffnNorm),
      t(p + 'attn_q.weight', [S.dim, S.dim], L.wq), t(p + 'attn_k.weight', [kvd, S.dim], L.wk), t(p + 'attn_v.weight', [kvd, S.dim], L.wv),
      t(p + 'attn_output.weight', [S.dim, S.dim], L.wo),
      t(p + 'ffn_gate.weight', [S.ffn, S.dim], L.wGate), t(p + 'ffn_up.weight', [S.ffn, S.dim], L.wUp), t(p + 'ffn_down.weight', [S.dim, S.ffn], L.wDown));
  });
  writeGGUF(file, meta, tensors);
}

function writeHF(name: string, w: LlamaRefWeights, config: Params): string {
  const d = path.join(dir, name);
  mkdirSync(d, { recursive: true });
  const entries: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[] = [];
  const add = (n: string, shape: number[], a: ArrayLike<number>) => entries.push({ name: n, dtype: 'F32', shape, bytes: new Uint8Array(Float32Array.from(a).buffer) });
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
    add(p + 'mlp.gate_proj.weight', [S.ffn, S.dim], L.wGate);
    add(p + 'mlp.up_proj.weight', [S.ffn, S.dim], L.wUp);
    add(p + 'mlp.down_proj.weight', [S.dim, S.ffn], L.wDown);
  });
  writeSafetensors(path.join(d, 'model.safetensors'), entries);
  writeFileSync(path.join(d, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], hidden_size: S.dim, intermediate_size: S.ffn, num_hidden_layers: S.layers, num_attention_heads: S.heads,
    num_key_value_heads: S.kvHeads, vocab_size: S.vocab, max_position_embeddings: S.contextLength, rms_norm_eps: 1e-5, tie_word_embeddings: false, ...config,
  }));
  copyFileSync(HF_TOKENIZER, path.join(d, 'tokenizer.json'));
  return d;
}

function ourLogits(m: LlamaModel, tokens = TOKENS): Float32Array {
  const c = m.config;
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 24, blockSize: 16 });
  cache.add(0);
  return forwardTokens(m, cache, 0, Int32Array.from(tokens), { allLogits: true }).data;
}

const refBase = { dim: S.dim, heads: S.heads, kvHeads: S.kvHeads, headDim: HD, ffn: S.ffn, vocab: S.vocab, eps: 1e-5, theta: 10000, factor: 1 };
const llama3 = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: ORIG };
const longrope = {
  type: 'longrope', original_max_position_embeddings: ORIG,
  short_factor: Array.from({ length: HD / 2 }, (_, i) => 1 + 0.1 * i), long_factor: Array.from({ length: HD / 2 }, (_, i) => 1 + 1.5 * i),
};
// [name, config.json rope_scaling, GGUF keys, GGUF tensors, cos/sin factor]: the same scaling in both formats.
const MODELS: [string, Params, GGUFMetadataEntry[], [string, number[]][]][] = [
  ['linear', { type: 'linear', factor: 4 }, [strKey('llama.rope.scaling.type', 'linear'), f32Key('llama.rope.scaling.factor', 4)], []],
  ['yarn', { type: 'yarn', factor: 4, original_max_position_embeddings: ORIG },
    [strKey('llama.rope.scaling.type', 'yarn'), f32Key('llama.rope.scaling.factor', 4), u32Key('llama.rope.scaling.original_context_length', ORIG)], []],
  // Llama 3: the GGUF carries the frequency divisors (rope_freqs.weight) as llama.cpp's converter writes them.
  ['llama3', llama3, [], [['rope_freqs.weight', reference(llama3, HD, 10000, S.contextLength, 1).freqs.map((v, i) => Math.fround(invFreqs(HD, 10000)[i]! / v))]]],
  // LongRoPE: every sequence here is past the original context, so both pick the long factors.
  ['longrope', longrope, [strKey('llama.rope.scaling.type', 'longrope'), f32Key('llama.rope.scaling.attn_factor', Math.sqrt(1 + Math.log(S.contextLength / ORIG) / Math.log(ORIG))), u32Key('llama.rope.scaling.original_context_length', ORIG)],
    [['rope_factors_long.weight', longrope.long_factor], ['rope_factors_short.weight', longrope.short_factor]]],
];
const refFor = (scaling: Params, neox: boolean) => {
  const { freqs, attn } = reference(scaling, HD, 10000, S.contextLength, TOKENS.length);
  return { ...refBase, neox, ropeFreqs: freqs, ropeMscale: attn };
};

describe('GGUF models with RoPE scaling match llama.cpp past the original context', () => {
  const llamaCpp = useLlamaCpp();
  const recorded = new LlamaCppReference('rope-scaling');
  const file = (name: string) => path.join(dir, `scaled-${name}.gguf`);
  const ours = new Map<string, Float32Array>();
  const oursFor = (name: string) => {
    if (!ours.has(name)) {
      const [, , keys, tensors] = MODELS.find((m) => m[0] === name)!;
      writeGGUFModel(file(name), randomWeights(name.length * 11 + 3), 'llama', keys, tensors);
      const g = readGGUF(file(name));
      const c = llamaConfigFromGGUF(g);
      ours.set(name, ourLogits(new LlamaModel(c, llamaWeightsFromGGUF(g, c), backend)));
    }
    return ours.get(name)!;
  };
  /** Relative L2 between rows (vocab each) with each row's mean removed over the entries llama.cpp reported
   *  (it gives log-probabilities, tessera logits: they differ by a per-row constant). */
  const centredError = (ours: ArrayLike<number>[], ref: ArrayLike<number>[]) => {
    let num = 0, den = 0;
    ours.forEach((o, r) => {
      const idx = Array.from({ length: S.vocab }, (_, i) => i).filter((i) => Number.isFinite(ref[r]![i]!));
      expect(idx.length).toBeGreaterThan(S.vocab * 0.9);
      const mo = idx.reduce((a, i) => a + o[i]!, 0) / idx.length, mr = idx.reduce((a, i) => a + ref[r]![i]!, 0) / idx.length;
      for (const i of idx) {
        num += (o[i]! - mo - (ref[r]![i]! - mr)) ** 2;
        den += (ref[r]![i]! - mr) ** 2;
      }
    });
    return Math.sqrt(num / den);
  };
  const rowsAt = (a: Float32Array, positions: number[]) => positions.map((p) => a.subarray(p * S.vocab, (p + 1) * S.vocab));

  it.for(MODELS)('%s: llama.cpp (live)', async ([name], ctx) => {
    needsLlamaCpp(ctx);
    const o = oursFor(name);
    const rows = await llamaCpp.logProbs(file(name), TOKENS, S.vocab, S.contextLength);
    const late = Array.from({ length: TOKENS.length - ORIG }, (_, i) => ORIG + i);
    expect(centredError(rowsAt(o, late), late.map((p) => rows[p]!))).toBeLessThan(1e-4);
    recorded.recordLogProbs(name, file(name), TOKENS, rows);
  });

  it.for(MODELS)('%s: llama.cpp (recorded) within 1e-4 and the float64 reference within 1e-5', ([name, scaling]) => {
    const o = oursFor(name);
    const rec = recorded.logProbs(name, file(name), TOKENS);
    expect(rec.positions.filter((p) => p >= ORIG).length).toBeGreaterThanOrEqual(2);
    expect(centredError(rowsAt(o, rec.positions), rec.rows)).toBeLessThan(1e-4);
    const want = llamaForwardRef(refFor(scaling, false), randomWeights(name.length * 11 + 3), TOKENS);
    expect(relL2(o, want)).toBeLessThan(1e-5);
    // Without the scaling the logits are far off: the loader did not drop it.
    expect(relL2(o, llamaForwardRef({ ...refBase, neox: false }, randomWeights(name.length * 11 + 3), TOKENS))).toBeGreaterThan(1e-3);
  });
});

describe('Hugging Face configs with RoPE scaling match the float64 reference and the same weights as GGUF', () => {
  const dynamic: Params = { type: 'dynamic', factor: 4 };
  it.for([...MODELS.map(([n, s]) => [n, s] as const), ['dynamic', dynamic] as const])('%s', ([name, scaling]) => {
    const w = randomWeights(name.length * 5 + 2);
    const d = writeHF(`hf-${name}`, w, { rope_scaling: scaling, ...(name === 'dynamic' ? { max_position_embeddings: ORIG } : {}) });
    const c = llamaConfigFromHF(d);
    const o = ourLogits(new LlamaModel(c, llamaWeightsFromHF(d, c), backend));
    const ref = name === 'dynamic'
      ? (() => {
          const { freqs } = reference(dynamic, HD, 10000, ORIG, TOKENS.length);
          return { ...refBase, neox: true, ropeFreqs: freqs, ropeMscale: 1 };
        })()
      : refFor(scaling, true);
    expect(relL2(o, llamaForwardRef(ref, w, TOKENS))).toBeLessThan(1e-5);
    const entry = MODELS.find((m) => m[0] === name);
    if (!entry) return; // llama.cpp has no dynamic NTK, so there is no GGUF spelling
    // The same weights as a NeoX GGUF (qwen2: no Q/K permutation) with the GGUF spelling of the scaling.
    const file = path.join(dir, `hf-vs-gguf-${name}.gguf`);
    writeGGUFModel(file, w, 'qwen2', entry[2].map((e) => ({ ...e, key: e.key.replace(/^llama\./, 'qwen2.') })), entry[3]);
    const g = readGGUF(file);
    const gc = llamaConfigFromGGUF(g);
    expect(relL2(ourLogits(new LlamaModel(gc, llamaWeightsFromGGUF(g, gc), backend)), o)).toBeLessThan(1e-5);
  });

  it('LongRoPE by position: short factors while a sequence is within the original context, long past it', () => {
    const w = randomWeights(9);
    const d = writeHF('hf-longrope-short', w, { rope_scaling: longrope });
    const c = llamaConfigFromHF(d);
    const short = TOKENS.slice(0, ORIG);
    const o = ourLogits(new LlamaModel(c, llamaWeightsFromHF(d, c), backend), short);
    const { freqs, attn } = reference(longrope, HD, 10000, S.contextLength, short.length);
    expect(relL2(o, llamaForwardRef({ ...refBase, neox: true, ropeFreqs: freqs, ropeMscale: attn }, w, short))).toBeLessThan(1e-5);
  });
});

