/**
 * GGUF at the structure level, for mutation: a tolerant parser that records every integer field
 * (counts, string lengths, value types, dims, tensor types, offsets, scalar values) with its file
 * offset, and a model (key/values, tensor infos, data) that can be edited and written back with
 * deliberately wrong counts, offsets and types.
 */
import { GGML_TYPE } from '../../src/formats/ggml-types.js';
import type { IntField } from '../mutate.js';
import { interestingInts, type Rng } from '../rng.js';

const enc = new TextEncoder();
const SCALAR: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
export const V = { U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STR: 8, ARR: 9, U64: 10, I64: 11, F64: 12 } as const;

export interface Kv {
  key: Uint8Array;
  type: number;
  /** The value's bytes as they follow the type field. */
  value: Uint8Array;
}

export interface TensorInfo {
  name: Uint8Array;
  dims: bigint[];
  type: number;
  offset: bigint;
}

export interface GgufModel {
  version: number;
  kvs: Kv[];
  tensors: TensorInfo[];
  /** Bytes from the aligned data start to the end of the file. */
  data: Uint8Array;
  alignment: number;
  /** Written instead of the real counts when set. */
  nTensors?: bigint;
  nKv?: bigint;
}

export interface Parsed {
  fields: IntField[];
  model: GgufModel | null;
  dataStart: number;
}

/** Parses as far as the file allows; `model` is null when it is not a well-formed GGUF. */
export function parseGguf(b: Uint8Array): Parsed {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const fields: IntField[] = [];
  let p = 0;
  const need = (n: number) => {
    if (n < 0 || p + n > b.length) throw new Error('eof');
  };
  const f = (width: 1 | 2 | 4 | 8, what: string): bigint => {
    need(width);
    fields.push({ off: p, width, what });
    const v = width === 8 ? dv.getBigUint64(p, true) : BigInt(width === 4 ? dv.getUint32(p, true) : width === 2 ? dv.getUint16(p, true) : b[p]!);
    p += width;
    return v;
  };
  const str = (what: string): Uint8Array => {
    const n = f(8, `strlen ${what}`);
    if (n > BigInt(b.length)) throw new Error('eof');
    need(Number(n));
    const s = b.subarray(p, p + Number(n));
    p += Number(n);
    return s;
  };
  const value = (t: number, what: string, depth: number): void => {
    if (t === V.STR) return void str(what);
    if (t === V.ARR) {
      if (depth > 3) throw new Error('deep');
      const et = Number(f(4, `arrtype ${what}`));
      const n = f(8, `arrcount ${what}`);
      if (n > BigInt(b.length)) throw new Error('eof');
      for (let i = 0; i < Number(n); i++) {
        if (et === V.STR || et === V.ARR) value(et, what, depth + 1);
        else {
          const w = SCALAR[et];
          if (w === undefined) throw new Error('type');
          // Record only a few elements of big arrays (the first ones and a sample).
          if (i < 8 || i % 97 === 0) f(w as 1 | 2 | 4 | 8, `${what}[${i}]`);
          else (need(w), (p += w));
        }
      }
      return;
    }
    const w = SCALAR[t];
    if (w === undefined) throw new Error('type');
    f(w as 1 | 2 | 4 | 8, `value ${what}`);
  };
  let model: GgufModel | null = null;
  let dataStart = b.length;
  try {
    f(4, 'magic');
    const version = Number(f(4, 'version'));
    const nT = f(8, 'tensor count');
    const nK = f(8, 'kv count');
    if (nT > 100000n || nK > 100000n) throw new Error('counts');
    const kvs: Kv[] = [];
    let alignment = 32;
    for (let i = 0; i < Number(nK); i++) {
      const key = str(`key #${i}`);
      const type = Number(f(4, `valtype ${new TextDecoder().decode(key)}`));
      const start = p;
      value(type, new TextDecoder().decode(key), 0);
      const kv = { key, type, value: b.slice(start, p) };
      kvs.push(kv);
      if (new TextDecoder().decode(key) === 'general.alignment' && type === V.U32) alignment = dv.getUint32(start, true) || 32;
    }
    const tensors: TensorInfo[] = [];
    for (let i = 0; i < Number(nT); i++) {
      const name = str(`tensor name #${i}`);
      const nd = Number(f(4, `ndims #${i}`));
      if (nd > 8) throw new Error('dims');
      const dims: bigint[] = [];
      for (let d = 0; d < nd; d++) dims.push(f(8, `dim ${d} of #${i}`));
      const type = Number(f(4, `ggml type #${i}`));
      const offset = f(8, `offset #${i}`);
      tensors.push({ name, dims, type, offset });
    }
    if (alignment & (alignment - 1) || alignment > 1 << 20) alignment = 32;
    dataStart = Math.ceil(p / alignment) * alignment;
    model = { version, kvs, tensors, data: b.slice(Math.min(dataStart, b.length)), alignment };
  } catch {
    // a partial parse still gives the fields seen so far
  }
  return { fields, model, dataStart };
}

function u32(v: number | bigint): Uint8Array {
  const o = new Uint8Array(4);
  new DataView(o.buffer).setUint32(0, Number(BigInt.asUintN(32, BigInt(v))), true);
  return o;
}
function u64(v: number | bigint): Uint8Array {
  const o = new Uint8Array(8);
  new DataView(o.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(v)), true);
  return o;
}
function gstr(s: Uint8Array | string): Uint8Array {
  const b = typeof s === 'string' ? enc.encode(s) : s;
  return concat([u64(b.length), b]);
}
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Writes the model back (counts from the model unless overridden; data at the aligned start). */
export function writeGguf(m: GgufModel): Uint8Array {
  const parts: Uint8Array[] = [u32(0x46554747), u32(m.version), u64(m.nTensors ?? BigInt(m.tensors.length)), u64(m.nKv ?? BigInt(m.kvs.length))];
  for (const kv of m.kvs) parts.push(gstr(kv.key), u32(kv.type), kv.value);
  for (const t of m.tensors) parts.push(gstr(t.name), u32(t.dims.length), ...t.dims.map(u64), u32(t.type), u64(t.offset));
  const head = concat(parts);
  const start = Math.ceil(head.length / m.alignment) * m.alignment;
  const out = new Uint8Array(start + m.data.length);
  out.set(head);
  out.set(m.data, start);
  return out;
}

/** A metadata value's bytes for the given type. */
export function encodeValue(type: number, v: unknown, elementType?: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  switch (type) {
    case V.U8: case V.I8: case V.BOOL: dv.setUint8(0, Number(v) & 0xff); return b.slice(0, 1);
    case V.U16: case V.I16: dv.setUint16(0, Number(v) & 0xffff, true); return b.slice(0, 2);
    case V.U32: case V.I32: dv.setUint32(0, Number(BigInt.asUintN(32, BigInt(Math.trunc(Number(v))))), true); return b.slice(0, 4);
    case V.F32: dv.setFloat32(0, Number(v), true); return b.slice(0, 4);
    case V.F64: dv.setFloat64(0, Number(v), true); return b;
    case V.U64: case V.I64: dv.setBigUint64(0, BigInt.asUintN(64, BigInt(v as number | bigint)), true); return b;
    case V.STR: return gstr(String(v));
    case V.ARR: {
      const arr = v as unknown[];
      return concat([u32(elementType!), u64(arr.length), ...arr.map((x) => encodeValue(elementType!, x))]);
    }
  }
  return new Uint8Array(0);
}

const dec = new TextDecoder();
const keyOf = (kv: Kv) => dec.decode(kv.key);

/** Keys whose values steer shapes, loops and allocations. */
function hotKeys(m: GgufModel): string[] {
  const archKv = m.kvs.find((k) => keyOf(k) === 'general.architecture');
  const arch = archKv ? dec.decode(archKv.value.subarray(8)) : 'llama';
  return [
    'general.architecture', 'general.alignment', 'general.name',
    ...['context_length', 'embedding_length', 'feed_forward_length', 'block_count', 'attention.head_count', 'attention.head_count_kv',
      'attention.key_length', 'rope.dimension_count', 'attention.layer_norm_rms_epsilon', 'rope.freq_base', 'rope.scaling.type',
      'rope.scaling.factor', 'attention.sliding_window', 'expert_count', 'expert_used_count', 'expert_weights_norm'].map((k) => `${arch}.${k}`),
    ...['model', 'pre', 'tokens', 'scores', 'token_type', 'merges', 'bos_token_id', 'eos_token_id', 'unknown_token_id', 'eot_token_id',
      'padding_token_id', 'seperator_token_id', 'add_bos_token', 'add_eos_token', 'add_space_prefix'].map((k) => `tokenizer.ggml.${k}`),
    'tokenizer.chat_template',
  ];
}

function hostileScalar(rng: Rng): [number, unknown] {
  return rng.weighted<() => [number, unknown]>([
    [3, () => [V.U32, Number(rng.pick(interestingInts(4)))]],
    [1, () => [V.I32, rng.pick([-1, -2, -(2 ** 31)])]],
    [2, () => [V.F32, rng.pick([NaN, Infinity, -Infinity, 0, -1, 1e-45, 3.4e38, 0.5, 1e30])]],
    [1, () => [V.F64, rng.pick([NaN, Infinity, 2 ** 53, 1e300])]],
    [1, () => [V.U64, rng.pick(interestingInts(8))]],
    [1, () => [V.BOOL, rng.pick([0, 1, 2, 255])]],
    [2, () => [V.STR, rng.pick(['', 'llama', 'qwen2', 'mistral', 'gpt2', 'bert', 'linear', 'yarn', 'none', 'x'.repeat(1000), '\u0000', 'default', 'qwen2', 'llama3', 'unknown-pre'])]],
    [1, () => [V.ARR, { et: V.STR, v: rng.pick([[], [''], ['<s>'], Array.from({ length: 300 }, (_, i) => `t${i}`)]) }]],
    [1, () => [V.ARR, { et: V.I32, v: rng.pick([[], [0], [-1, 7, 99], Array.from({ length: 300 }, (_, i) => i % 7)]) }]],
    [1, () => [V.ARR, { et: V.F32, v: rng.pick([[], [NaN], [Infinity, -Infinity]]) }]],
  ])();
}

/** One structural edit of a well-formed GGUF; returns a description. */
export function mutateModel(m: GgufModel, rng: Rng): string {
  const ts = m.tensors;
  const pickT = () => rng.pick(ts);
  const op = rng.weighted<string>([
    [5, 'hot-kv'], [1, 'drop-kv'], [1, 'dup-kv'], [1, 'retype-kv'], [2, 'dim'], [1, 'ndims'], [2, 'ttype'], [2, 'offset'],
    [1, 'drop-tensor'], [1, 'dup-tensor'], [1, 'rename-tensor'], [3, 'data'], [1, 'counts'], [1, 'version'], [1, 'swap-tensors'],
  ]);
  if (!ts.length && ['dim', 'ndims', 'ttype', 'offset', 'drop-tensor', 'dup-tensor', 'rename-tensor', 'data', 'swap-tensors'].includes(op)) return mutateModel(m, rng);
  switch (op) {
    case 'hot-kv': {
      const key = rng.pick(hotKeys(m));
      const [type, v] = hostileScalar(rng);
      const value = type === V.ARR ? encodeValue(V.ARR, (v as { v: unknown[] }).v, (v as { et: number }).et) : encodeValue(type, v);
      const kv = m.kvs.find((k) => keyOf(k) === key);
      if (kv) Object.assign(kv, { type, value });
      else m.kvs.push({ key: enc.encode(key), type, value });
      return `set ${key} to type ${type}`;
    }
    case 'drop-kv': {
      if (!m.kvs.length) return 'nothing';
      const i = rng.int(m.kvs.length);
      return `drop kv ${keyOf(m.kvs.splice(i, 1)[0]!)}`;
    }
    case 'dup-kv': {
      if (!m.kvs.length) return 'nothing';
      const kv = rng.pick(m.kvs);
      m.kvs.push({ ...kv });
      return `dup kv ${keyOf(kv)}`;
    }
    case 'retype-kv': {
      if (!m.kvs.length) return 'nothing';
      const kv = rng.pick(m.kvs);
      kv.type = rng.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 255]);
      return `retype kv ${keyOf(kv)} -> ${kv.type}`;
    }
    case 'dim': {
      const t = pickT();
      if (!t.dims.length) t.dims.push(1n);
      const d = rng.int(t.dims.length);
      t.dims[d] = rng.weighted<() => bigint>([[3, () => rng.pick(interestingInts(8))], [3, () => t.dims[d]! + BigInt(rng.range(-2, 2))], [1, () => t.dims[d]! * 2n]])();
      return `dim ${d} of ${dec.decode(t.name)} -> ${t.dims[d]}`;
    }
    case 'ndims': {
      const t = pickT();
      if (rng.chance(0.5)) t.dims.push(rng.pick([1n, 2n, 0n]));
      else t.dims.pop();
      if (rng.chance(0.3)) t.dims.reverse();
      return `ndims of ${dec.decode(t.name)} -> ${t.dims.length}`;
    }
    case 'ttype': {
      const t = pickT();
      t.type = rng.pick([GGML_TYPE.F32, GGML_TYPE.F16, GGML_TYPE.BF16, GGML_TYPE.Q8_0, GGML_TYPE.Q4_0, 2, 3, 6, 10, 12, 14, 39, 40, 1000, 0xffffffff]);
      return `type of ${dec.decode(t.name)} -> ${t.type}`;
    }
    case 'offset': {
      const t = pickT();
      t.offset = rng.weighted<() => bigint>([
        [2, () => pickT().offset], // alias another tensor's data
        [2, () => t.offset + BigInt(m.alignment) * BigInt(rng.range(-3, 3))],
        [1, () => t.offset + 1n],
        [2, () => rng.pick(interestingInts(8))],
        [1, () => BigInt(m.data.length)],
      ])();
      return `offset of ${dec.decode(t.name)} -> ${t.offset}`;
    }
    case 'drop-tensor':
      return `drop tensor ${dec.decode(ts.splice(rng.int(ts.length), 1)[0]!.name)}`;
    case 'dup-tensor': {
      const t = pickT();
      ts.push({ ...t, dims: [...t.dims] });
      return `dup tensor ${dec.decode(t.name)}`;
    }
    case 'rename-tensor': {
      const t = pickT();
      const other = pickT();
      t.name = rng.chance(0.5) ? other.name : enc.encode(rng.pick(['output.weight', 'rope_freqs.weight', 'blk.0.attn_q.bias', 'blk.99.attn_q.weight', '', 'token_embd.weight']));
      return `rename tensor -> ${dec.decode(t.name)}`;
    }
    case 'swap-tensors': {
      const a = pickT(), b = pickT();
      [a.name, b.name] = [b.name, a.name];
      return `swap names ${dec.decode(a.name)} <-> ${dec.decode(b.name)}`;
    }
    case 'data': {
      // Non-finite or huge weights in one tensor: the load may succeed; the forward must not return NaN/Inf.
      const t = pickT();
      const o = Number(t.offset);
      if (o >= m.data.length) return 'nothing';
      const dv = new DataView(m.data.buffer, m.data.byteOffset, m.data.byteLength);
      const n = Math.min(rng.pick([1, 4, 64]), Math.floor((m.data.length - o) / 4));
      const kind = rng.pick(['nan', 'inf', 'huge', 'denormal']);
      for (let i = 0; i < n; i++) {
        const at = o + 4 * rng.int(Math.max(1, Math.min(n * 4, (m.data.length - o) / 4)));
        if (at + 4 > m.data.length) continue;
        if (t.type === GGML_TYPE.F32) dv.setFloat32(at, kind === 'nan' ? NaN : kind === 'inf' ? Infinity : kind === 'huge' ? 3e38 : 1e-40, true);
        else dv.setUint16(at, kind === 'nan' ? 0x7e00 : kind === 'inf' ? 0x7c00 : kind === 'huge' ? 0x7bff : 0x0001, true); // f16 (also Q8_0/Q4_0 block scales at block starts)
      }
      return `${kind} values in ${dec.decode(t.name)}`;
    }
    case 'counts':
      if (rng.chance(0.5)) m.nTensors = BigInt(ts.length) + BigInt(rng.pick([-1, 1, 1000]));
      else m.nKv = BigInt(m.kvs.length) + BigInt(rng.pick([-1, 1, 1000]));
      return 'wrong count';
    default:
      m.version = rng.pick([0, 1, 2, 4, 0xffffffff]);
      return `version ${m.version}`;
  }
}
