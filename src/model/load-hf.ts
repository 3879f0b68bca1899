/**
 * A LlamaModel from a Hugging Face directory (config.json + safetensors): LlamaForCausalLM,
 * MistralForCausalLM, Qwen2ForCausalLM, MixtralForCausalLM (block_sparse_moe experts w1/w3/w2). HF weights rotate the two halves of each head (NeoX
 * RoPE) and are used as stored (no Q/K permutation).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ModelFileError } from '../formats/errors.js';
import { readGptqConfig, readGptqLinear, type GptqCheckpointConfig } from '../formats/gptq-checkpoint.js';
import { loadSafetensor, openSafetensorsDir, type SafetensorsEntry } from '../formats/safetensors.js';
import { gptqKernelSupport } from '../tensor/int-weight.js';
import { runnableWeight } from './gptq-weight.js';
import { Tensor } from '../tensor/tensor.js';
import { weightReader } from './weight-reader.js';
import { checkLlamaConfig, type LlamaConfig } from './config.js';
import type { LinearWeight, LlamaWeights } from './llama.js';
import { parseJson } from '../formats/json.js';

const ARCHS: Record<string, string> = { LlamaForCausalLM: 'llama', MistralForCausalLM: 'mistral', Qwen2ForCausalLM: 'qwen2', MixtralForCausalLM: 'mixtral' };

/** config.json as an object, or a ModelFileError. */
function readConfigJson(dir: string): Record<string, unknown> {
  const file = path.join(dir, 'config.json');
  if (!existsSync(file)) throw new ModelFileError(path.basename(dir), 'no config.json in the directory');
  let j: unknown;
  try {
    j = parseJson(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ModelFileError('config.json', `not valid JSON (${(err as Error).message})`);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new ModelFileError('config.json', 'not a JSON object');
  return j as Record<string, unknown>;
}

export function llamaConfigFromHF(dir: string): LlamaConfig {
  const j = readConfigJson(dir);
  const fail = (m: string): never => {
    throw new ModelFileError('config.json', m);
  };
  const archName = (j.architectures as string[] | undefined)?.[0];
  const arch = ARCHS[archName ?? ''];
  if (!arch) fail(`architecture ${JSON.stringify(archName)} is not supported (supported: ${Object.keys(ARCHS).join(', ')})`);
  // A number, or def when the key is absent (null only where `nullable`: transformers then uses def too).
  const num = (k: string, def?: number, nullable = false, o: Record<string, unknown> = j, where = k): number => {
    const v = o[k] === null && nullable ? undefined : o[k];
    if (v === undefined) {
      if (def === undefined) fail(`missing ${where}`);
      return def!;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${where} must be a finite number but is ${JSON.stringify(v)}`);
    return v as number;
  };
  const int = (k: string, def?: number, nullable = false): number => {
    const v = num(k, def, nullable);
    if (!Number.isInteger(v)) fail(`${k} must be an integer but is ${v}`);
    return v;
  };
  const bool = (k: string, def: boolean): boolean => {
    const v = j[k] ?? def;
    if (typeof v !== 'boolean') fail(`${k} must be true or false but is ${JSON.stringify(v)}`);
    return v as boolean;
  };
  const act = j.hidden_act ?? 'silu';
  if (act !== 'silu' && act !== 'swish') fail(`hidden_act ${JSON.stringify(act)} is not supported (Llama-family MLPs use silu)`);
  if (arch !== 'qwen2' && bool('attention_bias', false)) fail('attention_bias = true (biases on q/k/v/o_proj) is not supported');
  if (bool('mlp_bias', false)) fail('mlp_bias = true is not supported');
  bool('tie_word_embeddings', false); // read by llamaWeightsFromHF
  const prf = num('partial_rotary_factor', 1, true);
  if (prf !== 1) fail(`partial_rotary_factor = ${prf} is not supported (Llama-family models rotate the whole head)`);
  const dim = int('hidden_size');
  const heads = int('num_attention_heads');
  if (heads < 1) fail(`num_attention_heads = ${heads} must be at least 1`);
  if ((j.head_dim ?? null) === null && dim % heads) fail(`hidden_size = ${dim} is not a multiple of num_attention_heads = ${heads} (and head_dim is not given)`);
  const headDim = int('head_dim', dim / heads, true);
  const layers = int('num_hidden_layers');
  const config: LlamaConfig = {
    architecture: arch!,
    dim, layers, heads, kvHeads: int('num_key_value_heads', heads, true), headDim, ffnDim: int('intermediate_size'), vocabSize: int('vocab_size'),
    normEps: num('rms_norm_eps', 1e-6),
    ...rope(j, num, int('max_position_embeddings', 2048), fail),
    ropeDim: headDim,
    ropeStyle: 'neox',
    slidingWindow: slidingWindow(j, arch!, layers, int, bool, fail),
    ...(arch === 'mixtral' ? { experts: int('num_local_experts'), expertsUsed: int('num_experts_per_tok'), normTopK: true } : {}),
  };
  const ropeKey = j.rope_scaling !== undefined && j.rope_scaling !== null ? 'rope_scaling' : 'rope_parameters';
  return checkLlamaConfig(config, 'config.json', {
    dim: 'hidden_size', layers: 'num_hidden_layers', heads: 'num_attention_heads', kvHeads: 'num_key_value_heads', headDim: 'head_dim',
    ffnDim: 'intermediate_size', vocabSize: 'vocab_size', contextLength: 'max_position_embeddings', normEps: 'rms_norm_eps',
    ropeTheta: 'rope_theta', ropeScale: 'rope_scaling.factor', ropeDim: 'head_dim', slidingWindow: 'sliding_window', ropeScaling: ropeKey,
    ropeScalingFields: {
      factor: `${ropeKey}.factor`, origContext: `${ropeKey}.original_max_position_embeddings`, betaFast: `${ropeKey}.beta_fast`, betaSlow: `${ropeKey}.beta_slow`,
      attnFactor: `${ropeKey}.attention_factor`, lowFreqFactor: `${ropeKey}.low_freq_factor`, highFreqFactor: `${ropeKey}.high_freq_factor`,
      shortFactor: `${ropeKey}.short_factor`, longFactor: `${ropeKey}.long_factor`,
    },
    experts: 'num_local_experts', expertsUsed: 'num_experts_per_tok',
  });
}

type NumReader = (k: string, def?: number, nullable?: boolean, o?: Record<string, unknown>, where?: string) => number;

/** The keys each transformers rope_type reads besides type / rope_type / rope_theta (its _validate_*_rope_parameters). */
const ROPE_KEYS: Record<string, string[]> = {
  default: [],
  linear: ['factor'],
  dynamic: ['factor'],
  yarn: ['factor', 'original_max_position_embeddings', 'attention_factor', 'beta_fast', 'beta_slow', 'mscale', 'mscale_all_dim', 'truncate'],
  llama3: ['factor', 'original_max_position_embeddings', 'low_freq_factor', 'high_freq_factor'],
  longrope: ['short_factor', 'long_factor', 'original_max_position_embeddings', 'attention_factor', 'factor'],
};

type RopeFields = Pick<LlamaConfig, 'ropeTheta' | 'ropeScale' | 'ropeScaling' | 'contextLength'>;

/**
 * RoPE from transformers' keys: rope_theta and rope_scaling (v4), or rope_parameters (v5), with
 * type or rope_type default | linear | dynamic | yarn | llama3 | longrope, read as
 * modeling_rope_utils.py (5.x) reads them. Where both objects are given they must agree; a key the
 * type does not read, an unknown type or a missing required key is an error naming it. The context
 * length grows to what the scaling is for, as vLLM derives it: yarn max(max_position_embeddings,
 * factor * original), dynamic factor * max_position_embeddings (transformers' dynamic NTK starts past
 * max_position_embeddings, which is then its original context).
 */
function rope(j: Record<string, unknown>, num: NumReader, maxPos: number, fail: (m: string) => never): RopeFields {
  // Each source as [how it reads in a message, value].
  const thetas: [string, number][] = [];
  const positive = (where: string, v: number) => {
    if (!(v > 0)) fail(`${where} = ${v} must be a finite number > 0`);
    return [`${where} = ${v}`, v] as [string, number];
  };
  if (j.rope_theta !== undefined) thetas.push(positive('rope_theta', num('rope_theta')));
  const topOrig = j.original_max_position_embeddings ?? null;
  const parsed: [string, Omit<RopeFields, 'ropeTheta'>][] = [];
  for (const key of ['rope_scaling', 'rope_parameters']) {
    const o = j[key];
    if (o === undefined || o === null) continue;
    if (typeof o !== 'object' || Array.isArray(o)) return fail(`${key} must be an object or null but is ${JSON.stringify(o)}`);
    const r = o as Record<string, unknown>;
    if (r.rope_theta !== undefined) thetas.push(positive(`${key}.rope_theta`, num('rope_theta', undefined, false, r, `${key}.rope_theta`)));
    if (r.type !== undefined && r.rope_type !== undefined && r.type !== r.rope_type)
      fail(`${key}.type ${JSON.stringify(r.type)} and ${key}.rope_type ${JSON.stringify(r.rope_type)} disagree`);
    const typeKey = r.rope_type !== undefined ? 'rope_type' : 'type';
    const type = r[typeKey] ?? (key === 'rope_parameters' ? 'default' : undefined);
    if (type === undefined) fail(`${key} names no scaling type (neither ${key}.rope_type nor ${key}.type is present)`);
    if (typeof type !== 'string' || !(type in ROPE_KEYS))
      fail(`${key}.${typeKey} ${JSON.stringify(type)} is not supported (supported: ${Object.keys(ROPE_KEYS).join(', ')})`);
    const t = type as string;
    for (const k of Object.keys(r))
      if (!['type', 'rope_type', 'rope_theta', ...ROPE_KEYS[t]!].includes(k)) fail(`${key}.${k} is not a parameter of RoPE scaling type '${t}'`);
    const n = (k: string, def?: number) => num(k, def, true, r, `${key}.${k}`);
    const list = (k: string): number[] => {
      const v = r[k];
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'number')) return fail(`${key}.${k} must be a list of numbers but is ${JSON.stringify(v)}`);
      return v as number[];
    };
    const orig = (): number => {
      const inner = r.original_max_position_embeddings ?? null;
      if (topOrig !== null && inner !== null && topOrig !== inner)
        fail(`original_max_position_embeddings = ${JSON.stringify(topOrig)} and ${key}.original_max_position_embeddings = ${JSON.stringify(inner)} disagree`);
      const v = topOrig ?? inner ?? (t === 'yarn' || t === 'llama3' || t === 'longrope' ? undefined : maxPos);
      if (v === undefined) fail(`${key}.original_max_position_embeddings is missing (RoPE scaling type '${t}' needs it)`);
      if (!Number.isInteger(v)) fail(`${key}.original_max_position_embeddings must be an integer but is ${JSON.stringify(v)}`);
      return v as number;
    };
    const pos = (k: string, def?: number) => {
      const v = n(k, def);
      if (!(v > 0)) fail(`${key}.${k} = ${v} must be a finite number > 0`);
      return v;
    };
    const at = `${key} = ${JSON.stringify(r)}`;
    if (t === 'default') parsed.push([at, { ropeScale: 1, contextLength: maxPos }]);
    else if (t === 'linear') parsed.push([at, { ropeScale: pos('factor'), contextLength: maxPos }]);
    else if (t === 'dynamic') {
      const factor = pos('factor');
      parsed.push([at, { ropeScale: 1, ropeScaling: { type: 'dynamic', factor, origContext: maxPos }, contextLength: Math.max(maxPos, Math.floor(factor * maxPos)) }]);
    } else if (t === 'yarn') {
      const origContext = orig();
      const factor = pos('factor', maxPos / origContext);
      const mscale = n('mscale', 0), mscaleAll = n('mscale_all_dim', 0);
      const getMscale = (s: number, m = 1) => (s <= 1 ? 1 : 0.1 * m * Math.log(s) + 1);
      const attnFactor = n('attention_factor', mscale && mscaleAll ? getMscale(factor, mscale) / getMscale(factor, mscaleAll) : getMscale(factor));
      const truncate = r.truncate ?? true;
      if (typeof truncate !== 'boolean') fail(`${key}.truncate must be true or false but is ${JSON.stringify(truncate)}`);
      parsed.push([at, {
        ropeScale: 1, contextLength: Math.max(maxPos, Math.floor(factor * origContext)),
        // transformers reads `beta_fast or 32`: 0 and null mean the default too.
        ropeScaling: { type: 'yarn', factor, origContext, betaFast: n('beta_fast', 32) || 32, betaSlow: n('beta_slow', 1) || 1, extFactor: 1, attnFactor, truncate: truncate as boolean },
      }]);
    } else if (t === 'llama3') {
      parsed.push([at, {
        ropeScale: 1, contextLength: maxPos,
        ropeScaling: { type: 'llama3', factor: pos('factor'), lowFreqFactor: n('low_freq_factor'), highFreqFactor: n('high_freq_factor'), origContext: orig() },
      }]);
    } else {
      const origContext = orig();
      const factor = pos('factor', maxPos / origContext);
      const attnFactor = n('attention_factor', factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(origContext)));
      parsed.push([at, {
        ropeScale: 1, contextLength: maxPos,
        ropeScaling: { type: 'longrope', shortFactor: list('short_factor'), longFactor: list('long_factor'), origContext, attnFactor, choose: 'position' },
      }]);
    }
  }
  for (const [k, v] of thetas) if (v !== thetas[0]![1]) fail(`${thetas[0]![0]} and ${k} disagree`);
  for (const [k, v] of parsed)
    if (JSON.stringify(v) !== JSON.stringify(parsed[0]![1])) fail(`${parsed[0]![0]} and ${k} disagree`);
  return { ropeTheta: thetas.length ? thetas[0]![1] : 10000, ...(parsed[0]?.[1] ?? { ropeScale: 1, contextLength: maxPos }) };
}

/**
 * The sliding window as each architecture's transformers config defines it: Mistral's
 * sliding_window (default 4096, null for none) on every layer; Mixtral's (default none);
 * Qwen2's only with use_sliding_window, on the layers layer_types (or max_window_layers) mark
 * sliding; Llama has none. A mix of windowed and full layers is refused (one window per model here).
 */
function slidingWindow(
  j: Record<string, unknown>, arch: string, layers: number, int: (k: string, def?: number, nullable?: boolean) => number,
  bool: (k: string, def: boolean) => boolean, fail: (m: string) => never,
): number {
  if (arch === 'llama') return 0;
  const window = (def: number | null) => {
    if (j.sliding_window === null || (j.sliding_window === undefined && def === null)) return 0;
    const w = int('sliding_window', def ?? undefined);
    if (w < 1) fail(`sliding_window = ${w} must be a positive integer or null`);
    return w;
  };
  if (arch === 'mistral') return window(4096);
  if (arch === 'mixtral') return window(null);
  // qwen2
  if (!bool('use_sliding_window', false)) return 0;
  const w = window(4096);
  if (w === 0) return 0;
  let types = j.layer_types;
  if (types === undefined || types === null) {
    const first = int('max_window_layers', 28);
    types = Array.from({ length: Math.min(layers, 1024) }, (_, i) => (i >= first ? 'sliding_attention' : 'full_attention'));
  }
  if (!Array.isArray(types) || types.some((t) => t !== 'sliding_attention' && t !== 'full_attention'))
    fail(`layer_types must be a list of "sliding_attention" / "full_attention" but is ${JSON.stringify(types)}`);
  const sliding = (types as string[]).filter((t) => t === 'sliding_attention').length;
  if (sliding === 0) return 0;
  if (sliding !== (types as string[]).length)
    fail(`sliding-window attention on ${sliding} of ${(types as string[]).length} layers (layer_types / max_window_layers) is not supported: tessera applies one window to every layer`);
  return w;
}

export interface HFLoadInfo {
  /** The GPTQ settings when the checkpoint is GPTQ-quantised. */
  gptq: GptqCheckpointConfig | null;
  /** Quantised projections that have no packed kernel and were dequantised to f32 (with why). */
  dequantized: string[];
}

/** Tensors a checkpoint may carry that the model does not need: old Llama conversions saved the
 *  RoPE inverse frequencies as a buffer (llama.cpp's converter skips them too). */
const HARMLESS = /\.rotary_emb\.inv_freq$/;

export function llamaWeightsFromHF(dir: string, c: LlamaConfig, onProgress?: (done: number, total: number) => void, info?: HFLoadInfo): LlamaWeights {
  const map = openSafetensorsDir(dir);
  const gptq = readGptqConfig(dir);
  if (info) {
    info.gptq = gptq;
    info.dequantized = [];
  }
  const tied = readConfigJson(dir).tie_word_embeddings === true;
  checkCheckpoint(map, c);
  const used = new Set<string>();
  const lookup = (name: string) => {
    const e = map.get(name);
    if (e) used.add(name);
    return e;
  };
  const reader = weightReader(path.basename(dir), (name) => {
    const e = lookup(name);
    return e && {
      shape: e.shape, file: path.basename(e.file),
      load: () => {
        if (!FLOAT_DTYPES.includes(e.dtype))
          throw new ModelFileError(path.basename(e.file), `tensor '${name}' has dtype ${e.dtype}, expected ${FLOAT_DTYPES.join(', ')}`);
        return loadSafetensor(e);
      },
    };
  }, map.size, 'f32', onProgress);
  const { vec } = reader;
  // A projection: dense `<prefix>.weight`, or GPTQ `<prefix>.qweight` etc. when the checkpoint says so.
  const biases = new Map<string, Tensor | null>();
  const get = (name: string, shape: [number, number], optional = false): LinearWeight | null => {
    const prefix = name.replace(/\.weight$/, '');
    if (!gptq || map.has(name) || !map.has(prefix + '.qweight')) return reader.get(name, shape, optional);
    const l = readGptqLinear(lookup, prefix, shape[0], shape[1], gptq);
    const run = runnableWeight(l);
    if (!run.packed) info?.dequantized.push(`${prefix}: ${gptqKernelSupport(l)}`);
    if (l.bias) biases.set(prefix, Tensor.from('f32', [shape[0]], l.bias));
    return run.weight;
  };
  // Qwen2's q/k/v projections have biases (the dense `<prefix>.bias`, or a GPTQ layer's); other
  // projections have none, though AutoGPTQ stores zeros for them.
  const bias = (prefix: string, n: number): Tensor | null => biases.get(prefix) ?? vec(prefix + '.bias', n)!;
  const noBias = (prefix: string) => {
    const b = biases.get(prefix);
    if (b && b.toFloat32().some((v) => v !== 0)) throw new ModelFileError(prefix, 'has a non-zero bias, which this architecture does not use');
  };
  const qkvBias = c.architecture === 'qwen2';
  const qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
  const layers = Array.from({ length: c.layers }, (_, l) => {
    const p = `model.layers.${l}.`;
    return {
      attnNorm: vec(p + 'input_layernorm.weight', c.dim)!,
      wq: get(p + 'self_attn.q_proj.weight', [qd, c.dim])!,
      wk: get(p + 'self_attn.k_proj.weight', [kvd, c.dim])!,
      wv: get(p + 'self_attn.v_proj.weight', [kvd, c.dim])!,
      bq: qkvBias ? bias(p + 'self_attn.q_proj', qd) : null,
      bk: qkvBias ? bias(p + 'self_attn.k_proj', kvd) : null,
      bv: qkvBias ? bias(p + 'self_attn.v_proj', kvd) : null,
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
  const bias0 = qkvBias ? [] : ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'];
  for (let l = 0; l < c.layers; l++)
    for (const s of [...bias0, 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']) noBias(`model.layers.${l}.${s}`);
  if (map.has('lm_head.qweight')) throw new ModelFileError('lm_head', 'a GPTQ-quantised lm_head is not supported (only the layers\' projections)');
  const tokEmbd = reader.get('model.embed_tokens.weight', [c.vocabSize, c.dim])!;
  const outNorm = vec('model.norm.weight', c.dim)!;
  // Tied embeddings: transformers ties lm_head to the embedding after loading, so a stored lm_head is ignored.
  const output = tied ? tokEmbd : reader.get('lm_head.weight', [c.vocabSize, c.dim])!;
  const unused = [...map.keys()].find((n) => !used.has(n) && !HARMLESS.test(n) && !(tied && n === 'lm_head.weight'));
  if (unused) {
    const e = map.get(unused)!;
    throw new ModelFileError(path.basename(e.file), `tensor '${unused}' is not used by a ${c.architecture} model with this config.json; tessera does not read it`);
  }
  return { tokEmbd, layers, outNorm, output };
}

const FLOAT_DTYPES = ['F32', 'F16', 'BF16'];

/** Before reading any weight: num_hidden_layers and vocab_size must match the tensors present. */
function checkCheckpoint(map: Map<string, SafetensorsEntry>, c: LlamaConfig): void {
  let n = 0, example = '';
  for (const name of map.keys()) {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (m && Number(m[1]) + 1 > n) [n, example] = [Number(m[1]) + 1, name];
  }
  if (c.layers < n) throw new ModelFileError('config.json', `num_hidden_layers = ${c.layers} but the checkpoint has tensors for ${n} layers (e.g. '${example}')`);
  if (c.layers > n) throw new ModelFileError('config.json', `num_hidden_layers = ${c.layers} but the checkpoint has tensors for only ${n} layers`);
  const emb = map.get('model.embed_tokens.weight');
  if (emb && emb.shape.length === 2 && emb.shape[0] !== c.vocabSize)
    throw new ModelFileError('config.json', `vocab_size = ${c.vocabSize} but tensor 'model.embed_tokens.weight' has ${emb.shape[0]} rows`);
}
