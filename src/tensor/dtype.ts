/**
 * Element types. Codes match native/common/dtype.h. `q8_0` and `q4_0` are GGUF's packed block
 * types (32 values per block: an f16 scale + 32 int8, or + 16 bytes of 4-bit values); their
 * tensors keep the logical shape ([N, K], K a multiple of 32) over a Uint8Array of blocks.
 */
export type DType = 'f32' | 'f16' | 'bf16' | 'i8' | 'i32' | 'u8' | 'q8_0' | 'q4_0';

export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i8', 'i32', 'u8', 'q8_0', 'q4_0'];

export const DTYPE_CODE: Readonly<Record<DType, number>> = { f32: 0, f16: 1, bf16: 2, i8: 3, i32: 4, u8: 5, q8_0: 6, q4_0: 7 };

/** Bytes per storage element (per byte of blocks for the packed types). */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = { f32: 4, f16: 2, bf16: 2, i8: 1, i32: 4, u8: 1, q8_0: 1, q4_0: 1 };

/** Packed block types: values per block and bytes per block. */
export const BLOCK_TYPES: Readonly<Partial<Record<DType, { values: number; bytes: number }>>> = {
  q8_0: { values: 32, bytes: 34 },
  q4_0: { values: 32, bytes: 18 },
};

/** Number of storage elements for a tensor of `elements` values (throws for a partial block). */
export function storageLength(dtype: DType, shape: readonly number[], elements: number): number {
  const b = BLOCK_TYPES[dtype];
  if (!b) return elements;
  const last = shape.length ? shape[shape.length - 1]! : 1;
  if (last % b.values) throw new RangeError(`Expected the last dimension of a ${dtype} tensor to be a multiple of ${b.values} but received [${shape.join(', ')}]`);
  return (elements / b.values) * b.bytes;
}

/** The typed array that stores each dtype (f16/bf16 are raw 16-bit patterns). */
export interface StorageOf {
  f32: Float32Array;
  f16: Uint16Array;
  bf16: Uint16Array;
  i8: Int8Array;
  i32: Int32Array;
  u8: Uint8Array;
  q8_0: Uint8Array;
  q4_0: Uint8Array;
}

export type Storage = StorageOf[DType];

export const STORAGE_CTOR = {
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i8: Int8Array,
  i32: Int32Array,
  u8: Uint8Array,
  q8_0: Uint8Array,
  q4_0: Uint8Array,
} as const;

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

export const FLOAT_DTYPES: readonly DType[] = ['f32', 'f16', 'bf16'];
