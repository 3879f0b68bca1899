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
  /** RoPE scaling beyond the linear factor (absent: none); see src/model/rope-scaling.ts for the frequencies. */
  ropeScaling?: RopeScaling;
  /** (ropeDim/2) per-pair frequency divisors from a GGUF's rope_freqs.weight (Llama 3 as llama.cpp converts it). */
  ropeFreqFactors?: number[];
  /** Mistral-style sliding window (0 = none). */
  slidingWindow: number;
  /** Mixture of experts: experts per MoE layer (0 = dense FFN). */
  experts?: number;
  /** Experts each token uses (top-k). */
  expertsUsed?: number;
  /** Renormalise the k routing weights to sum to 1 (Mixtral: yes; Qwen-MoE: norm_topk_prob). */
  normTopK?: boolean;
}

/**
 * RoPE scaling types (transformers' rope_type / llama.cpp's rope.scaling.type), each with what its
 * frequencies need. origContext is the pre-training context (original_max_position_embeddings,
 * rope.scaling.original_context_length; for dynamic, transformers' max_position_embeddings).
 */
export type RopeScaling =
  /** YaRN (Peng et al. 2023): interpolate by 1/factor outside the [betaFast, betaSlow] rotation
   *  range, extrapolate inside (mixed by extFactor); cos/sin times attnFactor. truncate: floor/ceil
   *  the correction range (transformers' truncate, default true; llama.cpp always does). */
  | { type: 'yarn'; factor: number; origContext: number; betaFast: number; betaSlow: number; extFactor: number; attnFactor: number; truncate: boolean }
  /** Llama 3.1: low frequencies divided by factor, high kept, a smooth ramp between (transformers' _compute_llama3_parameters). */
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; origContext: number }
  /** LongRoPE (Phi-3): per-pair factors, long ones past origContext; cos/sin times attnFactor. choose 'position':
   *  per sequence, long when its last position + 1 > origContext (transformers); 'context': long when
   *  the model's contextLength > origContext (llama.cpp's n_ctx_seq > n_ctx_orig_yarn). */
  | { type: 'longrope'; shortFactor: number[]; longFactor: number[]; origContext: number; attnFactor: number; choose: 'position' | 'context' }
  /** Dynamic NTK: theta grows with the sequence past origContext (transformers' _compute_dynamic_ntk_parameters). */
  | { type: 'dynamic'; factor: number; origContext: number };

/** Where each field came from in the model file (e.g. dim: 'llama.embedding_length'), for messages;
 *  ropeScalingFields names each RopeScaling field's key (e.g. origContext: 'rope_scaling.original_max_position_embeddings'). */
export type ConfigKeys = { readonly [K in keyof LlamaConfig]?: string } & { readonly ropeScalingFields?: { readonly [field: string]: string } };

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
  if (c.ropeFreqFactors) factorList(c.ropeFreqFactors, key('ropeFreqFactors'));
  if (c.ropeScaling) checkRopeScaling(c.ropeScaling);
  int('slidingWindow', 0, 1 << 24);
  if (c.experts !== undefined) {
    int('experts', 1, 1024);
    int('expertsUsed', 1, c.experts, ` (at most ${key('experts')} = ${c.experts})`);
  }
  return c;

  function factorList(v: readonly number[], where: string): void {
    if (v.length !== c.ropeDim / 2) fail(`${where} has ${v.length} entries, expected ${key('ropeDim')} / 2 = ${c.ropeDim / 2}`);
    v.forEach((x, i) => {
      if (!Number.isFinite(x) || x <= 0) fail(`${where}[${i}] = ${x} must be a finite number > 0`);
    });
  }
  function checkRopeScaling(r: RopeScaling): void {
    const sk = (f: string) => keys.ropeScalingFields?.[f] ?? `${key('ropeScaling')}.${f}`;
    const rv = r as unknown as Record<string, number>;
    const pos = (f: string) => {
      if (!Number.isFinite(rv[f]) || rv[f]! <= 0) fail(`${sk(f)} = ${rv[f]} must be a finite number > 0`);
    };
    const orig = () => {
      if (!Number.isInteger(r.origContext) || r.origContext < 1 || r.origContext > 1 << 24) fail(`${sk('origContext')} = ${r.origContext} is outside [1, ${1 << 24}]`);
    };
    if (c.ropeScale !== 1 && r.type !== 'longrope') fail(`${key('ropeScale')} = ${c.ropeScale} (linear) cannot combine with ${r.type} scaling`);
    switch (r.type) {
      case 'yarn':
        pos('factor'); orig(); pos('betaFast'); pos('betaSlow'); pos('attnFactor');
        if (!(r.extFactor >= 0 && r.extFactor <= 1)) fail(`${sk('extFactor')} = ${r.extFactor} is outside [0, 1]`);
        if (r.betaSlow >= r.betaFast) fail(`${sk('betaSlow')} = ${r.betaSlow} must be less than ${sk('betaFast')} = ${r.betaFast}`);
        break;
      case 'llama3':
        pos('factor'); orig(); pos('lowFreqFactor'); pos('highFreqFactor');
        if (r.lowFreqFactor >= r.highFreqFactor) fail(`${sk('lowFreqFactor')} = ${r.lowFreqFactor} must be less than ${sk('highFreqFactor')} = ${r.highFreqFactor}`);
        break;
      case 'longrope':
        orig(); pos('attnFactor');
        factorList(r.shortFactor, sk('shortFactor'));
        factorList(r.longFactor, sk('longFactor'));
        break;
      case 'dynamic':
        pos('factor'); orig();
        if (c.ropeDim <= 2) fail(`dynamic RoPE scaling needs ${key('ropeDim')} > 2 (theta is raised to dim / (dim - 2)) but it is ${c.ropeDim}`);
        break;
    }
  }
}
