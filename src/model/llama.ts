/**
 * Llama-family forward pass, written once against Backend (llama2.c's run.c order):
 * embed -> per layer [RMSNorm -> Q,K,V (+bias) -> RoPE -> paged KV write -> paged attention ->
 * output proj -> residual -> RMSNorm -> SwiGLU FFN -> residual] -> RMSNorm -> logits.
 * It reads a ForwardBatch (packed tokens of many sequences) and writes K/V where the batch says;
 * which sequence owns which block is the runtime's business (runtime/kv).
 */
import type { Backend } from '../backend/backend.js';
import { IntWeight } from '../tensor/int-weight.js';
import { DisposedError, Tensor } from '../tensor/tensor.js';
import { linearCalls, type ForwardBatch, type ForwardObserver, type KvStorage, type LinearRole } from './batch.js';
import type { LlamaConfig } from './config.js';
import { RopeSetup, type RopeCall } from './rope-scaling.js';

export type { LinearRole, RoutingRecord, ForwardObserver } from './batch.js';

/** A linear layer's weight (N, K): dense (f32/f16/bf16/q8_0/q4_0) or integer (GPTQ, int8). */
export type LinearWeight = Tensor | IntWeight;

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

export interface LlamaWeights {
  tokEmbd: Tensor; // (vocab, dim)
  layers: LlamaLayerWeights[];
  outNorm: Tensor; // (dim) f32
  output: Tensor; // (vocab, dim); the embedding table when tied
}

/** [firstRow, rows] linear calls (see linearCalls). */
type Calls = readonly (readonly [number, number])[];

export class LlamaModel {
  #disposed = false;
  // Activation buffers reused across layers and calls (one per role), so a forward pass does not
  // allocate (and page-fault in) fresh memory for every op. Never returned to callers.
  readonly #ws = new Map<string, Tensor<'f32'>>();
  // RoPE options and frequency factors, computed once per model.
  readonly #rope: RopeSetup;

  constructor(
    readonly config: LlamaConfig,
    readonly weights: LlamaWeights,
    readonly backend: Backend,
  ) {
    this.#rope = new RopeSetup(config);
  }

  /**
   * One step over a batch: writes every new token's K/V into `kv` at the batch's slots and returns
   * the logits of the batch's logit rows (R, vocab). With observer.stopAfterLayer it returns the
   * residual stream (T, dim) after that layer instead. Only runtime/runner.ts calls this.
   */
  forward(batch: ForwardBatch, kv: KvStorage, observer: ForwardObserver = {}): Tensor<'f32'> {
    if (this.#disposed) throw new DisposedError('LlamaModel');
    const be = this.backend;
    const c = this.config, w = this.weights;
    const T = batch.tokens.shape[0]!;
    if (T < 1) throw new RangeError('Expected at least one token in the batch');
    if (kv.k.length !== c.layers || kv.v.length !== c.layers)
      throw new RangeError(`Expected KV storage for ${c.layers} layers but received ${kv.k.length}`);
    const ropeCalls = this.#ropeCalls(batch);
    const paged = { blockTables: batch.blockTables, contextLens: batch.contextLens, queryStart: batch.queryStart };
    const attnOpts = { window: c.slidingWindow };
    const plans = new Map<number, Calls>(); // linear calls per kernel switch point
    const calls = (wt: LinearWeight): Calls => {
      const g = be.linearGemvRows(wt);
      let p = plans.get(g);
      if (!p) plans.set(g, (p = linearCalls(batch.queryStartHost, g)));
      return p;
    };
    const lin = (x: Tensor<'f32'>, wt: LinearWeight, bias: Tensor | null | undefined, name: string, N: number) =>
      this.#linear(x, wt, bias, this.#workspace(name, [T, N]), calls(wt));

    const qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
    const ws = (name: string, shape: number[]) => this.#workspace(name, shape);
    const x = be.embedding(w.tokEmbd, batch.tokens, ws('x', [T, c.dim])); // (T, dim) residual stream
    for (let l = 0; l < c.layers; l++) {
      const L = w.layers[l]!;
      const h = be.rmsNorm(x, L.attnNorm, c.normEps, ws('h', [T, c.dim])); // (T, dim)
      observer.onLinearInput?.(l, ['wq', 'wk', 'wv'], h);
      const q = lin(h, L.wq, L.bq, 'q', qd).reshape([T, c.heads, c.headDim]);
      const k = lin(h, L.wk, L.bk, 'k', kvd).reshape([T, c.kvHeads, c.headDim]);
      const v = lin(h, L.wv, L.bv, 'v', kvd).reshape([T, c.kvHeads, c.headDim]);
      for (const [r0, n, rope] of ropeCalls) {
        const [qs, ks, ps] = n === T ? [q, k, batch.positions] : [q.rows(r0, n), k.rows(r0, n), batch.positions.rows(r0, n)];
        be.rope(qs, ps, { ...rope, out: qs });
        be.rope(ks, ps, { ...rope, out: ks });
      }
      be.pagedKvWrite(kv.k[l]!, kv.v[l]!, k, v, batch.slots);
      const att = be.pagedAttention(q, kv.k[l]!, kv.v[l]!, paged, { ...attnOpts, out: ws('att', [T, c.heads, c.headDim]) });
      observer.onLinearInput?.(l, ['wo'], att.reshape([T, qd]));
      be.add(x, lin(att.reshape([T, qd]), L.wo, null, 'o', c.dim), x);
      const h2 = be.rmsNorm(x, L.ffnNorm, c.normEps, ws('h', [T, c.dim]));
      if (L.moe) be.add(x, this.#moeFfn(h2, L.moe, l, observer), x);
      else {
        observer.onLinearInput?.(l, ['wGate', 'wUp'], h2);
        const g = lin(h2, L.wGate!, null, 'g', c.ffnDim); // (T, ffnDim)
        be.swiglu(g, lin(h2, L.wUp!, null, 'u', c.ffnDim), g); // SwiGLU in place
        observer.onLinearInput?.(l, ['wDown'], g);
        be.add(x, lin(g, L.wDown!, null, 'o', c.dim), x);
      }
      if (observer.stopAfterLayer === l) return x;
    }
    // Logits only for the rows that need them (gathered on the backend: no host read of x).
    const R = batch.logitRows.shape[0]!;
    if (R === 0) return new Tensor('f32', [0, c.vocabSize]);
    const rows = be.embedding(x, batch.logitRows, ws('last', [R, c.dim])); // (R, dim)
    const normed = be.rmsNorm(rows, w.outNorm, c.normEps, ws('lastNorm', [R, c.dim]));
    const starts = new Int32Array(batch.logitCountsHost.length + 1);
    batch.logitCountsHost.forEach((n, i) => (starts[i + 1] = starts[i]! + n));
    return this.#linear(normed, w.output, null, new Tensor('f32', [R, c.vocabSize]), linearCalls(starts, be.linearGemvRows(w.output))); // (R, vocab)
  }

  /**
   * [firstRow, rows, options] RoPE calls: one for the whole batch, or with dynamic NTK and LongRoPE
   * by position one per segment, whose options follow its last position (transformers decides from
   * max(position_ids) + 1 per forward; per segment here so that a sequence's rotation does not
   * depend on its batch). K rows already cached keep the rotation they were written with, as in
   * transformers' KV cache.
   */
  #ropeCalls(batch: ForwardBatch): [number, number, RopeCall][] {
    const T = batch.tokens.shape[0]!;
    if (this.#rope.fixed) return [[0, T, this.#rope.fixed]];
    const pos = batch.positions.data, qs = batch.queryStartHost;
    const out: [number, number, RopeCall][] = [];
    for (let s = 0; s + 1 < qs.length; s++) {
      const r0 = qs[s]!, n = qs[s + 1]! - r0;
      if (n === 0) continue;
      let max = 0;
      for (let t = r0; t < r0 + n; t++) max = Math.max(max, pos[t]!);
      out.push([r0, n, this.#rope.forSequence(max)]);
    }
    return out;
  }

  /** y = x @ w^T (+ bias), one backend call per planned row range (batch invariance). */
  #linear(x: Tensor<'f32'>, w: LinearWeight, bias: Tensor | null | undefined, y: Tensor<'f32'>, calls: Calls): Tensor<'f32'> {
    const be = this.backend;
    if (calls.length === 1) return be.linear(x, w, bias, y);
    for (const [a, n] of calls) be.linear(x.rows(a, n), w, bias, y.rows(a, n));
    return y;
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
  #moeFfn(h: Tensor<'f32'>, m: MoeWeights, layer: number, observer: ForwardObserver): Tensor<'f32'> {
    const be = this.backend, c = this.config;
    const T = h.shape[0]!;
    const logits = be.linear(h, m.router); // (T, experts)
    const route = be.moeRoute(logits, c.expertsUsed!, { renormalize: c.normTopK ?? true });
    if (observer.onRouting)
      observer.onRouting({ layer, probs: be.softmax(logits).data, experts: route.experts.data, tokens: T });
    const grouped = be.moeGather(h, route); // (T * k, dim), rows grouped by expert
    const out = this.#workspace('moeOut', [T * route.k, c.dim]);
    const off = route.expertOffsets.data; // (experts + 1) host routing metadata
    for (let e = 0; e < m.gate.length; e++) {
      const n = off[e + 1]! - off[e]!;
      if (n === 0) continue;
      // An expert's rows come from any sequence in the batch: treating each as a one-row segment
      // keeps its result independent of the others (batch invariance; see linearCalls).
      const single = Int32Array.from({ length: n + 1 }, (_, i) => i);
      const calls = (wt: Tensor) => linearCalls(single, be.linearGemvRows(wt));
      const rows = grouped.rows(off[e]!, n);
      const g = this.#linear(rows, m.gate[e]!, null, new Tensor('f32', [n, c.ffnDim]), calls(m.gate[e]!));
      be.swiglu(g, this.#linear(rows, m.up[e]!, null, new Tensor('f32', [n, c.ffnDim]), calls(m.up[e]!)), g);
      this.#linear(g, m.down[e]!, null, out.rows(off[e]!, n), calls(m.down[e]!));
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
