/**
 * A LlamaModel from a Hugging Face directory (config.json + safetensors): LlamaForCausalLM,
 * MistralForCausalLM, Qwen2ForCausalLM, MixtralForCausalLM (block_sparse_moe experts w1/w3/w2). HF weights rotate the two halves of each head (NeoX
 * RoPE) and are used as stored (no Q/K permutation).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ModelFileError } from '../formats/errors.js';
import { readGptqConfig, readGptqLinear, type GptqCheckpointConfig } from '../formats/gptq-checkpoint.js';
import { loadSafetensor, openSafetensorsDir } from '../formats/safetensors.js';
import { gptqKernelSupport } from '../tensor/int-weight.js';
import { runnableWeight } from './gptq-weight.js';
import { Tensor } from '../tensor/tensor.js';
import { weightReader } from './weight-reader.js';
import type { LlamaConfig } from './config.js';
import type { LinearWeight, LlamaWeights } from './llama.js';

const ARCHS: Record<string, string> = { LlamaForCausalLM: 'llama', MistralForCausalLM: 'mistral', Qwen2ForCausalLM: 'qwen2', MixtralForCausalLM: 'mixtral' };

export function llamaConfigFromHF(dir: string): LlamaConfig {
  const file = path.join(dir, 'config.json');
  if (!existsSync(file)) throw new ModelFileError(path.basename(dir), 'no config.json in the directory');
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ModelFileError('config.json', `not valid JSON (${(err as Error).message})`);
  }
  const fail = (m: string): never => {
    throw new ModelFileError('config.json', m);
  };
  const archName = (j.architectures as string[] | undefined)?.[0];
  const arch = ARCHS[archName ?? ''];
  if (!arch) fail(`architecture ${JSON.stringify(archName)} is not supported (supported: ${Object.keys(ARCHS).join(', ')})`);
  const int = (k: string, def?: number, min = 1): number => {
    const v = j[k] ?? def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(`${k} must be an integer >= ${min} but is ${JSON.stringify(v)}`);
    return v as number;
  };
  const dim = int('hidden_size');
  const heads = int('num_attention_heads');
  const kvHeads = int('num_key_value_heads', heads);
  if (heads % kvHeads) fail(`num_attention_heads (${heads}) is not a multiple of num_key_value_heads (${kvHeads})`);
  const headDim = int('head_dim', Math.floor(dim / heads));
  const rp = (j.rope_parameters ?? {}) as Record<string, unknown>;
  const scaling = (j.rope_scaling ?? null) as Record<string, unknown> | null;
  let ropeScale = 1;
  if (scaling) {
    const t = scaling.rope_type ?? scaling.type;
    if (t === 'linear') ropeScale = Number(scaling.factor);
    else if (t !== 'default') fail(`rope_scaling type ${JSON.stringify(t)} is not supported (only linear)`);
  }
  const sw = j.sliding_window;
  return {
    architecture: arch!,
    dim, layers: int('num_hidden_layers'), heads, kvHeads, headDim, ffnDim: int('intermediate_size'), vocabSize: int('vocab_size'),
    contextLength: int('max_position_embeddings', 2048),
    normEps: typeof j.rms_norm_eps === 'number' ? j.rms_norm_eps : 1e-6,
    ropeTheta: Number(j.rope_theta ?? rp.rope_theta ?? 10000),
    ropeDim: headDim,
    ropeStyle: 'neox',
    ropeScale,
    slidingWindow: typeof sw === 'number' && (j.use_sliding_window ?? true) ? sw : 0,
    ...(arch === 'mixtral'
      ? { experts: int('num_local_experts'), expertsUsed: int('num_experts_per_tok'), normTopK: true }
      : {}),
  };
}

export interface HFLoadInfo {
  /** The GPTQ settings when the checkpoint is GPTQ-quantised. */
  gptq: GptqCheckpointConfig | null;
  /** Quantised projections that have no packed kernel and were dequantised to f32 (with why). */
  dequantized: string[];
}

export function llamaWeightsFromHF(dir: string, c: LlamaConfig, onProgress?: (done: number, total: number) => void, info?: HFLoadInfo): LlamaWeights {
  const map = openSafetensorsDir(dir);
  const gptq = readGptqConfig(dir);
  if (info) {
    info.gptq = gptq;
    info.dequantized = [];
  }
  const reader = weightReader(path.basename(dir), (name) => {
    const e = map.get(name);
    return e && { shape: e.shape, file: path.basename(e.file), load: () => loadSafetensor(e) };
  }, map.size, 'f32', onProgress);
  const { vec } = reader;
  // A projection: dense `<prefix>.weight`, or GPTQ `<prefix>.qweight` etc. when the checkpoint says so.
  const biases = new Map<string, Tensor | null>();
  const get = (name: string, shape: [number, number], optional = false): LinearWeight | null => {
    const prefix = name.replace(/\.weight$/, '');
    if (!gptq || map.has(name) || !map.has(prefix + '.qweight')) return reader.get(name, shape, optional);
    const l = readGptqLinear((n) => map.get(n), prefix, shape[0], shape[1], gptq);
    const run = runnableWeight(l);
    if (!run.packed) info?.dequantized.push(`${prefix}: ${gptqKernelSupport(l)}`);
    if (l.bias) biases.set(prefix, Tensor.from('f32', [shape[0]], l.bias));
    return run.weight;
  };
  // A projection's bias: the dense `<prefix>.bias`, or a GPTQ layer's (AutoGPTQ stores zeros for bias-free layers).
  const bias = (prefix: string, n: number): Tensor | null => biases.get(prefix) ?? vec(prefix + '.bias', n, true);
  const noBias = (prefix: string) => {
    const b = biases.get(prefix);
    if (b && b.toFloat32().some((v) => v !== 0)) throw new ModelFileError(prefix, 'has a non-zero bias, which this architecture does not use');
  };
  const qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
  const layers = Array.from({ length: c.layers }, (_, l) => {
    const p = `model.layers.${l}.`;
    return {
      attnNorm: vec(p + 'input_layernorm.weight', c.dim)!,
      wq: get(p + 'self_attn.q_proj.weight', [qd, c.dim])!,
      wk: get(p + 'self_attn.k_proj.weight', [kvd, c.dim])!,
      wv: get(p + 'self_attn.v_proj.weight', [kvd, c.dim])!,
      bq: bias(p + 'self_attn.q_proj', qd),
      bk: bias(p + 'self_attn.k_proj', kvd),
      bv: bias(p + 'self_attn.v_proj', kvd),
      wo: get(p + 'self_attn.o_proj.weight', [c.dim, qd])!,
      ffnNorm: vec(p + 'post_attention_layernorm.weight', c.dim)!,
      ...(c.experts
        ? {
            moe: {
              router: reader.get(p + 'block_sparse_moe.gate.weight', [c.experts, c.dim])!,
              gate: Array.from({ length: c.experts }, (_, e) => reader.get(`${p}block_sparse_moe.experts.${e}.w1.weight`, [c.ffnDim, c.dim])!),
              down: Array.from({ length: c.experts }, (_, e) => reader.get(`${p}block_sparse_moe.experts.${e}.w2.weight`, [c.dim, c.ffnDim])!),
              up: Array.from({ length: c.experts }, (_, e) => reader.get(`${p}block_sparse_moe.experts.${e}.w3.weight`, [c.ffnDim, c.dim])!),
            },
          }
        : {
            wGate: get(p + 'mlp.gate_proj.weight', [c.ffnDim, c.dim])!,
            wUp: get(p + 'mlp.up_proj.weight', [c.ffnDim, c.dim])!,
            wDown: get(p + 'mlp.down_proj.weight', [c.dim, c.ffnDim])!,
          }),
    };
  });
  for (let l = 0; l < c.layers; l++)
    for (const s of ['self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']) noBias(`model.layers.${l}.${s}`);
  if (map.has('lm_head.qweight')) throw new ModelFileError('lm_head', 'a GPTQ-quantised lm_head is not supported (only the layers\' projections)');
  const tokEmbd = reader.get('model.embed_tokens.weight', [c.vocabSize, c.dim])!;
  return { tokEmbd, layers, outNorm: vec('model.norm.weight', c.dim)!, output: reader.get('lm_head.weight', [c.vocabSize, c.dim], true) ?? tokEmbd };
}
