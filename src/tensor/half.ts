/**
 * IEEE binary16 and bfloat16 conversions (round to nearest even), bit-exact with
 * native/common/dtype.h. Decoding goes through a 65536-entry table.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

let f16Table: Float32Array | undefined;

function buildF16Table(): Float32Array {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const man = h & 0x3ff;
    if (exp === 0) t[h] = sign * man * 2 ** -24;
    else if (exp === 0x1f) t[h] = man ? NaN : sign * Infinity;
    else t[h] = sign * (1 + man / 1024) * 2 ** (exp - 15);
  }
  return t;
}

/** Decode table: f16 bit pattern -> float. */
export function f16DecodeTable(): Float32Array {
  return (f16Table ??= buildF16Table());
}

export function f16ToF32(h: number): number {
  return f16DecodeTable()[h & 0xffff]!;
}

export function f32ToF16(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const absx = x & 0x7fffffff;
  if (absx >= 0x7f800000) return sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0);
  if (absx >= 0x477ff000) return sign | 0x7c00;
  if (absx < 0x38800000) {
    if (absx < 0x33000000) return sign;
    const e = absx >>> 23;
    const m = (absx & 0x7fffff) | 0x800000;
    const shift = 126 - e;
    let halfM = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && halfM & 1)) halfM++;
    return sign | halfM;
  }
  const r = (absx + 0xfff + ((absx >>> 13) & 1) - (112 << 23)) >>> 0;
  return sign | (r >>> 13);
}

export function bf16ToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

export function f32ToBf16(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Decodes a whole f16 or bf16 array to float32. */
export function decodeHalf(src: Uint16Array, kind: 'f16' | 'bf16', out = new Float32Array(src.length)): Float32Array {
  if (kind === 'f16') {
    const t = f16DecodeTable();
    for (let i = 0; i < src.length; i++) out[i] = t[src[i]!]!;
  } else {
    const o32 = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < src.length; i++) o32[i] = src[i]! << 16;
  }
  return out;
}

/** Encodes float values to f16 or bf16 bit patterns. */
export function encodeHalf(src: ArrayLike<number>, kind: 'f16' | 'bf16'): Uint16Array {
  const out = new Uint16Array(src.length);
  const enc = kind === 'f16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < src.length; i++) out[i] = enc(src[i]!);
  return out;
}
