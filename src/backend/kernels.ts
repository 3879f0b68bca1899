/**
 * The kernel contract every backend implements. Arguments arrive validated and resolved (see
 * plan.ts): plain typed arrays, dimensions and defaults, with output buffers already allocated.
 * Shapes are row-major and contiguous; comments give them.
 */

import type { IntWeightParts } from '../tensor/int-weight.js';

export type WeightType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
export type WeightData = Float32Array | Uint16Array | Uint8Array;

export interface LinearPlan {
  x: Float32Array; // (M, K)
  w: WeightData; // (N, K) in wtype; q8_0/q4_0: N * K/32 blocks, activations quantised to Q8_0 as llama.cpp does
  wtype: WeightType;
  bias: Float32Array | null; // (N)
  y: Float32Array; // (M, N)
  M: number;
  N: number;
  K: number;
}

/** Integer weights in the kernel layout of src/tensor/int-weight.ts. */
export type IntWeightData = Omit<IntWeightParts, 'N' | 'K' | 'label'>;

export interface LinearIntPlan {
  x: Float32Array; // (M, K)
  w: IntWeightData;
  bias: Float32Array | null; // (N)
  y: Float32Array; // (M, N)
  M: number;
  N: number;
  K: number;
}

export interface NormPlan {
  x: Float32Array; // (rows, dim)
  weight: Float32Array | null; // (dim)
  bias: Float32Array | null; // (dim), layerNorm only
  y: Float32Array; // (rows, dim)
  rows: number;
  dim: number;
  eps: number;
}

export interface SoftmaxPlan {
  x: Float32Array; // (rows, cols)
  y: Float32Array; // (rows, cols)
  rows: number;
  cols: number;
  scale: number;
  log: boolean;
}

export type ActivationKind = 'silu' | 'gelu_tanh' | 'gelu_erf';

export interface ActivationPlan {
  x: Float32Array; // (n)
  y: Float32Array; // (n)
  act: ActivationKind;
}

export interface SwigluPlan {
  gate: Float32Array; // (n)
  up: Float32Array; // (n)
  y: Float32Array; // (n)
}

export interface BinaryPlan {
  a: Float32Array; // (n)
  b: Float32Array; // (bLen), repeated over a; bLen divides n
  y: Float32Array; // (n)
  op: 'add' | 'mul';
}

export interface EmbeddingPlan {
  table: WeightData; // (vocab, dim) in dtype; q8_0/q4_0: vocab * dim/32 GGML blocks (dim a multiple of 32)
  dtype: WeightType;
  vocab: number;
  dim: number;
  ids: Int32Array; // (n)
  out: Float32Array; // (n, dim)
}

export interface RopePlan {
  x: Float32Array; // (T, H, D)
  y: Float32Array; // (T, H, D)
  positions: Int32Array; // (T)
  T: number;
  H: number;
  D: number;
  rotDim: number; // even, <= D
  theta: number;
  freqScale: number; // interpolated frequencies are multiplied by this (1 / linear or YaRN factor)
  neox: boolean; // rotate (i, i + rotDim/2) pairs; else (2i, 2i+1)
  // Pair i's frequency is theta^(-2i/rotDim) / freqFactors[i] (ggml's freq_factors: Llama 3's
  // rope_freqs, LongRoPE's short/long factors); null = all 1.
  freqFactors: Float32Array | null; // (rotDim/2)
  // YaRN (ggml rope_yarn): with extFactor != 0 pair i mixes the extrapolated frequency back in by
  // ramp(i) * extFactor, ramp(i) = 1 - clamp((i - corrLow) / max(0.001, corrHigh - corrLow), 0, 1).
  extFactor: number; // 0 = plain interpolation
  corrLow: number; // first pair index of the ramp
  corrHigh: number; // last pair index of the ramp
  attnFactor: number; // cos and sin are multiplied by this (YaRN / LongRoPE attention scaling; 1 = none)
}

export interface AlibiPlan {
  nHeads: number;
  maxBias: number;
  out: Float32Array; // (nHeads)
}

export interface AttentionPlan {
  q: Float32Array; // (T, Hq, D)
  k: Float32Array; // (S, Hkv, D)
  v: Float32Array; // (S, Hkv, D)
  o: Float32Array; // (T, Hq, D)
  T: number;
  S: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale: number;
  causal: boolean;
  qOffset: number; // absolute position of query 0 (keys start at 0)
  alibi: Float32Array | null; // (Hq) slopes: adds slope * (kpos - qpos)
  window: number; // 0 = none; else keys with |qpos - kpos| >= window are hidden
  sinks: number; // keys at kpos < sinks are exempt from the window
  mask: Float32Array | null; // (T, S) additive
}

export interface PagedAttentionPlan {
  q: Float32Array; // (T, Hq, D), T = queryStart[B]
  kCache: Float32Array; // (numBlocks, blockSize, Hkv, D)
  vCache: Float32Array; // (numBlocks, blockSize, Hkv, D)
  blockTables: Int32Array; // (B, maxBlocks)
  contextLens: Int32Array; // (B)
  queryStart: Int32Array; // (B + 1)
  o: Float32Array; // (T, Hq, D)
  B: number;
  maxBlocks: number;
  numBlocks: number;
  blockSize: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale: number;
  alibi: Float32Array | null;
  window: number;
  sinks: number;
}

export interface PagedKvWritePlan {
  kCache: Float32Array; // (numBlocks * blockSize, row)
  vCache: Float32Array;
  k: Float32Array; // (T, row)
  v: Float32Array; // (T, row)
  slots: Int32Array; // (T)
  T: number;
  nSlots: number;
  row: number; // Hkv * D
}

export interface MoeRoutePlan {
  logits: Float32Array; // (T, E)
  T: number;
  E: number;
  k: number;
  renormalize: boolean;
  weights: Float32Array; // (T, k)
  experts: Int32Array; // (T, k)
  expertOffsets: Int32Array; // (E + 1)
  order: Int32Array; // (T * k)
}

export interface MoeGatherPlan {
  x: Float32Array; // (T, D)
  T: number;
  D: number;
  k: number;
  order: Int32Array; // (n)
  out: Float32Array; // (n, D)
}

export interface MoeScatterPlan {
  y: Float32Array; // (T * k, D) grouped rows
  order: Int32Array; // (T * k)
  weights: Float32Array; // (T, k)
  T: number;
  k: number;
  D: number;
  out: Float32Array; // (T, D)
}

export interface TopKPlan {
  x: Float32Array; // (rows, cols)
  rows: number;
  cols: number;
  k: number;
  values: Float32Array; // (rows, k)
  indices: Int32Array; // (rows, k)
}

export interface CrossEntropyPlan {
  logits: Float32Array; // (rows, cols)
  rows: number;
  cols: number;
  targets: Int32Array; // (rows)
  ignoreIndex: number;
  nll: Float32Array; // (rows) per-row loss, 0 where ignored
}

export interface Kernels {
  readonly name: string;
  linear(p: LinearPlan): void;
  linearInt(p: LinearIntPlan): void;
  /**
   * Rows up to which linear with this weight type takes a path whose per-row result differs from
   * the path taken with more rows (a GEMV vs a GEMM); Infinity (or absent) when a row's result
   * never depends on how many rows share the call. The runtime keeps batches invariant with it.
   */
  linearGemvRows?(wtype: WeightType | 'int'): number;
  rmsNorm(p: NormPlan): void;
  layerNorm(p: NormPlan): void;
  softmax(p: SoftmaxPlan): void;
  activation(p: ActivationPlan): void;
  swiglu(p: SwigluPlan): void;
  binary(p: BinaryPlan): void;
  embedding(p: EmbeddingPlan): void;
  rope(p: RopePlan): void;
  alibiSlopes(p: AlibiPlan): void;
  flashAttention(p: AttentionPlan): void;
  attentionNaive(p: AttentionPlan): void;
  pagedAttention(p: PagedAttentionPlan): void;
  pagedKvWrite(p: PagedKvWritePlan): void;
  moeRoute(p: MoeRoutePlan): void;
  moeGather(p: MoeGatherPlan): void;
  moeScatter(p: MoeScatterPlan): void;
  topK(p: TopKPlan): void;
  /** Fills p.nll and returns the sum over non-ignored rows and their count. */
  crossEntropy(p: CrossEntropyPlan): { sum: number; count: number };
}
