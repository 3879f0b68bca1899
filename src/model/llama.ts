/**
 * Llama-family forward pass, written once against Backend (llama2.c's run.c order):
 * embed -> per layer [RMSNorm -> Q,K,V (+bias) -> RoPE -> paged KV write -> paged attention ->
 * output proj -> residual -> RMSNorm -> SwiGLU FFN -> residual] -> RMSNorm -> logits.
 */
import type { Backend } from '../backend/backend.js';
import type { PagedKvCache } from '../runtime/kv-cache.js';
import { IntWeight } from '../tensor/int-weight.js';
import { DisposedError, Tensor } from '../tensor/tensor.js';
import type { LlamaConfig } from './config.js';

/** A linear layer's weight (N, K): dense (f32/f16/bf16/q8_0/q4_0) or integer (GPTQ, int8). */
export type LinearWeight = Tensor | IntWeight;

/** The dense-FFN and attention projections by name. */
export type LinearRole = 'wq' | 'wk' | 'wv' | 'wo' | 'wGate' | 'wUp' | 'wDown';

export interface LlamaLayerWeights {
  attnNorm: Tensor; // (dim) f32
  wq: LinearWeight; // (heads * headDim, dim)
  wk: LinearWeight; // (kvHeads * headDim, dim)
  wv: LinearWeight; // (kvHeads * headDim, dim)
  bq?: Tensor | null; // (heads * headDim) Qwen2
  bk?: Tensor | null;
  bv?: Tensor | null;
  wo: LinearWeight; // (dim, heads * headDim)
  ffnNorm: Tensor; // (dim) f32
  wGate?: LinearWeight; // (ffnDim, dim) — dense FFN
  wUp?: LinearWeight; // (ffnDim, dim)
  wDown?: LinearWeight; // (dim, ffnDim)
  moe?: MoeWeights; // instead of the dense FFN
}

/** A sparse MoE FFN: a router and E SwiGLU experts. */
export interface MoeWeights {
  router: Tensor; // (experts, dim)
  gate: Tensor[]; // experts x (ffnDim, dim)
  up: Tensor[]; // experts x (ffnDim, dim)
  down: Tensor[]; // experts x (dim, ffnDim)
}

/** Routing seen by one MoE layer during a forward pass (for statistics). */
export interface RoutingRecord {
  layer: number;
  /** (T, experts) softmax of the router logits. */
  probs: Float32Array;
  /** (T, k) selected experts. */
  experts: Int32Array;
  tokens: number;
}

export interface LlamaWeights {
  tokEmbd: Tensor; // (vocab, dim)
  layers: LlamaLayerWeights[];
  outNorm: Tensor; // (dim) f32
  output: Tensor; // (vocab, dim); the embedding table when tied
}

export interface ForwardOptions {
  /** Return logits for every position (perplexity, verification) instead of the last only. */
  allLogits?: boolean;
  /** Receives each MoE layer's routing (moe-stats). */
  onRouting?: (r: RoutingRecord) => void;
  /** Receives the input (T, K) of each dense linear layer before it runs (calibration for GPTQ):
   *  roles that share an input (q/k/v, gate/up) arrive together. The tensor is reused: copy it. */
  onLinearInput?: (layer: number, roles: LinearRole[], x: Tensor<'f32'>) => void;
  /** Stop after this layer's input has been seen and return nothing useful (calibration). */
  stopAfterLayer?: number;
}

export class LlamaModel {
  #disposed = false;
  // Activation buffers reused across layers and calls (one per role), so a forward pass does not
  // allocate (and page-fault in) fresh memory for every op. Never returned to callers.
  readonly #ws = new Map<string, Tensor<'f32'>>();

  constructor(
    readonly config: LlamaConfig,
    readonly weights: LlamaWeights,
    readonly backend: Backend,
  ) {}

  /**
   * Runs `tokens` of sequence `seq` (appended after what the cache holds) and returns logits:
   * (1, vocab) for the last token, or (T, vocab) with allLogits.
   */
  forward(tokens: Int32Array, cache: PagedKvCache, seq: number, opts: ForwardOptions = {}): Tensor<'f32'> {
    if (this.#disposed) throw new DisposedError('LlamaModel');
    const be = this.backend;
    const c = this.config, w = this.weights;
    const T = tokens.length;
    if (T < 1) throw new RangeError('Expected at least one token to run');
    const start = cache.length(seq);
    if (start + T > c.contextLength)
      throw new RangeError(`Sequence would reach ${start + T} tokens, past the model's context length ${c.contextLength}`);
    const positions = new Tensor('i32', [T], Int32Array.from({ length: T }, (_, i) => start + i));
    const slots = new Tensor('i32', [T], cache.append(seq, T));
    const batch = cache.batch([seq], [T]);
    const rope = { style: c.ropeStyle, theta: c.ropeTheta, rotaryDim: c.ropeDim, scaling: c.ropeScale !== 1 ? { type: 'linear' as const, factor: c.ropeScale } : null };
    const attnOpts = { window: c.slidingWindow };

    const qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
    const ws = (name: string, shape: number[]) => this.#workspace(name, shape);
    const x = be.embedding(w.tokEmbd, new Tensor('i32', [T], tokens), ws('x', [T, c.dim])); // (T, dim) residual stream
    for (let l = 0; l < c.layers; l++) {
      const L = w.layers[l]!;
      const h = be.rmsNorm(x, L.attnNorm, c.normEps, ws('h', [T, c.dim])); // (T, dim)
      opts.onLinearInput?.(l, ['wq', 'wk', 'wv'], h);
      const q = be.linear(h, L.wq, L.bq, ws('q', [T, qd])).reshape([T, c.heads, c.headDim]);
      const k = be.linear(h, L.wk, L.bk, ws('k', [T, kvd])).reshape([T, c.kvHeads, c.headDim]);
      const v = be.linear(h, L.wv, L.bv, ws('v', [T, kvd])).reshape([T, c.kvHeads, c.headDim]);
      be.rope(q, positions, { ...rope, out: q });
      be.rope(k, positions, { ...rope, out: k });
      be.pagedKvWrite(cache.k[l]!, cache.v[l]!, k, v, slots);
      const att = be.pagedAttention(q, cache.k[l]!, cache.v[l]!, batch, { ...attnOpts, out: ws('att', [T, c.heads, c.headDim]) });
      opts.onLinearInput?.(l, ['wo'], att.reshape([T, qd]));
      be.add(x, be.linear(att.reshape([T, qd]), L.wo, null, ws('o', [T, c.dim])), x);
      const h2 = be.rmsNorm(x, L.ffnNorm, c.normEps, ws('h', [T, c.dim]));
      if (L.moe) be.add(x, this.#moeFfn(h2, L.moe, l, opts), x);
      else {
        opts.onLinearInput?.(l, ['wGate', 'wUp'], h2);
        const g = be.linear(h2, L.wGate!, null, ws('g', [T, c.ffnDim])); // (T, ffnDim)
        be.swiglu(g, be.linear(h2, L.wUp!, null, ws('u', [T, c.ffnDim])), g); // SwiGLU in place
        opts.onLinearInput?.(l, ['wDown'], g);
        be.add(x, be.linear(g, L.wDown!, null, ws('o', [T, c.dim])), x);
      }
      if (opts.stopAfterLayer === l) return x;
    }
    const last = opts.allLogits ? x : new Tensor('f32', [1, c.dim], (x.data as Float32Array).subarray((T - 1) * c.dim));
    return be.linear(be.rmsNorm(last, w.outNorm, c.normEps), w.output); // (T or 1, vocab)
  }

  #workspace(name: string, shape: number[]): Tensor<'f32'> {
    let t = this.#ws.get(name);
    if (!t || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      t = new Tensor('f32', shape);
      this.#ws.set(name, t);
    }
    return t;
  }

  /**
   * Sparse MoE FFN (Mixtral): route each token to its top-k experts, group the tokens by expert
   * so each expert's weights are read once, run the SwiGLU experts, and scatter back weighted.
   * Experts no token chose are never touched.
   */
  #moeFfn(h: Tensor, m: MoeWeights, layer: number, opts: ForwardOptions): Tensor<'f32'> {
    const be = this.backend, c = this.config;
    const T = h.shape[0]!;
    const logits = be.linear(h, m.router); // (T, experts)
    const route = be.moeRoute(logits, c.expertsUsed!, { renormalize: c.normTopK ?? true });
    if (opts.onRouting)
      opts.onRouting({ layer, probs: be.softmax(logits).data, experts: route.experts.data, tokens: T });
    const grouped = be.moeGather(h, route); // (T * k, dim), rows grouped by expert
    const out = new Tensor('f32', [T * route.k, c.dim]);
    const off = route.expertOffsets.data;
    for (let e = 0; e < m.gate.length; e++) {
      const n = off[e + 1]! - off[e]!;
      if (n === 0) continue;
      const rows = new Tensor('f32', [n, c.dim], grouped.data.subarray(off[e]! * c.dim, off[e + 1]! * c.dim));
      const y = be.linear(be.swiglu(be.linear(rows, m.gate[e]!), be.linear(rows, m.up[e]!)), m.down[e]!);
      out.data.set(y.data, off[e]! * c.dim);
    }
    return be.moeScatter(out, route); // (T, dim)
  }

  /** Drops the weights (their memory goes back at the next GC; an Engine frees its whole worker). Safe twice. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#ws.clear();
    const w = this.weights;
    for (const t of [w.tokEmbd, w.outNorm, w.output]) t.dispose();
    for (const L of w.layers) {
      for (const t of Object.values(L)) if (t instanceof Tensor || t instanceof IntWeight) t.dispose();
      if (L.moe) for (const t of [L.moe.router, ...L.moe.gate, ...L.moe.up, ...L.moe.down]) t.dispose();
    }
  }
}
