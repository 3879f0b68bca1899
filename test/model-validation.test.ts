// Hyper-parameters and weights that do not make a usable model fail at load with a
// ModelFileError naming the file and the key or tensor: GGUF metadata, Hugging Face config.json
// and safetensors, llama2.c headers. Each case corrupts one thing in a real model (stories260K,
// the shakespeare-draft HF checkpoint) that otherwise loads.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/index.js';
import { ModelFileError } from '../src/formats/errors.js';
import { GGUF_VALUE, ggufMetadataEntries, loadTensor, readGGUF, writeGGUF, type GGUFMetadataEntry, type GGUFValue, type GGUFValueType } from '../src/formats/gguf.js';
import { loadSafetensor, readSafetensorsHeader } from '../src/formats/safetensors.js';
import { readLlama2c } from '../src/formats/llama2c.js';
import { loadModelFile } from '../src/model/load.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from '../src/model/load-gguf.js';
import { llamaConfigFromHF, llamaWeightsFromHF } from '../src/model/load-hf.js';
import { llamaFromLlama2c } from '../src/model/load-llama2c.js';
import { writeSafetensors } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const STORIES_BIN = path.join(root, 'test/fixtures/stories260K/stories260K.bin');
const HF = path.join(root, 'test/fixtures/shakespeare-draft/hf');
const tmp = mkdtempSync(path.join(tmpdir(), 'tessera-modelval-'));

/** Expects fn to throw a ModelFileError whose message matches msg. */
function expectModelError(fn: () => unknown, msg: RegExp) {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, `expected an error matching ${msg}`).toBeInstanceOf(ModelFileError);
  expect((err as Error).message).toMatch(msg);
}

// ---- GGUF ----

const src = readGGUF(STORIES);
type Tensors = { name: string; shape: number[]; type: 'F32' | 'F16'; data: Float32Array }[];
const srcTensors = (): Tensors => src.tensors.map((t) => ({ name: t.name, shape: t.shape, type: 'F32', data: loadTensor(src, t).data as Float32Array }));

/** stories260K with metadata keys set (value undefined: removed) and its tensors edited. */
function gguf(set: Record<string, [GGUFValueType, GGUFValue] | undefined>, edit: (t: Tensors) => Tensors = (t) => t): string {
  const overrides = Object.fromEntries(Object.entries(set).filter(([, v]) => v).map(([k, v]) => [k, { type: v![0], value: v![1] }]));
  const meta = ggufMetadataEntries(src, overrides).filter((m) => !(m.key in set && set[m.key] === undefined));
  const file = path.join(tmp, 'bad.gguf');
  writeGGUF(file, meta as GGUFMetadataEntry[], edit(srcTensors()));
  return file;
}
const loadGGUF = (file: string) => {
  const g = readGGUF(file);
  return llamaWeightsFromGGUF(g, llamaConfigFromGGUF(g));
};
const U32 = GGUF_VALUE.UINT32, F32 = GGUF_VALUE.FLOAT32, STR = GGUF_VALUE.STRING;

describe('GGUF metadata is validated at load', () => {
  it('the unedited rewrite loads', () => {
    expect(loadGGUF(gguf({})).layers).toHaveLength(5);
  });

  it.each([
    ['freq_base 0', { 'llama.rope.freq_base': [F32, 0] }, /^bad.gguf: llama.rope.freq_base = 0 must be a finite number > 0$/],
    ['freq_base negative', { 'llama.rope.freq_base': [F32, -10000] }, /llama.rope.freq_base = -10000 must be a finite number > 0/],
    ['freq_base NaN', { 'llama.rope.freq_base': [F32, Number.NaN] }, /llama.rope.freq_base must be a finite number but is NaN/],
    ['freq_base a string', { 'llama.rope.freq_base': [STR, '10000'] }, /llama.rope.freq_base must be a finite number but is "10000"/],
    ['negative eps', { 'llama.attention.layer_norm_rms_epsilon': [F32, -1e-5] }, /llama.attention.layer_norm_rms_epsilon = -[\d.e-]+ must be a finite number > 0/],
    ['zero eps', { 'llama.attention.layer_norm_rms_epsilon': [F32, 0] }, /llama.attention.layer_norm_rms_epsilon = 0 must be a finite number > 0/],
    ['odd rope dimension', { 'llama.rope.dimension_count': [U32, 7] }, /llama.rope.dimension_count = 7 must be even/],
    ['rope dimension above the head dim', { 'llama.rope.dimension_count': [U32, 16] }, /llama.rope.dimension_count = 16 is outside \[2, 8\]/],
    ['context_length 1', { 'llama.context_length': [U32, 1] }, /llama.context_length = 1 is outside \[2, 16777216\]/],
    ['head_count 0', { 'llama.attention.head_count': [U32, 0] }, /llama.attention.head_count = 0 must be at least 1/],
    ['head_count not dividing the width', { 'llama.attention.head_count': [U32, 3] }, /llama.embedding_length = 64 is not a multiple of llama.attention.head_count = 3/],
    ['kv heads not dividing heads', { 'llama.attention.head_count_kv': [U32, 3] }, /llama.attention.head_count = 8 is not a multiple of llama.attention.head_count_kv = 3/],
    ['more kv heads than heads', { 'llama.attention.head_count_kv': [U32, 16] }, /llama.attention.head_count_kv = 16 is outside \[1, 8\]/],
    ['value_length unlike key_length', { 'llama.attention.value_length': [U32, 16] }, /llama.attention.value_length = 16 differs from llama.attention.key_length = 8/],
    ['block_count 2^31', { 'llama.block_count': [U32, 2 ** 31] }, /llama.block_count = 2147483648 but the file has tensors for only 5 blocks/],
    ['block_count below the tensors', { 'llama.block_count': [U32, 4] }, /llama.block_count = 4 but the file has tensors for 5 blocks \(e.g. 'blk.4.[a-z_]+.weight'\)/],
    ['block_count above the tensors', { 'llama.block_count': [U32, 6] }, /llama.block_count = 6 but the file has tensors for only 5 blocks/],
    ['more experts per token than experts', { 'llama.expert_count': [U32, 4], 'llama.expert_used_count': [U32, 8] }, /llama.expert_used_count = 8 is outside \[1, 4\]/],
    ['experts per token without experts', { 'llama.expert_used_count': [U32, 2] }, /llama.expert_used_count = 2 but llama.expert_count is 0 or missing/],
    ['non-integer sliding window', { 'llama.attention.sliding_window': [F32, 4.5] }, /llama.attention.sliding_window must be an integer but is 4.5/],
    ['negative scaling factor', { 'llama.rope.scaling.type': [STR, 'linear'], 'llama.rope.scaling.factor': [F32, -2] }, /llama.rope.scaling.factor = -2 must be a finite number > 0/],
    ['scaling type not a string', { 'llama.rope.scaling.type': [U32, 1] }, /llama.rope.scaling.type must be a string but is 1/],
    ['missing feed_forward_length', { 'llama.feed_forward_length': undefined }, /missing llama.feed_forward_length/],
    ['a u64 too large for a number', { 'llama.embedding_length': [GGUF_VALUE.UINT64, 2n ** 60n] }, /llama.embedding_length must be a finite number but is 1152921504606846976/],
    ['vocab_size unlike the embedding', { 'llama.vocab_size': [U32, 1000] }, /llama.vocab_size = 1000 but tensor 'token_embd.weight' has 512 rows/],
  ] as [string, Record<string, [GGUFValueType, GGUFValue] | undefined>, RegExp][])('%s', (_n, set, msg) => {
    expectModelError(() => loadGGUF(gguf(set)), msg);
  });

  it('a tokenizer with fewer tokens than the embedding has rows', () => {
    const tokens = (src.metadata.get('tokenizer.ggml.tokens') as string[]).slice(0, 500);
    expectModelError(() => loadGGUF(gguf({ 'tokenizer.ggml.tokens': [GGUF_VALUE.ARRAY, tokens] })), /tokenizer.ggml.tokens has 500 tokens but tensor 'token_embd.weight' has 512 rows/);
  });

  it('loadModelFile reports the same errors', () => {
    expectModelError(() => loadModelFile(gguf({ 'llama.rope.freq_base': [F32, -1] }), getBackend('js')), /^bad.gguf: llama.rope.freq_base = -1 /);
  });
});

describe('GGUF tensors are checked against their roles', () => {
  const w = (name: string, shape: number[]) => ({ name, shape, type: 'F32' as const, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5) });
  it.each([
    ['an unknown tensor', (t: Tensors) => [...t, w('blk.0.attn_foo.weight', [64])], /bad.gguf: tensor 'blk.0.attn_foo.weight' is not used by a llama model with this metadata/],
    ['a bias the architecture does not have', (t: Tensors) => [...t, w('blk.2.ffn_down.bias', [64])], /tensor 'blk.2.ffn_down.bias' is not used/],
    ['MoE tensors in a dense model', (t: Tensors) => [...t, w('blk.0.ffn_gate_inp.weight', [4, 64])], /tensor 'blk.0.ffn_gate_inp.weight' is not used by a llama model with this metadata \(dense FFN\)/],
    ['a norm weight in F16', (t: Tensors) => t.map((x) => (x.name === 'blk.3.ffn_norm.weight' ? { ...x, type: 'F16' as const } : x)), /tensor 'blk.3.ffn_norm.weight' has type F16, expected F32/],
    ['a 2-D norm weight', (t: Tensors) => t.map((x) => (x.name === 'output_norm.weight' ? { ...x, shape: [1, 64] } : x)), /tensor 'output_norm.weight' has shape \[1, 64\], expected \[64\]/],
    ['a 1-D projection', (t: Tensors) => t.map((x) => (x.name === 'blk.0.attn_v.weight' ? { ...x, shape: [2048] } : x)), /tensor 'blk.0.attn_v.weight' has shape \[2048\], expected \[32, 64\]/],
    ['a transposed projection', (t: Tensors) => t.map((x) => (x.name === 'blk.1.ffn_down.weight' ? { ...x, shape: [172, 64] } : x)), /tensor 'blk.1.ffn_down.weight' has shape \[172, 64\], expected \[64, 172\]/],
  ])('%s', (_n, edit, msg) => {
    expectModelError(() => loadGGUF(gguf({}, edit)), msg);
  });

  /** A written file with one tensor's type id changed in the tensor table (its data left as it was). */
  function flipType(name: string, to: number): string {
    const file = gguf({});
    const b = readFileSync(file);
    const at = b.indexOf(Buffer.concat([Buffer.from(name)])) + name.length;
    const nd = b.readUInt32LE(at);
    b.writeUInt32LE(to, at + 4 + 8 * nd);
    writeFileSync(file, b);
    return file;
  }

  it.each([
    ['a projection', 'blk.1.attn_q.weight', /bad.gguf: tensor 'blk.1.attn_k.weight' starts at data offset \d+ but 'blk.1.attn_q.weight' \(F16 \[64, 64\], 8192 bytes\) ends at \d+: a wrong type or shape in the tensor table/],
    ['a norm', 'blk.2.attn_norm.weight', /but 'blk.2.attn_norm.weight' \(F16 \[64\], 128 bytes\) ends at/],
  ])('an F32 tensor marked F16 (%s) is caught by the data layout, as llama.cpp does', (_n, name, msg) => {
    const file = flipType(name, 1);
    expect(readGGUF(file).tensors.find((t) => t.name === name)!.type).toBe('F16');
    expectModelError(() => loadGGUF(file), msg);
  });
});

// ---- Hugging Face ----

const hfConfig = JSON.parse(readFileSync(path.join(HF, 'config.json'), 'utf8')) as Record<string, unknown>;

/** A copy of the shakespeare-draft checkpoint with config.json keys set (undefined: removed) and tensors edited. */
function hf(set: Record<string, unknown>, edit?: (t: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[]) => typeof t): string {
  const d = path.join(tmp, 'bad-hf');
  rmSync(d, { recursive: true, force: true });
  cpSync(HF, d, { recursive: true });
  const config = { ...hfConfig, ...set };
  for (const [k, v] of Object.entries(set)) if (v === undefined) delete config[k];
  writeFileSync(path.join(d, 'config.json'), JSON.stringify(config));
  if (edit) {
    const st = readSafetensorsHeader(path.join(HF, 'model.safetensors'));
    const entries = [...st.tensors.values()].map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, bytes: new Uint8Array(loadSafetensor(e).data.buffer) }));
    writeSafetensors(path.join(d, 'model.safetensors'), edit(entries));
  }
  return d;
}
const loadHF = (d: string) => llamaWeightsFromHF(d, llamaConfigFromHF(d));

describe('Hugging Face config.json is validated at load', () => {
  it('the unedited copy loads', () => {
    expect(loadHF(hf({})).layers).toHaveLength(2);
  });

  it.each([
    ['rope_theta null', { rope_theta: null }, /^config.json: rope_theta must be a finite number but is null$/],
    ['rope_theta a string', { rope_theta: '1e4' }, /rope_theta must be a finite number but is "1e4"/],
    ['rope_theta negative', { rope_theta: -1, rope_parameters: undefined }, /rope_theta = -1 must be a finite number > 0/],
    ['rope_theta unlike rope_parameters', { rope_theta: 5e5 }, /rope_theta = 500000 and rope_parameters.rope_theta = 10000 disagree/],
    ['linear rope_scaling against default rope_parameters', { rope_scaling: { type: 'linear', factor: 4 } }, /rope_scaling = \{"type":"linear","factor":4\} and rope_parameters = \{"rope_theta":10000,"rope_type":"default"\} disagree/],
    ['rms_norm_eps negative', { rms_norm_eps: -1e-6 }, /rms_norm_eps = -0.000001 must be a finite number > 0/],
    ['rms_norm_eps null', { rms_norm_eps: null }, /rms_norm_eps must be a finite number but is null/],
    ['num_hidden_layers 2^31', { num_hidden_layers: 2 ** 31 }, /num_hidden_layers = 2147483648 is outside \[1, 1024\]/],
    ['num_hidden_layers a float', { num_hidden_layers: 2.5 }, /num_hidden_layers must be an integer but is 2.5/],
    ['odd head_dim', { head_dim: 31 }, /head_dim = 31 must be even/],
    ['head_dim above the kernels\' limit', { head_dim: 1024 }, /head_dim = 1024 is outside \[1, 512\]/],
    ['max_position_embeddings 1', { max_position_embeddings: 1 }, /max_position_embeddings = 1 is outside \[2, 16777216\]/],
    ['num_key_value_heads not dividing heads', { num_key_value_heads: 3 }, /num_attention_heads = 4 is not a multiple of num_key_value_heads = 3/],
    ['hidden_size not a multiple of the heads', { hidden_size: 130, head_dim: undefined }, /hidden_size = 130 is not a multiple of num_attention_heads = 4/],
    ['hidden_act gelu', { hidden_act: 'gelu' }, /hidden_act "gelu" is not supported/],
    ['attention_bias', { attention_bias: true }, /attention_bias = true \(biases on q\/k\/v\/o_proj\) is not supported/],
    ['tie_word_embeddings a string', { tie_word_embeddings: 'yes' }, /tie_word_embeddings must be true or false but is "yes"/],
    // test/rope-scaling.test.ts checks the scaling types' keys in full.
    ['rope_scaling yarn without its original context', { rope_scaling: { type: 'yarn', factor: 4 } }, /rope_scaling.original_max_position_embeddings is missing \(RoPE scaling type 'yarn' needs it\)/],
    ['rope_scaling llama3 without its frequency bounds', { rope_scaling: { rope_type: 'llama3', factor: 8 } }, /missing rope_scaling.low_freq_factor/],
    ['rope_parameters of an unknown type', { rope_parameters: { rope_type: 'ntk', factor: 2, rope_theta: 10000 } }, /rope_parameters.rope_type "ntk" is not supported \(supported: default, linear, dynamic, yarn, llama3, longrope\)/],
    ['rope_scaling without a type', { rope_scaling: { factor: 4 } }, /rope_scaling names no scaling type \(neither rope_scaling.rope_type nor rope_scaling.type is present\)/],
    ['linear scaling without a factor', { rope_scaling: { type: 'linear' } }, /missing rope_scaling.factor/],
    ['linear scaling with a negative factor', { rope_scaling: { type: 'linear', factor: -2 } }, /rope_scaling.factor = -2 must be a finite number > 0/],
    ['rope_scaling a string', { rope_scaling: 'linear' }, /rope_scaling must be an object or null but is "linear"/],
    ['partial_rotary_factor', { partial_rotary_factor: 0.5 }, /partial_rotary_factor = 0.5 is not supported/],
    ['Mistral sliding_window 4.5', { architectures: ['MistralForCausalLM'], sliding_window: 4.5 }, /sliding_window must be an integer but is 4.5/],
    ['Mistral sliding_window 0', { architectures: ['MistralForCausalLM'], sliding_window: 0 }, /sliding_window = 0 must be a positive integer or null/],
    ['Qwen2 windows on some layers only', { architectures: ['Qwen2ForCausalLM'], use_sliding_window: true, sliding_window: 64, max_window_layers: 1 }, /sliding-window attention on 1 of 2 layers .* is not supported/],
    ['Mixtral: more experts per token than experts', { architectures: ['MixtralForCausalLM'], num_local_experts: 8, num_experts_per_tok: 9 }, /num_experts_per_tok = 9 is outside \[1, 8\]/],
  ])('%s', (_n, set, msg) => {
    expectModelError(() => loadHF(hf(set)), msg);
  });

  it.each([
    ['fewer layers than the checkpoint', { num_hidden_layers: 1 }, /num_hidden_layers = 1 but the checkpoint has tensors for 2 layers \(e.g. 'model.layers.1.[a-z_.]+'\)/],
    ['more layers than the checkpoint', { num_hidden_layers: 3 }, /num_hidden_layers = 3 but the checkpoint has tensors for only 2 layers/],
    ['vocab_size unlike the embedding', { vocab_size: 2048 }, /vocab_size = 2048 but tensor 'model.embed_tokens.weight' has 1024 rows/],
  ])('%s (checked against the tensors before reading them)', (_n, set, msg) => {
    expectModelError(() => loadHF(hf(set)), msg);
  });
});

describe('Hugging Face tensors are checked against their roles', () => {
  const f32 = (name: string, shape: number[]) => ({ name, dtype: 'F32', shape, bytes: new Uint8Array(4 * shape.reduce((a, b) => a * b, 1)) });
  type E = { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[];
  it.each([
    ['an unknown tensor', (t: E) => [...t, f32('model.layers.0.self_attn.foo.weight', [4])], /model.safetensors: tensor 'model.layers.0.self_attn.foo.weight' is not used by a llama model with this config.json/],
    ['an o_proj bias', (t: E) => [...t, f32('model.layers.1.self_attn.o_proj.bias', [128])], /tensor 'model.layers.1.self_attn.o_proj.bias' is not used/],
    ['q_proj biases in a Llama', (t: E) => [...t, f32('model.layers.0.self_attn.q_proj.bias', [128])], /tensor 'model.layers.0.self_attn.q_proj.bias' is not used/],
    ['a norm stored as I32', (t: E) => t.map((x) => (x.name === 'model.norm.weight' ? { ...x, dtype: 'I32' } : x)), /tensor 'model.norm.weight' has dtype I32, expected F32, F16, BF16/],
    ['a 2-D norm', (t: E) => t.map((x) => (x.name === 'model.layers.1.input_layernorm.weight' ? { ...x, shape: [1, 128] } : x)), /tensor 'model.layers.1.input_layernorm.weight' has shape \[1, 128\], expected \[128\]/],
    ['no lm_head with untied embeddings', (t: E) => t.filter((x) => x.name !== 'lm_head.weight'), /missing tensor 'lm_head.weight'/],
  ])('%s', (_n, edit, msg) => {
    expectModelError(() => loadHF(hf({}, edit)), msg);
  });

  it('Qwen2 without its q/k/v biases is a missing tensor', () => {
    expectModelError(() => loadHF(hf({ architectures: ['Qwen2ForCausalLM'] })), /missing tensor 'model.layers.0.self_attn.q_proj.bias'/);
  });

  it('rotary_emb.inv_freq buffers (old Llama conversions) are ignored; tied embeddings ignore a stored lm_head, as transformers does', () => {
    const base = loadHF(hf({}));
    const inv = loadHF(hf({}, (t) => [...t, f32('model.layers.0.self_attn.rotary_emb.inv_freq', [16]), f32('model.layers.1.self_attn.rotary_emb.inv_freq', [16])]));
    expect(inv.output.toFloat32()).toEqual(base.output.toFloat32());
    const tied = loadHF(hf({ tie_word_embeddings: true }));
    expect(tied.output).toBe(tied.tokEmbd);
    expect(tied.output.toFloat32()).not.toEqual(base.output.toFloat32());
    expect(loadHF(hf({ tie_word_embeddings: true }, (t) => t.filter((x) => x.name !== 'lm_head.weight'))).output.toFloat32()).toEqual(base.tokEmbd.toFloat32());
  });
});

// ---- llama2.c ----

describe('llama2.c headers are validated against the file', () => {
  const original = readFileSync(STORIES_BIN);
  /** stories260K.bin (dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, vocab 512 shared, seq_len 512) with header fields set. */
  function bin(fields: Partial<Record<'dim' | 'hidden' | 'layers' | 'heads' | 'kvHeads' | 'vocab' | 'seqLen', number>>, size = original.length): string {
    const b = Buffer.alloc(size);
    original.copy(b, 0, 0, Math.min(size, original.length));
    const at = { dim: 0, hidden: 4, layers: 8, heads: 12, kvHeads: 16, vocab: 20, seqLen: 24 };
    for (const [k, v] of Object.entries(fields)) b.writeInt32LE(v, at[k as keyof typeof at]);
    const f = path.join(tmp, 'bad.bin');
    writeFileSync(f, b);
    return f;
  }
  const load = (f: string) => llamaFromLlama2c(readLlama2c(f));

  it('the unedited file loads', () => {
    expect(load(bin({})).config.layers).toBe(5);
  });

  it.each([
    ['fewer layers than the file holds', { layers: 4 }, /^bad.bin: the header describes \d+ bytes but the file has 1056540: a header field/],
    ['more layers than the file holds', { layers: 6 }, /bad.bin: truncated: the header describes \d+ bytes but the file has 1056540/],
    ['a classifier the file does not have (negative vocab_size)', { vocab: -512 }, /truncated/],
    ['an odd head size', { heads: 64 }, /bad.bin: the head size dim \/ n_heads = 1 is odd/],
    ['kv heads not dividing heads', { kvHeads: 3 }, /n_heads 8 is not a multiple of n_kv_heads 3/],
    ['a zero field', { hidden: 0 }, /header field hidden_dim = 0 is out of range/],
  ])('%s', (_n, fields, msg) => {
    expectModelError(() => load(bin(fields)), msg);
  });

  it('seq_len 1 (with the file sized to match) is refused by the config check', () => {
    // freq_cis takes seq_len * head_size floats at the end (shared classifier): drop 511 rows of it.
    expectModelError(() => load(bin({ seqLen: 1 }, original.length - 511 * 8 * 4)), /bad.bin: header field seq_len = 1 is outside \[2, 16777216\]/);
  });
});
