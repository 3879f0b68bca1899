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
