import { describe, expect, it } from 'vitest';
import { bf16ToF32, decodeHalf, encodeHalf, f16ToF32, f32ToBf16, f32ToF16, Tensor } from '../src/index.js';

describe('half-precision conversions', () => {
  it('encodes known f16 values (IEEE 754 binary16 table)', () => {
    const cases: [number, number][] = [
      [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [2 ** -14, 0x0400],
      [2 ** -24, 0x0001], [0.333251953125, 0x3555], [Infinity, 0x7c00], [70000, 0x7c00], [2 ** -26, 0x0000],
      [1 + 2 ** -11, 0x3c00], // tie rounds to even (down)
      [1 + 3 * 2 ** -11, 0x3c02], // tie rounds to even (up)
      [1.5 * 2 ** -24, 0x0002], // subnormal tie -> even
    ];
    for (const [v, bits] of cases) expect(f32ToF16(v), `f16(${v})`).toBe(bits);
    expect(f32ToF16(NaN) & 0x7c00).toBe(0x7c00);
    expect(f32ToF16(NaN) & 0x3ff).not.toBe(0);
  });

  it('decode then encode is the identity on every non-NaN f16 pattern', () => {
    for (let h = 0; h < 65536; h++) {
      const v = f16ToF32(h);
      if (Number.isNaN(v)) continue;
      expect(f32ToF16(v)).toBe(h);
    }
  });

  it('bf16 keeps the top half of float32, rounding to nearest even', () => {
    expect(f32ToBf16(1)).toBe(0x3f80);
    expect(f32ToBf16(-2)).toBe(0xc000);
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80); // tie -> even
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    const vals = [0.1, -3.75, 1e30, -1e-30];
    const dec = decodeHalf(encodeHalf(vals, 'bf16'), 'bf16');
    vals.forEach((v, i) => expect(Math.abs(dec[i]! - v) / Math.abs(v)).toBeLessThan(2 ** -8));
  });
});

describe('Tensor', () => {
  it('wraps typed arrays without copying and reshapes as views', () => {
    const data = new Float32Array(6);
    const t = new Tensor('f32', [2, 3], data);
    expect(t.data).toBe(data);
    expect(t.size).toBe(6);
    expect(t.byteLength).toBe(24);
    const r = t.reshape([3, 2]);
    expect(r.data).toBe(data);
    expect(() => t.reshape([4, 2])).toThrow(/Cannot reshape \[2, 3\] to \[4, 2\]/);
  });

  it('from() encodes numbers for f16/bf16 and keeps bit patterns given as Uint16Array', () => {
    const t = Tensor.from('f16', [2], [1, -2]);
    expect(Array.from(t.data)).toEqual([0x3c00, 0xc000]);
    expect(t.toArray()).toEqual([1, -2]);
    const bits = new Uint16Array([0x3f80]);
    expect(Tensor.from('bf16', [1], bits).data).toBe(bits);
    expect(Tensor.from('i32', [3], [1, 2, 3]).data).toBeInstanceOf(Int32Array);
  });
});
