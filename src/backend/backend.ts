/**
 * Backend: the public op API. Each method validates its arguments once (src/tensor/check),
 * resolves defaults, allocates outputs, and hands a plain plan to the backend's Kernels.
 * `cpu` (native addon) and `js` (pure TypeScript) share this class, so both see identical
 * validation and identical semantics:
 *  - a tensor's data must still cover its shape (not detached, not resized since) and live in an
 *    ArrayBuffer: SharedArrayBuffer-backed tensors are refused (TypeError naming the argument);
 *  - what an op writes (`out`, or the caches of pagedKvWrite) shares no byte with anything else
 *    the op reads or writes (RangeError naming both); the elementwise ops, rmsNorm and rope also
 *    run exactly in place (`out` is then the very memory of `x`, or of `a`/`b`, `gate`/`up`).
 */
import * as check from '../tensor/check.js';
import { IntWeight } from '../tensor/int-weight.js';
import { Tensor } from '../tensor/tensor.js';
import type { AttentionPlan, Kernels, WeightData, WeightType } from './kernels.js';

export type BackendName = 'cpu' | 'js';

export interface RopeOptions {
  /** 'neox' rotates pairs (i, i + rotDim/2) (GPT-NeoX, Hugging Face Llama); 'interleaved' rotates
   *  (2i, 2i+1) (GPT-J, llama.cpp's LLAMA_ROPE_TYPE_NORM). Default 'neox'. */
  style?: 'neox' | 'interleaved';
  /** Frequency base. Default 10000. */
  theta?: number;
  /** Leading dimensions that rotate (even, <= head dim). Default: the whole head dim. */
  rotaryDim?: number;
  /** Frequency scaling. 'linear' divides positions by `factor` (position interpolation). */
  scaling?: { type: 'linear'; factor: number } | null;
  /** (rotaryDim/2) f32, each > 0: pair i's frequency is divided by freqFactors[i] (ggml's freq_factors:
   *  Llama 3's rope_freqs, LongRoPE's short or long factors). */
  freqFactors?: Tensor | null;
  /** YaRN (Peng et al. 2023; ggml's rope_yarn): frequencies are interpolated by 1/factor, except
   *  that pairs below the correction range keep their extrapolated frequency (mixed by extFactor,
   *  default 1) and a linear ramp joins the two. The range is corrDims [low, high] (pair indices) or
   *  comes from origContext and betaFast / betaSlow (default 32 / 1) as ggml_rope_yarn_corr_dims.
   *  Excludes `scaling`. The attention factor is not implied: pass attnFactor. */
  yarn?: { factor: number; extFactor?: number; corrDims?: readonly [number, number]; origContext?: number; betaFast?: number; betaSlow?: number } | null;
  /** cos and sin are multiplied by this (YaRN's mscale, LongRoPE's attention factor). Default 1. */
  attnFactor?: number;
  /** Write the result here (x itself for in place). */
  out?: Tensor | null;
}

export interface AttentionOptions {
  /** Softmax scale. Default 1 / sqrt(headDim). */
  scale?: number;
  /** Keys after the query's position are hidden. Default false. */
  causal?: boolean;
  /** Absolute position of query 0 (keys start at 0). Default S - T when causal, else 0. */
  queryOffset?: number;
  /** ALiBi slopes (Hq), f32: adds slope * (kpos - qpos) to each score. */
  alibiSlopes?: Tensor | null;
  /** Sliding window: keys with |qpos - kpos| >= window are hidden. 0 / undefined = none. */
  window?: number;
  /** The first `sinks` keys stay visible regardless of the window. Default 0. */
  sinks?: number;
  /** Additive mask (T, S), f32 (use -Infinity to hide). */
  mask?: Tensor | null;
  /** Write the result (T, Hq, D) here. */
  out?: Tensor | null;
}

export type PagedAttentionOptions = Omit<AttentionOptions, 'causal' | 'queryOffset' | 'mask'>;

/** A batch of sequences in a paged KV cache. */
export interface PagedBatch {
  /** (B, maxBlocks) i32: block ids of each sequence in order. */
  blockTables: Tensor;
  /** (B) i32: number of cached tokens per sequence, including the new queries. */
  contextLens: Tensor;
  /** (B + 1) i32: queries of sequence b are rows [queryStart[b], queryStart[b+1]) of q. */
  queryStart: Tensor;
}

export interface MoeRouting {
  /** (T, k) f32 routing weights, each row in descending order. */
  weights: Tensor<'f32'>;
  /** (T, k) i32 expert ids (ties resolved to the lower id). */
  experts: Tensor<'i32'>;
  /** (E + 1) i32: assignments of expert e are order[expertOffsets[e] .. expertOffsets[e+1]). */
  expertOffsets: Tensor<'i32'>;
  /** (T * k) i32 assignment ids a = t * k + j grouped by expert, tokens ascending. */
  order: Tensor<'i32'>;
  /** Number of experts selected per token. */
  k: number;
}

const F32 = ['f32'] as const;
const WEIGHT_DTYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const;
const I32 = ['i32'] as const;

function rows(t: Tensor, dim: number): number {
  return t.size / dim;
}

function f32(shape: readonly number[]): Tensor<'f32'> {
  return new Tensor('f32', shape);
}

/** The output tensor: a new one, or the caller's `out` (f32, exactly `shape`). Whether it may share
 *  memory with an input is check.disjoint's business, called by every op just before its kernel. */
function output(out: Tensor | null | undefined, shape: readonly number[], name = 'out'): Tensor<'f32'> {
  if (out === undefined || out === null) return f32(shape);
  check.tensor(out, name, F32);
  check.shape(out, name, shape);
  return out as Tensor<'f32'>;
}

export class Backend {
  readonly #k: Kernels;
  readonly name: BackendName;

  constructor(name: BackendName, kernels: Kernels) {
    this.name = name;
    this.#k = kernels;
  }

  /**
   * y (..., N) = x (..., K) @ w (N, K)^T + bias (N). w is f32, f16, bf16, or GGUF q8_0 / q4_0
   * blocks; with q8_0/q4_0 the activations are quantised to 8-bit blocks per row first and the
   * dot products are integer per block, as llama.cpp computes them. w may also be an IntWeight
   * (GPTQ int4/int8, int8 per channel): the activations are quantised to int8 per block of 32
   * and the dots are integer (see src/tensor/int-weight.ts).
   */
  linear(x: Tensor, w: Tensor | IntWeight, bias?: Tensor | null, out?: Tensor | null): Tensor<'f32'> {
    check.tensor(x, 'x', F32);
    if (w instanceof IntWeight) return this.#linearInt(x, w, bias, out);
    check.tensor(w, 'w', WEIGHT_DTYPES);
    check.rank(w, 'w', 2);
    const [N, K] = w.shape as [number, number];
    const xk = check.lastDim(x, 'x');
    if (xk !== K) throw new RangeError(`Expected x's last dimension to equal w's K = ${K} but received ${xk}`);
    if (N < 1) throw new RangeError(`Expected w to have at least one row but received [${w.shape.join(', ')}]`);
    const b = check.optionalTensor(bias, 'bias', F32);
    if (b) check.shape(b, 'bias', [N]);
    const M = rows(x, K);
    const y = output(out, [...x.shape.slice(0, -1), N]);
    check.disjoint('linear', [['out', y]], [['x', x], ['w', w], ['bias', b]]);
    this.#k.linear({ x: x.data as Float32Array, w: w.data as WeightData, wtype: w.dtype as WeightType, bias: b ? (b.data as Float32Array) : null, y: y.data, M, N, K });
    return y;
  }

  /**
   * How many rows a linear call with weight w may have and still take the kernel's per-row path
   * (Infinity when no row's result ever depends on the row count); see model/batch.ts linearCalls.
   */
  linearGemvRows(w: Tensor | IntWeight): number {
    const g = this.#k.linearGemvRows?.(w instanceof IntWeight ? 'int' : (w.dtype as WeightType));
    return g === undefined ? Infinity : g;
  }

  #linearInt(x: Tensor, w: IntWeight, bias: Tensor | null | undefined, out: Tensor | null | undefined): Tensor<'f32'> {
    const [N, K] = w.shape;
    const xk = check.lastDim(x, 'x');
    if (xk !== K) throw new RangeError(`Expected x's last dimension to equal w's K = ${K} but received ${xk}`);
    const b = check.optionalTensor(bias, 'bias', F32);
    if (b) check.shape(b, 'bias', [N]);
    const M = rows(x, K);
    const y = output(out, [...x.shape.slice(0, -1), N]);
    const p = w.parts;
    check.disjoint('linear', [['out', y]], [['x', x], ['bias', b], ['w.qweight', p.qweight], ['w.perm', p.perm], ['w.groupBlocks', p.groupBlocks], ['w.meta', p.meta], ['w.colScale', p.colScale]]);
    this.#k.linearInt({ x: x.data as Float32Array, w: p, bias: b ? (b.data as Float32Array) : null, y: y.data, M, N, K });
    return y;
  }

  /** RMSNorm over the last dimension: x * rsqrt(mean(x^2) + eps) * weight. */
  rmsNorm(x: Tensor, weight: Tensor, eps = 1e-5, out?: Tensor | null): Tensor<'f32'> {
    check.tensor(x, 'x', F32);
    const dim = check.lastDim(x, 'x');
    check.tensor(weight, 'weight', F32);
    check.shape(weight, 'weight', [dim]);
    check.num(eps, 'eps', { min: 0 });
    const y = output(out, x.shape);
    check.disjoint('rmsNorm', [['out', y]], [['x', x], ['weight', weight]], [['out', 'x']]);
    this.#k.rmsNorm({ x: x.data as Float32Array, weight: weight.data as Float32Array, bias: null, y: y.data, rows: rows(x, dim), dim, eps });
    return y;
  }

  /** LayerNorm over the last dimension, with optional weight and bias. */
  layerNorm(x: Tensor, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5, out?: Tensor | null): Tensor<'f32'> {
    check.tensor(x, 'x', F32);
    const dim = check.lastDim(x, 'x');
    const w = check.optionalTensor(weight, 'weight', F32);
    if (w) check.shape(w, 'weight', [dim]);
    const b = check.optionalTensor(bias, 'bias', F32);
    if (b) check.shape(b, 'bias', [dim]);
    check.num(eps, 'eps', { min: 0 });
    const y = output(out, x.shape);
    check.disjoint('layerNorm', [['out', y]], [['x', x], ['weight', w], ['bias', b]]);
    this.#k.layerNorm({
      x: x.data as Float32Array,
      weight: w ? (w.data as Float32Array) : null,
      bias: b ? (b.data as Float32Array) : null,
      y: y.data,
      rows: rows(x, dim),
      dim,
      eps,
    });
    return y;
  }

  /** a + b; b has a's shape or a's trailing shape (broadcast over leading dims). */
  add(a: Tensor, b: Tensor, out?: Tensor | null): Tensor<'f32'> {
    return this.#binary(a, b, 'add', out);
  }

  /** a * b elementwise; b has a's shape or a's trailing shape. */
  mul(a: Tensor, b: Tensor, out?: Tensor | null): Tensor<'f32'> {
    return this.#binary(a, b, 'mul', out);
  }

  #binary(a: Tensor, b: Tensor, op: 'add' | 'mul', out?: Tensor | null): Tensor<'f32'> {
    check.tensor(a, 'a', F32);
    check.tensor(b, 'b', F32);
    const tail = a.shape.slice(a.rank - b.rank);
    if (b.rank > a.rank || b.shape.some((d, i) => d !== tail[i]) || (b.size === 0 && a.size !== 0))
      throw new RangeError(`Expected b's shape to equal a's shape [${a.shape.join(', ')}] or its trailing dimensions but received [${b.shape.join(', ')}]`);
    const y = output(out, a.shape);
    check.disjoint(op, [['out', y]], [['a', a], ['b', b]], [['out', 'a'], ['out', 'b']]);
    if (a.size > 0) this.#k.binary({ a: a.data as Float32Array, b: b.data as Float32Array, y: y.data, op });
    return y;
  }

  /** SiLU: x * sigmoid(x). */
  silu(x: Tensor, out?: Tensor | null): Tensor<'f32'> {
    return this.#activation(x, 'silu', out);
  }

  /** GELU, tanh approximation (default, as GPT-2) or exact erf form ('none', as PyTorch). */
  gelu(x: Tensor, approximate: 'tanh' | 'none' = 'tanh', out?: Tensor | null): Tensor<'f32'> {
    check.oneOf(approximate, 'approximate', ['tanh', 'none'] as const);
    return this.#activation(x, approximate === 'tanh' ? 'gelu_tanh' : 'gelu_erf', out);
  }

  #activation(x: Tensor, act: 'silu' | 'gelu_tanh' | 'gelu_erf', out?: Tensor | null): Tensor<'f32'> {
    check.tensor(x, 'x', F32);
    const y = output(out, x.shape);
    check.disjoint(act === 'silu' ? 'silu' : 'gelu', [['out', y]], [['x', x]], [['out', 'x']]);
    this.#k.activation({ x: x.data as Float32Array, y: y.data, act });
    return y;
  }

  /** SwiGLU: silu(gate) * up. */
  swiglu(gate: Tensor, up: Tensor, out?: Tensor | null): Tensor<'f32'> {
    check.tensor(gate, 'gate', F32);
    check.tensor(up, 'up', F32);
    check.sameShape(gate, 'gate', up, 'up');
    const y = output(out, gate.shape);
    check.disjoint('swiglu', [['out', y]], [['gate', gate], ['up', up]], [['out', 'gate'], ['out', 'up']]);
    this.#k.swiglu({ gate: gate.data as Float32Array, up: up.data as Float32Array, y: y.data });
    return y;
  }

  /** Softmax of scale * x over the last dimension. A row holding NaN or +Infinity (after scaling)
   *  is NaN throughout, as in PyTorch and ggml; an all -Infinity row is 0 (logSoftmax: NaN). */
  softmax(x: Tensor, scale = 1, out?: Tensor | null): Tensor<'f32'> {
    return this.#softmax(x, scale, false, out);
  }

  /** Log-softmax of scale * x over the last dimension. */
  logSoftmax(x: Tensor, scale = 1, out?: Tensor | null): Tensor<'f32'> {
    return this.#softmax(x, scale, true, out);
  }

  #softmax(x: Tensor, scale: number, log: boolean, out?: Tensor | null): Tensor<'f32'> {
    check.tensor(x, 'x', F32);
    const cols = check.lastDim(x, 'x');
    check.num(scale, 'scale');
    const y = output(out, x.shape);
    check.disjoint(log ? 'logSoftmax' : 'softmax', [['out', y]], [['x', x]]);
    this.#k.softmax({ x: x.data as Float32Array, y: y.data, rows: rows(x, cols), cols, scale, log });
    return y;
  }

  /**
   * Rows of table (vocab, dim) for ids (i32, any shape) -> (...ids.shape, dim) f32. The table is
   * f32/f16/bf16, or q8_0/q4_0 GGML blocks (dim a multiple of 32, which a Tensor of those dtypes
   * guarantees), of which only the looked-up rows are dequantised (as llama.cpp's get_rows):
   * bit-identical to dequantising the whole table.
   */
  embedding(table: Tensor, ids: Tensor, out?: Tensor | null): Tensor<'f32'> {
    check.tensor(table, 'table', WEIGHT_DTYPES);
    check.rank(table, 'table', 2);
    check.tensor(ids, 'ids', I32);
    const [vocab, dim] = table.shape as [number, number];
    if (vocab < 1 || dim < 1) throw new RangeError(`Expected a non-empty table but received [${table.shape.join(', ')}]`);
    check.idsInRange(ids, 'ids', 0, vocab);
    const y = output(out, [...ids.shape, dim]);
    check.disjoint('embedding', [['out', y]], [['table', table], ['ids', ids]]);
    this.#k.embedding({ table: table.data as WeightData, dtype: table.dtype as WeightType, vocab, dim, ids: ids.data as Int32Array, out: y.data });
    return y;
  }

  /** Rotary position embedding of x (T, H, D) at positions (T) i32. */
  rope(x: Tensor, positions: Tensor, options: RopeOptions = {}): Tensor<'f32'> {
    check.tensor(x, 'x', F32);
    check.rank(x, 'x', 3);
    const [T, H, D] = x.shape as [number, number, number];
    check.tensor(positions, 'positions', I32);
    check.shape(positions, 'positions', [T]);
    const o = check.options<RopeOptions>(options, 'options');
    const style = check.oneOf(o.style ?? 'neox', 'options.style', ['neox', 'interleaved'] as const);
    const theta = check.num(o.theta ?? 10000, 'options.theta', { positive: true });
    const rotDim = check.int(o.rotaryDim ?? D, 'options.rotaryDim', 2, D);
    if (rotDim % 2) throw new RangeError(`Expected an even options.rotaryDim but received ${rotDim}`);
    let freqScale = 1;
    if (o.scaling) {
      check.oneOf(o.scaling.type, 'options.scaling.type', ['linear'] as const);
      freqScale = 1 / check.num(o.scaling.factor, 'options.scaling.factor', { positive: true });
    }
    let freqFactors: Float32Array | null = null;
    if (o.freqFactors) {
      check.tensor(o.freqFactors, 'options.freqFactors', F32);
      check.shape(o.freqFactors, 'options.freqFactors', [rotDim / 2]);
      freqFactors = o.freqFactors.data as Float32Array;
      for (let i = 0; i < freqFactors.length; i++)
        if (!(freqFactors[i]! > 0 && freqFactors[i]! < Infinity))
          throw new RangeError(`Expected finite options.freqFactors > 0 but element ${i} is ${freqFactors[i]}`);
    }
    let extFactor = 0, corrLow = 0, corrHigh = 0;
    if (o.yarn) {
      if (o.scaling) throw new TypeError('Expected options.scaling or options.yarn but received both');
      const yn = check.options<NonNullable<RopeOptions['yarn']>>(o.yarn, 'options.yarn');
      freqScale = 1 / check.num(yn.factor, 'options.yarn.factor', { positive: true });
      extFactor = check.num(yn.extFactor ?? 1, 'options.yarn.extFactor', { min: 0, max: 1 });
      if (yn.corrDims !== undefined) {
        if (yn.origContext !== undefined || yn.betaFast !== undefined || yn.betaSlow !== undefined)
          throw new TypeError('Expected options.yarn.corrDims or options.yarn.origContext/betaFast/betaSlow but received both');
        if (!Array.isArray(yn.corrDims) || yn.corrDims.length !== 2) throw new TypeError('Expected options.yarn.corrDims as [low, high]');
        corrLow = check.num(yn.corrDims[0], 'options.yarn.corrDims[0]', { min: 0 });
        corrHigh = check.num(yn.corrDims[1], 'options.yarn.corrDims[1]', { min: 0 });
      } else {
        const orig = check.int(yn.origContext, 'options.yarn.origContext', 1, 1 << 30);
        const fast = check.num(yn.betaFast ?? 32, 'options.yarn.betaFast', { positive: true });
        const slow = check.num(yn.betaSlow ?? 1, 'options.yarn.betaSlow', { positive: true });
        [corrLow, corrHigh] = yarnCorrDims(rotDim, orig, theta, fast, slow);
      }
    }
    const attnFactor = check.num(o.attnFactor ?? 1, 'options.attnFactor', { positive: true });
    if (H < 1 || D < 2) throw new RangeError(`Expected x of shape [T, H >= 1, D >= 2] but received [${x.shape.join(', ')}]`);
    const y = output(o.out, x.shape, 'options.out');
    const reads: [string, Tensor][] = [['x', x], ['positions', positions]];
    if (o.freqFactors) reads.push(['options.freqFactors', o.freqFactors]);
    check.disjoint('rope', [['options.out', y]], reads, [['options.out', 'x']]);
    this.#k.rope({
      x: x.data as Float32Array, y: y.data, positions: positions.data as Int32Array, T, H, D, rotDim, theta, freqScale, neox: style === 'neox',
      freqFactors, extFactor, corrLow, corrHigh, attnFactor,
    });
    return y;
  }

  /** ALiBi slopes for nHeads heads (any count, as BLOOM), maxBias 8 by default. */
  alibiSlopes(nHeads: number, maxBias = 8): Tensor<'f32'> {
    check.int(nHeads, 'nHeads', 1, 1 << 20);
    check.num(maxBias, 'maxBias', { positive: true });
    const out = f32([nHeads]);
    this.#k.alibiSlopes({ nHeads, maxBias, out: out.data });
    return out;
  }

  /** Tiled attention with online softmax. q (T, Hq, D), k/v (S, Hkv, D), Hq % Hkv == 0. */
  flashAttention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor<'f32'> {
    const p = this.#attentionPlan('flashAttention', q, k, v, options);
    this.#k.flashAttention(p);
    return p.out;
  }

  /** Plain attention (materialised scores), the reference for flashAttention. */
  attentionNaive(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor<'f32'> {
    const p = this.#attentionPlan('attentionNaive', q, k, v, options);
    this.#k.attentionNaive(p);
    return p.out;
  }

  #attentionPlan(op: string, q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions): AttentionPlan & { out: Tensor<'f32'> } {
    check.tensor(q, 'q', F32);
    check.tensor(k, 'k', F32);
    check.tensor(v, 'v', F32);
    check.rank(q, 'q', 3);
    check.rank(k, 'k', 3);
    const [T, Hq, D] = q.shape as [number, number, number];
    const [S, Hkv, Dk] = k.shape as [number, number, number];
    if (Dk !== D) throw new RangeError(`Expected k's head dim to equal q's (${D}) but received ${Dk}`);
    check.sameShape(k, 'k', v, 'v');
    headChecks(Hq, Hkv, D);
    const o = check.options<AttentionOptions>(options, 'options');
    const causal = o.causal === undefined ? false : check.bool(o.causal, 'options.causal');
    const qOffset = check.int(o.queryOffset ?? (causal ? Math.max(0, S - T) : 0), 'options.queryOffset', 0, Number.MAX_SAFE_INTEGER);
    const { scale, alibi, window, sinks } = commonAttentionOptions(o, Hq, D);
    const mask = check.optionalTensor(o.mask, 'options.mask', F32);
    if (mask) check.shape(mask, 'options.mask', [T, S]);
    const out = output(o.out, q.shape, 'options.out');
    check.disjoint(op, [['options.out', out]], [['q', q], ['k', k], ['v', v], ['options.mask', mask], ['options.alibiSlopes', alibi]]);
    return {
      out,
      q: q.data as Float32Array,
      k: k.data as Float32Array,
      v: v.data as Float32Array,
      o: out.data,
      T, S, Hq, Hkv, D, scale, causal, qOffset, window, sinks,
      alibi: alibi ? (alibi.data as Float32Array) : null,
      mask: mask ? (mask.data as Float32Array) : null,
    };
  }

  /**
   * Attention over a paged KV cache for a batch of sequences. q (T, Hq, D) holds each sequence's
   * newest tokens (decode: one per sequence); caches are (numBlocks, blockSize, Hkv, D).
   * Causal within each sequence.
   */
  pagedAttention(q: Tensor, kCache: Tensor, vCache: Tensor, batch: PagedBatch, options: PagedAttentionOptions = {}): Tensor<'f32'> {
    check.tensor(q, 'q', F32);
    check.rank(q, 'q', 3);
    const [T, Hq, D] = q.shape as [number, number, number];
    const [numBlocks, blockSize, Hkv] = cacheDims(kCache, vCache, D);
    headChecks(Hq, Hkv, D);
    const b = check.options<PagedBatch>(batch, 'batch');
    const tables = check.tensor(b.blockTables, 'batch.blockTables', I32);
    check.rank(tables, 'batch.blockTables', 2);
    const [B, maxBlocks] = tables.shape as [number, number];
    if (B < 1 || maxBlocks < 1) throw new RangeError(`Expected a non-empty batch.blockTables but received [${tables.shape.join(', ')}]`);
    const lens = check.tensor(b.contextLens, 'batch.contextLens', I32);
    check.shape(lens, 'batch.contextLens', [B]);
    const starts = check.tensor(b.queryStart, 'batch.queryStart', I32);
    check.shape(starts, 'batch.queryStart', [B + 1]);
    // Options first: a getter among them runs before the batch's contents are checked, not after.
    const o = check.options<PagedAttentionOptions>(options, 'options');
    const { scale, alibi, window, sinks } = commonAttentionOptions(o, Hq, D);
    const out = output(o.out, q.shape, 'options.out');
    const qs = starts.data as Int32Array;
    const cl = lens.data as Int32Array;
    const bt = tables.data as Int32Array;
    if (qs[0] !== 0) throw new RangeError(`Expected batch.queryStart[0] to be 0 but received ${qs[0]}`);
    if (qs[B] !== T) throw new RangeError(`Expected batch.queryStart[${B}] to equal q's T = ${T} but received ${qs[B]}`);
    for (let s = 0; s < B; s++) {
      const nq = qs[s + 1]! - qs[s]!;
      if (nq < 0) throw new RangeError(`Expected batch.queryStart to be non-decreasing but received ${qs[s + 1]} after ${qs[s]} at index ${s + 1}`);
      const ctx = cl[s]!;
      if (ctx < nq || ctx > maxBlocks * blockSize)
        throw new RangeError(`Expected batch.contextLens[${s}] in [${nq}, ${maxBlocks * blockSize}] but received ${ctx}`);
      const used = Math.ceil(ctx / blockSize);
      for (let i = 0; i < used; i++) {
        const blk = bt[s * maxBlocks + i]!;
        if (blk < 0 || blk >= numBlocks)
          throw new RangeError(`Expected batch.blockTables[${s}][${i}] in [0, ${numBlocks}) (the block pool) but received ${blk}`);
      }
    }
    check.disjoint('pagedAttention', [['options.out', out]], [
      ['q', q], ['kCache', kCache], ['vCache', vCache], ['batch.blockTables', tables], ['batch.contextLens', lens], ['batch.queryStart', starts], ['options.alibiSlopes', alibi],
    ]);
    this.#k.pagedAttention({
      q: q.data as Float32Array,
      kCache: kCache.data as Float32Array,
      vCache: vCache.data as Float32Array,
      blockTables: bt,
      contextLens: cl,
      queryStart: qs,
      o: out.data,
      B, maxBlocks, numBlocks, blockSize, Hq, Hkv, D, scale, window, sinks,
      alibi: alibi ? (alibi.data as Float32Array) : null,
    });
    return out;
  }

  /** Writes k/v rows (T, Hkv, D) into the caches in place at slots (T) = block * blockSize + offset. */
  pagedKvWrite(kCache: Tensor, vCache: Tensor, k: Tensor, v: Tensor, slots: Tensor): void {
    check.tensor(k, 'k', F32);
    check.rank(k, 'k', 3);
    const [T, Hkv, D] = k.shape as [number, number, number];
    const [numBlocks, blockSize, cHkv] = cacheDims(kCache, vCache, D);
    if (cHkv !== Hkv) throw new RangeError(`Expected k's kv heads to equal the cache's (${cHkv}) but received ${Hkv}`);
    check.tensor(v, 'v', F32);
    check.sameShape(k, 'k', v, 'v');
    check.tensor(slots, 'slots', I32);
    check.shape(slots, 'slots', [T]);
    const nSlots = numBlocks * blockSize;
    check.idsInRange(slots, 'slots', 0, nSlots);
    check.disjoint('pagedKvWrite', [['kCache', kCache], ['vCache', vCache]], [['k', k], ['v', v], ['slots', slots]]);
    this.#k.pagedKvWrite({
      kCache: kCache.data as Float32Array,
      vCache: vCache.data as Float32Array,
      k: k.data as Float32Array,
      v: v.data as Float32Array,
      slots: slots.data as Int32Array,
      T, nSlots, row: Hkv * D,
    });
  }

  /** Router logits (T, E) -> softmax -> top-k experts per token (+ grouping by expert). */
  moeRoute(logits: Tensor, k: number, options: { renormalize?: boolean } = {}): MoeRouting {
    check.tensor(logits, 'logits', F32);
    check.rank(logits, 'logits', 2);
    const [T, E] = logits.shape as [number, number];
    if (E < 1) throw new RangeError(`Expected at least one expert in logits but received [${logits.shape.join(', ')}]`);
    check.int(k, 'k', 1, E);
    const o = check.options<{ renormalize?: boolean }>(options, 'options');
    const renormalize = o.renormalize === undefined ? true : check.bool(o.renormalize, 'options.renormalize');
    const r: MoeRouting = {
      weights: f32([T, k]),
      experts: new Tensor('i32', [T, k]),
      expertOffsets: new Tensor('i32', [E + 1]),
      order: new Tensor('i32', [T * k]),
      k,
    };
    check.disjoint('moeRoute', [['weights', r.weights], ['experts', r.experts], ['expertOffsets', r.expertOffsets], ['order', r.order]], [['logits', logits]]);
    this.#k.moeRoute({
      logits: logits.data as Float32Array, T, E, k, renormalize,
      weights: r.weights.data, experts: r.experts.data, expertOffsets: r.expertOffsets.data, order: r.order.data,
    });
    return r;
  }

  /** Rows of x (T, D) arranged by expert: (T * k, D), row i = x[order[i] / k]. */
  moeGather(x: Tensor, routing: MoeRouting): Tensor<'f32'> {
    check.tensor(x, 'x', F32);
    check.rank(x, 'x', 2);
    const [T, D] = x.shape as [number, number];
    const { order, k } = routingParts(routing, T);
    const out = f32([T * k, D]);
    check.disjoint('moeGather', [['out', out]], [['x', x], ['routing.order', order]]);
    this.#k.moeGather({ x: x.data as Float32Array, T, D, k, order: order.data as Int32Array, out: out.data });
    return out;
  }

  /** Inverse of moeGather with weights: out[t] = sum_j weights[t, j] * y[row of (t, j)]. */
  moeScatter(y: Tensor, routing: MoeRouting): Tensor<'f32'> {
    check.tensor(y, 'y', F32);
    check.rank(y, 'y', 2);
    const T = routing?.weights?.shape?.[0] ?? -1;
    const { order: ot, weights, k } = routingParts(routing, T);
    const order = ot.data as Int32Array;
    const [n, D] = y.shape as [number, number];
    if (n !== T * k) throw new RangeError(`Expected y to have T * k = ${T * k} rows but received ${n}`);
    const seen = new Uint8Array(order.length);
    for (let i = 0; i < order.length; i++) {
      if (seen[order[i]!]) throw new RangeError(`Expected routing.order to be a permutation but ${order[i]} repeats at index ${i}`);
      seen[order[i]!] = 1;
    }
    const out = f32([T, D]);
    check.disjoint('moeScatter', [['out', out]], [['y', y], ['routing.order', ot], ['routing.weights', weights]]);
    this.#k.moeScatter({ y: y.data as Float32Array, order, weights: weights.data as Float32Array, T, k, D, out: out.data });
    return out;
  }

  /** The k largest values of each row (last dimension), descending; ties to the lower index. */
  topK(x: Tensor, k: number): { values: Tensor<'f32'>; indices: Tensor<'i32'> } {
    check.tensor(x, 'x', F32);
    const cols = check.lastDim(x, 'x');
    check.int(k, 'k', 1, cols);
    const lead = x.shape.slice(0, -1);
    const values = f32([...lead, k]);
    const indices = new Tensor('i32', [...lead, k]);
    check.disjoint('topK', [['values', values], ['indices', indices]], [['x', x]]);
    this.#k.topK({ x: x.data as Float32Array, rows: rows(x, cols), cols, k, values: values.data, indices: indices.data });
    return { values, indices };
  }

  /** Mean negative log-likelihood of targets (rows) i32 under logits (rows, vocab); rows whose
   *  target is ignoreIndex (default -100) are skipped. NaN when every row is ignored. */
  crossEntropy(logits: Tensor, targets: Tensor, options: { ignoreIndex?: number } = {}): number {
    return this.crossEntropyStats(logits, targets, options).mean;
  }

  /** crossEntropy with its parts: per-row losses (0 where ignored), sum and count. */
  crossEntropyStats(logits: Tensor, targets: Tensor, options: { ignoreIndex?: number } = {}): { mean: number; sum: number; count: number; nll: Tensor<'f32'> } {
    check.tensor(logits, 'logits', F32);
    check.rank(logits, 'logits', 2);
    const [R, V] = logits.shape as [number, number];
    if (V < 1) throw new RangeError(`Expected a non-empty vocabulary in logits but received [${logits.shape.join(', ')}]`);
    check.tensor(targets, 'targets', I32);
    check.shape(targets, 'targets', [R]);
    const o = check.options<{ ignoreIndex?: number }>(options, 'options');
    const ignoreIndex = check.int(o.ignoreIndex ?? -100, 'options.ignoreIndex', -(2 ** 31), 2 ** 31 - 1);
    const t = targets.data as Int32Array;
    for (let i = 0; i < R; i++) {
      const v = t[i]!;
      if (v !== ignoreIndex && (v < 0 || v >= V))
        throw new RangeError(`Expected targets in [0, ${V}) or ${ignoreIndex} (ignoreIndex) but received ${v} at index ${i}`);
    }
    const nll = f32([R]);
    check.disjoint('crossEntropy', [['nll', nll]], [['logits', logits], ['targets', targets]]);
    const { sum, count } = this.#k.crossEntropy({ logits: logits.data as Float32Array, rows: R, cols: V, targets: t, ignoreIndex, nll: nll.data });
    return { mean: count > 0 ? sum / count : NaN, sum, count, nll };
  }
}

function headChecks(Hq: number, Hkv: number, D: number): void {
  if (Hq < 1 || Hkv < 1) throw new RangeError(`Expected at least one head but received Hq = ${Hq}, Hkv = ${Hkv}`);
  if (Hq % Hkv) throw new RangeError(`Expected q's heads (${Hq}) to be a multiple of k's heads (${Hkv})`);
  if (D < 1 || D > 512) throw new RangeError(`Expected a head dim in [1, 512] but received ${D}`);
}

function commonAttentionOptions(o: Partial<AttentionOptions>, Hq: number, D: number) {
  const scale = check.num(o.scale ?? 1 / Math.sqrt(D), 'options.scale');
  const alibi = check.optionalTensor(o.alibiSlopes, 'options.alibiSlopes', F32);
  if (alibi) check.shape(alibi, 'options.alibiSlopes', [Hq]);
  const window = check.int(o.window ?? 0, 'options.window', 0, Number.MAX_SAFE_INTEGER);
  const sinks = check.int(o.sinks ?? 0, 'options.sinks', 0, Number.MAX_SAFE_INTEGER);
  return { scale, alibi, window, sinks };
}

function cacheDims(kCache: Tensor, vCache: Tensor, D: number): [number, number, number] {
  check.tensor(kCache, 'kCache', F32);
  check.tensor(vCache, 'vCache', F32);
  check.rank(kCache, 'kCache', 4);
  check.sameShape(kCache, 'kCache', vCache, 'vCache');
  const [numBlocks, blockSize, Hkv, Dc] = kCache.shape as [number, number, number, number];
  if (Dc !== D) throw new RangeError(`Expected kCache's head dim to equal ${D} but received ${Dc}`);
  if (numBlocks < 1 || blockSize < 1 || Hkv < 1) throw new RangeError(`Expected a non-empty kCache but received [${kCache.shape.join(', ')}]`);
  return [numBlocks, blockSize, Hkv];
}

/** The parts of a routing the gather and scatter read, each read once from the caller's object. */
function routingParts(routing: MoeRouting, T: number): { order: Tensor; weights: Tensor; k: number } {
  const r = check.options<MoeRouting>(routing, 'routing');
  const k = check.int(r.k, 'routing.k', 1, 1 << 20);
  const weights = check.tensor(r.weights, 'routing.weights', F32);
  check.shape(weights, 'routing.weights', [T, k]);
  const order = check.tensor(r.order, 'routing.order', I32);
  check.shape(order, 'routing.order', [T * k]);
  check.idsInRange(order, 'routing.order', 0, T * k);
  return { order, weights, k };
}

/**
 * YaRN's correction range in pair indices, as ggml_rope_yarn_corr_dims (and transformers'
 * find_correction_range with truncate): the dims whose wavelength turns betaFast times, and
 * betaSlow times, in origContext positions, floored / ceiled and clamped to [0, rotDim - 1].
 */
export function yarnCorrDims(rotDim: number, origContext: number, theta: number, betaFast: number, betaSlow: number, truncate = true): [number, number] {
  const dim = (rot: number) => (rotDim * Math.log(origContext / (rot * 2 * Math.PI))) / (2 * Math.log(theta));
  const lo = truncate ? Math.floor(dim(betaFast)) : dim(betaFast), hi = truncate ? Math.ceil(dim(betaSlow)) : dim(betaSlow);
  return [Math.max(0, lo), Math.min(rotDim - 1, hi)];
}
