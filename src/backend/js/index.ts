/** The pure-TypeScript backend: the readable reference and the "JS baseline" in benchmarks. */
import type { Kernels } from '../kernels.js';
import { alibiSlopes, embedding, rope } from './embedding.js';
import { attentionNaive, flashAttention, pagedAttention, pagedKvWrite } from './attention.js';
import { activation, binary, swiglu } from './elementwise.js';
import { linear } from './linear.js';
import { linearInt } from './linear-int.js';
import { moeGather, moeRoute, moeScatter } from './moe.js';
import { layerNorm, rmsNorm } from './norm.js';
import { crossEntropy, softmax, topK } from './softmax.js';

export const jsKernels: Kernels = {
  name: 'js',
  linear,
  linearInt,
  rmsNorm,
  layerNorm,
  softmax,
  activation,
  swiglu,
  binary,
  embedding,
  rope,
  alibiSlopes,
  flashAttention,
  attentionNaive,
  pagedAttention,
  pagedKvWrite,
  moeRoute,
  moeGather,
  moeScatter,
  topK,
  crossEntropy,
};
