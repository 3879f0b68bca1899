/** Builds a LlamaModel's config and weights from a GGUF file (architectures llama, mistral, qwen2). */
import { ModelFileError } from '../formats/errors.js';
import { weightReader, type WeightReader } from './weight-reader.js';
import { loadTensor, q4_0IntWeight, type GGUFFile, type GGUFTensorInfo } from '../formats/gguf.js';
import { Tensor } from '../tensor/tensor.js';
import { checkLlamaConfig, type LlamaConfig } from './config.js';
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
  const has = (key: string) => g.metadata.has(`${arch}.${key}`);
  // A finite number (any GGUF numeric type), or def when the key is absent.
  const num = (key: string, def?: number): number => {
    const v = g.metadata.get(`${arch}.${key}`);
    if (v === undefined) {
      if (def === undefined) fail(`missing ${arch}.${key}`);
      return def!;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${arch}.${key} must be a finite number but is ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`);
    return v as number;
  };
  const int = (key: string, def?: number): number => {
    const v = num(key, def);
    if (!Number.isInteger(v)) fail(`${arch}.${key} must be an integer but is ${v}`);
    return v;
  };
  const str = (key: string): string | undefined => {
    const v = g.metadata.get(`${arch}.${key}`);
    if (v !== undefined && typeof v !== 'string') fail(`${arch}.${key} must be a string but is ${String(v)}`);
    return v as string | undefined;
  };
  const k = (key: string) => `${arch}.${key}`;

  const dim = int('embedding_length');
  const heads = int('attention.head_count');
  if (heads < 1) fail(`${k('attention.head_count')} = ${heads} must be at least 1`);
  if (!has('attention.key_length') && dim % heads)
    fail(`${k('embedding_length')} = ${dim} is not a multiple of ${k('attention.head_count')} = ${heads} (and ${k('attention.key_length')} is not given)`);
  const headDim = int('attention.key_length', dim / heads);
  const valueDim = int('attention.value_length', headDim);
  if (valueDim !== headDim) fail(`${k('attention.value_length')} = ${valueDim} differs from ${k('attention.key_length')} = ${headDim}, which tessera does not support`);
  const layers = int('block_count');
  checkBlockCount(g, layers, k('block_count'), fail);
  const vocab = vocabSize(g, arch as string, fail);
  const config: LlamaConfig = {
    architecture: arch as string,
    dim,
    layers,
    heads,
    kvHeads: int('attention.head_count_kv', heads),
    headDim,
    ffnDim: int('feed_forward_length'),
    vocabSize: vocab,
    contextLength: int('context_length', 2048),
    normEps: num('attention.layer_norm_rms_epsilon', 1e-5),
    ropeTheta: num('rope.freq_base', 10000),
    ropeDim: int('rope.dimension_count', headDim),
    // llama.cpp: LLM_ARCH_LLAMA uses normal (adjacent-pair) RoPE on Q/K permuted at conversion; qwen2 uses NeoX.
    ropeStyle: arch === 'qwen2' ? 'neox' : 'interleaved',
    ...ropeScaling(g, arch as string, int('context_length', 2048), num, str, fail),
    slidingWindow: int('attention.sliding_window', 0),
    ...moeConfig(g, arch as string, int, fail),
  };
  return checkLlamaConfig(config, file, {
    dim: k('embedding_length'), layers: k('block_count'), heads: k('attention.head_count'), kvHeads: k('attention.head_count_kv'),
    headDim: k('attention.key_length'), ffnDim: k('feed_forward_length'), vocabSize: "token_embd.weight's rows", contextLength: k('context_length'),
    normEps: k('attention.layer_norm_rms_epsilon'), ropeTheta: k('rope.freq_base'), ropeDim: k('rope.dimension_count'),
    ropeScale: k('rope.scaling.factor'), ropeScaling: k('rope.scaling'), ropeFreqFactors: "tensor 'rope_freqs.weight'",
    ropeScalingFields: {
      factor: k('rope.scaling.factor'), origContext: k('rope.scaling.original_context_length'), betaFast: k('rope.scaling.yarn_beta_fast'),
      betaSlow: k('rope.scaling.yarn_beta_slow'), extFactor: k('rope.scaling.yarn_ext_factor'), attnFactor: k('rope.scaling.attn_factor'),
      shortFactor: "tensor 'rope_factors_short.weight'", longFactor: "tensor 'rope_factors_long.weight'",
    },
    slidingWindow: k('attention.sliding_window'), experts: k('expert_count'), expertsUsed: k('expert_used_count'),
  });
}

/** The GGUF tensors of per-pair RoPE frequency factors; the config reads them (rotDim/2 floats each). */
const ROPE_TENSORS = ['rope_freqs.weight', 'rope_factors_long.weight', 'rope_factors_short.weight'];

/**
 * RoPE scaling as llama.cpp reads it (llama-model.cpp load_hparams, llama-context.cpp): rope.scaling.type
 * none | linear (default) | yarn | longrope; the factor from rope.scaling.factor or the older
 * rope.scale_linear (0 or absent: 1; type none ignores it); original_context_length defaults to
 * context_length. YaRN's cos/sin factor is get_mscale(factor) (divided by get_mscale(factor,
 * yarn_log_multiplier) where that is given) times rope.scaling.attn_factor when yarn_ext_factor
 * != 0, else yarn_attn_factor times attn_factor; beta_fast / beta_slow default 32 / 1.
 * rope_freqs.weight (Llama 3) divides the frequencies whatever the type; LongRoPE takes
 * rope_factors_short/long.weight, long when context_length exceeds the original context.
 */
function ropeScaling(
  g: GGUFFile, arch: string, contextLength: number, num: (key: string, def?: number) => number, str: (key: string) => string | undefined,
  fail: (m: string) => never,
): Pick<LlamaConfig, 'ropeScale' | 'ropeScaling' | 'ropeFreqFactors'> {
  const type = str('rope.scaling.type') ?? 'linear';
  if (!['none', 'linear', 'yarn', 'longrope'].includes(type))
    fail(`${arch}.rope.scaling.type = '${type}' is not supported (llama.cpp's types: none, linear, yarn, longrope)`);
  let factor = num('rope.scaling.factor', num('rope.scale_linear', 0));
  if (factor < 0) fail(`${arch}.rope.scaling.factor = ${factor} must be a finite number > 0`);
  if (factor === 0 || type === 'none') factor = 1;
  const factors = (name: string): number[] | undefined => {
    const t = g.tensors.find((x) => x.name === name);
    if (!t) return undefined;
    if (t.shape.length !== 1) fail(`tensor '${name}' has shape [${t.shape.join(', ')}], expected [rope.dimension_count / 2]`);
    return Array.from(loadTensor(g, t, 'f32').toFloat32());
  };
  const ropeFreqFactors = factors('rope_freqs.weight');
  const origContext = num('rope.scaling.original_context_length', contextLength);
  const attn = num('rope.scaling.attn_factor', 1);
  if (type === 'yarn') {
    const extFactor = num('rope.scaling.yarn_ext_factor', 1);
    const logMul = num('rope.scaling.yarn_log_multiplier', 0);
    const mscale = (m: number) => (factor <= 1 ? 1 : 0.1 * m * Math.log(factor) + 1);
    const yarnAttn = extFactor !== 0 ? (logMul !== 0 ? mscale(1) / mscale(logMul) : mscale(1)) : num('rope.scaling.yarn_attn_factor', 1);
    return {
      ropeScale: 1, ropeFreqFactors,
      ropeScaling: {
        type: 'yarn', factor, origContext, extFactor, attnFactor: yarnAttn * attn, truncate: true,
        betaFast: num('rope.scaling.yarn_beta_fast', 32), betaSlow: num('rope.scaling.yarn_beta_slow', 1),
      },
    };
  }
  const short = factors('rope_factors_short.weight'), long = factors('rope_factors_long.weight');
  if (type === 'longrope') {
    if (!short || !long) fail(`${arch}.rope.scaling.type = 'longrope' needs tensors 'rope_factors_short.weight' and 'rope_factors_long.weight'`);
    if (ropeFreqFactors) fail("tensor 'rope_freqs.weight' and LongRoPE factors are exclusive (llama.cpp would use rope_freqs only)");
    return { ropeScale: factor, ropeScaling: { type: 'longrope', shortFactor: short!, longFactor: long!, origContext, attnFactor: attn, choose: 'context' } };
  }
  for (const key of ['yarn_ext_factor', 'yarn_attn_factor', 'yarn_beta_fast', 'yarn_beta_slow', 'yarn_log_multiplier'])
    if (!Number.isNaN(num(`rope.scaling.${key}`, NaN))) fail(`${arch}.rope.scaling.${key} applies to yarn scaling only, but the type is '${type}'`);
  if (short || long) fail(`tensors 'rope_factors_short/long.weight' need ${arch}.rope.scaling.type = 'longrope' but it is '${type}'`);
  if (attn !== 1) fail(`${arch}.rope.scaling.attn_factor = ${attn} applies to yarn and longrope scaling only, but the type is '${type}'`);
  return { ropeScale: factor, ropeFreqFactors };
}

/** expert_count > 0 makes the FFN a mixture of experts; expert_used_count is checked against it in checkLlamaConfig. */
function moeConfig(g: GGUFFile, arch: string, int: (key: string, def?: number) => number, fail: (m: string) => never): Partial<LlamaConfig> {
  const experts = int('expert_count', 0), used = int('expert_used_count', 0);
  if (experts === 0) {
    if (used !== 0) fail(`${arch}.expert_used_count = ${used} but ${arch}.expert_count is 0 or missing`);
    return {};
  }
  const norm = g.metadata.get(`${arch}.expert_weights_norm`) ?? true;
  if (typeof norm !== 'boolean') fail(`${arch}.expert_weights_norm must be a bool but is ${String(norm)}`);
  return { experts, expertsUsed: used, normTopK: norm as boolean };
}

/** block_count must match the blk.N tensors present: more would miss tensors, fewer would ignore some. */
function checkBlockCount(g: GGUFFile, layers: number, key: string, fail: (m: string) => never): void {
  let n = 0, example = '';
  for (const t of g.tensors) {
    const m = /^blk\.(\d+)\./.exec(t.name);
    if (m && Number(m[1]) + 1 > n) [n, example] = [Number(m[1]) + 1, t.name];
  }
  if (layers < n) fail(`${key} = ${layers} but the file has tensors for ${n} blocks (e.g. '${example}')`);
  if (layers > n) fail(`${key} = ${layers} but the file has tensors for only ${n} blocks`);
}

/** The vocabulary size: token_embd.weight's rows, which must equal the tokenizer's token count (as llama.cpp requires). */
function vocabSize(g: GGUFFile, arch: string, fail: (m: string) => never): number {
  const emb = g.tensors.find((t) => t.name === 'token_embd.weight');
  if (!emb) fail("missing tensor 'token_embd.weight'");
  if (emb!.shape.length !== 2) fail(`tensor 'token_embd.weight' has shape [${emb!.shape.join(', ')}], expected [vocab, embedding_length]`);
  const rows = emb!.shape[0]!;
  const tokens = g.metadata.get('tokenizer.ggml.tokens');
  if (Array.isArray(tokens) && tokens.length !== rows)
    fail(`tokenizer.ggml.tokens has ${tokens.length} tokens but tensor 'token_embd.weight' has ${rows} rows`);
  const declared = g.metadata.get(`${arch}.vocab_size`);
  if (declared !== undefined && declared !== rows) fail(`${arch}.vocab_size = ${String(declared)} but tensor 'token_embd.weight' has ${rows} rows`);
  return rows;
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
  checkDataLayout(g, file);
  const byName = new Map<string, GGUFTensorInfo>(g.tensors.map((t) => [t.name, t]));
  const used = new Set<string>();
  const reader = weightReader(file, (name) => {
    const info = byName.get(name);
    if (!info) return undefined;
    used.add(name);
    return {
      shape: info.shape, file,
      load: (mode) => {
        // Reached once the shape matched, so a 1-D tensor here is a norm or a bias.
        if (info.shape.length === 1 && info.type !== 'F32')
          throw new ModelFileError(file, `tensor '${name}' has type ${info.type}, expected F32 (llama.cpp writes norms and biases as F32)`);
        return loadTensor(g, info, mode);
      },
    };
  }, g.tensors.length, qmode, onProgress);
  const { get, vec } = reader;
  const repack = qmode === 'packed' && (o.repackQ4_0 ?? true);
  // A dense projection: Q4_0 goes to the column-tile layout unless asked not to.
  const proj = (name: string, shape: [number, number]): LinearWeight => {
    const t = get(name, shape)!;
    if (!repack || t.dtype !== 'q4_0') return t;
    const w = q4_0IntWeight(t.data as Uint8Array, shape[0], shape[1]);
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
  // The embedding looks rows up in the table as loaded: a Q8_0/Q4_0 one stays packed (mapped, not
  // copied; Backend.embedding dequantises only the rows it reads, as llama.cpp's get_rows), or is
  // dequantised with the other matrices under quantized 'f16' / 'f32'. Without output.weight the
  // same tensor is the LM head (linear runs on the packed form).
  const tokEmbd = get('token_embd.weight', [c.vocabSize, c.dim])!;
  const outNorm = vec('output_norm.weight', c.dim)!;
  const output = get('output.weight', [c.vocabSize, c.dim], true) ?? tokEmbd;
  // Like llama.cpp ("wrong number of tensors"): a tensor the model does not read means the file
  // and its metadata disagree (a wrong block_count, expert_count, or an unsupported feature).
  const unused = g.tensors.find((t) => !used.has(t.name) && !ROPE_TENSORS.includes(t.name)); // the RoPE factors are the config's
  if (unused)
    throw new ModelFileError(file, `tensor '${unused.name}' is not used by a ${c.architecture} model with this metadata (${c.experts ? `${c.experts} experts` : 'dense FFN'}); tessera does not read it`);
  return { tokEmbd, layers, outNorm, output };
}

/**
 * llama.cpp's layout rule (gguf.cpp): tensor data lies back to back in table order, each padded
 * to the alignment. A gap or overlap means a tensor's type or shape in the table is wrong (an F32
 * tensor marked F16 would otherwise read as garbage), so it is an error naming both tensors.
 */
function checkDataLayout(g: GGUFFile, file: string): void {
  let end = 0;
  let prev: GGUFTensorInfo | null = null;
  for (const t of g.tensors) {
    const rel = t.offset - g.dataOffset;
    if (rel !== end)
      throw new ModelFileError(file, prev
        ? `tensor '${t.name}' starts at data offset ${rel} but '${prev.name}' (${prev.type} [${prev.shape.join(', ')}], ${prev.byteLength} bytes) ends at ${end}: a wrong type or shape in the tensor table`
        : `tensor '${t.name}' starts at data offset ${rel}, expected 0 (the first tensor's data starts the data section)`);
    end = rel + Math.ceil(t.byteLength / g.alignment) * g.alignment;
    prev = t;
  }
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
