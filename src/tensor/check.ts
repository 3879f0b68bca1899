/**
 * Argument validation for every op (ARCHITECTURE rule 3): the one place user input is checked.
 * Wrong kinds and dtypes throw TypeError, wrong shapes, lengths and ranges RangeError; every
 * message names the argument: "Expected X for Y but received Z".
 */
import type { DType } from './dtype.js';
import { describe } from './describe.js';
import { DisposedError, Tensor } from './tensor.js';

export function tensor(t: unknown, name: string, dtypes?: readonly DType[]): Tensor {
  if (!(t instanceof Tensor)) throw new TypeError(`Expected a Tensor for ${name} but received ${describe(t)}`);
  if (t.disposed) throw new DisposedError(`Tensor ${name}`);
  if (dtypes && !dtypes.includes(t.dtype))
    throw new TypeError(`Expected dtype ${dtypes.join(' or ')} for ${name} but received ${t.dtype}`);
  return t;
}

export function optionalTensor(t: unknown, name: string, dtypes?: readonly DType[]): Tensor | null {
  return t === undefined || t === null ? null : tensor(t, name, dtypes);
}

export function rank(t: Tensor, name: string, r: number | readonly number[]): void {
  const ok = typeof r === 'number' ? t.rank === r : r.includes(t.rank);
  if (!ok)
    throw new RangeError(`Expected a rank-${typeof r === 'number' ? r : r.join(' or ')} tensor for ${name} but received shape [${t.shape.join(', ')}]`);
}

/** Checks t's shape; `null` entries in `shape` match any size. */
export function shape(t: Tensor, name: string, expected: readonly (number | null)[]): void {
  const ok = t.rank === expected.length && expected.every((d, i) => d === null || t.shape[i] === d);
  if (!ok)
    throw new RangeError(
      `Expected shape [${expected.map((d) => (d === null ? '*' : d)).join(', ')}] for ${name} but received [${t.shape.join(', ')}]`,
    );
}

/** Last dimension, requiring rank >= 1 and a non-zero last dimension. */
export function lastDim(t: Tensor, name: string): number {
  if (t.rank < 1) throw new RangeError(`Expected at least one dimension for ${name} but received a scalar tensor`);
  const d = t.shape[t.rank - 1]!;
  if (d < 1) throw new RangeError(`Expected a non-empty last dimension for ${name} but received [${t.shape.join(', ')}]`);
  return d;
}

export function sameShape(a: Tensor, aName: string, b: Tensor, bName: string): void {
  if (a.rank !== b.rank || a.shape.some((d, i) => d !== b.shape[i]))
    throw new RangeError(`Expected ${bName} to have the shape of ${aName} [${a.shape.join(', ')}] but received [${b.shape.join(', ')}]`);
}

export function int(v: unknown, name: string, min = -Infinity, max = Infinity): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`Expected an integer for ${name} but received ${describe(v)}`);
  if (v < min || v > max) throw new RangeError(`Expected ${name} in [${min}, ${max}] but received ${v}`);
  return v;
}

export function num(v: unknown, name: string, opts: { min?: number; max?: number; positive?: boolean } = {}): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError(`Expected a finite number for ${name} but received ${describe(v)}`);
  if (opts.positive && !(v > 0)) throw new RangeError(`Expected a positive number for ${name} but received ${v}`);
  if (opts.min !== undefined && v < opts.min) throw new RangeError(`Expected ${name} >= ${opts.min} but received ${v}`);
  if (opts.max !== undefined && v > opts.max) throw new RangeError(`Expected ${name} <= ${opts.max} but received ${v}`);
  return v;
}

export function bool(v: unknown, name: string): boolean {
  if (typeof v !== 'boolean') throw new TypeError(`Expected a boolean for ${name} but received ${describe(v)}`);
  return v;
}

export function oneOf<T extends string>(v: unknown, name: string, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v))
    throw new TypeError(`Expected one of ${allowed.map((a) => `'${a}'`).join(', ')} for ${name} but received ${describe(v)}`);
  return v as T;
}

/** Every element of an i32 tensor in [lo, hi). */
export function idsInRange(t: Tensor, name: string, lo: number, hi: number): void {
  const d = t.data as Int32Array;
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    if (v < lo || v >= hi) throw new RangeError(`Expected ${name} in [${lo}, ${hi}) but received ${v} at index ${i}`);
  }
}

export function options<T extends object>(o: unknown, name: string): Partial<T> {
  if (o === undefined || o === null) return {};
  if (typeof o !== 'object' || Array.isArray(o)) throw new TypeError(`Expected an options object for ${name} but received ${describe(o)}`);
  return o as Partial<T>;
}
