/**
 * safetensors reader (format: huggingface/safetensors README): u64 little-endian header length,
 * a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?}, then the
 * data. Every entry is checked against the file before any tensor is read, and no two tensors'
 * bytes may overlap. Sharded checkpoints (model.safetensors.index.json with a weight_map) are
 * opened as one map of tensors. Tensor data is mapped in place (tensor-data.ts), not copied.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import path from 'node:path';
import { Tensor } from '../tensor/tensor.js';
import { ModelFileError } from './errors.js';
import { fileBytes, fileIdentity, firstOverlap, writeFileReplacing, type FileIdentity } from './tensor-data.js';
import { parseJson } from './json.js';

const DTYPE_BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
const MAX_HEADER = 100 * 2 ** 20;

/** The file each entry's header was parsed from, so a read can tell if it changed since. */
const identities = new WeakMap<SafetensorsEntry, FileIdentity>();

export interface SafetensorsEntry {
  name: string;
  file: string;
  dtype: string;
  shape: number[];
  /** Absolute byte offset in the file. */
  offset: number;
  byteLength: number;
}

export interface SafetensorsFile {
  path: string;
  metadata: Record<string, string>;
  tensors: Map<string, SafetensorsEntry>;
}

export function readSafetensorsHeader(file: string): SafetensorsFile {
  const name = path.basename(file);
  const fail = (m: string): never => {
    throw new ModelFileError(name, m);
  };
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    return fail(`cannot open: ${(err as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    const size = st.size;
    if (size < 8) fail(`truncated: ${size} bytes, not even a header length`);
    const lb = Buffer.alloc(8);
    readSync(fd, lb, 0, 8, 0);
    const n = lb.readBigUInt64LE(0);
    if (n > BigInt(Math.min(MAX_HEADER, size - 8))) fail(`header length ${n} exceeds the file (${size} bytes) or the ${MAX_HEADER}-byte limit`);
    const hb = Buffer.alloc(Number(n));
    readSync(fd, hb, 0, hb.length, 8);
    let header: unknown;
    try {
      header = parseJson(hb.toString('utf8'));
    } catch (err) {
      return fail(`header is not valid JSON (${(err as Error).message})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) return fail('header is not a JSON object');
    const dataStart = 8 + hb.length;
    const tensors = new Map<string, SafetensorsEntry>();
    let metadata: Record<string, string> = {};
    for (const [key, v] of Object.entries(header as Record<string, unknown>)) {
      if (key === '__metadata__') {
        metadata = (v ?? {}) as Record<string, string>;
        continue;
      }
      const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof e !== 'object' || e === null) fail(`tensor '${key}': entry is not an object`);
      const elt = DTYPE_BYTES[e.dtype as string];
      if (elt === undefined) fail(`tensor '${key}': unknown dtype ${JSON.stringify(e.dtype)}`);
      if (!Array.isArray(e.shape) || e.shape.length > 8 || e.shape.some((d) => !Number.isSafeInteger(d) || d < 0))
        fail(`tensor '${key}': invalid shape ${JSON.stringify(e.shape)}`);
      const off = e.data_offsets as unknown[];
      if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => Number.isSafeInteger(x) && (x as number) >= 0) || (off[1] as number) < (off[0] as number))
        fail(`tensor '${key}': invalid data_offsets ${JSON.stringify(e.data_offsets)}`);
      const shape = e.shape as number[];
      const [b, end] = off as [number, number];
      const bytes = shape.reduce((a, d) => a * d, 1) * elt!;
      if (end - b !== bytes) fail(`tensor '${key}': data_offsets span ${end - b} bytes but ${e.dtype} [${shape.join(', ')}] needs ${bytes}`);
      if (dataStart + end > size) fail(`truncated: tensor '${key}' ends at byte ${dataStart + end} but the file has ${size}`);
      tensors.set(key, { name: key, file, dtype: e.dtype as string, shape, offset: dataStart + b, byteLength: bytes });
    }
    const overlap = firstOverlap([...tensors.values()]);
    if (overlap) {
      const [a, b] = overlap.map((t) => ({ name: t.name, begin: t.offset - dataStart, end: t.offset - dataStart + t.byteLength }));
      fail(`tensors '${a!.name}' (data_offsets [${a!.begin}, ${a!.end}]) and '${b!.name}' (data_offsets [${b!.begin}, ${b!.end}]) overlap`);
    }
    const id = fileIdentity(st);
    for (const t of tensors.values()) identities.set(t, id);
    return { path: file, metadata, tensors };
  } finally {
    closeSync(fd);
  }
}

/** Opens model.safetensors or a sharded checkpoint (model.safetensors.index.json) in dir. */
export function openSafetensorsDir(dir: string): Map<string, SafetensorsEntry> {
  const single = path.join(dir, 'model.safetensors');
  const index = path.join(dir, 'model.safetensors.index.json');
  if (existsSync(single)) return readSafetensorsHeader(single).tensors;
  if (!existsSync(index)) throw new ModelFileError(path.basename(dir), 'no model.safetensors or model.safetensors.index.json in the directory');
  let idx: { weight_map?: Record<string, string> } | null;
  try {
    idx = parseJson(readFileSync(index, 'utf8')) as typeof idx;
  } catch (err) {
    throw new ModelFileError('model.safetensors.index.json', `not valid JSON (${(err as Error).message})`);
  }
  if (idx === null || typeof idx !== 'object' || Array.isArray(idx)) throw new ModelFileError('model.safetensors.index.json', `expected a JSON object but received ${idx === null ? 'null' : Array.isArray(idx) ? 'an array' : typeof idx}`);
  if (!idx.weight_map || typeof idx.weight_map !== 'object' || Array.isArray(idx.weight_map)) throw new ModelFileError('model.safetensors.index.json', 'missing weight_map (an object of tensor name to shard file)');
  const out = new Map<string, SafetensorsEntry>();
  const shards = new Map<string, SafetensorsFile>();
  for (const [name, shard] of Object.entries(idx.weight_map)) {
    // A plain file name in dir: no path separators, not '.' or '..' (nothing outside the model directory).
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\') || path.isAbsolute(shard) || path.dirname(path.resolve(dir, shard)) !== path.resolve(dir))
      throw new ModelFileError('model.safetensors.index.json', `weight_map['${name}'] is not a shard file name in the model directory (${JSON.stringify(shard)})`);
    let f = shards.get(shard);
    if (!f) {
      f = readSafetensorsHeader(path.join(dir, shard));
      shards.set(shard, f);
    }
    const e = f.tensors.get(name);
    if (!e) throw new ModelFileError(shard, `tensor '${name}' listed in the index is not in the shard`);
    out.set(name, e);
  }
  return out;
}

/** A tensor: F32 -> f32, F16 -> f16, BF16 -> bf16, I32 -> i32, I8 -> i8, U8 -> u8 (no conversion), its
 *  data a copy-on-write view of the file's bytes (a fresh read where mapping is impossible). */
export function loadSafetensor(e: SafetensorsEntry): Tensor {
  const kind = ({ F32: 'f32', F16: 'f16', BF16: 'bf16', I32: 'i32', I8: 'i8', U8: 'u8' } as const)[e.dtype as 'F32'];
  if (!kind) throw new ModelFileError(path.basename(e.file), `tensor '${e.name}' has dtype ${e.dtype}; tessera reads F32, F16, BF16, I32, I8 and U8`);
  const align = kind === 'f32' || kind === 'i32' ? 4 : kind === 'f16' || kind === 'bf16' ? 2 : 1;
  const buf = fileBytes(e.file, identities.get(e), e.offset, e.byteLength, align, `tensor '${e.name}'`).buffer as ArrayBuffer;
  if (kind === 'f32') return new Tensor('f32', e.shape, new Float32Array(buf));
  if (kind === 'i32') return new Tensor('i32', e.shape, new Int32Array(buf));
  if (kind === 'i8') return new Tensor('i8', e.shape, new Int8Array(buf));
  if (kind === 'u8') return new Tensor('u8', e.shape, new Uint8Array(buf));
  return new Tensor<'f16' | 'bf16'>(kind, e.shape, new Uint16Array(buf));
}

const WRITE_DTYPE: Record<string, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i32: 'I32', i8: 'I8', u8: 'U8' };

/**
 * Writes tensors (f32, f16, bf16, i32, i8, u8) as one safetensors file, in the given order, with
 * optional string metadata. The header is padded with spaces to a multiple of 8 bytes.
 */
export function writeSafetensors(file: string, tensors: readonly { name: string; tensor: Tensor }[], metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  const parts: Uint8Array[] = [];
  for (const { name, tensor } of tensors) {
    const dt = WRITE_DTYPE[tensor.dtype];
    if (!dt) throw new TypeError(`writeSafetensors: tensor '${name}' has dtype ${tensor.dtype}, which safetensors cannot hold`);
    if (name in header) throw new RangeError(`writeSafetensors: tensor '${name}' appears twice`);
    const d = tensor.data;
    const bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    header[name] = { dtype: dt, shape: [...tensor.shape], data_offsets: [off, off + bytes.length] };
    off += bytes.length;
    parts.push(bytes);
  }
  let h = JSON.stringify(header);
  h += ' '.repeat((8 - (Buffer.byteLength(h) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(h)));
  writeFileReplacing(file, (fd) => {
    writeSync(fd, len);
    writeSync(fd, Buffer.from(h));
    for (const p of parts) writeSync(fd, p);
  });
}
