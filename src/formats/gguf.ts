/**
 * GGUF v2/v3 reader and writer (format: ggml docs/gguf.md). The reader checks every count,
 * length, offset and dimension against the file before trusting it, so a truncated or hostile
 * file gets a ModelFileError naming the field, never an out-of-bounds read or a huge allocation.
 * Tensors may not overlap, so a file can never demand more memory than it holds. Tensor data is
 * mapped in place per tensor (tensor-data.ts; read into its own ArrayBuffer where mapping is
 * impossible): weights used as they are stored are never copied.
 */
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import path from 'node:path';
import { loadNative } from '../backend/cpu/native.js';
import { f32ToF16 } from '../tensor/half.js';
import { IntWeight } from '../tensor/int-weight.js';
import { dequantize, quantizeQ4_0, quantizeQ8_0 } from '../tensor/quant.js';

export { dequantize, quantizeQ4_0, quantizeQ8_0 };
import { Tensor } from '../tensor/tensor.js';
import { ModelFileError } from './errors.js';
import { GGML_TYPE, GGML_TYPES, OTHER_GGML_TYPES, type GgmlTypeInfo, type GgmlTypeName } from './ggml-types.js';
import { fileBytes, fileIdentity, firstOverlap, releaseBytes, writeFileReplacing, type FileIdentity } from './tensor-data.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
const DEFAULT_ALIGNMENT = 32;
const MAX_DIMS = 4;
const MAX_ARRAY_DEPTH = 4;

/** GGUF metadata value types. */
export const GGUF_VALUE = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;
export type GGUFValueType = (typeof GGUF_VALUE)[keyof typeof GGUF_VALUE];

export type GGUFScalar = number | bigint | boolean | string;
/** Arrays: numbers as typed arrays where the element type allows, strings as string[]. */
export type GGUFValue = GGUFScalar | GGUFValue[] | Float32Array | Int32Array | Uint32Array | Uint8Array | Int8Array | Uint16Array | Int16Array | Float64Array;

export interface GGUFTensorInfo {
  name: string;
  /** Shape in tessera (row-major) order: the reverse of GGUF's ne[]. */
  shape: number[];
  type: GgmlTypeName;
  /** Absolute byte offset of the data in the file. */
  offset: number;
  byteLength: number;
  elements: number;
}

export interface GGUFFile {
  path: string;
  version: number;
  alignment: number;
  metadata: Map<string, GGUFValue>;
  metadataTypes: Map<string, GGUFValueType>;
  tensors: GGUFTensorInfo[];
  dataOffset: number;
  fileSize: number;
}

/** The file each parsed header came from, so tensor reads can tell if it changed since. */
const identities = new WeakMap<GGUFFile, FileIdentity>();

/** Alignment a tensor's bytes need to be viewed in place: its element (or block scale) size. */
const VIEW_ALIGN: Record<GgmlTypeName, number> = { F32: 4, F16: 2, BF16: 2, Q8_0: 2, Q4_0: 2 };

const SCALAR_SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** Buffered little-endian reader over a file descriptor with bounds checks. */
class FileCursor {
  pos = 0;
  #buf: Buffer = Buffer.alloc(0);
  #bufStart = 0;
  constructor(readonly fd: number, readonly size: number, readonly file: string) {}

  fail(msg: string): never {
    throw new ModelFileError(this.file, msg);
  }

  ensure(n: number, what: string): Buffer {
    if (n < 0 || this.pos + n > this.size)
      this.fail(`truncated: ${what} needs ${n} bytes at offset ${this.pos} but the file has ${this.size} bytes`);
    const rel = this.pos - this.#bufStart;
    if (rel < 0 || rel + n > this.#buf.length) {
      const len = Math.min(Math.max(n, 1 << 20), this.size - this.pos);
      this.#buf = Buffer.allocUnsafe(len);
      const got = readSync(this.fd, this.#buf, 0, len, this.pos);
      if (got !== len) this.fail(`short read at offset ${this.pos}`);
      this.#bufStart = this.pos;
    }
    return this.#buf;
  }

  #at(n: number, what: string): number {
    const b = this.ensure(n, what);
    const off = this.pos - this.#bufStart;
    this.pos += n;
    this.#last = b;
    return off;
  }
  #last: Buffer = Buffer.alloc(0);

  u8(w: string) { const o = this.#at(1, w); return this.#last.readUInt8(o); }
  i8(w: string) { const o = this.#at(1, w); return this.#last.readInt8(o); }
  u16(w: string) { const o = this.#at(2, w); return this.#last.readUInt16LE(o); }
  i16(w: string) { const o = this.#at(2, w); return this.#last.readInt16LE(o); }
  u32(w: string) { const o = this.#at(4, w); return this.#last.readUInt32LE(o); }
  i32(w: string) { const o = this.#at(4, w); return this.#last.readInt32LE(o); }
  f32(w: string) { const o = this.#at(4, w); return this.#last.readFloatLE(o); }
  f64(w: string) { const o = this.#at(8, w); return this.#last.readDoubleLE(o); }
  u64big(w: string) { const o = this.#at(8, w); return this.#last.readBigUInt64LE(o); }
  i64big(w: string) { const o = this.#at(8, w); return this.#last.readBigInt64LE(o); }

  /** A u64 that must fit a safe integer and be <= max. */
  count(w: string, max: number): number {
    const v = this.u64big(w);
    if (v > BigInt(max)) this.fail(`${w} = ${v} is larger than the file allows (at most ${max})`);
    return Number(v);
  }

  string(w: string): string {
    const len = this.count(`length of ${w}`, this.size - this.pos - 8);
    const o = this.#at(len, w);
    return this.#last.toString('utf8', o, o + len);
  }
}

function readValue(c: FileCursor, type: number, what: string, depth = 0): GGUFValue {
  switch (type) {
    case GGUF_VALUE.UINT8: return c.u8(what);
    case GGUF_VALUE.INT8: return c.i8(what);
    case GGUF_VALUE.UINT16: return c.u16(what);
    case GGUF_VALUE.INT16: return c.i16(what);
    case GGUF_VALUE.UINT32: return c.u32(what);
    case GGUF_VALUE.INT32: return c.i32(what);
    case GGUF_VALUE.FLOAT32: return c.f32(what);
    case GGUF_VALUE.FLOAT64: return c.f64(what);
    case GGUF_VALUE.BOOL: {
      const b = c.u8(what);
      if (b > 1) c.fail(`${what}: invalid bool value ${b}`);
      return b === 1;
    }
    case GGUF_VALUE.STRING: return c.string(what);
    case GGUF_VALUE.UINT64: case GGUF_VALUE.INT64: {
      const v = type === GGUF_VALUE.UINT64 ? c.u64big(what) : c.i64big(what);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
    }
    case GGUF_VALUE.ARRAY: {
      if (depth >= MAX_ARRAY_DEPTH) c.fail(`${what}: arrays nested deeper than ${MAX_ARRAY_DEPTH}`);
      const et = c.u32(`element type of ${what}`);
      const minSize = et === GGUF_VALUE.STRING ? 8 : et === GGUF_VALUE.ARRAY ? 12 : SCALAR_SIZE[et];
      if (minSize === undefined) c.fail(`${what}: unknown array element type ${et}`);
      const n = c.count(`element count of ${what}`, Math.floor((c.size - c.pos - 8) / minSize));
      const Typed = ({ 0: Uint8Array, 1: Int8Array, 2: Uint16Array, 3: Int16Array, 4: Uint32Array, 5: Int32Array, 6: Float32Array, 12: Float64Array } as Record<number, { new (n: number): ArrayLike<number> & { [i: number]: number } }>)[et];
      if (Typed) {
        const out = new Typed(n);
        for (let i = 0; i < n; i++) out[i] = readValue(c, et, what) as number;
        return out as GGUFValue;
      }
      const out: GGUFValue[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = readValue(c, et, `${what}[${i}]`, depth + 1);
      return out;
    }
    default:
      return c.fail(`${what}: unknown value type ${type}`);
  }
}

/** Parses a GGUF file's header, metadata and tensor table (not the tensor data). */
export function readGGUF(file: string): GGUFFile {
  const name = path.basename(file);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    throw new ModelFileError(name, `cannot open: ${(err as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    const size = st.size;
    const c = new FileCursor(fd, size, name);
    const magic = c.u32('magic');
    if (magic !== GGUF_MAGIC) c.fail(`not a GGUF file (magic 0x${magic.toString(16).padStart(8, '0')}, expected "GGUF")`);
    const version = c.u32('version');
    if (version !== 2 && version !== 3) c.fail(`unsupported GGUF version ${version} (tessera reads versions 2 and 3)`);
    const nTensors = c.count('tensor count', Math.floor((size - c.pos) / 32));
    const nKv = c.count('metadata count', Math.floor((size - c.pos) / 13));
    const metadata = new Map<string, GGUFValue>();
    const metadataTypes = new Map<string, GGUFValueType>();
    for (let i = 0; i < nKv; i++) {
      const key = c.string(`metadata key #${i}`);
      const type = c.u32(`type of metadata '${key}'`);
      if (metadata.has(key)) c.fail(`duplicate metadata key '${key}'`);
      metadata.set(key, readValue(c, type, `metadata '${key}'`));
      metadataTypes.set(key, type as GGUFValueType);
    }
    let alignment = DEFAULT_ALIGNMENT;
    if (metadata.has('general.alignment')) {
      const a = metadata.get('general.alignment');
      if (typeof a !== 'number' || a < 1 || a > 1 << 20 || (a & (a - 1)) !== 0)
        c.fail(`general.alignment must be a power of two but is ${String(a)}`);
      alignment = a as number;
    }
    const infos: { name: string; shape: number[]; type: GgmlTypeInfo; rel: number; elements: number; byteLength: number }[] = [];
    const names = new Set<string>();
    for (let i = 0; i < nTensors; i++) {
      const tname = c.string(`name of tensor #${i}`);
      if (names.has(tname)) c.fail(`duplicate tensor name '${tname}'`);
      names.add(tname);
      const nd = c.u32(`dimension count of tensor '${tname}'`);
      if (nd < 1 || nd > MAX_DIMS) c.fail(`tensor '${tname}' has ${nd} dimensions (expected 1 to ${MAX_DIMS})`);
      const ne: number[] = [];
      let elements = 1;
      for (let d = 0; d < nd; d++) {
        const v = c.count(`dimension ${d} of tensor '${tname}'`, Number.MAX_SAFE_INTEGER);
        if (v < 1) c.fail(`tensor '${tname}' has dimension ${d} = 0`);
        ne.push(v);
        elements *= v;
        if (elements > size * 2 + 64) c.fail(`tensor '${tname}' has ${elements}+ elements, more than the file can hold`);
      }
      const typeId = c.u32(`type of tensor '${tname}'`);
      const type = GGML_TYPES.get(typeId);
      if (type === undefined) {
        const known = OTHER_GGML_TYPES[typeId];
        return c.fail(`tensor '${tname}' has ${known ? `ggml type ${known}, which tessera does not read yet` : `unknown ggml type ${typeId}`} (supported: F32, F16, BF16, Q8_0, Q4_0)`);
      }
      if (ne[0]! % type.blockSize) c.fail(`tensor '${tname}': row length ${ne[0]} is not a multiple of the ${type.name} block size ${type.blockSize}`);
      const rel = c.count(`data offset of tensor '${tname}'`, size);
      if (rel % alignment) c.fail(`tensor '${tname}': data offset ${rel} is not aligned to ${alignment}`);
      infos.push({ name: tname, shape: ne.slice().reverse(), type, rel, elements, byteLength: (elements / type.blockSize) * type.blockBytes });
    }
    const dataOffset = Math.ceil(c.pos / alignment) * alignment;
    const tensors: GGUFTensorInfo[] = infos.map((t) => {
      const offset = dataOffset + t.rel;
      if (offset + t.byteLength > size)
        c.fail(`truncated: tensor '${t.name}' (${t.byteLength} bytes at offset ${offset}) extends past the end of the file (${size} bytes)`);
      return { name: t.name, shape: t.shape, type: t.type.name, offset, byteLength: t.byteLength, elements: t.elements };
    });
    const overlap = firstOverlap(tensors);
    if (overlap) {
      const [a, b] = overlap;
      c.fail(`tensors '${a.name}' (bytes ${a.offset} to ${a.offset + a.byteLength}) and '${b.name}' (bytes ${b.offset} to ${b.offset + b.byteLength}) overlap`);
    }
    const g: GGUFFile = { path: file, version, alignment, metadata, metadataTypes, tensors, dataOffset, fileSize: size };
    identities.set(g, fileIdentity(st));
    return g;
  } finally {
    closeSync(fd);
  }
}

/**
 * One tensor's raw bytes in their own ArrayBuffer: a copy-on-write mapping of the file (writes
 * stay private to this buffer) or, where mapping is impossible, a fresh read.
 */
export function readTensorBytes(g: GGUFFile, t: GGUFTensorInfo): Uint8Array {
  return fileBytes(g.path, identities.get(g), t.offset, t.byteLength, VIEW_ALIGN[t.type], `tensor '${t.name}'`);
}

/**
 * A tensor as tessera uses it: F32 -> f32, F16 -> f16, BF16 -> bf16 (views of the file's bytes,
 * no copy); Q8_0/Q4_0 -> their packed q8_0/q4_0 blocks ('packed', what linear runs on) or
 * dequantised to f16 / f32.
 */
export function loadTensor(g: GGUFFile, t: GGUFTensorInfo, quantizedAs: 'packed' | 'f16' | 'f32' = 'f16'): Tensor {
  const bytes = readTensorBytes(g, t);
  if (quantizedAs === 'packed' && (t.type === 'Q8_0' || t.type === 'Q4_0'))
    return new Tensor(t.type === 'Q8_0' ? 'q8_0' : 'q4_0', t.shape, bytes);
  switch (t.type) {
    case 'F32': return new Tensor('f32', t.shape, new Float32Array(bytes.buffer, 0, t.elements));
    case 'F16': return new Tensor('f16', t.shape, new Uint16Array(bytes.buffer, 0, t.elements));
    case 'BF16': return new Tensor('bf16', t.shape, new Uint16Array(bytes.buffer, 0, t.elements));
    default: {
      const f = dequantizeBytes(t.type, bytes, t.elements);
      releaseBytes(bytes);
      if (quantizedAs === 'f32') return new Tensor('f32', t.shape, f);
      const h = new Uint16Array(t.elements);
      for (let i = 0; i < f.length; i++) h[i] = f32ToF16(f[i]!);
      return new Tensor('f16', t.shape, h);
    }
  }
}

/** dequantize() on the native thread pool where the addon is built (bit-identical results). */
function dequantizeBytes(type: 'Q8_0' | 'Q4_0', bytes: Uint8Array, elements: number): Float32Array {
  const native = loadNative();
  if (!native) return dequantize(type, bytes, elements);
  const out = new Float32Array(elements);
  native.dequantizeBlocks(bytes, type === 'Q8_0' ? 6 : 7, out);
  return out;
}

/**
 * IntWeight.fromQ4_0 of an (N, K) Q4_0 tensor's blocks, repacked on the native thread pool where
 * the addon is built (the same layout the TS loop makes). Mapped blocks' resident pages are
 * dropped afterwards, since the repacked weight replaces them (the blocks stay readable; a page
 * written since it was mapped reverts to the file's bytes).
 */
export function q4_0IntWeight(blocks: Uint8Array, N: number, K: number): IntWeight {
  const native = loadNative();
  const w = IntWeight.fromQ4_0(blocks, N, K, native ? (b, n, k, qweight, meta) => native.repackQ4_0(b, n, k, qweight, meta) : undefined);
  releaseBytes(blocks);
  return w;
}

// ---- writer ---------------------------------------------------------------------------------

export interface GGUFMetadataEntry {
  key: string;
  type: GGUFValueType;
  /** For ARRAY: the element type. */
  elementType?: GGUFValueType;
  value: GGUFValue;
}

export interface GGUFTensorInput {
  name: string;
  /** Row-major shape (tessera order). */
  shape: readonly number[];
  type: GgmlTypeName;
  /** f32 values (quantised/converted on write) or, for F16/BF16, raw Uint16 bit patterns. */
  data: Float32Array | Uint16Array;
}

class ByteSink {
  chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer) { this.chunks.push(b); this.length += b.length; }
  u32(v: number) { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.push(b); }
  u64(v: number | bigint) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.push(b); }
  string(s: string) { const b = Buffer.from(s, 'utf8'); this.u64(b.length); this.push(b); }
}

function writeValue(s: ByteSink, type: number, v: GGUFValue, elementType?: number): void {
  const b = Buffer.alloc(8);
  switch (type) {
    case GGUF_VALUE.UINT8: b.writeUInt8(v as number); return s.push(b.subarray(0, 1));
    case GGUF_VALUE.INT8: b.writeInt8(v as number); return s.push(b.subarray(0, 1));
    case GGUF_VALUE.UINT16: b.writeUInt16LE(v as number); return s.push(b.subarray(0, 2));
    case GGUF_VALUE.INT16: b.writeInt16LE(v as number); return s.push(b.subarray(0, 2));
    case GGUF_VALUE.UINT32: b.writeUInt32LE(v as number); return s.push(b.subarray(0, 4));
    case GGUF_VALUE.INT32: b.writeInt32LE(v as number); return s.push(b.subarray(0, 4));
    case GGUF_VALUE.FLOAT32: b.writeFloatLE(v as number); return s.push(b.subarray(0, 4));
    case GGUF_VALUE.FLOAT64: b.writeDoubleLE(v as number); return s.push(b);
    case GGUF_VALUE.BOOL: b.writeUInt8(v ? 1 : 0); return s.push(b.subarray(0, 1));
    case GGUF_VALUE.STRING: return s.string(v as string);
    case GGUF_VALUE.UINT64: b.writeBigUInt64LE(BigInt(v as number)); return s.push(b);
    case GGUF_VALUE.INT64: b.writeBigInt64LE(BigInt(v as number)); return s.push(b);
    case GGUF_VALUE.ARRAY: {
      if (elementType === undefined) throw new TypeError('GGUF array metadata needs elementType');
      const arr = v as ArrayLike<GGUFValue>;
      s.u32(elementType);
      s.u64(arr.length);
      for (let i = 0; i < arr.length; i++) writeValue(s, elementType, arr[i]!);
      return;
    }
  }
  throw new TypeError(`unknown GGUF value type ${type}`);
}

function tensorBytes(t: GGUFTensorInput): Uint8Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (t.data.length !== n) throw new RangeError(`tensor '${t.name}': expected ${n} values but received ${t.data.length}`);
  switch (t.type) {
    case 'F32':
      if (!(t.data instanceof Float32Array)) throw new TypeError(`tensor '${t.name}': F32 needs a Float32Array`);
      return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    case 'F16':
    case 'BF16': {
      if (t.data instanceof Uint16Array) return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      const h = new Uint16Array(n);
      const f = t.data;
      if (t.type === 'F16') for (let i = 0; i < n; i++) h[i] = f32ToF16(f[i]!);
      else {
        const u = new Uint32Array(f.buffer, f.byteOffset, n);
        for (let i = 0; i < n; i++) {
          const x = u[i]!;
          h[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
        }
      }
      return new Uint8Array(h.buffer);
    }
    case 'Q8_0':
    case 'Q4_0': {
      if (!(t.data instanceof Float32Array)) throw new TypeError(`tensor '${t.name}': ${t.type} is quantised from a Float32Array`);
      if (t.shape[t.shape.length - 1]! % 32) throw new RangeError(`tensor '${t.name}': row length must be a multiple of 32 for ${t.type}`);
      return t.type === 'Q8_0' ? quantizeQ8_0(t.data) : quantizeQ4_0(t.data);
    }
  }
}

/**
 * Writes a GGUF v3 file. Tensors are converted one at a time and streamed to disk, so writing a
 * multi-GB model holds one tensor's bytes at a time (pass tensors lazily via a function). The
 * file is replaced by rename (writeFileReplacing), never truncated under a reader's mapping.
 */
export function writeGGUF(
  file: string,
  metadata: readonly GGUFMetadataEntry[],
  tensors: readonly { name: string; shape: readonly number[]; type: GgmlTypeName; load: () => GGUFTensorInput['data'] }[] | readonly GGUFTensorInput[],
  alignment = DEFAULT_ALIGNMENT,
): void {
  const head = new ByteSink();
  head.u32(GGUF_MAGIC);
  head.u32(3);
  head.u64(tensors.length);
  const meta = [...metadata];
  if (alignment !== DEFAULT_ALIGNMENT && !meta.some((m) => m.key === 'general.alignment'))
    meta.push({ key: 'general.alignment', type: GGUF_VALUE.UINT32, value: alignment });
  head.u64(meta.length);
  for (const m of meta) {
    head.string(m.key);
    head.u32(m.type);
    writeValue(head, m.type, m.value, m.elementType);
  }
  let rel = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const info = [...GGML_TYPES.values()].find((x) => x.name === t.type)!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    const bytes = (n / info.blockSize) * info.blockBytes;
    head.string(t.name);
    head.u32(t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) head.u64(t.shape[d]!);
    head.u32(GGML_TYPE[t.type]);
    head.u64(rel);
    sizes.push(bytes);
    rel += Math.ceil(bytes / alignment) * alignment;
  }
  writeFileReplacing(file, (fd) => {
    let pos = 0;
    for (const c of head.chunks) pos += writeSync(fd, c);
    const pad = Math.ceil(pos / alignment) * alignment - pos;
    if (pad) pos += writeSync(fd, Buffer.alloc(pad));
    tensors.forEach((t, i) => {
      const data = 'load' in t ? t.load() : t.data;
      const bytes = tensorBytes({ name: t.name, shape: t.shape, type: t.type, data });
      if (bytes.length !== sizes[i]) throw new Error(`tensor '${t.name}': size mismatch`);
      let off = 0;
      while (off < bytes.length) off += writeSync(fd, bytes, off, Math.min(bytes.length - off, 1 << 30));
      const p = Math.ceil(bytes.length / alignment) * alignment - bytes.length;
      if (p) writeSync(fd, Buffer.alloc(p));
    });
  });
}

/** A read file's metadata as writable entries (array element types from the typed arrays). */
export function ggufMetadataEntries(g: GGUFFile, overrides: Record<string, { type: GGUFValueType; value: GGUFValue }> = {}): GGUFMetadataEntry[] {
  const elementType = (v: GGUFValue): GGUFValueType | undefined => {
    if (v instanceof Float32Array) return GGUF_VALUE.FLOAT32;
    if (v instanceof Int32Array) return GGUF_VALUE.INT32;
    if (v instanceof Uint32Array) return GGUF_VALUE.UINT32;
    if (v instanceof Uint8Array) return GGUF_VALUE.UINT8;
    if (v instanceof Int8Array) return GGUF_VALUE.INT8;
    if (v instanceof Uint16Array) return GGUF_VALUE.UINT16;
    if (v instanceof Int16Array) return GGUF_VALUE.INT16;
    if (v instanceof Float64Array) return GGUF_VALUE.FLOAT64;
    if (Array.isArray(v)) return typeof v[0] === 'string' || v.length === 0 ? GGUF_VALUE.STRING : typeof v[0] === 'boolean' ? GGUF_VALUE.BOOL : undefined;
    return undefined;
  };
  const out: GGUFMetadataEntry[] = [];
  for (const [key, value] of g.metadata) {
    if (key === 'general.alignment') continue;
    const o = overrides[key];
    const type = o ? o.type : g.metadataTypes.get(key)!;
    const v = o ? o.value : value;
    if (type === GGUF_VALUE.ARRAY) {
      const et = elementType(v);
      if (et === undefined) throw new Error(`GGUF metadata '${key}': cannot tell the array's element type`);
      out.push({ key, type, elementType: et, value: v });
    } else out.push({ key, type, value: v });
  }
  for (const [key, o] of Object.entries(overrides)) if (!g.metadata.has(key)) out.push({ key, type: o.type, value: o.value });
  return out;
}
