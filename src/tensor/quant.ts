/**
 * GGUF's Q8_0 and Q4_0 blocks (ggml-common.h): 32 values per block, an f16 scale d, then 32 int8
 * (value = d * q) or 16 bytes of nibbles (low nibbles are values 0..15, high 16..31; value =
 * d * (q - 8)). Quantisers follow ggml's reference quantize_row_*_ref.
 */
import { f16ToF32, f32ToF16 } from './half.js';

/** Dequantises Q8_0 / Q4_0 blocks to float32 (ggml's reference dequantize_row_*). */
export function dequantize(type: 'Q8_0' | 'Q4_0', bytes: Uint8Array, elements: number): Float32Array {
  const out = new Float32Array(elements);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const nb = elements / 32;
  if (type === 'Q8_0') {
    for (let b = 0; b < nb; b++) {
      const base = b * 34, d = f16ToF32(dv.getUint16(base, true));
      for (let j = 0; j < 32; j++) out[b * 32 + j] = d * dv.getInt8(base + 2 + j);
    }
  } else {
    for (let b = 0; b < nb; b++) {
      const base = b * 18, d = f16ToF32(dv.getUint16(base, true));
      for (let j = 0; j < 16; j++) {
        const q = bytes[base + 2 + j]!;
        out[b * 32 + j] = ((q & 0x0f) - 8) * d;
        out[b * 32 + j + 16] = ((q >> 4) - 8) * d;
      }
    }
  }
  return out;
}

/**
 * Q8_0 blocks (d = max|x| / 127 stored as f16). 'reference' is ggml's quantize_row_q8_0_ref, what
 * llama-quantize writes into files: q = roundf(x / d), halves away from zero. 'activations' is
 * what llama.cpp's x86 quantize_row_q8_0 does to activations before its integer dot products:
 * q = rint(x * 127 / max|x|), halves to even.
 */
export function quantizeQ8_0(x: Float32Array, mode: 'reference' | 'activations' = 'reference'): Uint8Array {
  if (x.length % 32) throw new RangeError(`Q8_0 needs a multiple of 32 values but received ${x.length}`);
  const out = new Uint8Array((x.length / 32) * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
    const d = Math.fround(amax / 127);
    dv.setUint16(b * 34, f32ToF16(d), true);
    if (mode === 'reference') {
      const id = d ? Math.fround(1 / d) : 0;
      for (let j = 0; j < 32; j++) dv.setInt8(b * 34 + 2 + j, roundf(Math.fround(x[b * 32 + j]! * id)));
    } else {
      const id = amax !== 0 ? Math.fround(127 / amax) : 0;
      for (let j = 0; j < 32; j++) dv.setInt8(b * 34 + 2 + j, rintEven(Math.fround(x[b * 32 + j]! * id)));
    }
  }
  return out;
}

/** ggml's quantize_row_q4_0_ref: d = (value of max |x|) / -8, q = min(15, trunc(x / d + 8.5)). */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % 32) throw new RangeError(`Q4_0 needs a multiple of 32 values but received ${x.length}`);
  const out = new Uint8Array((x.length / 32) * 18);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[b * 32 + j]!;
      if (Math.abs(v) > amax) { amax = Math.abs(v); max = v; }
    }
    const d = Math.fround(max / -8), id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(b * 18, f32ToF16(d), true);
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(15, Math.trunc(Math.fround(Math.fround(x[b * 32 + j]! * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(Math.fround(Math.fround(x[b * 32 + j + 16]! * id) + 8.5)));
      out[b * 18 + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}


export function quantizeBlocks(type: 'q8_0' | 'q4_0', x: Float32Array): Uint8Array {
  return type === 'q8_0' ? quantizeQ8_0(x) : quantizeQ4_0(x);
}

export function dequantizeBlocks(type: 'q8_0' | 'q4_0', bytes: Uint8Array, elements: number): Float32Array {
  return dequantize(type === 'q8_0' ? 'Q8_0' : 'Q4_0', bytes, elements);
}

/** C's roundf: halves away from zero. */
function roundf(v: number): number {
  return v < 0 ? -Math.round(-v) : Math.round(v);
}

/** Round to nearest, halves to even (the SSE/AVX default rounding mode). */
export function rintEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
