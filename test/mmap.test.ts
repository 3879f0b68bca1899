// Tensor data mapped in place (src/formats/tensor-data.ts, native/addon/bind_mmap.cpp) against
// the values the writers wrote and against the read path (TESSERA_NO_MMAP=1): the same bytes for
// every type and layout, views rather than copies where the offset allows, copy-on-write
// isolation, files replaced or changed under a reader, and the native Q4_0 repack and
// dequantisation against the TS loops.
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/backend/index.js';
import { loadNative } from '../src/backend/cpu/native.js';
import { ModelFileError } from '../src/formats/errors.js';
import { dequantize, GGUF_VALUE, loadTensor, q4_0IntWeight, quantizeQ4_0, quantizeQ8_0, readGGUF, readTensorBytes, writeGGUF, type GGUFTensorInput } from '../src/formats/gguf.js';
import { llamaGGUFMetadata, syntheticSpmVocab } from '../src/formats/llama-gguf.js';
import { loadSafetensor, readSafetensorsHeader, writeSafetensors } from '../src/formats/safetensors.js';
import { isMappedBytes } from '../src/formats/tensor-data.js';
import { LlamaModel } from '../src/model/llama.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from '../src/model/load-gguf.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { IntWeight } from '../src/tensor/int-weight.js';
import { Tensor } from '../src/tensor/tensor.js';
import { nativeAvailable, randn, rng, writeSafetensors as writeRawSafetensors } from './helpers.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'tessera-mmap-'));

/** Runs fn with tensor data read instead of mapped. */
function readPath<T>(fn: () => T): T {
  const old = process.env.TESSERA_NO_MMAP;
  process.env.TESSERA_NO_MMAP = '1';
  try {
    return fn();
  } finally {
    if (old === undefined) delete process.env.TESSERA_NO_MMAP;
    else process.env.TESSERA_NO_MMAP = old;
  }
}

const bytesOf = (t: Tensor) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
const halfBits = (n: number, r: () => number) => Uint16Array.from({ length: n }, () => Math.floor(r() * 0x7bff)); // finite f16/bf16 patterns

/** Tensors of every GGUF type with the bytes each must read back as (the writer's own encoding). */
function everyType(r: () => number) {
  const f = randn(5 * 64, r);
  const h = halfBits(3 * 33, r), b = halfBits(7 * 5, r);
  const tensors: GGUFTensorInput[] = [
    { name: 'q4', shape: [1, 32], type: 'Q4_0', data: randn(32, r) }, // 18 bytes: puts what follows off a 4-byte boundary at alignment 1
    { name: 'f32', shape: [5, 64], type: 'F32', data: f },
    { name: 'f16', shape: [3, 33], type: 'F16', data: h },
    { name: 'q8', shape: [2, 64], type: 'Q8_0', data: randn(128, r) },
    { name: 'bf16', shape: [7, 5], type: 'BF16', data: b },
    { name: 'q4b', shape: [3, 64], type: 'Q4_0', data: randn(192, r) },
  ];
  const expected = new Map<string, Uint8Array>(tensors.map((t) => [t.name,
    t.type === 'Q4_0' ? quantizeQ4_0(t.data as Float32Array) : t.type === 'Q8_0' ? quantizeQ8_0(t.data as Float32Array)
      : new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)]));
  return { tensors, expected };
}

describe('mapped tensor data', () => {
  it.each([32, 1])('every type reads back the written bytes, mapped or read, at alignment %i', (alignment) => {
    const { tensors, expected } = everyType(rng(alignment));
    const file = path.join(tmp, `types-${alignment}.gguf`);
    // Pad the header so the data starts on a 4-byte boundary: at alignment 1 the tensors after the
    // 18-byte Q4_0 one then sit 2 bytes off (F32 copied, 2-byte types mapped).
    const pad = (n: number) => [{ key: 'pad', type: GGUF_VALUE.STRING, value: 'x'.repeat(n) }];
    writeGGUF(file, pad(0), tensors, alignment);
    writeGGUF(file, pad((4 - (readGGUF(file).dataOffset % 4)) % 4), tensors, alignment);
    const g = readGGUF(file);
    expect(g.dataOffset % 4).toBe(0);
    let mapped = 0;
    for (const t of g.tensors) {
      const want = expected.get(t.name)!;
      const m = readTensorBytes(g, t);
      const rd = readPath(() => readTensorBytes(g, t));
      expect(Array.from(m), t.name).toEqual(Array.from(want));
      expect(Array.from(rd), t.name).toEqual(Array.from(want));
      expect(isMappedBytes(rd)).toBe(false);
      // Mapped exactly when the addon is built and the offset suits the view type (else copied).
      const viewAlign = t.type === 'F32' ? 4 : 2;
      expect(isMappedBytes(m), `${t.name} at offset ${t.offset}`).toBe(nativeAvailable && t.offset % viewAlign === 0);
      if (isMappedBytes(m)) mapped++;
      // The tensor as tessera uses it: views over those bytes.
      const lt = loadTensor(g, t, 'packed');
      expect(Array.from(bytesOf(lt)), t.name).toEqual(Array.from(want));
      if (t.type === 'F32') expect(Array.from(lt.data)).toEqual(Array.from(tensors[1]!.data));
    }
    if (nativeAvailable) expect(mapped).toBe(alignment === 32 ? g.tensors.length : g.tensors.length - 1);
    if (alignment === 1) expect(g.tensors.find((t) => t.name === 'f32')!.offset % 4).toBe(2);
  });

  it.skipIf(!nativeAvailable)('a mapped tensor is copy-on-write: writing it changes neither the file nor another load', () => {
    const file = path.join(tmp, 'cow.gguf');
    const data = randn(4 * 64, rng(5));
    writeGGUF(file, [], [{ name: 'w', shape: [4, 64], type: 'F32', data }]);
    const before = readFileSync(file);
    const g = readGGUF(file);
    const a = loadTensor(g, g.tensors[0]!);
    expect(isMappedBytes(a.data)).toBe(true);
    (a.data as Float32Array).fill(7);
    expect(Array.from(a.data.subarray(0, 3))).toEqual([7, 7, 7]);
    expect(readFileSync(file).equals(before)).toBe(true);
    expect(Array.from(loadTensor(g, g.tensors[0]!).data)).toEqual(Array.from(data));
  });

  it('a file replaced under a reader: mapped tensors keep their bytes, the stale header is refused', () => {
    const file = path.join(tmp, 'replaced.gguf');
    const r = rng(9);
    const v1 = randn(8 * 32, r), v2 = randn(8 * 32, r);
    writeGGUF(file, [], [{ name: 'w', shape: [8, 32], type: 'F32', data: v1 }]);
    const g1 = readGGUF(file);
    const t1 = loadTensor(g1, g1.tensors[0]!);
    writeGGUF(file, [], [{ name: 'w', shape: [8, 32], type: 'F32', data: v2 }]); // replaced by rename, not truncated
    expect(Array.from(t1.data)).toEqual(Array.from(v1));
    expect(() => loadTensor(g1, g1.tensors[0]!)).toThrow(/replaced.gguf: the file changed since its header was read \(reading tensor 'w'\)/);
    expect(() => readPath(() => loadTensor(g1, g1.tensors[0]!))).toThrow(ModelFileError);
    const g2 = readGGUF(file);
    expect(Array.from(loadTensor(g2, g2.tensors[0]!).data)).toEqual(Array.from(v2));
  });

  it('a file truncated after its header was read fails with a ModelFileError, mapped or read', () => {
    const file = path.join(tmp, 'shrunk.gguf');
    writeGGUF(file, [], [{ name: 'w', shape: [8, 32], type: 'F32', data: randn(8 * 32, rng(2)) }]);
    const g = readGGUF(file);
    writeFileSync(file, readFileSync(file).subarray(0, g.tensors[0]!.offset + 100));
    expect(() => loadTensor(g, g.tensors[0]!)).toThrow(/shrunk.gguf: the file changed since its header was read/);
  });

  it('native Q4_0 repack and Q8_0/Q4_0 dequantisation equal the TS loops bit for bit', () => {
    const r = rng(11);
    const N = 37, K = 96; // a partial last tile of 16 columns
    const file = path.join(tmp, 'quant.gguf');
    writeGGUF(file, [], [
      { name: 'q4', shape: [N, K], type: 'Q4_0', data: randn(N * K, r) },
      { name: 'q8', shape: [N, K], type: 'Q8_0', data: randn(N * K, r) },
    ]);
    const g = readGGUF(file);
    const [q4, q8] = g.tensors as [typeof g.tensors[0], typeof g.tensors[0]];
    const blocks = readTensorBytes(g, q4);
    const ts = IntWeight.fromQ4_0(readPath(() => readTensorBytes(g, q4)), N, K).parts; // the TS loop
    const fast = q4_0IntWeight(blocks, N, K).parts; // native where built; drops the mapped pages
    expect(Array.from(fast.qweight)).toEqual(Array.from(ts.qweight));
    expect(Array.from(fast.meta)).toEqual(Array.from(ts.meta));
    expect(Array.from(blocks)).toEqual(Array.from(readPath(() => readTensorBytes(g, q4)))); // still readable after the drop
    for (const t of [q4, q8]) {
      const ref = dequantize(t.type as 'Q4_0' | 'Q8_0', readPath(() => readTensorBytes(g, t)), t.elements);
      const got = loadTensor(g, t, 'f32').data as Float32Array;
      expect(got.length).toBe(ref.length);
      expect(got.every((v, i) => Object.is(v, ref[i])), t.type).toBe(true);
    }
  });

  it('a model\'s F16 weights are views of the file, and its logits equal the read path\'s', () => {
    const r = rng(21);
    const s = { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 96, contextLength: 64 };
    const vocab = syntheticSpmVocab(300);
    const hd = s.dim / s.heads;
    const m = (name: string, rows: number, cols: number) => ({ name, shape: [rows, cols], type: 'F16' as const, data: randn(rows * cols, r, 0.2) });
    const norm = (name: string) => ({ name, shape: [s.dim], type: 'F32' as const, data: Float32Array.from(randn(s.dim, r), (x) => 1 + 0.1 * x) });
    const tensors = [m('token_embd.weight', 300, s.dim), norm('output_norm.weight'), m('output.weight', 300, s.dim)];
    for (let l = 0; l < s.layers; l++)
      tensors.push(norm(`blk.${l}.attn_norm.weight`), norm(`blk.${l}.ffn_norm.weight`), m(`blk.${l}.attn_q.weight`, s.dim, s.dim),
        m(`blk.${l}.attn_k.weight`, s.kvHeads * hd, s.dim), m(`blk.${l}.attn_v.weight`, s.kvHeads * hd, s.dim), m(`blk.${l}.attn_output.weight`, s.dim, s.dim),
        m(`blk.${l}.ffn_gate.weight`, s.ffn, s.dim), m(`blk.${l}.ffn_up.weight`, s.ffn, s.dim), m(`blk.${l}.ffn_down.weight`, s.dim, s.ffn));
    const file = path.join(tmp, 'tiny-f16.gguf');
    writeGGUF(file, llamaGGUFMetadata(s, vocab, 'F16'), tensors);
    const logits = (g: ReturnType<typeof readGGUF>) => {
      const c = llamaConfigFromGGUF(g);
      const w = llamaWeightsFromGGUF(g, c);
      const model = new LlamaModel(c, w, getBackend('auto'));
      const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 8, prefixCaching: false });
      cache.add(0);
      return { w, out: forwardTokens(model, cache, 0, [1, 17, 200, 5, 299]).data.slice() };
    };
    const g = readGGUF(file);
    const mapped = logits(g);
    const read = readPath(() => logits(g));
    expect(mapped.out.every((v, i) => Object.is(v, read.out[i])) && mapped.out.some((v) => v !== 0)).toBe(true);
    const L = mapped.w.layers[0]!;
    for (const t of [mapped.w.tokEmbd, mapped.w.output, L.wq as Tensor, L.wDown as Tensor])
      expect(isMappedBytes(t.data), String(t)).toBe(nativeAvailable);
    expect(isMappedBytes((read.w.layers[0]!.wq as Tensor).data)).toBe(false);
  });
});

describe.runIf(nativeAvailable)('the native mapping and conversion ops guard memory themselves', () => {
  const n = loadNative()!;

  it('mapFileRange refuses ranges past the end of the file and what is not a file', () => {
    const file = path.join(tmp, 'range.bin');
    writeFileSync(file, Buffer.alloc(5000, 7));
    const fd = openSync(file, 'r');
    try {
      expect(new Uint8Array(n.mapFileRange(fd, 4999, 1))[0]).toBe(7);
      expect(() => n.mapFileRange(fd, 4000, 1001)).toThrow('mapFileRange: bytes [4000, 5001) are past the end of the file (5000 bytes)');
      expect(() => n.mapFileRange(fd, 0, 0)).toThrow(/mapFileRange: 'length' = 0 is outside \[1, /);
      expect(() => n.mapFileRange(fd, -1, 4)).toThrow(/mapFileRange: 'offset' = -1 is outside/);
    } finally {
      closeSync(fd);
    }
    const dfd = openSync(tmp, 'r');
    try {
      expect(() => n.mapFileRange(dfd, 0, 1)).toThrow('mapFileRange: not a regular file');
    } finally {
      closeSync(dfd);
    }
    expect(n.isMapped(new ArrayBuffer(8))).toBe(false);
    expect(n.discardMapped(new ArrayBuffer(8))).toBe(false);
    expect(() => n.isMapped(new Uint8Array(8) as never)).toThrow("isMapped: expected an ArrayBuffer for 'buffer'");
  });

  it('repackQ4_0 and dequantizeBlocks check lengths and refuse outputs over their inputs', () => {
    const N = 20, K = 64; // 2 tiles of 16 columns, 2 blocks per row
    const blocks = quantizeQ4_0(randn(N * K, rng(4)));
    const qweight = () => new Int32Array(2 * (K / 8) * 16), meta = () => new Uint16Array(2 * (K / 32) * 16);
    expect(() => n.repackQ4_0(blocks, N, K, qweight(), meta())).not.toThrow();
    expect(() => n.repackQ4_0(blocks.subarray(1), N, K, qweight(), meta())).toThrow(/repackQ4_0: 'blocks' has 719 elements, expected 720/);
    expect(() => n.repackQ4_0(blocks, N, 48, qweight(), meta())).toThrow('repackQ4_0: K = 48 is not a multiple of 32, as q4_0 weights need');
    const buf = new ArrayBuffer(qweight().byteLength + meta().byteLength);
    expect(() => n.repackQ4_0(blocks, N, K, new Int32Array(buf, 0, qweight().length), new Uint16Array(buf, 4, meta().length)))
      .toThrow("repackQ4_0: 'qweight' and 'meta' overlap in memory and both are written");
    const out = new Float32Array(N * K);
    expect(() => n.dequantizeBlocks(blocks, 7, out.subarray(32))).toThrow(/dequantizeBlocks: 'blocks' has 720 elements, expected 702/);
    expect(() => n.dequantizeBlocks(blocks, 1 as never, out)).toThrow('dequantizeBlocks: dtype f16 is not a block type (expected q8_0 or q4_0)');
    const shared = new Uint8Array(out.buffer, 0, blocks.length);
    shared.set(blocks);
    expect(() => n.dequantizeBlocks(shared, 7, out)).toThrow("dequantizeBlocks: output 'out' overlaps input 'blocks' in memory");
  });
});

describe('mapped safetensors', () => {
  it('tensors read back the written values, mapped when aligned and copied when not', () => {
    const r = rng(31);
    const f32 = new Tensor('f32', [3, 5], randn(15, r));
    const bf16 = new Tensor('bf16', [4], halfBits(4, r));
    const file = path.join(tmp, 'model.safetensors');
    writeSafetensors(file, [{ name: 'a', tensor: f32 }, { name: 'b', tensor: bf16 }]);
    const st = readSafetensorsHeader(file);
    for (const [name, t] of [['a', f32], ['b', bf16]] as const) {
      const m = loadSafetensor(st.tensors.get(name)!);
      expect(Array.from(m.data), name).toEqual(Array.from(t.data));
      expect(Array.from(readPath(() => loadSafetensor(st.tensors.get(name)!)).data)).toEqual(Array.from(t.data));
      expect(isMappedBytes(m.data)).toBe(nativeAvailable);
    }
    // An F32 tensor after 3 bytes of U8 is not 4-byte aligned in the file: read into its own buffer.
    const odd = path.join(tmp, 'odd.safetensors');
    const vals = randn(6, r);
    let header = JSON.stringify({ u: { dtype: 'U8', shape: [3], data_offsets: [0, 3] }, x: { dtype: 'F32', shape: [2, 3], data_offsets: [3, 27] } });
    header += ' '.repeat((8 - (header.length % 8)) % 8); // data starts 8-aligned, so x is at 3 mod 8
    writeRawSafetensors(odd, [
      { name: 'u', dtype: 'U8', shape: [3], bytes: Uint8Array.of(1, 2, 3) },
      { name: 'x', dtype: 'F32', shape: [2, 3], bytes: new Uint8Array(vals.buffer) },
    ], header);
    const so = readSafetensorsHeader(odd);
    const e = so.tensors.get('x')!;
    expect(e.offset % 8).toBe(3);
    const x = loadSafetensor(e);
    expect(Array.from(x.data)).toEqual(Array.from(vals));
    expect(isMappedBytes(x.data)).toBe(false);
    expect(Array.from(loadSafetensor(so.tensors.get('u')!).data)).toEqual([1, 2, 3]);
  });
});
