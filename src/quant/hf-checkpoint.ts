/**
 * A complete Hugging Face directory for a model tessera loaded from a GGUF file or a llama2.c
 * checkpoint: the model brought to Hugging Face's layout (hfLayout), config.json for
 * LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM (hfConfigJson), the unquantised
 * tensors under transformers' names in their source dtype (hfTensors), and the tokenizer files
 * (tokenizer/hf-export.ts).
 *
 * Layout: llama.cpp stores a `llama` model's Q/K rows permuted for adjacent-pair RoPE
 * (convert_hf_to_gguf.py `permute`), and llama2.c's checkpoints use adjacent pairs too; Hugging
 * Face's Llama rotates the two halves of each head. hfLayout undoes the permutation (row
 * h*hd + 2i + j of the file is row h*hd + j*hd/2 + i of the HF weight) and switches the model to
 * NeoX RoPE, which computes the same attention, so calibration and the written checkpoint agree.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { GGUFFile } from '../formats/gguf.js';
import type { LlamaConfig } from '../model/config.js';
import { LlamaModel, type LinearRole, type LinearWeight } from '../model/llama.js';
import type { GptqLinear } from '../tensor/gptq.js';
import { Tensor } from '../tensor/tensor.js';
import { hfTokenizerFromGGUF, llama2cTokenizerGGUF, type HfTokenizerFiles } from '../tokenizer/hf-export.js';
import { gptqTensors } from '../formats/gptq-checkpoint.js';

/** transformers' module names of the projections. */
export const HF_PROJECTIONS: Record<LinearRole, string> = {
  wq: 'self_attn.q_proj', wk: 'self_attn.k_proj', wv: 'self_attn.v_proj', wo: 'self_attn.o_proj',
  wGate: 'mlp.gate_proj', wUp: 'mlp.up_proj', wDown: 'mlp.down_proj',
};

/** Source dtypes a GPTQ checkpoint is made from (a quantised source would be quantised twice). */
const FLOAT_DTYPES = ['f32', 'f16', 'bf16'];

/** Why this model cannot become a Hugging Face Llama / Mistral / Qwen2 checkpoint, or null. */
export function hfExportProblem(m: LlamaModel): string | null {
  const c = m.config;
  if (c.experts) return `it is a mixture of experts (${c.experts} experts per layer); tessera quantises dense models only`;
  if (!['llama', 'mistral', 'qwen2'].includes(c.architecture))
    return `architecture '${c.architecture}' has no Hugging Face counterpart here (llama, mistral or qwen2)`;
  if (c.ropeStyle === 'interleaved' && c.ropeDim !== c.headDim)
    return `RoPE rotates ${c.ropeDim} of ${c.headDim} dims per head, which Llama / Mistral configs cannot express`;
  if (c.architecture !== 'qwen2') {
    const l = m.weights.layers.findIndex((L) => L.bq || L.bk || L.bv);
    if (l >= 0) return `layer ${l} has q/k/v biases, which ${hfArchitecture(c)} does not have (only Qwen2 does)`;
  }
  for (const [l, L] of m.weights.layers.entries())
    for (const role of Object.keys(HF_PROJECTIONS) as LinearRole[]) {
      const w = L[role] as LinearWeight;
      if (!(w instanceof Tensor) || !FLOAT_DTYPES.includes(w.dtype))
        return `layer ${l} ${role} is stored as ${w instanceof Tensor ? w.dtype : 'integer weights'}: a quantised source would be quantised twice (use the F32 / F16 / BF16 model)`;
    }
  for (const [name, t] of [['token_embd', m.weights.tokEmbd], ['output', m.weights.output]] as const)
    if (!FLOAT_DTYPES.includes(t.dtype)) return `${name} is stored as ${t.dtype}; use the F32 / F16 / BF16 model`;
  return null;
}

/**
 * The model with Hugging Face's Q/K layout and NeoX RoPE (the same model when it already has
 * them). The permuted weights are new tensors; the rest is shared with `m`.
 */
export function hfLayout(m: LlamaModel): LlamaModel {
  const c = m.config;
  if (c.ropeStyle === 'neox') return m;
  for (const L of m.weights.layers) {
    L.wq = unpermuteRows(L.wq as Tensor, c.heads, c.headDim);
    L.wk = unpermuteRows(L.wk as Tensor, c.kvHeads, c.headDim);
  }
  return new LlamaModel({ ...c, ropeStyle: 'neox' }, m.weights, m.backend);
}

/** Rows (heads * hd, K): file row h*hd + 2i + j -> HF row h*hd + j*hd/2 + i. */
function unpermuteRows(w: Tensor, heads: number, hd: number): Tensor {
  const [N, K] = w.shape as [number, number];
  if (N !== heads * hd) throw new RangeError(`Expected ${heads * hd} rows for a Q/K projection but received ${N}`);
  const src = w.data as Float32Array | Uint16Array;
  const dst = new (src.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(src.length);
  const half = hd / 2;
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < half; i++)
      for (let j = 0; j < 2; j++) {
        const from = (h * hd + 2 * i + j) * K, to = (h * hd + j * half + i) * K;
        dst.set(src.subarray(from, from + K), to);
      }
  const out = new Tensor(w.dtype, [N, K], dst as never);
  w.dispose();
  return out;
}

export function hfArchitecture(c: LlamaConfig): string {
  if (c.architecture === 'qwen2') return 'Qwen2ForCausalLM';
  // Mistral is Llama with a sliding window; a `llama` GGUF that declares one is a Mistral model.
  return c.architecture === 'mistral' || c.slidingWindow > 0 ? 'MistralForCausalLM' : 'LlamaForCausalLM';
}

/** The shortest decimal that reads back as the same float32 (1e-5, not 9.999999747378752e-06). */
export function shortestFloat32(v: number): number {
  const f = Math.fround(v);
  for (let p = 1; p <= 17; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === f) return d;
  }
  return v;
}

const TORCH_DTYPE: Record<string, string> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

export interface HfConfigOptions {
  tied: boolean;
  bos?: number;
  eos?: number;
  pad?: number;
  /** dtype of the unquantised tensors (the embedding's). */
  dtype: string;
  /** Float hyper-parameters were stored as float32 (GGUF): write their shortest decimal. */
  float32Source: boolean;
  quantizationConfig?: Record<string, unknown>;
}

/** config.json for a model in Hugging Face layout (every hyper-parameter tessera runs with). */
export function hfConfigJson(c: LlamaConfig, o: HfConfigOptions): Record<string, unknown> {
  const arch = hfArchitecture(c);
  // Not written (yet): a config.json without them would load as plain RoPE and run wrong past the original context.
  if (c.ropeScaling || c.ropeFreqFactors)
    throw new RangeError(`RoPE scaling ${c.ropeScaling?.type ?? "from tensor 'rope_freqs.weight'"} is not written to config.json yet; this model cannot be exported in Hugging Face layout`);
  const f = (v: number) => (o.float32Source ? shortestFloat32(v) : v);
  const j: Record<string, unknown> = {
    architectures: [arch],
    model_type: arch === 'Qwen2ForCausalLM' ? 'qwen2' : arch === 'MistralForCausalLM' ? 'mistral' : 'llama',
    vocab_size: c.vocabSize,
    hidden_size: c.dim,
    intermediate_size: c.ffnDim,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads,
    num_key_value_heads: c.kvHeads,
    head_dim: c.headDim,
    hidden_act: 'silu',
    max_position_embeddings: c.contextLength,
    rms_norm_eps: f(c.normEps),
    rope_theta: f(c.ropeTheta),
    rope_scaling: c.ropeScale !== 1 ? { type: 'linear', rope_type: 'linear', factor: f(c.ropeScale) } : null,
    tie_word_embeddings: o.tied,
    bos_token_id: o.bos ?? null,
    eos_token_id: o.eos ?? null,
    ...(o.pad !== undefined ? { pad_token_id: o.pad } : {}),
    attention_dropout: 0.0,
    initializer_range: 0.02,
    use_cache: true,
    torch_dtype: TORCH_DTYPE[o.dtype] ?? 'float32',
  };
  if (arch === 'LlamaForCausalLM') Object.assign(j, { attention_bias: false, mlp_bias: false, pretraining_tp: 1 });
  if (arch === 'MistralForCausalLM') j.sliding_window = c.slidingWindow > 0 ? c.slidingWindow : null;
  if (arch === 'Qwen2ForCausalLM') {
    const sw = c.slidingWindow > 0;
    // Every layer windowed (tessera has one window per model): max_window_layers 0, as layer_types says.
    Object.assign(j, {
      use_sliding_window: sw, sliding_window: sw ? c.slidingWindow : null, max_window_layers: sw ? 0 : c.layers,
      layer_types: Array.from({ length: c.layers }, () => (sw ? 'sliding_attention' : 'full_attention')),
    });
  }
  if (o.quantizationConfig) j.quantization_config = o.quantizationConfig;
  return j;
}

/**
 * Every tensor of the checkpoint under transformers' names: the quantised projections as GPTQ
 * tensors, everything else (embeddings, norms, lm_head unless tied, Qwen2's q/k/v biases, and
 * projections left unquantised) as the model holds it.
 */
export function hfTensors(m: LlamaModel, quantized: ReadonlyMap<string, GptqLinear>, tied: boolean): { name: string; tensor: Tensor }[] {
  const w = m.weights;
  const out: { name: string; tensor: Tensor }[] = [{ name: 'model.embed_tokens.weight', tensor: w.tokEmbd }, { name: 'model.norm.weight', tensor: w.outNorm }];
  if (!tied) out.push({ name: 'lm_head.weight', tensor: w.output });
  w.layers.forEach((L, l) => {
    const p = `model.layers.${l}.`;
    out.push({ name: p + 'input_layernorm.weight', tensor: L.attnNorm }, { name: p + 'post_attention_layernorm.weight', tensor: L.ffnNorm });
    for (const [b, proj] of [[L.bq, 'q_proj'], [L.bk, 'k_proj'], [L.bv, 'v_proj']] as const) if (b) out.push({ name: `${p}self_attn.${proj}.bias`, tensor: b });
    for (const role of Object.keys(HF_PROJECTIONS) as LinearRole[]) {
      const q = quantized.get(`${l}.${role}`);
      if (q) out.push(...gptqTensors(p + HF_PROJECTIONS[role], q));
      else out.push({ name: `${p}${HF_PROJECTIONS[role]}.weight`, tensor: L[role] as Tensor });
    }
  });
  return out.sort((x, y) => (x.name < y.name ? -1 : 1));
}

/** The tokenizer files of a GGUF, or of a llama2.c checkpoint's tokenizer.bin (found as load.ts finds it). */
export function hfTokenizerFiles(source: { gguf: GGUFFile } | { llama2c: string; vocabSize: number }, maxLength: number): HfTokenizerFiles {
  if ('gguf' in source) return hfTokenizerFromGGUF(source.gguf, { maxLength });
  const cands = ['tokenizer.bin', `tok${source.vocabSize}.bin`].map((f) => path.join(path.dirname(source.llama2c), f));
  const tok = cands.find((f) => existsSync(f));
  if (!tok) throw new RangeError(`no tokenizer next to ${source.llama2c} (looked for ${cands.map((x) => path.basename(x)).join(', ')})`);
  return hfTokenizerFromGGUF(llama2cTokenizerGGUF(tok, source.vocabSize), { maxLength });
}

/** generation_config.json: BOS, and every end-of-generation id (EOS first). */
export function hfGenerationConfig(files: HfTokenizerFiles): Record<string, unknown> {
  const s = files.spec;
  const eog = [...s.eog].sort((a, b) => a - b);
  if (s.special.eos !== undefined) eog.splice(0, eog.length, s.special.eos, ...eog.filter((id) => id !== s.special.eos));
  return {
    ...(s.special.bos !== undefined ? { bos_token_id: s.special.bos } : {}),
    ...(eog.length ? { eos_token_id: eog.length === 1 ? eog[0] : eog } : {}),
    ...(s.special.pad !== undefined ? { pad_token_id: s.special.pad } : {}),
  };
}
