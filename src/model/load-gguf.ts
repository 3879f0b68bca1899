/** Builds a LlamaModel's config and weights from a GGUF file (architectures llama, mistral, qwen2). */
import { ModelFileError } from '../formats/errors.js';
import { weightReader, type WeightReader } from './weight-reader.js';
import { IntWeight } from '../tensor/int-weight.js';
import { loadTensor, type GGUFFile, type GGUFTensorInfo } from '../formats/gguf.js';
import { Tensor } from '../tensor/tensor.js';
import type { LlamaConfig } from './config.js';
import type { LinearWeight, LlamaLayerWeights, LlamaWeights, MoeWeights } from './llama.js';

const SUPPORTED = ['llama', 'mistral', 'qwen2'];

export function llamaConfigFromGGUF(g: GGUFFile): LlamaConfig {
  const file = g.path.split('/').pop()!;
  const fail = (m: string): never => {
    throw new ModelFileError(file, m);
  };
  const arch = g.metadata.get('general.architecture');
  if (typeof arch !== 'string') fail('missing general.architecture');
  if (!SUPPORTED.includes(arch as string)) fail(`architecture '${arch}' is not supported (supported: ${SUPPORTED.join(', ')})`);
  const num = (key: string, def?: number): number => {
    const v = g.metadata.get(`${arch}.${key}`);
    if (v === undefined) {
      if (def === undefined) fail(`missing ${arch}.${key}`);
      return def!;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${arch}.${key} must be a number but is ${String(v)}`);
    return v as number;
  };
  const int = (key: string, def?: number, min = 1, max = 1 << 24): number => {
    const v = num(key, def);
    if (!Number.isInteger(v) || v < min || v > max) fail(`${arch}.${key} = ${v} is outside [${min}, ${max}]`);
    return v;
  };
  const dim = int('embedding_length');
  const heads = int('attention.head_count', undefined, 1, 4096);
  const kvHeads = int('attention.head_count_kv', heads, 1, heads);
  if (heads % kvHeads) fail(`${arch}.attention.head_count (${heads}) is not a multiple of head_count_kv (${kvHeads})`);
  const headDim = int('attention.key_length', dim % heads === 0 ? dim / heads : undefined, 1, 512);
  if (g.tensors.some((t) => t.name === 'rope_freqs.weight'))
    fail("tensor 'rope_freqs.weight' (Llama 3.1-style per-dimension RoPE frequencies) is not supported yet");
  const emb = g.tensors.find((t) => t.name === 'token_embd.weight');
  if (!emb) fail("missing tensor 'token_embd.weight'");
  const vocab = emb!.shape[0]!;
  const scalingType = g.metadata.get(`${arch}.rope.scaling.type`);
  let ropeScale = 1;
  if (scalingType === 'linear') ropeScale = num('rope.scaling.factor', 1);
  else if (scalingType !== undefined && scalingType !== 'none') fail(`RoPE scaling '${String(scalingType)}' is not supported (only linear)`);
  return {
    architecture: arch as string,
    dim,
    layers: int('block_count', undefined, 1, 1024),
    heads,
    kvHeads,
    headDim,
    ffnDim: int('feed_forward_length'),
    vocabSize: vocab,
    contextLength: int('context_length', 2048, 1, 1 << 24),
    normEps: num('attention.layer_norm_rms_epsilon', 1e-5),
    ropeTheta: num('rope.freq_base', 10000),
    ropeDim: int('rope.dimension_count', headDim, 2, headDim),
    // llama.cpp: LLM_ARCH_LLAMA uses normal (adjacent-pair) RoPE on Q/K permuted at conversion; qwen2 uses NeoX.
    ropeStyle: arch === 'qwen2' ? 'neox' : 'interleaved',
    ropeScale,
    slidingWindow: int('attention.sliding_window', 0, 0, 1 << 24),
    ...moeConfig(g, arch as string, fail),
  };
}

function moeConfig(g: GGUFFile, arch: string, fail: (m: string) => never): Partial<LlamaConfig> {
  const e = g.metadata.get(`${arch}.expert_count`);
  if (e === undefined || e === 0) return {};
  const k = g.metadata.get(`${arch}.expert_used_count`);
  if (typeof e !== 'number' || !Number.isInteger(e) || e < 1 || e > 1024) fail(`${arch}.expert_count = ${String(e)} is invalid`);
  if (typeof k !== 'number' || !Number.isInteger(k) || k < 1 || k > (e as number)) fail(`${arch}.expert_used_count = ${String(k)} must be in [1, ${String(e)}]`);
  const norm = g.metadata.get(`${arch}.expert_weights_norm`);
  return { experts: e as number, expertsUsed: k as number, normTopK: typeof norm === 'boolean' ? norm : true };
}

export interface GGUFWeightOptions {
  /** Q8_0/Q4_0 matrices: kept as packed blocks (linear runs on them; default) or dequantised. */
  quantized?: 'packed' | 'f16' | 'f32';
  /** Packed mode: repack Q4_0 projections into the integer kernels' column tiles (IntWeight.fromQ4_0,
   *  same numerics, faster decode; as llama.cpp repacks Q4_0). Default true. */
  repackQ4_0?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export function llamaWeightsFromGGUF(g: GGUFFile, c: LlamaConfig, options: GGUFWeightOptions | ((done: number, total: number) => void) = {}): LlamaWeights {
  const o = typeof options === 'function' ? { onProgress: options } : options;
  const onProgress = o.onProgress;
  const qmode = o.quantized ?? 'packed';
  const file = g.path.split('/').pop()!;
  const byName = new Map<string, GGUFTensorInfo>(g.tensors.map((t) => [t.name, t]));
  const reader = weightReader(file, (name) => {
    const info = byName.get(name);
    return info && { shape: info.shape, file, load: (mode) => loadTensor(g, info, mode) };
  }, g.tensors.length, qmode, onProgress);
  const { get, vec } = reader;
  const repack = qmode === 'packed' && (o.repackQ4_0 ?? true);
  // A dense projection: Q4_0 goes to the column-tile layout unless asked not to.
  const proj = (name: string, shape: [number, number]): LinearWeight => {
    const t = get(name, shape)!;
    if (!repack || t.dtype !== 'q4_0') return t;
    const w = IntWeight.fromQ4_0(t.data as Uint8Array, shape[0], shape[1]);
    t.dispose();
    return w;
  };
  const qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
  const layers: LlamaLayerWeights[] = [];
  for (let l = 0; l < c.layers; l++) {
    const p = `blk.${l}.`;
    layers.push({
      attnNorm: vec(p + 'attn_norm.weight', c.dim)!,
      wq: proj(p + 'attn_q.weight', [qd, c.dim]),
      wk: proj(p + 'attn_k.weight', [kvd, c.dim]),
      wv: proj(p + 'attn_v.weight', [kvd, c.dim]),
      bq: vec(p + 'attn_q.bias', qd, true),
      bk: vec(p + 'attn_k.bias', kvd, true),
      bv: vec(p + 'attn_v.bias', kvd, true),
      wo: proj(p + 'attn_output.weight', [c.dim, qd]),
      ffnNorm: vec(p + 'ffn_norm.weight', c.dim)!,
      ...(c.experts
        ? { moe: moeWeights(p, c, get) }
        : {
            wGate: proj(p + 'ffn_gate.weight', [c.ffnDim, c.dim]),
            wUp: proj(p + 'ffn_up.weight', [c.ffnDim, c.dim]),
            wDown: proj(p + 'ffn_down.weight', [c.dim, c.ffnDim]),
          }),
    });
  }
  // The embedding is a row lookup on f32/f16/bf16 tables: quantised ones are dequantised exactly
  // (to f32); a tied output still runs on the packed form.
  const tokEmbd = get('token_embd.weight', [c.vocabSize, c.dim], false, qmode === 'f16' ? 'f16' : 'f32')!;
  const outNorm = vec('output_norm.weight', c.dim)!;
  const output = get('output.weight', [c.vocabSize, c.dim], true) ?? get('token_embd.weight', [c.vocabSize, c.dim])!;
  return { tokEmbd, layers, outNorm, output };
}

type Getter = WeightReader['get'];

/** Experts from merged 3-D tensors (ffn_*_exps, each expert a contiguous slice) or per-expert ones. */
function moeWeights(p: string, c: LlamaConfig, get: Getter): MoeWeights {
  const E = c.experts!;
  const router = get(p + 'ffn_gate_inp.weight', [E, c.dim])!;
  const split = (t: Tensor, rows: number, cols: number): Tensor[] => {
    const per = t.data.length / E; // storage elements per expert (blocks for packed types)
    return Array.from({ length: E }, (_, e) => new Tensor(t.dtype, [rows, cols], t.data.subarray(e * per, (e + 1) * per) as never));
  };
  const merged = get(p + 'ffn_gate_exps.weight', [E, c.ffnDim, c.dim], true);
  if (merged) {
    return {
      router,
      gate: split(merged, c.ffnDim, c.dim),
      up: split(get(p + 'ffn_up_exps.weight', [E, c.ffnDim, c.dim])!, c.ffnDim, c.dim),
      down: split(get(p + 'ffn_down_exps.weight', [E, c.dim, c.ffnDim])!, c.dim, c.ffnDim),
    };
  }
  const each = (kind: string, rows: number, cols: number) => Array.from({ length: E }, (_, e) => get(`${p}ffn_${kind}.${e}.weight`, [rows, cols])!);
  return { router, gate: each('gate', c.ffnDim, c.dim), up: each('up', c.ffnDim, c.dim), down: each('down', c.dim, c.ffnDim) };
}
