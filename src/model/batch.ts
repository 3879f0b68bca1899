/**
 * What one forward pass reads: the packed new tokens of several sequences (FlashAttention's varlen
 * layout: `queryStart` = cu_seqlens) with their positions, the KV slots they write, the block
 * tables the attention reads, and which rows need logits. The runtime builds it (runtime/runner.ts);
 * the model only reads it and never decides where a sequence's KV lives.
 */
import type { Tensor } from '../tensor/tensor.js';

export interface ForwardBatch {
  /** (T) packed token ids: segment 0's tokens, then segment 1's, ... (a segment is a run of new
   *  tokens of one sequence; a sequence may have several, see runtime/runner.ts) */
  tokens: Tensor<'i32'>;
  /** (T) absolute position of each token in its sequence. */
  positions: Tensor<'i32'>;
  /** (T) KV slot (block * blockSize + offset) each token's K/V row is written to. */
  slots: Tensor<'i32'>;
  /** (B, maxBlocks) each segment's sequence's blocks, padded with 0. */
  blockTables: Tensor<'i32'>;
  /** (B) tokens the segment's sequence holds up to the segment's last token. */
  contextLens: Tensor<'i32'>;
  /** (B + 1) cumulative segment lengths: segment s owns rows [queryStart[s], queryStart[s+1]). */
  queryStart: Tensor<'i32'>;
  /** (R) packed rows whose logits are returned, in order; the output is (R, vocab). */
  logitRows: Tensor<'i32'>;
  /** Host copy of queryStart (B + 1), used to plan the linear calls (see linearCalls). */
  readonly queryStartHost: Int32Array;
  /** Host copy of how many logit rows (its last ones) each segment asked for (B). */
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
 * Splits packed rows into linear calls so that a row's result never depends on the rest of the
 * batch (batch invariance). `gemvRows` is the kernel's switch point (Backend.linearGemvRows): calls
 * of at most that many rows take a GEMV whose rows are independent of each other, longer calls a
 * GEMM whose rows are too, but the two round differently. So segments of at most gemvRows rows
 * (decode tokens, short prompts) are packed into calls of at most gemvRows rows, and longer
 * segments (prefill chunks) into calls of their own kind; a row then takes the same path whatever
 * shares its batch. With gemvRows = Infinity (kernels whose rows never depend on M) it is one call.
 * Returns [firstRow, rowCount] pairs covering [0, starts[B]).
 */
export function linearCalls(starts: ArrayLike<number>, gemvRows: number): [number, number][] {
  const total = starts.length ? starts[starts.length - 1]! - starts[0]! : 0;
  if (total <= 0) return [];
  if (!Number.isFinite(gemvRows)) return [[starts[0]!, total]];
  const calls: [number, number][] = [];
  let open = -1, openN = 0, openLong = false; // the call being filled
  const flush = () => {
    if (openN > 0) calls.push([open, openN]);
    openN = 0;
  };
  for (let s = 0; s + 1 < starts.length; s++) {
    const a = starts[s]!, n = starts[s + 1]! - a;
    if (n === 0) continue;
    if (n > gemvRows) {
      if (openN > 0 && (!openLong || open + openN !== a)) flush();
      if (openN === 0) (open = a), (openLong = true);
      openN += n;
      continue;
    }
    for (let r = a; r < a + n; r++) {
      if (openN > 0 && (openLong || open + openN !== r || openN === gemvRows)) flush();
      if (openN === 0) (open = r), (openLong = false);
      openN++;
    }
  }
  flush();
  return calls;
}
