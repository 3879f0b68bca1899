/**
 * Format-agnostic mutations: bytes (bit flips, interesting integers, truncation, splicing, chunk
 * duplication/deletion), integer fields found by a structure parser, and JSON documents (any node
 * replaced by a hostile value, deleted, duplicated, nudged).
 */
import { interestingInts, type Rng } from './rng.js';

/** A fixed-width little-endian integer field of a binary file, found by a structure parser. */
export interface IntField {
  off: number;
  width: 1 | 2 | 4 | 8;
  /** What it holds (count, strlen, dim, offset, type, ...) for the record of what was mutated. */
  what: string;
}

export function readUint(b: Uint8Array, off: number, width: number): bigint {
  let v = 0n;
  for (let i = width - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[off + i] ?? 0);
  return v;
}

export function writeUint(b: Uint8Array, off: number, width: number, v: bigint): void {
  const mask = (1n << BigInt(width * 8)) - 1n;
  let x = ((v % (mask + 1n)) + (mask + 1n)) & mask;
  for (let i = 0; i < width && off + i < b.length; i++) {
    b[off + i] = Number(x & 0xffn);
    x >>= 8n;
  }
}

/** One integer field set to an interesting value, nudged, doubled, halved or randomised. */
export function mutateIntField(b: Uint8Array, f: IntField, rng: Rng): string {
  const old = readUint(b, f.off, f.width);
  const max = (1n << BigInt(f.width * 8)) - 1n;
  const v = rng.weighted<() => bigint>([
    [5, () => rng.pick(interestingInts(f.width))],
    [4, () => old + BigInt(rng.range(-16, 16))],
    [1, () => old * 2n],
    [1, () => old / 2n],
    [1, () => old + (1n << BigInt(rng.int(f.width * 8)))],
    [1, () => BigInt(rng.int(2 ** 32)) & max],
  ])();
  writeUint(b, f.off, f.width, v);
  return `${f.what}@${f.off}: ${old} -> ${readUint(b, f.off, f.width)}`;
}

/** The classic byte mutations; returns the new buffer and what was done. */
export function mutateBytes(src: Uint8Array, rng: Rng, others: Uint8Array[] = [], hot?: [number, number]): [Uint8Array, string] {
  let b = new Uint8Array(src);
  const at = () => (hot && rng.chance(0.7) ? hot[0] + rng.int(Math.max(1, hot[1] - hot[0])) : rng.int(Math.max(1, b.length)));
  const op = rng.weighted<string>([[4, 'flip'], [3, 'int'], [2, 'byte'], [2, 'truncate'], [1, 'splice'], [1, 'dup'], [1, 'delete'], [1, 'insert']]);
  switch (op) {
    case 'flip': {
      const n = rng.pick([1, 1, 2, 4, 8]);
      for (let i = 0; i < n && b.length; i++) {
        const p = at();
        b[p]! ^= 1 << rng.int(8);
      }
      return [b, `flip ${n} bit(s)`];
    }
    case 'int': {
      const width = rng.pick([1, 2, 4, 8] as const);
      const p = Math.max(0, Math.min(at(), b.length - width));
      const f: IntField = { off: p, width, what: `u${width * 8}` };
      return [b, mutateIntField(b, f, rng)];
    }
    case 'byte': {
      const p = at();
      if (p < b.length) b[p] = rng.pick([0, 0xff, 0x7f, 0x80, rng.int(256)]);
      return [b, `byte@${p}`];
    }
    case 'truncate': {
      const n = rng.chance(0.5) ? rng.int(b.length + 1) : Math.max(0, b.length - 1 - rng.int(64));
      return [b.subarray(0, n), `truncate to ${n}`];
    }
    case 'splice': {
      const o = others.length ? rng.pick(others) : src;
      const i = rng.int(b.length + 1), j = rng.int(o.length + 1);
      const out = new Uint8Array(i + o.length - j);
      out.set(b.subarray(0, i));
      out.set(o.subarray(j), i);
      return [out, `splice ${i} + other@${j}`];
    }
    case 'dup': {
      const i = at(), n = Math.min(rng.pick([1, 4, 8, 16, 64, 512]), b.length - i);
      const out = new Uint8Array(b.length + Math.max(0, n));
      out.set(b.subarray(0, i + n));
      out.set(b.subarray(i), i + n);
      return [out, `dup ${n}@${i}`];
    }
    case 'delete': {
      const i = at(), n = rng.pick([1, 4, 8, 16, 64]);
      const out = new Uint8Array(Math.max(0, b.length - n));
      out.set(b.subarray(0, i));
      out.set(b.subarray(Math.min(b.length, i + n)), i);
      return [out, `delete ${n}@${i}`];
    }
    default: {
      const i = at(), n = rng.pick([1, 4, 8, 32]);
      const out = new Uint8Array(b.length + n);
      out.set(b.subarray(0, i));
      for (let k = 0; k < n; k++) out[i + k] = rng.int(256);
      out.set(b.subarray(i), i + n);
      b = out;
      return [b, `insert ${n}@${i}`];
    }
  }
}

// ---- JSON -----------------------------------------------------------------------------------

type J = unknown;

function hostileValue(rng: Rng, like?: J): J {
  return rng.weighted<() => J>([
    [2, () => null],
    [1, () => rng.chance(0.5)],
    [3, () => rng.pick([-1, 0, 1, 2, 0.5, -0.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e308, -1e308, 1e-310, 16777216, 16777215])],
    [2, () => rng.pick(['', ' ', 'x', '\u0000', '\ud800', '<s>', '</s>', '<unk>', '▁', 'Ġ', '[UNK]', '<0x0A>', 'a b', 'a b c', 'é', '🙂'])],
    [1, () => 'A'.repeat(rng.pick([256, 4096, 65536]))],
    [1, () => []],
    [1, () => ({})],
    [1, () => nest(rng.pick([8, 64, 400, 1000]))],
    [1, () => (typeof like === 'number' ? -like : typeof like === 'string' ? like + like : like)],
  ])();
}

function nest(depth: number): J {
  let v: J = 1;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

interface Slot {
  parent: J[] | Record<string, J> | null;
  key: number | string;
  value: J;
}

function slots(root: J, limit = 20000): Slot[] {
  const out: Slot[] = [{ parent: null, key: 0, value: root }];
  for (let i = 0; i < out.length && out.length < limit; i++) {
    const v = out[i]!.value;
    if (Array.isArray(v)) v.forEach((x, k) => out.push({ parent: v, key: k, value: x }));
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push({ parent: v as Record<string, J>, key: k, value: x });
  }
  return out;
}

/** One structural mutation of a parsed JSON document (mutates in place; returns the root and a note). */
export function mutateJson(root: J, rng: Rng, focus?: (path: Slot) => boolean): [J, string] {
  let all = slots(root);
  if (focus && rng.chance(0.6)) {
    const f = all.filter(focus);
    if (f.length) all = f;
  }
  const s = rng.pick(all);
  const set = (v: J) => {
    if (s.parent === null) root = v;
    else (s.parent as Record<string, J>)[s.key as string] = v;
  };
  const op = rng.weighted<string>([[4, 'replace'], [2, 'delete'], [2, 'nudge'], [1, 'dup'], [1, 'swap'], [1, 'grow'], [1, 'empty']]);
  const where = `${String(s.key)}`;
  switch (op) {
    case 'delete':
      if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
      else if (s.parent) delete (s.parent as Record<string, J>)[s.key as string];
      return [root, `delete ${where}`];
    case 'nudge':
      if (typeof s.value === 'number') set(rng.pick([s.value + 1, s.value - 1, s.value * 2, -s.value, s.value + 0.5, s.value * 1e6]));
      else if (typeof s.value === 'string') set(rng.chance(0.5) ? s.value.slice(0, rng.int(s.value.length + 1)) : s.value + rng.pick(['\ud800', ' ', 'x', s.value]));
      else set(hostileValue(rng, s.value));
      return [root, `nudge ${where}`];
    case 'dup':
      if (Array.isArray(s.parent)) s.parent.splice(rng.int(s.parent.length + 1), 0, structuredClone(s.value));
      else if (s.parent) (s.parent as Record<string, J>)[`${String(s.key)}_${rng.int(9)}`] = structuredClone(s.value);
      return [root, `dup ${where}`];
    case 'swap': {
      const o = rng.pick(all);
      set(structuredClone(o.value));
      return [root, `copy ${String(o.key)} over ${where}`];
    }
    case 'grow':
      if (Array.isArray(s.value) && s.value.length) {
        const n = rng.pick([10, 100, 5000]);
        const src = s.value;
        for (let i = 0; i < n && src.length < 200000; i++) src.push(structuredClone(src[rng.int(src.length)]));
        return [root, `grow ${where} by ${n}`];
      }
      set(hostileValue(rng, s.value));
      return [root, `replace ${where}`];
    case 'empty':
      set(Array.isArray(s.value) ? [] : s.value && typeof s.value === 'object' ? {} : '');
      return [root, `empty ${where}`];
    default:
      set(hostileValue(rng, s.value));
      return [root, `replace ${where}`];
  }
}

/** Strings that stress tokenizers: odd Unicode, special-token texts, long runs. */
export function hostileText(rng: Rng): string {
  const parts = [
    'Once upon a time', ' ', '  ', '\n', '\n\n', '\t', '\r\n', '\u0000', '\ud800', '\udc00', '\ud83d', '🙂', '👨‍👩‍👧', 'é', 'e\u0301', 'ﬁ', 'İ', 'ß',
    '中文', 'العربية', '\u200b', '\u202e', '\ufeff', '\uffff', '<s>', '</s>', '<unk>', '<|im_start|>', '<|im_end|>', '<|endoftext|>', '[CLS]', '[SEP]',
    '<0x0A>', '▁', 'Ġ', '\'s', "'ll", '123456789', '3.14', '$$$', '```', '<|', '|>', '{{', '}}', '{%', '%}', 'Hello world', 'HELLO', 'hello',
  ];
  let s = '';
  const n = rng.range(0, 24);
  for (let i = 0; i < n; i++) {
    if (rng.chance(0.06)) s += rng.pick(['a', ' ', '\n', 'ab', '🙂', '\u0301', '.']).repeat(rng.pick([100, 1000, 20000]));
    else if (rng.chance(0.15)) s += String.fromCharCode(rng.int(0x10000));
    else if (rng.chance(0.05)) s += String.fromCodePoint(rng.int(0x110000));
    else s += rng.pick(parts);
  }
  return s;
}
