import { BLOCK_TYPES, DTYPE_BYTES, STORAGE_CTOR, isDType, storageLength, type DType, type StorageOf } from './dtype.js';
import { dequantizeBlocks, quantizeBlocks } from './quant.js';
import { decodeHalf, encodeHalf } from './half.js';
import { describe } from './describe.js';
import { types } from 'node:util';

/** Thrown when a disposed object is used. */
export class DisposedError extends Error {
  constructor(what: string) {
    super(`${what} has been disposed`);
    this.name = 'DisposedError';
  }
}

const disposeSymbol: symbol = (Symbol as { dispose?: symbol }).dispose ?? Symbol.for('nodejs.dispose');

function checkShape(shape: readonly number[], name: string): number {
  if (!Array.isArray(shape)) throw new TypeError(`Expected an array of integers for ${name} but received ${describe(shape)}`);
  let n = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i]!;
    if (!Number.isSafeInteger(d) || d < 0)
      throw new RangeError(`Expected non-negative integers for ${name} but received ${describe(d)} at index ${i}`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new RangeError(`${name} [${shape.join(', ')}] has too many elements`);
  return n;
}

/**
 * A dense, contiguous, row-major tensor over a typed array. Native kernels read `data` in place
 * (zero-copy). f16/bf16 data holds raw 16-bit patterns in a Uint16Array.
 */
export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  #data: StorageOf[D] | null;
  /** data.length at construction, which the shape fixes: an op compares it to find a detached or shrunk buffer. */
  readonly storageLength: number;
  /** Whether data lies over a SharedArrayBuffer (ops refuse it; check.intact), found once here. */
  readonly sharedMemory: boolean;

  constructor(dtype: D, shape: readonly number[], data?: StorageOf[D]) {
    if (!isDType(dtype)) throw new TypeError(`Expected a dtype (f32|f16|bf16|i8|i32|u8) for dtype but received ${describe(dtype)}`);
    const n = storageLength(dtype, shape, checkShape(shape, 'shape'));
    const Ctor = STORAGE_CTOR[dtype];
    if (data === undefined) {
      data = new Ctor(n) as StorageOf[D];
    } else {
      if (!(data instanceof Ctor))
        throw new TypeError(`Expected ${Ctor.name} for ${dtype} tensor data but received ${describe(data)}`);
      if (data.length !== n)
        throw new RangeError(`Expected ${n} elements for ${BLOCK_TYPES[dtype] ? `${dtype} blocks` : 'data'} of shape [${shape.join(', ')}] but received ${data.length}`);
    }
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.#data = data;
    this.storageLength = n;
    this.sharedMemory = !(data.buffer instanceof ArrayBuffer) && types.isSharedArrayBuffer(data.buffer);
  }

  /** A tensor from numbers (encoded to f16/bf16 or quantised to q8_0/q4_0 as needed) or its storage typed array (no copy;
   *  for f16/bf16 a Uint16Array of bit patterns). */
  static from<D extends DType>(dtype: D, shape: readonly number[], values: ArrayLike<number> | StorageOf[D]): Tensor<D> {
    const Ctor = STORAGE_CTOR[dtype];
    if (values instanceof Ctor) return new Tensor(dtype, shape, values as StorageOf[D]);
    if (dtype === 'f16' || dtype === 'bf16') return new Tensor(dtype, shape, encodeHalf(values, dtype) as StorageOf[D]);
    if (dtype === 'q8_0' || dtype === 'q4_0') return new Tensor(dtype, shape, quantizeBlocks(dtype, Float32Array.from(values)) as StorageOf[D]);
    return new Tensor(dtype, shape, Ctor.from(values as ArrayLike<number>) as StorageOf[D]);
  }

  static zeros<D extends DType>(dtype: D, shape: readonly number[]): Tensor<D> {
    return new Tensor(dtype, shape);
  }

  /** The storage array. Throws DisposedError after dispose(). */
  get data(): StorageOf[D] {
    if (this.#data === null) throw new DisposedError('Tensor');
    return this.#data;
  }

  get disposed(): boolean {
    return this.#data === null;
  }

  get size(): number {
    let n = 1;
    for (const d of this.shape) n *= d;
    return n;
  }

  get rank(): number {
    return this.shape.length;
  }

  get byteLength(): number {
    return storageLength(this.dtype, this.shape, this.size) * DTYPE_BYTES[this.dtype];
  }

  /** A view with another shape over the same data. */
  reshape(shape: readonly number[]): Tensor<D> {
    const n = checkShape(shape, 'shape');
    if (n !== this.size) throw new RangeError(`Cannot reshape [${this.shape.join(', ')}] to [${shape.join(', ')}]`);
    return new Tensor(this.dtype, shape, this.data);
  }

  /**
   * A view of rows [start, start + count) along the first axis (no copy). Block-quantised dtypes
   * have no row views.
   */
  rows(start: number, count: number): Tensor<D> {
    if (BLOCK_TYPES[this.dtype]) throw new TypeError(`Expected a tensor of a non-block dtype for rows() but received ${this.dtype}`);
    const n0 = this.shape[0];
    if (n0 === undefined) throw new RangeError('Expected a tensor of rank >= 1 for rows()');
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > n0)
      throw new RangeError(`Expected rows [start, start + count) within [0, ${n0}] but received start ${start}, count ${count}`);
    const row = n0 === 0 ? 0 : this.size / n0;
    const d = this.data as unknown as { subarray(a: number, b: number): StorageOf[D] };
    return new Tensor(this.dtype, [count, ...this.shape.slice(1)], d.subarray(start * row, (start + count) * row));
  }

  /** Values as float32 (decodes f16/bf16; converts integers). */
  toFloat32(): Float32Array {
    const d = this.data;
    if (this.dtype === 'f32') return d as Float32Array;
    if (this.dtype === 'f16' || this.dtype === 'bf16') return decodeHalf(d as Uint16Array, this.dtype);
    if (this.dtype === 'q8_0' || this.dtype === 'q4_0') return dequantizeBlocks(this.dtype, d as Uint8Array, this.size);
    return Float32Array.from(d as ArrayLike<number>);
  }

  toArray(): number[] {
    return Array.from(this.toFloat32());
  }

  /** Releases the data. Safe to call twice. */
  dispose(): void {
    this.#data = null;
  }

  [disposeSymbol](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}])`;
  }
}
