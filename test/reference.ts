/**
 * Float64 references, written directly from each op's definition (not from the backends' code),
 * for tests. Inputs are plain number arrays or typed arrays; outputs Float64Array.
 */

export function linearRef(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, M: number, N: number, K: number): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n]! : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k]! * w[n * K + k]!;
      y[m * N + n] = s;
    }
  return y;
}

export function rmsNormRef(x: ArrayLike<number>, w: ArrayLike<number>, dim: number, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    let ms = 0;
    for (let i = 0; i < dim; i++) ms += x[r * dim + i]! ** 2 / dim;
    for (let i = 0; i < dim; i++) y[r * dim + i] = (x[r * dim + i]! / Math.sqrt(ms + eps)) * w[i]!;
  }
  return y;
}

export function layerNormRef(x: ArrayLike<number>, w: ArrayLike<number> | null, b: ArrayLike<number> | null, dim: number, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    const row = Array.from({ length: dim }, (_, i) => x[r * dim + i]!);
    const mean = row.reduce((a, c) => a + c, 0) / dim;
    const variance = row.reduce((a, c) => a + (c - mean) ** 2, 0) / dim;
    for (let i = 0; i < dim; i++) y[r * dim + i] = ((row[i]! - mean) / Math.sqrt(variance + eps)) * (w ? w[i]! : 1) + (b ? b[i]! : 0);
  }
  return y;
}

export function softmaxRef(x: ArrayLike<number>, cols: number, scale: number, log: boolean): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    const s = Array.from({ length: cols }, (_, i) => x[r * cols + i]! * scale);
    const mx = Math.max(...s);
    const lse = mx + Math.log(s.reduce((a, v) => a + Math.exp(v - mx), 0));
    for (let i = 0; i < cols; i++) y[r * cols + i] = log ? s[i]! - lse : Math.exp(s[i]! - lse);
  }
  return y;
}

/** erf via its Taylor series / continued fraction in double. */
export function erfRef(x: number): number {
  const a = Math.abs(x);
  let r: number;
  if (a < 3) {
    let term = a, sum = a;
    for (let n = 1; n < 200; n++) {
      term *= (-a * a) / n;
      sum += term / (2 * n + 1);
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // erfc continued fraction (Lentz), accurate for a >= 3
    let f = a, C = a, Dd = 0;
    for (let n = 1; n < 200; n++) {
      const an = n / 2;
      Dd = a + an * Dd;
      Dd = 1 / Dd;
      C = a + an / C;
      f *= C * Dd;
    }
    r = 1 - Math.exp(-a * a) / (f * Math.sqrt(Math.PI));
  }
  return x < 0 ? -r : r;
}

export const siluRef = (x: number) => x / (1 + Math.exp(-x));
export const geluTanhRef = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
export const geluErfRef = (x: number) => 0.5 * x * (1 + erfRef(x / Math.SQRT2));

/** RoPE from the rotation-matrix definition: pair (a, b) -> (a cos - b sin, a sin + b cos). */
export function ropeRef(x: ArrayLike<number>, pos: ArrayLike<number>, T: number, H: number, D: number, rot: number, theta: number, scale: number, neox: boolean): Float64Array {
  const y = Float64Array.from(x as ArrayLike<number>);
  for (let t = 0; t < T; t++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < rot / 2; i++) {
        const ang = pos[t]! * scale * theta ** (-(2 * i) / rot);
        const base = (t * H + h) * D;
        const [i0, i1] = neox ? [base + i, base + i + rot / 2] : [base + 2 * i, base + 2 * i + 1];
        const a = x[i0]!, b = x[i1]!;
        y[i0] = a * Math.cos(ang) - b * Math.sin(ang);
        y[i1] = a * Math.sin(ang) + b * Math.cos(ang);
      }
  return y;
}

export interface AttnRefOptions {
  scale: number;
  causal: boolean;
  qOffset: number;
  alibi?: ArrayLike<number> | null;
  window?: number;
  sinks?: number;
  mask?: ArrayLike<number> | null;
}

/** Full score matrix, softmax, weighted sum; hidden keys get probability 0; empty rows give 0. */
export function attentionRef(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, T: number, S: number, Hq: number, Hkv: number, D: number, o: AttnRefOptions): Float64Array {
  const out = new Float64Array(T * Hq * D);
  const win = o.window ?? 0, sinks = o.sinks ?? 0;
  for (let h = 0; h < Hq; h++) {
    const kh = Math.floor(h / (Hq / Hkv));
    for (let t = 0; t < T; t++) {
      const qp = o.qOffset + t;
      const scores: number[] = [];
      for (let j = 0; j < S; j++) {
        const hidden = (o.causal && j > qp) || (win > 0 && j >= sinks && Math.abs(qp - j) >= win);
        if (hidden) { scores.push(-Infinity); continue; }
        let s = 0;
        for (let d = 0; d < D; d++) s += q[(t * Hq + h) * D + d]! * k[(j * Hkv + kh) * D + d]!;
        s = s * o.scale + (o.alibi ? o.alibi[h]! * (j - qp) : 0) + (o.mask ? o.mask[t * S + j]! : 0);
        scores.push(s);
      }
      const mx = Math.max(...scores);
      if (mx === -Infinity) continue;
      const p = scores.map((s) => Math.exp(s - mx));
      const z = p.reduce((a, b) => a + b, 0);
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let j = 0; j < S; j++) if (p[j]! > 0) acc += p[j]! * v[(j * Hkv + kh) * D + d]!;
        out[(t * Hq + h) * D + d] = acc / z;
      }
    }
  }
  return out;
}

export interface LlamaRefConfig {
  dim: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  vocab: number;
  eps: number;
  /** RoPE base and linear factor (positions are divided by it). */
  theta: number;
  factor: number;
  /** NeoX (rotate halves, HF weights) or adjacent pairs (GGUF llama, whose Q/K rows are permuted). */
  neox: boolean;
  /** Keys at distance >= window are hidden (0 = none), transformers' sliding_window_overlay. */
  window?: number;
  /** RoPE scaling: each pair's angle per position (headDim/2; replaces theta and factor) and the cos/sin factor. */
  ropeFreqs?: readonly number[];
  ropeMscale?: number;
}

/** RoPE with explicit per-pair frequencies, cos and sin times mscale. */
function ropeFreqsRef(x: ArrayLike<number>, pos: ArrayLike<number>, T: number, H: number, D: number, freqs: readonly number[], mscale: number, neox: boolean): Float64Array {
  const y = Float64Array.from(x as ArrayLike<number>), half = freqs.length;
  for (let t = 0; t < T; t++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < half; i++) {
        const ang = pos[t]! * freqs[i]!, base = (t * H + h) * D;
        const [i0, i1] = neox ? [base + i, base + i + half] : [base + 2 * i, base + 2 * i + 1];
        const a = x[i0]!, b = x[i1]!;
        y[i0] = mscale * (a * Math.cos(ang) - b * Math.sin(ang));
        y[i1] = mscale * (a * Math.sin(ang) + b * Math.cos(ang));
      }
  return y;
}

export interface LlamaRefLayer {
  attnNorm: ArrayLike<number>; // (dim)
  wq: ArrayLike<number>; // (heads * headDim, dim)
  wk: ArrayLike<number>; // (kvHeads * headDim, dim)
  wv: ArrayLike<number>; // (kvHeads * headDim, dim)
  bq?: ArrayLike<number> | null;
  bk?: ArrayLike<number> | null;
  bv?: ArrayLike<number> | null;
  wo: ArrayLike<number>; // (dim, heads * headDim)
  ffnNorm: ArrayLike<number>; // (dim)
  wGate: ArrayLike<number>; // (ffn, dim)
  wUp: ArrayLike<number>; // (ffn, dim)
  wDown: ArrayLike<number>; // (dim, ffn)
}

export interface LlamaRefWeights {
  embed: ArrayLike<number>; // (vocab, dim)
  layers: LlamaRefLayer[];
  outNorm: ArrayLike<number>; // (dim)
  output: ArrayLike<number>; // (vocab, dim)
}

/**
 * A Llama-family decoder in float64, from the definitions above (RMSNorm, linear, RoPE, causal
 * attention, SwiGLU), one sequence at positions 0..T-1: logits for every position, (T, vocab).
 */
export function llamaForwardRef(c: LlamaRefConfig, w: LlamaRefWeights, tokens: readonly number[]): Float64Array {
  const T = tokens.length, D = c.dim, hd = c.headDim;
  const qd = c.heads * hd, kvd = c.kvHeads * hd;
  const pos = tokens.map((_, i) => i);
  const x = new Float64Array(T * D); // (T, dim) residual stream
  tokens.forEach((t, i) => { for (let d = 0; d < D; d++) x[i * D + d] = w.embed[t * D + d]!; });
  for (const L of w.layers) {
    const h = rmsNormRef(x, L.attnNorm, D, c.eps);
    const rope = (v: Float64Array, H: number) =>
      c.ropeFreqs ? ropeFreqsRef(v, pos, T, H, hd, c.ropeFreqs, c.ropeMscale ?? 1, c.neox) : ropeRef(v, pos, T, H, hd, hd, c.theta, 1 / c.factor, c.neox);
    const q = rope(linearRef(h, L.wq, L.bq ?? null, T, qd, D), c.heads);
    const k = rope(linearRef(h, L.wk, L.bk ?? null, T, kvd, D), c.kvHeads);
    const v = linearRef(h, L.wv, L.bv ?? null, T, kvd, D);
    const att = attentionRef(q, k, v, T, T, c.heads, c.kvHeads, hd, { scale: 1 / Math.sqrt(hd), causal: true, qOffset: 0, window: c.window ?? 0 });
    const o = linearRef(att, L.wo, null, T, D, qd);
    for (let i = 0; i < x.length; i++) x[i] += o[i]!;
    const h2 = rmsNormRef(x, L.ffnNorm, D, c.eps);
    const g = linearRef(h2, L.wGate, null, T, c.ffn, D), u = linearRef(h2, L.wUp, null, T, c.ffn, D);
    for (let i = 0; i < g.length; i++) g[i] = siluRef(g[i]!) * u[i]!;
    const down = linearRef(g, L.wDown, null, T, D, c.ffn);
    for (let i = 0; i < x.length; i++) x[i] += down[i]!;
  }
  return linearRef(rmsNormRef(x, w.outNorm, D, c.eps), w.output, null, T, c.vocab, D);
}
