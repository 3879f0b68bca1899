/**
 * IntWeight: a linear layer's weight as unsigned 4- or 8-bit integers with per-group scales and
 * zero points, in the layout the integer kernels read (native/cpu/linear_int.h). Built from a
 * GPTQ layer (AutoGPTQ / GPTQModel checkpoints, `tessera quantize`) or from int8 per-channel
 * weights; `Backend.linear` takes it wherever it takes a dense weight.
 *
 * Layout:
 *  - K is reordered so each group is one contiguous run (act-order checkpoints put the inputs of
 *    a group anywhere): kernel input k reads x[perm[k]]; perm is null when nothing moves. K is
 *    padded to a multiple of 32 (the activation quantisation block).
 *  - qweight: tiles of 16 output columns, (ceil(N/16), Kp * bits / 32, 16) int32, each word the
 *    consecutive k of one column as AutoGPTQ packs them.
 *  - meta: (ceil(N/16), G, 32) f16: per tile and group, 16 scales then 16 zero points.
 *  - groupBlocks (G + 1): group g covers 32-blocks [groupBlocks[g], groupBlocks[g + 1]).
 *  - colScale (N) f32 or null: a last per-column factor (int8 per-channel scales).
 */
import { f16ToF32, f32ToF16 } from './half.js';
import { DisposedError } from './tensor.js';
import { GptqFormatError, gptqGroupIndex, gptqScaleRows, gptqZeros, unpackRows, validateGptq, type GptqLinear } from './gptq.js';

const TILE = 16;
const BLOCK = 32;

export interface IntWeightParts {
  bits: 4 | 8;
  N: number;
  K: number;
  qweight: Int32Array;
  perm: Int32Array | null;
  groupBlocks: Int32Array;
  meta: Uint16Array;
  colScale: Float32Array | null;
  /** >= 0: every group's zero point (meta then holds 16 scales per tile and group), else -1. */
  fixedZero: number;
  /** Round the activation block scales to f16 (llama.cpp's Q8_0 activations, for Q4_0 weights). */
  roundDxF16: boolean;
  label: string;
}

export class IntWeight {
  readonly kind = 'int' as const;
  readonly bits: 4 | 8;
  /** [N, K], as a dense `linear` weight. */
  readonly shape: readonly [number, number];
  /** Number of groups. */
  readonly groups: number;
  /** What this weight is, for reports: e.g. "gptq int4 g128 act-order". */
  readonly label: string;
  #p: IntWeightParts | null;

  private constructor(p: IntWeightParts) {
    this.bits = p.bits;
    this.shape = Object.freeze([p.N, p.K]) as readonly [number, number];
    this.groups = p.groupBlocks.length - 1;
    this.label = p.label;
    this.#p = p;
  }

  /** The kernel layout (throws after dispose). */
  get parts(): Readonly<IntWeightParts> {
    if (!this.#p) throw new DisposedError('IntWeight');
    return this.#p;
  }

  get disposed(): boolean {
    return this.#p === null;
  }

  get byteLength(): number {
    const p = this.parts;
    return p.qweight.byteLength + p.meta.byteLength + p.groupBlocks.byteLength + (p.perm?.byteLength ?? 0) + (p.colScale?.byteLength ?? 0);
  }

  dispose(): void {
    this.#p = null;
  }

  /** A deep copy (own buffers). */
  clone(): IntWeight {
    const p = this.parts;
    return new IntWeight({
      ...p, qweight: p.qweight.slice(), perm: p.perm?.slice() ?? null, groupBlocks: p.groupBlocks.slice(), meta: p.meta.slice(),
      colScale: p.colScale?.slice() ?? null,
    });
  }

  toString(): string {
    return `IntWeight(${this.label}, [${this.shape.join(', ')}])`;
  }

  /**
   * From a GPTQ layer with 4 or 8 bits. Every group (after sorting the inputs by group) must
   * start at a multiple of 32 inputs, which group sizes 32, 64, 128, ... and per-channel give;
   * other layouts throw GptqFormatError (callers may dequantise instead, see gptqKernelSupport).
   */
  static fromGptq(l: GptqLinear, label?: string): IntWeight {
    validateGptq(l);
    const why = gptqKernelSupport(l);
    if (why) throw new GptqFormatError(why);
    const { K, N } = l;
    const bits = l.bits as 4 | 8;
    const gIdx = gptqGroupIndex(l);
    const G = gptqScaleRows(l);
    // Stable order of the inputs by group; identity unless act-order moved them.
    const counts = new Int32Array(G);
    for (let k = 0; k < K; k++) counts[gIdx[k]!]!++;
    const start = new Int32Array(G + 1);
    for (let g = 0; g < G; g++) start[g + 1] = start[g]! + counts[g]!;
    const perm = new Int32Array(K);
    const fill = start.slice(0, G);
    let identity = true;
    for (let k = 0; k < K; k++) {
      const pos = fill[gIdx[k]!]!++;
      perm[pos] = k;
      if (pos !== k) identity = false;
    }
    const Kp = Math.ceil(K / BLOCK) * BLOCK;
    const groupBlocks = new Int32Array(G + 1);
    for (let g = 0; g <= G; g++) groupBlocks[g] = g === G ? Kp / BLOCK : start[g]! / BLOCK;
    const q = unpackRows(l.qweight, K, N, bits); // (K, N) in checkpoint order
    const qweight = packTiles(q, identity ? null : perm, K, N, bits);
    const z = gptqZeros(l); // v1: stored + 1, so up to 2^bits, exact in f16
    const meta = packMeta(G, N, (g, n) => l.scales[g * N + n]!, (g, n) => f32ToF16(z[g * N + n]!));
    const act = identity ? '' : ' act-order';
    const gs = l.groupSize === -1 ? 'per-channel' : `g${l.groupSize}`;
    return new IntWeight({ bits, N, K, qweight, perm: identity ? null : perm, groupBlocks, meta, colScale: null, fixedZero: -1, roundDxF16: false, label: label ?? `gptq int${bits} ${gs}${act}` });
  }

  /** From int8 weights (N, K) with one f32 scale per output channel: w = scale[n] * q[n][k]. */
  static fromInt8(q: Int8Array, scales: Float32Array, N: number, K: number): IntWeight {
    if (q.length !== N * K) throw new RangeError(`Expected ${N * K} int8 weights for [${N}, ${K}] but received ${q.length}`);
    if (scales.length !== N) throw new RangeError(`Expected ${N} per-channel scales but received ${scales.length}`);
    const u = new Uint8Array(K * N); // (K, N), offset by 128
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) u[k * N + n] = q[n * K + k]! + 128;
    const Kp = Math.ceil(K / BLOCK) * BLOCK;
    const one = f32ToF16(1), z128 = f32ToF16(128);
    return new IntWeight({
      bits: 8, N, K,
      qweight: packTiles(u, null, K, N, 8),
      perm: null,
      groupBlocks: Int32Array.of(0, Kp / BLOCK),
      meta: packMeta(1, N, () => one, () => z128),
      colScale: Float32Array.from(scales),
      fixedZero: -1,
      roundDxF16: false,
      label: 'int8 per-channel',
    });
  }

  /**
   * From GGUF Q4_0 blocks (N rows of K / 32 blocks: f16 d, 16 bytes of nibbles, value j in the low
   * nibble of byte j and value j + 16 in its high nibble; w = d * (nibble - 8)), repacked into the
   * column tiles (the layout llama.cpp also repacks Q4_0 into for speed). The result computes
   * exactly what the q4_0 kernels compute: activations quantised with f16-rounded block scales,
   * as llama.cpp's quantize_row_q8_0 does, and exact integer block dots. `repack`, when given, fills
   * the zeroed qweight and meta in place of the loop below and must give the same layout (the
   * native addon's repackQ4_0, which formats/gguf.ts passes; tensor/ cannot import the backend).
   */
  static fromQ4_0(blocks: Uint8Array, N: number, K: number,
    repack?: (blocks: Uint8Array, N: number, K: number, qweight: Int32Array, meta: Uint16Array) => void): IntWeight {
    if (K % 32) throw new RangeError(`Expected K to be a multiple of 32 for q4_0 weights but received ${K}`);
    const nb = K / 32;
    if (blocks.length !== N * nb * 18) throw new RangeError(`Expected ${N * nb * 18} bytes of q4_0 blocks for [${N}, ${K}] but received ${blocks.length}`);
    const tiles = Math.ceil(N / TILE), rows = K / 8;
    const qweight = new Int32Array(tiles * rows * TILE);
    const meta = new Uint16Array(tiles * nb * 16);
    if (repack) repack(blocks, N, K, qweight, meta);
    else for (let n = 0; n < N; n++) {
      const t = Math.floor(n / TILE), lane = n % TILE;
      for (let b = 0; b < nb; b++) {
        const o = (n * nb + b) * 18;
        meta[(t * nb + b) * 16 + lane] = blocks[o]! | (blocks[o + 1]! << 8);
        // Words of values 0-7, 8-15 (low nibbles of bytes 0-7, 8-15), 16-23, 24-31 (high nibbles).
        for (let w = 0; w < 4; w++) {
          const base = o + 2 + (w & 1) * 8, shift = w >= 2 ? 4 : 0;
          let word = 0;
          for (let i = 0; i < 8; i++) word |= ((blocks[base + i]! >> shift) & 15) << (4 * i);
          qweight[(t * rows + b * 4 + w) * TILE + lane] = word;
        }
      }
    }
    return new IntWeight({
      bits: 4, N, K, qweight, perm: null, groupBlocks: Int32Array.from({ length: nb + 1 }, (_, i) => i), meta, colScale: null,
      fixedZero: 8, roundDxF16: true, label: 'q4_0 (repacked)',
    });
  }

  /** The weight as f32 (N, K), original input order. */
  dequantize(): Float32Array {
    const p = this.parts;
    const { N, K, bits } = p;
    const G = this.groups;
    const Kp = Math.ceil(K / BLOCK) * BLOCK;
    const rows = (Kp * bits) / 32, per = 32 / bits, mask = (1 << bits) - 1;
    const out = new Float32Array(N * K);
    for (let g = 0; g < G; g++) {
      for (let kk = p.groupBlocks[g]! * BLOCK; kk < Math.min(p.groupBlocks[g + 1]! * BLOCK, K); kk++) {
        const k = p.perm ? p.perm[kk]! : kk;
        const r = Math.floor(kk / per), e = kk % per;
        for (let n = 0; n < N; n++) {
          const t = Math.floor(n / TILE), lane = n % TILE;
          const qv = (p.qweight[(t * rows + r) * TILE + lane]! >>> (e * bits)) & mask;
          const mw = p.fixedZero >= 0 ? 16 : 32, m = (t * G + g) * mw;
          const s = f16ToF32(p.meta[m + lane]!), z = p.fixedZero >= 0 ? p.fixedZero : f16ToF32(p.meta[m + 16 + lane]!);
          out[n * K + k] = Math.fround(s * (qv - z)) * (p.colScale ? p.colScale[n]! : 1);
        }
      }
    }
    return out;
  }
}

/** Why a GPTQ layer cannot run on the integer kernels (null if it can). */
export function gptqKernelSupport(l: GptqLinear): string | null {
  if (l.bits !== 4 && l.bits !== 8) return `${l.bits}-bit GPTQ has no packed kernel (4 and 8 bits do)`;
  const gIdx = gptqGroupIndex(l);
  const G = gptqScaleRows(l);
  const counts = new Int32Array(G);
  for (let k = 0; k < l.K; k++) {
    if (gIdx[k]! >= G) return `g_idx[${k}] = ${gIdx[k]} is past the ${G} groups of scales`;
    counts[gIdx[k]!]!++;
  }
  let s = 0;
  for (let g = 0; g < G; g++) {
    if (s % BLOCK !== 0) return `group ${g} starts at input ${s}, not a multiple of ${BLOCK}, which the integer kernels need`;
    s += counts[g]!;
  }
  return null;
}

/** (K, N) unsigned values -> tiles (ceil(N/16), Kp * bits / 32, 16), inputs in perm order. */
function packTiles(q: Uint8Array, perm: Int32Array | null, K: number, N: number, bits: number): Int32Array {
  const Kp = Math.ceil(K / BLOCK) * BLOCK;
  const per = 32 / bits, rows = (Kp * bits) / 32, tiles = Math.ceil(N / TILE);
  const out = new Int32Array(tiles * rows * TILE);
  for (let kk = 0; kk < K; kk++) {
    const k = perm ? perm[kk]! : kk;
    const r = Math.floor(kk / per), shift = (kk % per) * bits;
    const src = k * N;
    for (let n = 0; n < N; n++) {
      const t = Math.floor(n / TILE);
      out[(t * rows + r) * TILE + (n % TILE)]! |= q[src + n]! << shift;
    }
  }
  return out;
}

function packMeta(G: number, N: number, scale: (g: number, n: number) => number, zero: (g: number, n: number) => number): Uint16Array {
  const tiles = Math.ceil(N / TILE);
  const out = new Uint16Array(tiles * G * 32);
  for (let g = 0; g < G; g++)
    for (let n = 0; n < N; n++) {
      const m = (Math.floor(n / TILE) * G + g) * 32 + (n % TILE);
      out[m] = scale(g, n);
      out[m + 16] = zero(g, n);
    }
  return out;
}
