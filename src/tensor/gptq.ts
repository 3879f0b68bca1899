/**
 * GPTQ linear layers in AutoGPTQ / GPTQModel's checkpoint layout, and the bit packing they use.
 *
 * A layer with K inputs and N outputs stores
 *  - qweight (K * bits / 32, N) int32: column n's values along K as one little-endian bit stream,
 *    value k at bit k * bits (8 per word at 4 bits, 4 at 8 bits; 3 bits cross word boundaries,
 *    32 values in 3 words, exactly AutoGPTQ's 3-bit layout);
 *  - qzeros (G, N * bits / 32) int32: each group's zero points, packed the same way along N;
 *  - scales (G, N) f16;
 *  - g_idx (K) int32: the group of input k (k / group_size unless act-order reordered them).
 * w[k][n] = scales[g][n] * (q[k][n] - zero[g][n]), g = g_idx[k]. In the v1 format ('gptq')
 * the stored zero point is zero - 1; in v2 ('gptq_v2', GPTQModel) it is the zero point itself.
 */
import { f16ToF32 } from './half.js';

export type GptqBits = 2 | 3 | 4 | 8;
export type GptqZeroFormat = 'v1' | 'v2';

/** One GPTQ linear layer, tensors as stored in a checkpoint. */
export interface GptqLinear {
  bits: GptqBits;
  /** Inputs per group; -1 = one group per output channel (all of K). */
  groupSize: number;
  /** Inputs (K) and outputs (N). */
  K: number;
  N: number;
  qweight: Int32Array; // (K * bits / 32, N)
  qzeros: Int32Array; // (G, N * bits / 32)
  scales: Uint16Array; // (G, N) f16 bit patterns
  gIdx: Int32Array | null; // (K); null = k / groupSize
  /** How the stored zero points read: v1 stores zero - 1. */
  zeroFormat: GptqZeroFormat;
  bias?: Float32Array | null; // (N)
}

export class GptqFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GptqFormatError';
  }
}

/** Number of groups of a layer. */
export function gptqGroups(K: number, groupSize: number): number {
  return groupSize === -1 ? 1 : Math.ceil(K / groupSize);
}

/** Values per packed stream of `count` values at `bits` bits: the number of int32 words. */
export function packedWords(count: number, bits: number): number {
  return (count * bits) / 32;
}

/**
 * Packs `rows` x `cols` unsigned values (row-major) along the rows: the result has
 * rows * bits / 32 rows of cols int32, column c's values as one bit stream (AutoGPTQ's qweight).
 */
export function packRows(values: ArrayLike<number>, rows: number, cols: number, bits: number): Int32Array {
  if ((rows * bits) % 32 !== 0) throw new GptqFormatError(`Cannot pack ${rows} values of ${bits} bits into whole int32 words`);
  const out = new Int32Array(packedWords(rows, bits) * cols);
  const mask = (1 << bits) - 1;
  for (let r = 0; r < rows; r++) {
    const bit = r * bits, word = bit >>> 5, shift = bit & 31;
    for (let c = 0; c < cols; c++) {
      const v = values[r * cols + c]! & mask;
      out[word * cols + c]! |= v << shift;
      if (shift + bits > 32) out[(word + 1) * cols + c]! |= v >>> (32 - shift);
    }
  }
  return out;
}

/** Inverse of packRows: (rows, cols) unsigned values. */
export function unpackRows(packed: Int32Array, rows: number, cols: number, bits: number, out = new Uint8Array(rows * cols)): Uint8Array {
  const mask = (1 << bits) - 1;
  for (let r = 0; r < rows; r++) {
    const bit = r * bits, word = bit >>> 5, shift = bit & 31;
    for (let c = 0; c < cols; c++) {
      let v = packed[word * cols + c]! >>> shift;
      if (shift + bits > 32) v |= packed[(word + 1) * cols + c]! << (32 - shift);
      out[r * cols + c] = v & mask;
    }
  }
  return out;
}

/** int32 words per row of packed zero points: whole words, the last one zero-padded when N * bits
 *  is not a multiple of 32 (AutoGPTQ itself packs only multiples of 32 outputs). */
export function zeroWords(cols: number, bits: number): number {
  return Math.ceil((cols * bits) / 32);
}

/** Packs (G, N) zero points along N (AutoGPTQ's qzeros): each row one bit stream. */
export function packCols(values: ArrayLike<number>, rows: number, cols: number, bits: number): Int32Array {
  const wpr = zeroWords(cols, bits);
  const out = new Int32Array(rows * wpr);
  const mask = (1 << bits) - 1;
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const bit = c * bits, word = r * wpr + (bit >>> 5), shift = bit & 31;
      const v = values[r * cols + c]! & mask;
      out[word]! |= v << shift;
      if (shift + bits > 32) out[word + 1]! |= v >>> (32 - shift);
    }
  return out;
}

/** Inverse of packCols. */
export function unpackCols(packed: Int32Array, rows: number, cols: number, bits: number): Uint8Array {
  const wpr = zeroWords(cols, bits);
  const out = new Uint8Array(rows * cols);
  const mask = (1 << bits) - 1;
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const bit = c * bits, word = r * wpr + (bit >>> 5), shift = bit & 31;
      let v = packed[word]! >>> shift;
      if (shift + bits > 32) v |= packed[word + 1]! << (32 - shift);
      out[r * cols + c] = v & mask;
    }
  return out;
}

/** Checks every shape and index of a layer; throws GptqFormatError naming what is wrong. */
export function validateGptq(l: GptqLinear, name = 'GPTQ layer'): void {
  const { bits, groupSize, K, N } = l;
  if (![2, 3, 4, 8].includes(bits)) throw new GptqFormatError(`${name}: bits = ${bits} is not supported (2, 3, 4 or 8)`);
  if (!Number.isSafeInteger(K) || !Number.isSafeInteger(N) || K < 1 || N < 1) throw new GptqFormatError(`${name}: bad shape K = ${K}, N = ${N}`);
  if (groupSize !== -1 && (!Number.isSafeInteger(groupSize) || groupSize < 1))
    throw new GptqFormatError(`${name}: group_size = ${groupSize} must be a positive integer or -1`);
  if ((K * bits) % 32 !== 0) throw new GptqFormatError(`${name}: K = ${K} inputs do not pack into whole int32 words at ${bits} bits`);
  const G = l.gIdx ? maxPlusOne(l.gIdx) : gptqGroups(K, groupSize);
  const expect = (what: string, got: number, want: number) => {
    if (got !== want) throw new GptqFormatError(`${name}: expected ${what} to have ${want} elements but it has ${got}`);
  };
  expect('qweight', l.qweight.length, packedWords(K, bits) * N);
  if (l.gIdx) {
    expect('g_idx', l.gIdx.length, K);
    for (let k = 0; k < K; k++)
      if (!(l.gIdx[k]! >= 0)) throw new GptqFormatError(`${name}: g_idx[${k}] = ${l.gIdx[k]} is negative`);
    const need = gptqGroups(K, groupSize);
    if (G > need && groupSize !== -1)
      throw new GptqFormatError(`${name}: g_idx names group ${G - 1} but group_size ${groupSize} gives ${need} groups`);
  }
  const rowsZ = l.qzeros.length / zeroWords(N, bits);
  const rowsS = l.scales.length / N;
  if (!Number.isInteger(rowsS) || rowsS < G) throw new GptqFormatError(`${name}: scales has ${l.scales.length} elements, expected at least ${G} groups x ${N}`);
  if (rowsZ !== rowsS) throw new GptqFormatError(`${name}: qzeros has ${rowsZ} groups but scales has ${rowsS}`);
  if (l.bias && l.bias.length !== N) throw new GptqFormatError(`${name}: bias has ${l.bias.length} elements, expected ${N}`);
}

function maxPlusOne(a: Int32Array): number {
  let m = -1;
  for (const v of a) m = v > m ? v : m;
  return m + 1;
}

/** The groups of each input k. */
export function gptqGroupIndex(l: GptqLinear): Int32Array {
  if (l.gIdx) return l.gIdx;
  const g = new Int32Array(l.K);
  const gs = l.groupSize === -1 ? l.K : l.groupSize;
  for (let k = 0; k < l.K; k++) g[k] = Math.floor(k / gs);
  return g;
}

/** Number of groups the scales hold. */
export function gptqScaleRows(l: GptqLinear): number {
  return l.scales.length / l.N;
}

/** The zero points as integers (G, N): v1 adds the stored offset of one back. */
export function gptqZeros(l: GptqLinear): Int32Array {
  const G = gptqScaleRows(l);
  const z = unpackCols(l.qzeros, G, l.N, l.bits);
  const out = new Int32Array(z.length);
  const off = l.zeroFormat === 'v1' ? 1 : 0;
  for (let i = 0; i < z.length; i++) out[i] = z[i]! + off;
  return out;
}

/** The weight as f32 (N, K) (the layout of a dense `linear` weight). */
export function dequantizeGptq(l: GptqLinear): Float32Array {
  const { K, N, bits } = l;
  const q = unpackRows(l.qweight, K, N, bits);
  const z = gptqZeros(l);
  const g = gptqGroupIndex(l);
  const out = new Float32Array(N * K);
  for (let k = 0; k < K; k++) {
    const gk = g[k]!;
    for (let n = 0; n < N; n++) {
      const s = f16ToF32(l.scales[gk * N + n]!);
      out[n * K + k] = s * (q[k * N + n]! - z[gk * N + n]!);
    }
  }
  return out;
}
