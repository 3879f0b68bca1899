// The embedding lookup on Q8_0 / Q4_0 tables (only the looked-up rows are dequantised, as
// llama.cpp's get_rows) against the whole table dequantised to f32 first, bit for bit, on the js
// and cpu backends; its argument checks; and GGUF models whose quantised token_embd stays a
// mapped, packed tensor giving the same logits as the load that dequantised it.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/backend/index.js';
import { loadNative } from '../src/backend/cpu/native.js';
import { dequantize, loadTensor, readGGUF, writeGGUF, type GGUFFile } from '../src/formats/gguf.js';
import { llamaGGUFMetadata, syntheticSpmVocab } from '../src/formats/llama-gguf.js';
import { isMappedBytes } from '../src/formats/tensor-data.js';
import { LlamaModel, type LlamaWeights } from '../src/model/llama.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from '../src/model/load-gguf.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { Tensor } from '../src/tensor/tensor.js';
import { nativeAvailable, randn, rng } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const backends = nativeAvailable ? (['js', 'cpu'] as const) : (['js'] as const);
const BLOCK = { q8_0: 34, q4_0: 18 } as const;
const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** IEEE half from its definition (independent of src/tensor/half.ts). */
function f16Ref(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  if (e === 0) return s * m * 2 ** -24;
  return s * 2 ** (e - 15) * (1 + m / 1024);
}

/** The whole table dequantised from GGML's block definition (ggml-common.h), in float64 then rounded to f32. */
function dequantRef(dt: 'q8_0' | 'q4_0', bytes: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n), B = BLOCK[dt];
  for (let b = 0; b < n / 32; b++) {
    const o = b * B, d = f16Ref(bytes[o]! | (bytes[o + 1]! << 8));
    for (let j = 0; j < 32; j++) {
      const q = dt === 'q8_0' ? (bytes[o + 2 + j]! << 24) >> 24 : j < 16 ? (bytes[o + 2 + j]! & 15) - 8 : (bytes[o + 2 + j - 16]! >> 4) - 8;
      out[b * 32 + j] = d * q;
    }
  }
  return out;
}

/** Random blocks: every int8 / nibble value and finite f16 scales, zero and subnormal ones included. */
function randomBlocks(dt: 'q8_0' | 'q4_0', vocab: number, dim: number, r: () => number): Uint8Array {
  const B = BLOCK[dt], bytes = new Uint8Array((vocab * dim / 32) * B);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(r() * 256);
  for (let o = 0; o < bytes.length; o += B) {
    const pick = r();
    const h = pick < 0.05 ? 0 : pick < 0.1 ? Math.floor(r() * 0x3ff) : Math.floor(r() * 0x7bff); // finite: exponent < 31
    const s = (r() < 0.5 ? 0x8000 : 0) | h;
    bytes[o] = s & 0xff;
    bytes[o + 1] = s >> 8;
  }
  return bytes;
}

describe.each(backends)('embedding from Q8_0 / Q4_0 tables on %s', (name) => {
  const be = getBackend(name);

  it.each([
    ['q8_0', 7, 32], ['q4_0', 7, 32], ['q8_0', 50, 96], ['q4_0', 50, 96], ['q8_0', 300, 256], ['q4_0', 300, 256],
  ] as const)('%s vocab %i dim %i equals the rows of the dequantised table, bit for bit', (dt, vocab, dim) => {
    const r = rng(vocab * dim + (dt === 'q8_0' ? 1 : 2));
    const blocks = randomBlocks(dt, vocab, dim, r);
    const table = new Tensor(dt, [vocab, dim], blocks);
    const ids = Int32Array.from({ length: 60 }, (_, i) => (i === 0 ? 0 : i === 1 ? vocab - 1 : Math.floor(r() * vocab)));
    const idsT = new Tensor('i32', [6, 10], ids);
    const out = be.embedding(table, idsT);
    expect(out.shape).toEqual([6, 10, dim]);
    const full = dequantize(dt === 'q8_0' ? 'Q8_0' : 'Q4_0', blocks, vocab * dim); // what the loader made before
    const ref = dequantRef(dt, blocks, vocab * dim);
    expect(bits(full)).toEqual(bits(ref));
    const want = new Float32Array(ids.length * dim);
    ids.forEach((id, i) => want.set(full.subarray(id * dim, (id + 1) * dim), i * dim));
    expect(bits(out.data)).toEqual(bits(want));
    // The same lookup through an f32 table dequantised first, and into a given output.
    const viaF32 = be.embedding(new Tensor('f32', [vocab, dim], full), idsT);
    expect(bits(viaF32.data)).toEqual(bits(out.data));
    const given = Tensor.zeros('f32', [6, 10, dim]);
    expect(be.embedding(table, idsT, given)).toBe(given);
    expect(bits(given.data)).toEqual(bits(want));
    if (name === 'cpu') {
      // The loader's native dequantisation (gguf.ts dequantizeBytes) gives the same table.
      const nat = new Float32Array(vocab * dim);
      loadNative()!.dequantizeBlocks(blocks, dt === 'q8_0' ? 6 : 7, nat);
      expect(bits(nat)).toEqual(bits(full));
    }
  });

  it('an id outside the vocabulary, a table of the wrong rank and an overlapping output are errors', () => {
    const r = rng(5);
    for (const dt of ['q8_0', 'q4_0'] as const) {
      const table = new Tensor(dt, [4, 64], randomBlocks(dt, 4, 64, r));
      expect(() => be.embedding(table, Tensor.from('i32', [3], [0, 4, 1]))).toThrow(new RangeError('Expected ids in [0, 4) but received 4 at index 1'));
      expect(() => be.embedding(table, Tensor.from('i32', [1], [-1]))).toThrow(new RangeError('Expected ids in [0, 4) but received -1 at index 0'));
      expect(() => be.embedding(table.reshape([256]), Tensor.from('i32', [1], [0]))).toThrow(new RangeError('Expected a rank-2 tensor for table but received shape [256]'));
      // out sharing the table's bytes.
      const buf = new ArrayBuffer(4 * 64 * BLOCK[dt] / 32 + 4 * 64 * 2);
      const shared = new Tensor(dt, [4, 64], new Uint8Array(buf, 0, 4 * 64 * BLOCK[dt] / 32));
      const out = new Tensor('f32', [2, 64], new Float32Array(buf, 0, 128));
      expect(() => be.embedding(shared, Tensor.from('i32', [2], [0, 1]), out)).toThrow(/out not to overlap an input of this op but it shares memory with table in embedding/);
    }
  });
});

describe('Q8_0 / Q4_0 tables need whole blocks per row', () => {
  it('a dim that is not a multiple of 32 is refused when the tensor is made', () => {
    expect(() => new Tensor('q8_0', [2, 48], new Uint8Array(3 * 34))).toThrow(/last dimension of a q8_0 tensor to be a multiple of 32 but received \[2, 48\]/);
    expect(() => Tensor.from('q4_0', [4, 40], new Float32Array(160))).toThrow(/last dimension of a q4_0 tensor to be a multiple of 32 but received \[4, 40\]/);
  });

  it.runIf(nativeAvailable)('the native op re-checks the dim, the table length, the ids and aliasing', () => {
    const n = loadNative()!;
    const t8 = new Uint8Array(3 * 2 * 34), t4 = new Uint8Array(3 * 2 * 18);
    expect(() => n.embedding(new Uint8Array(3 * 34 * 2), 6, 4, 48, new Int32Array([0]), new Float32Array(48))).toThrow('embedding: dim (48) of a q8_0 table must be a multiple of 32');
    expect(() => n.embedding(t4, 7, 3, 40, new Int32Array([0]), new Float32Array(40))).toThrow('embedding: dim (40) of a q4_0 table must be a multiple of 32');
    expect(() => n.embedding(t8, 6, 3, 64, new Int32Array([0]), new Float32Array(64))).not.toThrow();
    expect(() => n.embedding(t8, 7, 3, 64, new Int32Array([0]), new Float32Array(64))).toThrow("embedding: 'table' has 204 elements, expected 108");
    expect(() => n.embedding(t4, 7, 4, 64, new Int32Array([0]), new Float32Array(64))).toThrow("embedding: 'table' has 108 elements, expected 144");
    expect(() => n.embedding(new Float32Array(192), 6, 3, 64, new Int32Array([0]), new Float32Array(64))).toThrow("embedding: expected a Uint8Array for 'table'");
    expect(() => n.embedding(t4, 7, 3, 64, new Int32Array([1, 3]), new Float32Array(128))).toThrow(/embedding: id 3 at index 1 is outside \[0, 3\)/);
    const buf = new ArrayBuffer(108 + 256);
    expect(() => n.embedding(new Uint8Array(buf, 0, 108), 7, 3, 64, new Int32Array([0]), new Float32Array(buf, 0, 64))).toThrow(/embedding: .*out.*table|embedding: .*table.*out/);
  });
});

// ---- models ----------------------------------------------------------------------------------

function logits(c: ReturnType<typeof llamaConfigFromGGUF>, w: LlamaWeights, name: 'js' | 'cpu', tokens: number[]): Float32Array {
  const model = new LlamaModel(c, w, getBackend(name));
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 8, prefixCaching: false });
  cache.add(0);
  return forwardTokens(model, cache, 0, tokens).data.slice();
}

/** The weights with token_embd dequantised to f32 at load, as the loader did before (the output stays as loaded). */
function withF32Embedding(g: GGUFFile, w: LlamaWeights): LlamaWeights {
  const info = g.tensors.find((t) => t.name === 'token_embd.weight')!;
  return { ...w, tokEmbd: loadTensor(g, info, 'f32') };
}

describe.each(['Q4_0', 'Q8_0'] as const)('stories260K %s', (type) => {
  const file = path.join(root, `test/fixtures/stories260K/stories260K-${type}.gguf`);
  const g = readGGUF(file);
  const c = llamaConfigFromGGUF(g);
  const w = llamaWeightsFromGGUF(g, c);
  const tokens = [1, 403, 407, 261, 378, 90, 511, 0, 2];

  it('keeps token_embd packed and mapped', () => {
    expect(w.tokEmbd.dtype).toBe(type.toLowerCase());
    expect(w.tokEmbd.shape).toEqual([512, 64]);
    expect(isMappedBytes(w.tokEmbd.data)).toBe(nativeAvailable);
    expect(w.output).not.toBe(w.tokEmbd);
  });

  it.each(backends)('gives the logits of the load that dequantised the embedding, exactly (%s)', (name) => {
    const got = logits(c, w, name, tokens);
    const ref = logits(c, withF32Embedding(g, w), name, tokens);
    expect(got.every(Number.isFinite)).toBe(true);
    expect(bits(got)).toEqual(bits(ref));
  });

  it("quantized 'f16' / 'f32' still dequantise it", () => {
    expect(llamaWeightsFromGGUF(g, c, { quantized: 'f32' }).tokEmbd.dtype).toBe('f32');
    expect(llamaWeightsFromGGUF(g, c, { quantized: 'f16' }).tokEmbd.dtype).toBe('f16');
  });
});

describe.each(['Q4_0', 'Q8_0'] as const)('a %s model with a tied output (no output.weight)', (type) => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'tessera-embd-'));
  const r = rng(type === 'Q4_0' ? 41 : 42);
  const s = { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 96, contextLength: 64 };
  const hd = s.dim / s.heads;
  const m = (name: string, rows: number, cols: number) => ({ name, shape: [rows, cols], type, data: randn(rows * cols, r, 0.2) });
  const norm = (name: string) => ({ name, shape: [s.dim], type: 'F32' as const, data: Float32Array.from(randn(s.dim, r), (x) => 1 + 0.1 * x) });
  const tensors = [m('token_embd.weight', 300, s.dim), norm('output_norm.weight')];
  for (let l = 0; l < s.layers; l++)
    tensors.push(norm(`blk.${l}.attn_norm.weight`), norm(`blk.${l}.ffn_norm.weight`), m(`blk.${l}.attn_q.weight`, s.dim, s.dim),
      m(`blk.${l}.attn_k.weight`, s.kvHeads * hd, s.dim), m(`blk.${l}.attn_v.weight`, s.kvHeads * hd, s.dim), m(`blk.${l}.attn_output.weight`, s.dim, s.dim),
      m(`blk.${l}.ffn_gate.weight`, s.ffn, s.dim), m(`blk.${l}.ffn_up.weight`, s.ffn, s.dim), m(`blk.${l}.ffn_down.weight`, s.dim, s.ffn));
  const file = path.join(tmp, `tied-${type}.gguf`);
  writeGGUF(file, llamaGGUFMetadata(s, syntheticSpmVocab(300), type), tensors);
  const g = readGGUF(file);
  const c = llamaConfigFromGGUF(g);
  const w = llamaWeightsFromGGUF(g, c);

  it('uses one packed, mapped tensor for the lookup and the LM head', () => {
    expect(w.output).toBe(w.tokEmbd);
    expect(w.tokEmbd.dtype).toBe(type.toLowerCase());
    expect(isMappedBytes(w.tokEmbd.data)).toBe(nativeAvailable);
  });

  it.each(backends)('gives the logits of the load that dequantised the embedding (LM head packed), exactly (%s)', (name) => {
    const tokens = [1, 17, 200, 5, 299, 0];
    const got = logits(c, w, name, tokens);
    const ref = logits(c, withF32Embedding(g, w), name, tokens);
    expect(got.every(Number.isFinite) && got.some((v) => v !== 0)).toBe(true);
    expect(bits(got)).toEqual(bits(ref));
  });
});
