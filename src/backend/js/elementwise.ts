import type { ActivationPlan, BinaryPlan, SwigluPlan } from '../kernels.js';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

export const silu = (x: number): number => x / (1 + Math.exp(-x));
export const geluTanh = (x: number): number => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));

/** erf: Maclaurin series below 2.5 (exact to double precision), else 1 - erfc from the
 *  Abramowitz & Stegun 7.1.26 form (absolute error < 1.5e-7, which is < 4e-4 relative on erfc). */
export function erf(x: number): number {
  const s = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  if (a >= 2.5) {
    if (a > 6) return s;
    const t = 1 / (1 + 0.3275911 * a);
    return s * (1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a));
  }
  let term = a, sum = a;
  for (let n = 1; n < 80; n++) {
    term *= (-a * a) / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17) break;
  }
  return (s * 2 * sum) / Math.sqrt(Math.PI);
}

export const geluErf = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));

export function activation(p: ActivationPlan): void {
  const { x, y, act } = p;
  const f = act === 'silu' ? silu : act === 'gelu_tanh' ? geluTanh : geluErf;
  for (let i = 0; i < x.length; i++) y[i] = f(x[i]!);
}

export function swiglu(p: SwigluPlan): void {
  const { gate, up, y } = p;
  for (let i = 0; i < gate.length; i++) y[i] = silu(gate[i]!) * up[i]!;
}

export function binary(p: BinaryPlan): void {
  const { a, b, y, op } = p;
  const bl = b.length;
  for (let o = 0; o < a.length; o += bl) {
    if (op === 'add') for (let i = 0; i < bl; i++) y[o + i] = a[o + i]! + b[i]!;
    else for (let i = 0; i < bl; i++) y[o + i] = a[o + i]! * b[i]!;
  }
}
