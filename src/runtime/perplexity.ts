/**
 * Perplexity of a token stream. Two modes:
 *  - 'chunks' (llama.cpp's llama-perplexity): non-overlapping chunks of ctx tokens, the first
 *    token of each chunk replaced by BOS, and only the second half of each chunk scored (each
 *    scored token then has at least ctx/2 tokens of context). Trailing tokens that do not fill a
 *    chunk are dropped, as llama.cpp does.
 *  - 'sliding' (Hugging Face's strided evaluation): windows of ctx tokens advancing by stride;
 *    each window scores only the tokens the previous window did not, so every token after the
 *    first is scored exactly once with up to ctx - stride tokens of context.
 * Non-finite logits (a NaN perplexity) throw NonFiniteLogitsError naming the token position.
 * The uncertainty is llama-perplexity's: the standard error of the mean per-token NLL,
 * sqrt((E[nll^2] - E[nll]^2) / (N - 1)), carried to the perplexity to first order (ppl x that).
 */
import type { LlamaModel } from '../model/llama.js';
import * as check from '../tensor/check.js';
import { Tensor } from '../tensor/tensor.js';
import { checkFiniteLogits, NonFiniteLogitsError } from './errors.js';
import { PagedKvCache } from './kv/cache.js';
import { forwardTokens } from './runner.js';

export interface PerplexityOptions {
  /** Context (window) length. Default: min(512, model context). */
  ctx?: number;
  mode?: 'chunks' | 'sliding';
  /** Sliding mode: tokens between window starts, 1 to ctx - 1. Default ctx / 2. */
  stride?: number;
  /** BOS id (chunks mode puts it first in every chunk). */
  bosId?: number | null;
  /** Called after each chunk/window with the running perplexity. */
  onProgress?: (done: number, total: number, ppl: number) => void;
}

export interface PerplexityResult {
  ppl: number;
  /** Standard error of ppl (ppl x nllError), as llama-perplexity's "PPL = X +/- Y"; NaN below 2 scored tokens. */
  pplError: number;
  /** Mean negative log-likelihood (nats/token). */
  nll: number;
  /** Standard error of the mean NLL over the scored tokens; NaN below 2 scored tokens. */
  nllError: number;
  scoredTokens: number;
  windows: number;
}

export function perplexity(model: LlamaModel, tokens: readonly number[], options: PerplexityOptions = {}): PerplexityResult {
  const o = check.options<PerplexityOptions>(options, 'options');
  const mode = check.oneOf(o.mode ?? 'chunks', 'options.mode', ['chunks', 'sliding'] as const);
  // chunks mode scores positions ctx/2 .. ctx-2 of each chunk, so it needs ctx >= 3
  const ctx = check.int(o.ctx ?? Math.min(512, model.config.contextLength), 'options.ctx', mode === 'chunks' ? 3 : 2, model.config.contextLength);
  // stride < ctx: a window must hold the token before its first target (windows overlap by >= 1).
  const stride = check.int(o.stride ?? Math.max(1, ctx >> 1), 'options.stride', 1, ctx - 1);
  const be = model.backend;
  const c = model.config;
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil(ctx / 16) + 1, blockSize: 16 });
  let sum = 0, sumSq = 0, count = 0, windows = 0;
  // Scores targets[from..] of window `win` (logits row j predicts win[j+1]).
  const score = (win: number[], from: number, begin: number) => {
    cache.add(0);
    try {
      const logits = forwardTokens(model, cache, 0, Int32Array.from(win), { allLogits: true });
      const V = c.vocabSize;
      const rows = win.length - 1 - from;
      const sub = new Tensor('f32', [rows, V], (logits.data as Float32Array).subarray(from * V, (win.length - 1) * V));
      const targets = new Tensor('i32', [rows], Int32Array.from(win.slice(from + 1)));
      const r = be.crossEntropyStats(sub, targets);
      // A NaN or infinite loss means non-finite logits: name the first such row (the error path only).
      if (!Number.isFinite(r.sum)) {
        for (let j = 0; j < rows; j++) checkFiniteLogits(sub.data.subarray(j * V, (j + 1) * V), begin + from + j);
        throw new NonFiniteLogitsError(begin + from, r.sum);
      }
      sum += r.sum;
      count += r.count;
      const nll = r.nll.data as Float32Array;
      for (let j = 0; j < rows; j++) sumSq += nll[j]! * nll[j]!;
    } finally {
      cache.free(0);
    }
    windows++;
  };
  try {
    if (mode === 'chunks') {
      const n = Math.floor(tokens.length / ctx);
      if (n < 1) throw new RangeError(`Expected at least ctx = ${ctx} tokens for perplexity but the text has ${tokens.length}`);
      for (let i = 0; i < n; i++) {
        const win = tokens.slice(i * ctx, (i + 1) * ctx);
        if (o.bosId !== undefined && o.bosId !== null) win[0] = o.bosId;
        score(win, ctx >> 1, i * ctx);
        o.onProgress?.(i + 1, n, Math.exp(sum / count));
      }
    } else {
      if (tokens.length < 2) throw new RangeError('Expected at least 2 tokens for perplexity');
      const total = Math.max(1, Math.ceil((tokens.length - ctx) / stride) + 1);
      let prevEnd = 1; // token 0 is never a target
      for (let begin = 0; prevEnd < tokens.length; begin += stride) {
        const end = Math.min(begin + ctx, tokens.length);
        const win = tokens.slice(begin, end);
        score(win, prevEnd - 1 - begin, begin);
        prevEnd = end;
        o.onProgress?.(windows, total, Math.exp(sum / count));
      }
    }
  } finally {
    cache.dispose();
  }
  const mean = sum / count;
  const ppl = Math.exp(mean);
  // llama.cpp's one-pass form; a variance that rounds below zero (all NLLs equal) is zero.
  const nllError = count > 1 ? Math.sqrt(Math.max(0, sumSq / count - mean * mean) / (count - 1)) : NaN;
  return { ppl, pplError: ppl * nllError, nll: mean, nllError, scoredTokens: count, windows };
}
