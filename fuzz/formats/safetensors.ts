/**
 * safetensors at the structure level: the header-length field, the JSON header (entries' dtype,
 * shape, data_offsets) and the data; plus the sharded index's weight_map.
 */
import { concat } from './gguf.js';
import { mutateJson, type IntField } from '../mutate.js';
import { interestingInts, type Rng } from '../rng.js';

type Entry = { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
export interface StModel {
  header: Record<string, unknown>;
  data: Uint8Array;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function parseSafetensors(b: Uint8Array): StModel | null {
  if (b.length < 8) return null;
  const n = Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true));
  if (n > b.length - 8) return null;
  try {
    const header = JSON.parse(dec.decode(b.subarray(8, 8 + n)));
    if (!header || typeof header !== 'object' || Array.isArray(header)) return null;
    return { header, data: b.slice(8 + n) };
  } catch {
    return null;
  }
}

export function writeSafetensorsRaw(m: StModel, lengthOverride?: bigint): Uint8Array {
  let h = JSON.stringify(m.header);
  h += ' '.repeat((8 - (enc.encode(h).length % 8)) % 8);
  const hb = enc.encode(h);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt.asUintN(64, lengthOverride ?? BigInt(hb.length)), true);
  return concat([len, hb, m.data]);
}

export const HEADER_LENGTH_FIELD: IntField = { off: 0, width: 8, what: 'header length' };

const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL', 'F8_E4M3', 'Q4_0', '', 'f32'];

/** One structural edit of a parsed safetensors file; returns a description. */
export function mutateSt(m: StModel, rng: Rng, requiredNames: string[] = []): string {
  const names = Object.keys(m.header).filter((k) => k !== '__metadata__');
  if (!names.length || rng.chance(0.15)) {
    const [h, what] = mutateJson(m.header, rng);
    m.header = h as Record<string, unknown>;
    return `json ${what}`;
  }
  const name = rng.pick(names);
  const e = m.header[name] as Entry;
  if (!e || typeof e !== 'object') return 'nothing';
  const shape = Array.isArray(e.shape) ? (e.shape as number[]) : [];
  const offs = Array.isArray(e.data_offsets) ? (e.data_offsets as number[]) : [0, 0];
  const op = rng.weighted<string>([[2, 'dtype'], [3, 'shape'], [3, 'offsets'], [1, 'drop'], [1, 'rename'], [1, 'metadata'], [3, 'data'], [1, 'consistent-shape']]);
  switch (op) {
    case 'dtype':
      e.dtype = rng.pick(DTYPES);
      return `dtype of ${name} -> ${String(e.dtype)}`;
    case 'shape': {
      const s = [...shape];
      const d = rng.int(Math.max(1, s.length));
      rng.weighted<() => void>([
        [3, () => (s[d] = rng.pick([0, 1, 2, -1, 1.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, (s[d] ?? 1) + 1, (s[d] ?? 1) * 2]))],
        [1, () => s.push(1)],
        [1, () => s.pop()],
        [1, () => s.reverse()],
        [1, () => s.splice(0, s.length, ...Array(9).fill(1))],
      ])();
      e.shape = s;
      return `shape of ${name} -> ${JSON.stringify(s)}`;
    }
    case 'consistent-shape': {
      // A shape that matches its byte span but not what the model expects (transposed, flattened).
      const n = shape.reduce((a, b) => a * b, 1);
      e.shape = rng.pick([[n], [...shape].reverse(), [1, ...shape], shape.length === 2 ? [shape[0]! * 2, shape[1]! / 2] : [n, 1]]);
      return `reshape ${name} -> ${JSON.stringify(e.shape)}`;
    }
    case 'offsets': {
      const o = [...offs];
      const other = m.header[rng.pick(names)] as Entry;
      rng.weighted<() => void>([
        [2, () => (o[rng.int(2)] = Number(rng.pick(interestingInts(8)).toString().length > 15 ? 2 ** 53 : rng.pick(interestingInts(4))))],
        [2, () => Array.isArray(other?.data_offsets) && o.splice(0, 2, ...(other.data_offsets as number[]))],
        [1, () => o.reverse()],
        [2, () => (o[0] = o[0]! + rng.range(-8, 8), o[1] = o[1]! + rng.range(-8, 8))],
        [1, () => o.push(0)],
        [1, () => (o[1] = m.data.length + rng.range(0, 8), o[0] = o[1] - (offs[1]! - offs[0]!))],
      ])();
      e.data_offsets = o;
      return `data_offsets of ${name} -> ${JSON.stringify(o)}`;
    }
    case 'drop':
      delete m.header[name];
      return `drop ${name}`;
    case 'rename': {
      const to = rng.chance(0.6) && requiredNames.length ? rng.pick(requiredNames) : rng.pick(names);
      if (to === name) return 'nothing';
      m.header[to] = e;
      delete m.header[name];
      return `rename ${name} -> ${to}`;
    }
    case 'metadata':
      m.header.__metadata__ = rng.pick([null, 1, 'x', [], { format: 'pt' }, { a: { b: 1 } }, { format: 1 }]);
      return 'metadata';
    default: {
      const [b] = offs as [number, number];
      if (!(b >= 0) || b >= m.data.length) return 'nothing';
      const dv = new DataView(m.data.buffer, m.data.byteOffset, m.data.byteLength);
      const kind = rng.pick(['nan', 'inf', 'huge', 'int']);
      const n = rng.pick([1, 8, 64]);
      const span = Math.max(4, (offs[1] ?? b) - b);
      for (let i = 0; i < n; i++) {
        const at = b + 4 * rng.int(Math.floor(span / 4));
        if (at + 4 > m.data.length) continue;
        if (e.dtype === 'F32') dv.setFloat32(at, kind === 'nan' ? NaN : kind === 'inf' ? -Infinity : kind === 'huge' ? 3e38 : 1, true);
        else if (e.dtype === 'F16' || e.dtype === 'BF16') dv.setUint16(at, kind === 'nan' ? (e.dtype === 'F16' ? 0x7e00 : 0x7fc0) : kind === 'inf' ? (e.dtype === 'F16' ? 0x7c00 : 0x7f80) : 0x7bff, true);
        else dv.setInt32(at, rng.pick([-1, 2 ** 31 - 1, -(2 ** 31), 255, 16, 1 << 20]), true); // I32: qweight / qzeros / g_idx
      }
      return `${kind} values in ${name}`;
    }
  }
}

/** One edit of model.safetensors.index.json's weight_map. */
export function mutateIndex(idx: Record<string, unknown>, rng: Rng, shards: string[]): string {
  const wm = idx.weight_map as Record<string, unknown> | undefined;
  if (!wm || typeof wm !== 'object' || rng.chance(0.2)) {
    const [, what] = mutateJson(idx, rng);
    return `json ${what}`;
  }
  const names = Object.keys(wm);
  if (!names.length) return 'nothing';
  const name = rng.pick(names);
  rng.weighted<() => void>([
    [3, () => (wm[name] = rng.pick([...shards, 'missing.safetensors', '../model.safetensors', '/etc/passwd', '', '.', 'config.json', 'tokenizer.json', 1, null]))],
    [2, () => delete wm[name]],
    [1, () => (wm[`${name}.extra`] = wm[name])],
    [1, () => (wm[rng.pick(['model.embed_tokens.weight', 'lm_head.weight', 'model.norm.weight'])] = rng.pick(shards))],
  ])();
  return `weight_map ${name}`;
}
