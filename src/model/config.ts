import { ModelFileError } from '../formats/errors.js';

/** Hyper-parameters of a Llama-family decoder (Llama 2/3, TinyLlama, Mistral, Qwen2). */
export interface LlamaConfig {
  architecture: string;
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffnDim: number;
  vocabSize: number;
  contextLength: number;
  normEps: number;
  ropeTheta: number;
  /** Rotated dims per head (<= headDim). */
  ropeDim: number;
  /** 'interleaved' for GGUF `llama` (llama.cpp permutes Q/K at conversion), 'neox' for HF weights and qwen2. */
  ropeStyle: 'neox' | 'interleaved';
  /** Linear RoPE scaling factor (1 = none). */
  ropeScale: number;
  /** Mistral-style sliding window (0 = none). */
  slidingWindow: number;
  /** Mixture of experts: experts per MoE layer (0 = dense FFN). */
  experts?: number;
  /** Experts each token uses (top-k). */
  expertsUsed?: number;
  /** Renormalise the k routing weights to sum to 1 (Mixtral: yes; Qwen-MoE: norm_topk_prob). */
  normTopK?: boolean;
}

/** Where each field came from in the model file (e.g. dim: 'llama.embedding_length'), for messages. */
export type ConfigKeys = { readonly [K in keyof LlamaConfig]?: string };

/**
 * The ranges and cross-field rules every loader's config must meet, checked once here so that a
 * bad value fails at load with a ModelFileError naming the file and its key, never later in a
 * kernel. Loaders check each value's type (number, integer) while reading it.
 */
export function checkLlamaConfig(c: LlamaConfig, file: string, keys: ConfigKeys): LlamaConfig {
  const fail = (m: string): never => {
    throw new ModelFileError(file, m);
  };
  const key = (f: keyof LlamaConfig) => keys[f] ?? f;
  const int = (f: keyof LlamaConfig, min: number, max: number, why = '') => {
    const v = c[f] as number;
    if (!Number.isInteger(v) || v < min || v > max) fail(`${key(f)} = ${v} is outside [${min}, ${max}]${why}`);
  };
  const positive = (f: keyof LlamaConfig) => {
    const v = c[f] as number;
    if (!Number.isFinite(v) || v <= 0) fail(`${key(f)} = ${v} must be a finite number > 0`);
  };
  int('dim', 1, 1 << 20);
  int('layers', 1, 1024);
  int('heads', 1, 4096);
  int('kvHeads', 1, c.heads, ' (at most the number of attention heads)');
  if (c.heads % c.kvHeads) fail(`${key('heads')} = ${c.heads} is not a multiple of ${key('kvHeads')} = ${c.kvHeads}`);
  int('headDim', 1, 512, ' (the attention kernels take head dims up to 512)');
  int('ffnDim', 1, 1 << 20);
  int('vocabSize', 1, 1 << 24);
  // A model that reads one token cannot predict a second: generation and perplexity need two.
  int('contextLength', 2, 1 << 24);
  positive('normEps');
  positive('ropeTheta');
  positive('ropeScale');
  int('ropeDim', 2, c.headDim, ` (at most the head dim ${c.headDim})`);
  if (c.ropeDim % 2) fail(`${key('ropeDim')} = ${c.ropeDim} must be even (RoPE rotates pairs of dimensions)`);
  int('slidingWindow', 0, 1 << 24);
  if (c.experts !== undefined) {
    int('experts', 1, 1024);
    int('expertsUsed', 1, c.experts, ` (at most ${key('experts')} = ${c.experts})`);
  }
  return c;
}
