/** The `cpu` backend: every op runs in the native addon (ISA chosen at load, see native/cpu/dispatch). */
import type { Kernels } from '../kernels.js';
import type { NativeAddon } from './native.js';

const WTYPE = { f32: 0, f16: 1, bf16: 2, q8_0: 6, q4_0: 7 } as const;
const ACT = { silu: 0, gelu_tanh: 1, gelu_erf: 2 } as const;

export function cpuKernels(n: NativeAddon): Kernels {
  return {
    name: 'cpu',
    linear: (p) => n.linear(p.x, p.w, WTYPE[p.wtype], p.bias, p.y, p.M, p.N, p.K),
    linearInt: (p) =>
      n.linearInt(p.x, p.w.qweight, p.w.bits, p.w.perm, p.w.groupBlocks, p.w.meta, p.w.colScale, p.bias, p.y, p.M, p.N, p.K, p.w.groupBlocks.length - 1,
        p.w.fixedZero, p.w.roundDxF16),
    // native/cpu/linear.h: dense weights take the GEMV through kLinearGemvMaxM = 12 rows, the GEMM
    // beyond (different rounding); the q8_0/q4_0 and integer kernels give every row the same
    // integer block dots whatever M is. test/batch.test.ts pins both facts.
    linearGemvRows: (t) => (t === 'f32' || t === 'f16' || t === 'bf16' ? 12 : Infinity),
    rmsNorm: (p) => n.rmsNorm(p.x, p.weight!, p.y, p.rows, p.dim, p.eps),
    layerNorm: (p) => n.layerNorm(p.x, p.weight, p.bias, p.y, p.rows, p.dim, p.eps),
    softmax: (p) => n.softmax(p.x, p.y, p.rows, p.cols, p.scale, p.log),
    activation: (p) => n.activation(p.x, p.y, ACT[p.act]),
    swiglu: (p) => n.swiglu(p.gate, p.up, p.y),
    binary: (p) => n.binary(p.a, p.b, p.y, p.op === 'add' ? 0 : 1),
    embedding: (p) => n.embedding(p.table, WTYPE[p.dtype], p.vocab, p.dim, p.ids, p.out),
    rope: (p) => n.rope(p),
    alibiSlopes: (p) => n.alibiSlopes(p.nHeads, p.maxBias, p.out),
    flashAttention: (p) =>
      n.flashAttention(p.q, p.k, p.v, p.o, p.T, p.S, p.Hq, p.Hkv, p.D, p.scale, p.causal, p.qOffset, p.alibi, p.window, p.sinks, p.mask),
    attentionNaive: (p) =>
      n.attentionNaive(p.q, p.k, p.v, p.o, p.T, p.S, p.Hq, p.Hkv, p.D, p.scale, p.causal, p.qOffset, p.alibi, p.window, p.sinks, p.mask),
    pagedAttention: (p) =>
      n.pagedAttention(p.q, p.kCache, p.vCache, p.blockTables, p.contextLens, p.queryStart, p.o, p.B, p.maxBlocks, p.numBlocks,
        p.blockSize, p.Hq, p.Hkv, p.D, p.scale, p.alibi, p.window, p.sinks),
    pagedKvWrite: (p) => n.pagedKvWrite(p.kCache, p.vCache, p.k, p.v, p.slots, p.T, p.nSlots, p.row),
    moeRoute: (p) => n.moeRoute(p.logits, p.T, p.E, p.k, p.renormalize, p.weights, p.experts, p.expertOffsets, p.order),
    moeGather: (p) => n.moeGather(p.x, p.T, p.D, p.order, p.k, p.out),
    moeScatter: (p) => n.moeScatter(p.y, p.order, p.weights, p.T, p.k, p.D, p.out),
    topK: (p) => n.topk(p.x, p.rows, p.cols, p.k, p.values, p.indices),
    crossEntropy: (p) => n.crossEntropy(p.logits, p.rows, p.cols, p.targets, p.ignoreIndex, p.nll),
  };
}
