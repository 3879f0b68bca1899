/** Builds a LlamaModel's config and weights from a GGUF file (architectures llama, mistral, qwen2). */
import { ModelFileError } from '../formats/errors.js';
import { loadTensor, type GGUFFile, type GGUFTensorInfo } from '../formats/gguf.js';
import { Tensor } from '../tensor/tensor.js';
import type { LlamaConfig } from './config.js';
import type { LlamaLayerWeights, LlamaWeights } from './llama.js';

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
  };
}

export function llamaWeightsFromGGUF(g: GGUFFile, c: LlamaConfig, onProgress?: (done: number, total: number) => void): LlamaWeights {
  const file = g.path.split('/').pop()!;
  const byName = new Map<string, GGUFTensorInfo>(g.tensors.map((t) => [t.name, t]));
  let done = 0;
  const total = g.tensors.length;
  const get = (name: string, shape: number[], optional = false): Tensor | null => {
    const info = byName.get(name);
    if (!info) {
      if (optional) return null;
      throw new ModelFileError(file, `missing tensor '${name}'`);
    }
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
      throw new ModelFileError(file, `tensor '${name}' has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}]`);
    const t = loadTensor(g, info);
    onProgress?.(++done, total);
    return t;
  };
  const vec = (name: string, n: number, optional = false): Tensor | null => {
    const t = get(name, [n], optional);
    return t && t.dtype !== 'f32' ? new Tensor('f32', t.shape, t.toFloat32()) : t;
  };
  const qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
  const layers: LlamaLayerWeights[] = [];
  for (let l = 0; l < c.layers; l++) {
    const p = `blk.${l}.`;
    layers.push({
      attnNorm: vec(p + 'attn_norm.weight', c.dim)!,
      wq: get(p + 'attn_q.weight', [qd, c.dim])!,
      wk: get(p + 'attn_k.weight', [kvd, c.dim])!,
      wv: get(p + 'attn_v.weight', [kvd, c.dim])!,
      bq: vec(p + 'attn_q.bias', qd, true),
      bk: vec(p + 'attn_k.bias', kvd, true),
      bv: vec(p + 'attn_v.bias', kvd, true),
      wo: get(p + 'attn_output.weight', [c.dim, qd])!,
      ffnNorm: vec(p + 'ffn_norm.weight', c.dim)!,
      wGate: get(p + 'ffn_gate.weight', [c.ffnDim, c.dim])!,
      wUp: get(p + 'ffn_up.weight', [c.ffnDim, c.dim])!,
      wDown: get(p + 'ffn_down.weight', [c.dim, c.ffnDim])!,
    });
  }
  const tokEmbd = get('token_embd.weight', [c.vocabSize, c.dim])!;
  const outNorm = vec('output_norm.weight', c.dim)!;
  const output = get('output.weight', [c.vocabSize, c.dim], true) ?? tokEmbd;
  return { tokEmbd, layers, outNorm, output };
}
