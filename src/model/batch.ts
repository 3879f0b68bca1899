/**
 * What one forward pass reads: the packed new tokens of several sequences (FlashAttention's varlen
 * layout: `queryStart` = cu_seqlens) with their positions, the KV slots they write, the block
 * tables the attention reads, and which rows need logits. The runtime builds it (runtime/runner.ts);
 * the model only reads it and never decides where a sequence's KV lives.
 */
import type { Tensor } from '../tensor/tensor.js';

export interface ForwardBatch {
  /** (T) packed token ids: sequence 0's new tokens, then sequence 1's, ... */
  tokens: Tensor<'i32'>;
  /** (T) absolute position of each token in its sequence. */
  positions: Tensor<'i32'>;
  /** (T) KV slot (block * blockSize + offset) each token's K/V row is written to. */
  slots: Tensor<'i32'>;
  /** (B, maxBlocks) each sequence's blocks, padded with 0. */
  blockTables: Tensor<'i32'>;
  /** (B) tokens each sequence holds after this step (cached + new). */
  contextLens: Tensor<'i32'>;
  /** (B + 1) cumulative new-token counts: sequence s owns rows [queryStart[s], queryStart[s+1]). */
  queryStart: Tensor<'i32'>;
  /** (R) packed rows whose logits are returned, in order; the output is (R, vocab). */
  logitRows: Tensor<'i32'>;
  /** Host copy of queryStart (B + 1), used to plan the linear calls (see linearCalls). */
  readonly queryStartHost: Int32Array;
  /** Host copy of how many logit rows each sequence asked for (B). */
  readonly logitCountsHost: Int32Array;
}

/** The per-layer K/V tensors a forward writes into (storage only; ownership is runtime/kv's job). */
export interface KvStorage {
  readonly blockSize: number;
  readonly numBlocks: number;
  /** Per layer: (numBlocks, blockSize, kvHeads, headDim) f32. */
  readonly k: readonly Tensor<'f32'>[];
  readonly v: readonly Tensor<'f32'>[];
}

/** The dense-FFN and attention projections by name. */
export type LinearRole = 'wq' | 'wk' | 'wv' | 'wo' | 'wGate' | 'wUp' | 'wDown';

/** Routing seen by one MoE layer during a forward pass (for statistics). */
export interface RoutingRecord {
  layer: number;
  /** (T, experts) softmax of the router logits. */
  probs: Float32Array;
  /** (T, k) selected experts. */
  experts: Int32Array;
  tokens: number;
}

/** Hooks into a forward pass (statistics, calibration). The forward calls them; it never branches on them otherwise. */
export interface ForwardObserver {
  /** Receives each MoE layer's routing (moe-stats). */
  onRouting?(r: RoutingRecord): void;
  /** Receives the input (T, K) of each dense linear layer before it runs (GPTQ calibration); roles
   *  that share an input (q/k/v, gate/up) arrive together. The tensor is reused: copy it. */
  onLinearInput?(layer: number, roles: LinearRole[], x: Tensor<'f32'>): void;
  /** Stop after this layer (the forward then returns the residual stream, not logits). */
  stopAfterLayer?: number;
}

/**
 * Rows at most this many take the weight-streaming GEMV path of every linear kernel (dense,
 * q8_0/q4_0 and integer), whose per-row result does not depend on how many rows share the call.
 */
export const GEMV_ROWS = 8;

/**
 * Splits packed rows into linear calls so that a row's result never depends on the rest of the
 * batch (batch invariance): segments of at most GEMV_ROWS rows (decode tokens, short chunks) are
 * packed together into calls of at most GEMV_ROWS rows, which all run the GEMV, whose rows are
 * independent; a longer segment (a prefill chunk) is a call of its own, exactly as when it runs
 * alone. Returns [firstRow, rowCount] pairs covering [0, starts[B]).
 */
export function linearCalls(starts: ArrayLike<number>): [number, number][] {
  const calls: [number, number][] = [];
  let small = -1, smallN = 0; // the open call of short segments
  const flush = () => {
    if (smallN > 0) calls.push([small, smallN]);
    smallN = 0;
  };
  for (let s = 0; s + 1 < starts.length; s++) {
    const a = starts[s]!, n = starts[s + 1]! - a;
    if (n === 0) continue;
    if (n > GEMV_ROWS) {
      flush();
      calls.push([a, n]);
      continue;
    }
    for (let r = a; r < a + n; r++) {
      if (smallN > 0 && (small + smallN !== r || smallN === GEMV_ROWS)) flush();
      if (smallN === 0) small = r;
      smallN++;
    }
  }
  flush();
  return calls;
}
