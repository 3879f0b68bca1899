/**
 * Routing statistics of a MoE model over a token stream: per layer, how many token assignments
 * each expert received (the load histogram), the mean router probability per expert, and the
 * load-balancing loss of Switch Transformers / Mixtral as Hugging Face computes it:
 * loss = E * sum_e (assignments_e / T) * meanProb_e (= E * k * sum_e f_e P_e with f_e the share of
 * the T*k assignments; 1.0 ... k is perfectly balanced for uniform routing).
 */
import type { LlamaModel, RoutingRecord } from '../model/llama.js';
import * as check from '../tensor/check.js';
import { PagedKvCache } from './kv/cache.js';
import { forwardTokens } from './runner.js';

export interface MoeLayerStats {
  layer: number;
  /** Assignments per expert (sums to tokens * k). */
  counts: number[];
  /** Mean router softmax probability per expert. */
  meanProb: number[];
  balanceLoss: number;
}

export interface MoeStats {
  tokens: number;
  experts: number;
  k: number;
  layers: MoeLayerStats[];
}

export function moeStats(model: LlamaModel, tokens: readonly number[], options: { ctx?: number; onProgress?: (done: number, total: number) => void } = {}): MoeStats {
  const c = model.config;
  if (!c.experts) throw new TypeError('moeStats: the model has no mixture-of-experts layers');
  const ctx = check.int(options.ctx ?? Math.min(512, c.contextLength), 'options.ctx', 1, c.contextLength);
  if (tokens.length < 1) throw new RangeError('Expected at least one token for moeStats');
  const E = c.experts, k = c.expertsUsed!;
  const acc = new Map<number, { counts: Float64Array; prob: Float64Array }>();
  const onRouting = (r: RoutingRecord) => {
    let a = acc.get(r.layer);
    if (!a) acc.set(r.layer, (a = { counts: new Float64Array(E), prob: new Float64Array(E) }));
    for (const e of r.experts) a.counts[e]!++;
    for (let t = 0; t < r.tokens; t++) for (let e = 0; e < E; e++) a.prob[e]! += r.probs[t * E + e]!;
  };
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil(ctx / 16) + 1, blockSize: 16 });
  const windows = Math.ceil(tokens.length / ctx);
  for (let w = 0; w < windows; w++) {
    cache.add(0);
    forwardTokens(model, cache, 0, Int32Array.from(tokens.slice(w * ctx, (w + 1) * ctx)), { observer: { onRouting } });
    cache.free(0);
    options.onProgress?.(w + 1, windows);
  }
  cache.dispose();
  const T = tokens.length;
  const layers = [...acc.entries()].sort((a, b) => a[0] - b[0]).map(([layer, a]) => {
    const meanProb = Array.from(a.prob, (p) => p / T);
    const counts = Array.from(a.counts);
    return { layer, counts, meanProb, balanceLoss: E * counts.reduce((s, n, e) => s + (n / T) * meanProb[e]!, 0) };
  });
  return { tokens: T, experts: E, k, layers };
}
