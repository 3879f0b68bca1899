/** Element types. Codes match native/common/dtype.h. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i8' | 'i32' | 'u8';

export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i8', 'i32', 'u8'];

export const DTYPE_CODE: Readonly<Record<DType, number>> = { f32: 0, f16: 1, bf16: 2, i8: 3, i32: 4, u8: 5 };

export const DTYPE_BYTES: Readonly<Record<DType, number>> = { f32: 4, f16: 2, bf16: 2, i8: 1, i32: 4, u8: 1 };

/** The typed array that stores each dtype (f16/bf16 are raw 16-bit patterns). */
export interface StorageOf {
  f32: Float32Array;
  f16: Uint16Array;
  bf16: Uint16Array;
  i8: Int8Array;
  i32: Int32Array;
  u8: Uint8Array;
}

export type Storage = StorageOf[DType];

export const STORAGE_CTOR = {
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i8: Int8Array,
  i32: Int32Array,
  u8: Uint8Array,
} as const;

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

export const FLOAT_DTYPES: readonly DType[] = ['f32', 'f16', 'bf16'];
