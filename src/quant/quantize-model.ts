/**
 * Quantises a Llama model's dense linear layers layer by layer (AutoGPTQ's order, true
 * sequential): for each transformer layer and each group of projections sharing an input
 * (q/k/v, o, gate/up, down), the calibration samples run through the model up to that point,
 * with every earlier projection already quantised, and each projection's Hessian
 * H = 2 X X^T / n is accumulated from its real inputs; then GPTQ (or RTN) quantises it and the
 * model continues with the quantised weight. Embeddings, norms, the output head and MoE experts
 * stay as they are.
 *
 * 4- and 8-bit layers run on the integer kernels (IntWeight); 2- and 3-bit layers, which have no
 * packed kernel, are evaluated as dequantised f32 weights ("simulated") and reported so.
 */
import type { Backend } from '../backend/backend.js';
import type { LinearRole, LinearWeight, LlamaModel } from '../model/llama.js';
import { PagedKvCache } from '../runtime/kv/cache.js';
import type { GptqLinear } from '../tensor/gptq.js';
import { Tensor } from '../tensor/tensor.js';
import { quantizeGptq, quantizeRtn, type GptqOptions } from './gptq.js';
import { runnableWeight } from '../model/gptq-weight.js';
import { forwardTokens } from '../runtime/runner.js';

export const ROLE_GROUPS: LinearRole[][] = [['wq', 'wk', 'wv'], ['wo'], ['wGate', 'wUp'], ['wDown']];

export interface LinearReport {
  layer: number;
  role: LinearRole;
  N: number;
  K: number;
  /** 'packed': runs on the integer kernels; 'simulated': dequantised f32; 'skipped': left as is. */
  status: 'packed' | 'simulated' | 'skipped';
  reason?: string;
  /** GPTQ's weighted error (GPTQ only). */
  loss?: number;
  deadColumns?: number;
  seconds: number;
}

export interface QuantizeModelOptions extends GptqOptions {
  method: 'gptq' | 'rtn';
  /** Called after each projection is done. */
  onLayer?: (r: LinearReport, done: number, total: number) => void;
}

export interface QuantizedModel {
  /** Quantised layers by `${layer}.${role}`. */
  layers: Map<string, GptqLinear>;
  report: LinearReport[];
}

/** Whether a projection with K inputs can be stored as GPTQ at `bits` (its inputs pack into whole
 *  int32 words; any N works, the zero points' last word is padded). */
export function gptqShapeProblem(K: number, bits: number): string | null {
  if ((K * bits) % 32) return `K = ${K} is not a multiple of ${32 / gcd(32, bits)} (the inputs pack ${bits} bits into int32 words)`;
  return null;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/**
 * X^T X of rows (T, K) added into H (K, K) in float64, through the backend's GEMM (f32 per call).
 */
export function accumulateXtX(be: Backend, x: Float32Array, T: number, K: number, H: Float64Array): void {
  const xt = new Float32Array(K * T);
  for (let t = 0; t < T; t++) for (let k = 0; k < K; k++) xt[k * T + t] = x[t * K + k]!;
  const xx = be.linear(new Tensor('f32', [K, T], xt), new Tensor('f32', [K, T], xt)).data;
  for (let i = 0; i < K * K; i++) H[i]! += xx[i]!;
}

export function quantizeModel(model: LlamaModel, samples: readonly Int32Array[], o: QuantizeModelOptions): QuantizedModel {
  const c = model.config, be = model.backend;
  if (c.experts) throw new Error('quantize: MoE models are not supported yet (the experts would stay unquantised)');
  if (o.method === 'gptq' && samples.length === 0) throw new Error('quantize: GPTQ needs at least one calibration sample');
  const layers = new Map<string, GptqLinear>();
  const report: LinearReport[] = [];
  const total = c.layers * 7;
  const maxLen = Math.max(1, ...samples.map((s) => s.length));
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil(maxLen / 16) + 1, blockSize: 16 });
  try {
    for (let l = 0; l < c.layers; l++) {
      const Lw = model.weights.layers[l]!;
      for (const roles of ROLE_GROUPS) {
        const shape = (r: LinearRole) => (Lw[r] as LinearWeight).shape as readonly number[];
        const K = shape(roles[0]!)[1]!;
        // Inputs of this group: one Hessian shared by the group's projections.
        let H: Float64Array | null = null;
        let n = 0;
        if (o.method === 'gptq') {
          H = new Float64Array(K * K);
          for (const s of samples) {
            cache.add(0);
            try {
              forwardTokens(model, cache, 0, s, { observer: {
                stopAfterLayer: l,
                onLinearInput: (layer, rs, x) => {
                  if (layer !== l || rs[0] !== roles[0]) return;
                  accumulateXtX(be, x.data, x.shape[0]!, K, H!);
                  n += x.shape[0]!;
                },
              } });
            } finally {
              cache.free(0);
            }
          }
          if (n === 0) throw new Error(`quantize: no calibration tokens reached layer ${l}`);
          for (let i = 0; i < K * K; i++) H[i] = (2 * H[i]!) / n;
        }
        for (const role of roles) {
          const t0 = performance.now();
          const w = Lw[role] as LinearWeight;
          const [N] = w.shape as [number, number];
          const rep: LinearReport = { layer: l, role, N, K, status: 'skipped', seconds: 0 };
          const problem = w instanceof Tensor ? gptqShapeProblem(K, o.bits) : 'the weight is already integer-quantised';
          if (problem) rep.reason = problem;
          else {
            const wf = (w as Tensor).toFloat32();
            let q: GptqLinear;
            if (o.method === 'gptq') {
              const r = quantizeGptq(wf, N, K, H!.slice(), o, be);
              q = r.layer;
              rep.loss = r.loss;
              rep.deadColumns = r.deadColumns;
            } else {
              q = quantizeRtn(wf, N, K, o);
            }
            const run = runnableWeight(q);
            (Lw as unknown as Record<string, LinearWeight>)[role] = run.weight;
            w.dispose();
            layers.set(`${l}.${role}`, q);
            rep.status = run.packed ? 'packed' : 'simulated';
            if (!run.packed) rep.reason = run.reason;
          }
          rep.seconds = (performance.now() - t0) / 1000;
          report.push(rep);
          o.onLayer?.(rep, report.length, total);
        }
      }
    }
  } finally {
    cache.dispose();
  }
  return { layers, report };
}
