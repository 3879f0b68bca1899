/**
 * RoPE options for a LlamaConfig's scaling: the per-pair frequency factors computed once per
 * model, and what depends on a sequence (dynamic NTK's theta, LongRoPE's short/long choice).
 * References: transformers' modeling_rope_utils.py (_compute_*_parameters, dynamic_rope_update)
 * for Hugging Face configs, llama.cpp's llama-context.cpp (yarn_attn_factor) and ggml's rope_yarn
 * for GGUF; both agree wherever both implement a type.
 */
import { yarnCorrDims, type RopeOptions } from '../backend/backend.js';
import { Tensor } from '../tensor/tensor.js';
import type { LlamaConfig } from './config.js';

/** What rope() takes besides `out`. */
export type RopeCall = Omit<RopeOptions, 'out'>;

export class RopeSetup {
  /** Options when nothing depends on the sequence (every type but dynamic and LongRoPE by position). */
  readonly fixed: RopeCall | null;
  readonly #c: LlamaConfig;
  readonly #base: RopeCall;
  readonly #short: Tensor<'f32'> | null = null;
  readonly #long: Tensor<'f32'> | null = null;

  constructor(c: LlamaConfig) {
    this.#c = c;
    const r = c.ropeScaling;
    const base: RopeCall = { style: c.ropeStyle, theta: c.ropeTheta, rotaryDim: c.ropeDim };
    if (c.ropeScale !== 1) base.scaling = { type: 'linear', factor: c.ropeScale };
    if (c.ropeFreqFactors) base.freqFactors = Tensor.from('f32', [c.ropeDim / 2], c.ropeFreqFactors);
    if (r?.type === 'yarn') {
      base.yarn = r.truncate
        ? { factor: r.factor, extFactor: r.extFactor, origContext: r.origContext, betaFast: r.betaFast, betaSlow: r.betaSlow }
        : { factor: r.factor, extFactor: r.extFactor, corrDims: yarnCorrDims(c.ropeDim, r.origContext, c.ropeTheta, r.betaFast, r.betaSlow, false) };
      base.attnFactor = r.attnFactor;
    } else if (r?.type === 'llama3') {
      base.freqFactors = Tensor.from('f32', [c.ropeDim / 2], llama3FreqFactors(c.ropeDim, c.ropeTheta, r));
    } else if (r?.type === 'longrope') {
      this.#short = Tensor.from('f32', [c.ropeDim / 2], r.shortFactor);
      this.#long = Tensor.from('f32', [c.ropeDim / 2], r.longFactor);
      base.attnFactor = r.attnFactor;
      if (r.choose === 'context') base.freqFactors = c.contextLength > r.origContext ? this.#long : this.#short;
    }
    this.#base = base;
    this.fixed = r?.type === 'dynamic' || (r?.type === 'longrope' && r.choose === 'position') ? null : base;
  }

  /** Options for a sequence whose longest position in this forward is maxPosition (seq_len = maxPosition + 1, as transformers). */
  forSequence(maxPosition: number): RopeCall {
    if (this.fixed) return this.fixed;
    const r = this.#c.ropeScaling!;
    const seqLen = maxPosition + 1;
    if (r.type === 'dynamic') return { ...this.#base, theta: dynamicTheta(this.#c.ropeTheta, this.#c.ropeDim, r.factor, r.origContext, seqLen) };
    if (r.type === 'longrope') return { ...this.#base, freqFactors: seqLen > r.origContext ? this.#long : this.#short };
    return this.#base;
  }
}

/** transformers' dynamic NTK base: theta * (factor * L / orig - (factor - 1))^(dim / (dim - 2)), L = max(seqLen, orig). */
export function dynamicTheta(theta: number, dim: number, factor: number, origContext: number, seqLen: number): number {
  const L = Math.max(seqLen, origContext);
  return theta * Math.pow((factor * L) / origContext - (factor - 1), dim / (dim - 2));
}

/**
 * Llama 3.1's frequencies as divisors of theta^(-2i/dim) (what llama.cpp's converter writes as
 * rope_freqs.weight): 1 above the high-frequency wavelength bound, factor below the low one,
 * 1 / ((1 - s) / factor + s) between, s = (orig / wavelength - low) / (high - low).
 */
export function llama3FreqFactors(dim: number, theta: number, r: { factor: number; lowFreqFactor: number; highFreqFactor: number; origContext: number }): number[] {
  const lowWavelen = r.origContext / r.lowFreqFactor, highWavelen = r.origContext / r.highFreqFactor;
  const out: number[] = [];
  for (let i = 0; i < dim / 2; i++) {
    const wavelen = (2 * Math.PI) / Math.pow(theta, (-2 * i) / dim);
    if (wavelen < highWavelen) out.push(1);
    else if (wavelen > lowWavelen) out.push(r.factor);
    else {
      const s = (r.origContext / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
      out.push(1 / ((1 - s) / r.factor + s));
    }
  }
  return out;
}

/** get_mscale of transformers and llama.cpp: 0.1 * mscale * ln(factor) + 1 for factor > 1, else 1. */
export function yarnMscale(factor: number, mscale = 1): number {
  return factor <= 1 ? 1 : 0.1 * mscale * Math.log(factor) + 1;
}
