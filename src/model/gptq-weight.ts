/** How a GPTQ layer runs: packed integers where a kernel exists, else dequantised f32. */
import { dequantizeGptq, type GptqLinear } from '../tensor/gptq.js';
import { IntWeight, gptqKernelSupport } from '../tensor/int-weight.js';
import { Tensor } from '../tensor/tensor.js';
import type { LinearWeight } from './llama.js';

/** The runnable weight of a quantised layer: packed integers where a kernel exists, else f32. */
export function runnableWeight(l: GptqLinear): { weight: LinearWeight; packed: boolean; reason?: string } {
  const why = gptqKernelSupport(l);
  if (!why) return { weight: IntWeight.fromGptq(l), packed: true };
  return { weight: new Tensor('f32', [l.N, l.K], dequantizeGptq(l)), packed: false, reason: why };
}
