/**
 * Argument validation for every op (ARCHITECTURE rule 3): the one place user input is checked.
 * Wrong kinds and dtypes throw TypeError, wrong shapes, lengths and ranges RangeError; every
 * message names the argument: "Expected X for Y but received Z".
 */
import { types } from 'node:util';
import type { DType } from './dtype.js';
import { describe } from './describe.js';
import { DisposedError, Tensor } from './tensor.js';

export function tensor(t: unknown, name: string, dtypes?: readonly DType[]): Tensor {
  if (!(t instanceof Tensor)) throw new TypeError(`Expected a Tensor for ${name} but received ${describe(t)}`);
  if (t.disposed) throw new DisposedError(`Tensor ${name}`);
  if (dtypes && !dtypes.includes(t.dtype))
    throw new TypeError(`Expected dtype ${dtypes.join(' or ')} for ${name} but received ${t.dtype}`);
  intact(t, name);
  return t;
}

/**
 * A tensor's data still covers its shape. The constructor checked the length, but the buffer can
 * change afterwards: a transfer detaches it, a resizable ArrayBuffer can shrink (a length-tracking
 * view can grow). Shared memory is refused: a kernel validates ids, slots and block tables and
 * then reads them, and another thread writing in between would send it out of bounds.
 */
export function intact(t: Tensor, name: string): void {
  const d = t.data;
  const n = t.storageLength;
  // Every op runs this on every tensor: two field reads in the common case (what view() finds on
  // a raw array, the Tensor found once when it was made, and a detached buffer has length 0).
  if (t.sharedMemory || d.length === 0) view(d, name);
  if (d.length !== n) {
    const buf = d.buffer as ArrayBuffer & { resizable?: boolean };
    const why = isDetached(buf) ? 'its ArrayBuffer was detached (transferred)' : buf.resizable ? 'its ArrayBuffer was resized' : 'its length changed';
    throw new TypeError(`Expected ${n} elements of data for ${name} of shape [${t.shape.join(', ')}] but received ${d.length}: ${why}`);
  }
}

/** A typed array an op reads or writes: over a live, unshared ArrayBuffer (see intact). */
export function view(d: ArrayBufferView, name: string): void {
  const b = d.buffer;
  // instanceof is the fast answer on every op; an ArrayBuffer of another realm falls through to the exact test
  if (!(b instanceof ArrayBuffer) && types.isSharedArrayBuffer(b))
    throw new TypeError(
      `Expected ${name}'s data over an ArrayBuffer but received ${describe(d)} over a SharedArrayBuffer (another thread could change it while a kernel reads it; copy it into an ArrayBuffer)`,
    );
  if (d.byteLength === 0 && isDetached(d.buffer as ArrayBuffer))
    throw new TypeError(`Expected ${name}'s data to be usable but its ArrayBuffer was detached (transferred)`);
}

function isDetached(b: ArrayBuffer): boolean {
  const flag = (b as { detached?: boolean }).detached;
  if (flag !== undefined) return flag;
  if (b.byteLength > 0) return false;
  try {
    new Uint8Array(b); // Node 20 has no ArrayBuffer.prototype.detached; a detached buffer refuses views
    return false;
  } catch {
    return true;
  }
}

/** An array an op reads or writes, by the name its errors use. */
export type Operand = readonly [name: string, data: Tensor | ArrayBufferView | null | undefined];

/**
 * The arrays an op writes share no byte with anything else it reads or writes (views at any
 * offset over one ArrayBuffer included): a kernel that writes what it is still reading computes
 * garbage, and one whose ids, slots or block tables change under it reads out of bounds. `inPlace`
 * lists the [output, input] pairs an elementwise op may run in place: there the output must cover
 * the input exactly. Re-checks every Tensor (intact) since option getters may have run since.
 */
export function disjoint(op: string, outputs: readonly Operand[], inputs: readonly Operand[], inPlace: readonly (readonly [string, string])[] = NONE): void {
  // Runs on every op of every forward: no allocation, the common case is a few pointer compares.
  for (let i = 0; i < outputs.length; i++) usable(outputs[i]!);
  for (let i = 0; i < inputs.length; i++) usable(inputs[i]!);
  for (let i = 0; i < outputs.length; i++) {
    const [aName, ax] = outputs[i]!;
    if (ax === null || ax === undefined) continue;
    const a = bytes(ax);
    for (let j = i + 1; j < outputs.length; j++) {
      const [bName, bx] = outputs[j]!;
      if (bx !== null && bx !== undefined && overlaps(a, bytes(bx)))
        throw new RangeError(`Expected ${aName} not to overlap ${bName} but they share memory and ${op} writes both`);
    }
    for (let j = 0; j < inputs.length; j++) {
      const [bName, bx] = inputs[j]!;
      if (bx === null || bx === undefined) continue;
      const b = bytes(bx);
      if (!overlaps(a, b)) continue;
      const exact = a.byteOffset === b.byteOffset && a.byteLength === b.byteLength;
      const allowed = inPlace.some(([o, x]) => o === aName && x === bName);
      if (allowed && exact) continue;
      throw new RangeError(
        `Expected ${aName} not to overlap an input of this op but it shares memory with ${bName} in ${op}` +
          (allowed ? ` (in place, ${aName} must cover ${bName} exactly)` : ''),
      );
    }
  }
}

const NONE: readonly (readonly [string, string])[] = [];

function usable([name, x]: Operand): void {
  if (x === null || x === undefined) return;
  if (x instanceof Tensor) intact(x, name);
  else view(x, name);
}

function bytes(x: Tensor | ArrayBufferView): ArrayBufferView {
  return x instanceof Tensor ? x.data : x;
}

function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteLength > 0 && b.byteLength > 0 && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
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
