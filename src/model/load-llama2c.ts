/** A LlamaModel from a llama2.c checkpoint (interleaved RoPE, theta 10000, eps 1e-5 as in run.c). */
import type { Llama2cCheckpoint } from '../formats/llama2c.js';
import { checkLlamaConfig, type LlamaConfig } from './config.js';
import type { LlamaWeights } from './llama.js';

export function llamaFromLlama2c(ck: Llama2cCheckpoint): { config: LlamaConfig; weights: LlamaWeights } {
  const h = ck.header;
  const headDim = h.dim / h.heads;
  const config: LlamaConfig = {
    architecture: 'llama', dim: h.dim, layers: h.layers, heads: h.heads, kvHeads: h.kvHeads, headDim, ffnDim: h.hiddenDim,
    vocabSize: h.vocabSize, contextLength: h.seqLen, normEps: 1e-5, ropeTheta: 10000, ropeDim: headDim, ropeStyle: 'interleaved',
    ropeScale: 1, slidingWindow: 0,
  };
  checkLlamaConfig(config, ck.file, {
    dim: 'header field dim', layers: 'header field n_layers', heads: 'header field n_heads', kvHeads: 'header field n_kv_heads',
    headDim: 'dim / n_heads', ffnDim: 'header field hidden_dim', vocabSize: 'header field vocab_size', contextLength: 'header field seq_len', ropeDim: 'dim / n_heads',
  });
  const weights: LlamaWeights = {
    tokEmbd: ck.tokEmbd,
    outNorm: ck.outNorm,
    output: ck.output,
    layers: Array.from({ length: h.layers }, (_, l) => ({
      attnNorm: ck.attnNorm[l]!, wq: ck.wq[l]!, wk: ck.wk[l]!, wv: ck.wv[l]!, wo: ck.wo[l]!,
      ffnNorm: ck.ffnNorm[l]!, wGate: ck.w1[l]!, wDown: ck.w2[l]!, wUp: ck.w3[l]!,
    })),
  };
  return { config, weights };
}
