// GGUF reader/writer: quantisation and dequantisation against llama.cpp's gguf-py (fixtures made
// with `pip install gguf`, see test/fixtures/README.md), metadata/tensor round trips, and
// truncated / corrupted / hostile files that must fail with a ModelFileError naming the problem.
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelFileError } from '../src/formats/errors.js';
import {
  dequantize, GGUF_VALUE, loadTensor, quantizeQ4_0, quantizeQ8_0, readGGUF, readTensorBytes, writeGGUF, type GGUFMetadataEntry,
} from '../src/formats/gguf.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from '../src/model/load-gguf.js';
import { randn, rng } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const FIX = path.join(root, 'test/fixtures');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const gpy = JSON.parse(readFileSync(path.join(FIX, 'gguf-py-quant.json'), 'utf8')) as Record<string, number[]>;
const tmp = mkdtempSync(path.join(tmpdir(), 'tessera-gguf-'));

describe('quantisation matches gguf-py', () => {
  it.each(['Q8_0', 'Q4_0'] as const)('dequantising llama.cpp %s blocks', (q) => {
    const g = readGGUF(path.join(FIX, `stories260K/stories260K-${q}.gguf`));
    const t = g.tensors.find((x) => x.name === 'blk.0.attn_q.weight')!;
    expect(t.type).toBe(q);
    const deq = dequantize(q, readTensorBytes(g, t), t.elements);
    expect(Array.from(deq.subarray(0, 512))).toEqual(gpy[`dequant_${q}`]);
  });

  it('quantising to Q8_0 and Q4_0 gives gguf-py\'s bytes', () => {
    const x = Float32Array.from(gpy.input!);
    expect(Array.from(quantizeQ8_0(x))).toEqual(gpy.quant_Q8_0);
    expect(Array.from(quantizeQ4_0(x))).toEqual(gpy.quant_Q4_0);
  });
});

describe('writer round trip', () => {
  it('metadata of every type and tensors of every type read back identically', () => {
    const r = rng(3);
    const meta: GGUFMetadataEntry[] = [
      { key: 'a.u8', type: GGUF_VALUE.UINT8, value: 250 },
      { key: 'a.i8', type: GGUF_VALUE.INT8, value: -5 },
      { key: 'a.u16', type: GGUF_VALUE.UINT16, value: 65000 },
      { key: 'a.i16', type: GGUF_VALUE.INT16, value: -300 },
      { key: 'a.u32', type: GGUF_VALUE.UINT32, value: 4000000000 },
      { key: 'a.i32', type: GGUF_VALUE.INT32, value: -2000000000 },
      { key: 'a.f32', type: GGUF_VALUE.FLOAT32, value: 0.5 },
      { key: 'a.f64', type: GGUF_VALUE.FLOAT64, value: Math.PI },
      { key: 'a.bool', type: GGUF_VALUE.BOOL, value: true },
      { key: 'a.str', type: GGUF_VALUE.STRING, value: 'héllo ✓' },
      { key: 'a.u64', type: GGUF_VALUE.UINT64, value: 2n ** 60n },
      { key: 'a.i64', type: GGUF_VALUE.INT64, value: -42 },
      { key: 'a.strs', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.STRING, value: ['x', '', 'ü'] },
      { key: 'a.f32s', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.FLOAT32, value: Float32Array.of(1, -2.5) },
      { key: 'a.nested', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.ARRAY, value: [] },
    ];
    const data = randn(64 * 3, r);
    const tensors = (['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0'] as const).map((type) => ({ name: `t.${type}`, shape: [3, 64], type, data }));
    const file = path.join(tmp, 'roundtrip.gguf');
    writeGGUF(file, meta, tensors, 64);
    const g = readGGUF(file);
    expect(g.version).toBe(3);
    expect(g.alignment).toBe(64);
    for (const m of meta) expect(g.metadata.get(m.key), m.key).toEqual(m.value);
    const f32 = loadTensor(g, g.tensors[0]!);
    expect(Array.from(f32.data)).toEqual(Array.from(data));
    const f16 = loadTensor(g, g.tensors[1]!, 'f32');
    expect(f16.dtype).toBe('f16');
    f16.toFloat32().forEach((v, i) => expect(Math.abs(v - data[i]!)).toBeLessThanOrEqual(Math.abs(data[i]!) * 2 ** -11 + 2 ** -24));
    for (const [i, q] of [[3, 'Q8_0'], [4, 'Q4_0']] as const) {
      const t = g.tensors[i]!;
      const bytes = readTensorBytes(g, t);
      expect(Array.from(bytes)).toEqual(Array.from(q === 'Q8_0' ? quantizeQ8_0(data) : quantizeQ4_0(data)));
      expect(loadTensor(g, t, 'f32').data).toEqual(dequantize(q, bytes, t.elements));
    }
  });
});

/** Builds a small valid GGUF header by hand so fields can be corrupted one at a time. */
function handMade(opts: { magic?: number; version?: number; nTensors?: bigint; nKv?: bigint; strLen?: bigint; nDims?: number; type?: number; offset?: bigint; dims?: bigint[]; boolByte?: number; dup?: boolean; alignment?: number } = {}): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); parts.push(b); };
  const u64 = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(v); parts.push(b); };
  const str = (s: string, len?: bigint) => { u64(len ?? BigInt(Buffer.byteLength(s))); parts.push(Buffer.from(s)); };
  u32(opts.magic ?? 0x46554747);
  u32(opts.version ?? 3);
  const nt = opts.dup ? 2 : 1;
  u64(opts.nTensors ?? BigInt(nt));
  u64(opts.nKv ?? 3n);
  str('general.name', opts.strLen);
  u32(8);
  str('x');
  str('flag');
  u32(7);
  parts.push(Buffer.from([opts.boolByte ?? 1]));
  str('general.alignment');
  u32(4);
  u32(opts.alignment ?? 32);
  for (let i = 0; i < nt; i++) {
    str('w');
    const dims = opts.dims ?? [8n, 2n];
    u32(opts.nDims ?? dims.length);
    for (const d of dims) u64(d);
    u32(opts.type ?? 0);
    u64(opts.offset ?? 0n);
  }
  let buf = Buffer.concat(parts);
  const pad = Math.ceil(buf.length / 32) * 32 - buf.length;
  buf = Buffer.concat([buf, Buffer.alloc(pad), Buffer.alloc(64)]);
  return buf;
}

/** A GGUF with F32 tensors at the given relative offsets, followed by `dataBytes` of data. */
function manyTensors(tensors: { name: string; offset: bigint; dims: bigint[] }[], dataBytes: number): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); parts.push(b); };
  const u64 = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(v); parts.push(b); };
  const str = (s: string) => { u64(BigInt(Buffer.byteLength(s))); parts.push(Buffer.from(s)); };
  u32(0x46554747);
  u32(3);
  u64(BigInt(tensors.length));
  u64(0n);
  for (const t of tensors) {
    str(t.name);
    u32(t.dims.length);
    for (const d of t.dims) u64(d);
    u32(0);
    u64(t.offset);
  }
  const head = Buffer.concat(parts);
  return Buffer.concat([head, Buffer.alloc(Math.ceil(head.length / 32) * 32 - head.length), Buffer.alloc(dataBytes)]);
}

function readBuf(name: string, b: Buffer) {
  const f = path.join(tmp, name);
  writeFileSync(f, b);
  return readGGUF(f);
}

describe('hostile and broken files', () => {
  it('the hand-made file is valid', () => {
    const g = readBuf('ok.gguf', handMade());
    expect(g.tensors[0]!.shape).toEqual([2, 8]);
  });

  it.each([
    ['bad magic', { magic: 0x12345678 }, /not a GGUF file \(magic 0x12345678/],
    ['version 1', { version: 1 }, /unsupported GGUF version 1/],
    ['tensor count beyond the file', { nTensors: 2n ** 40n }, /tensor count = 1099511627776 is larger than the file allows/],
    ['metadata count beyond the file', { nKv: 2n ** 62n }, /metadata count = .* is larger than the file allows/],
    ['string longer than the file', { strLen: 2n ** 63n }, /length of metadata key #0 = .* is larger than the file allows/],
    ['five dimensions', { nDims: 5, dims: [1n, 1n, 1n, 1n, 1n] }, /tensor 'w' has 5 dimensions \(expected 1 to 4\)/],
    ['zero dimension', { dims: [8n, 0n] }, /tensor 'w' has dimension 1 = 0/],
    ['huge dimensions', { dims: [2n ** 40n, 2n ** 40n] }, /more than the file can hold/],
    ['unknown type', { type: 99 }, /tensor 'w' has unknown ggml type 99/],
    ['unsupported type', { type: 12 }, /tensor 'w' has ggml type Q4_K, which tessera does not read yet/],
    ['data past the end', { offset: 64n }, /tensor 'w' \(64 bytes at offset \d+\) extends past the end of the file/],
    ['misaligned data', { offset: 4n }, /data offset 4 is not aligned to 32/],
    ['duplicate tensor names', { dup: true }, /duplicate tensor name 'w'/],
    ['bool that is not 0/1', { boolByte: 7 }, /metadata 'flag': invalid bool value 7/],
    ['alignment not a power of two', { alignment: 24 }, /general.alignment must be a power of two but is 24/],
    ['quantised row not a multiple of the block', { type: 8, dims: [8n, 2n] }, /row length 8 is not a multiple of the Q8_0 block size 32/],
  ] as const)('%s', (_n, o, msg) => {
    expect(() => readBuf('bad.gguf', handMade(o as never))).toThrow(msg);
    try {
      readBuf('bad.gguf', handMade(o as never));
    } catch (e) {
      expect(e).toBeInstanceOf(ModelFileError);
      expect((e as Error).message.startsWith('bad.gguf: ')).toBe(true);
    }
  });

  it('tensors whose data overlap are rejected, naming both', () => {
    // Two distinct tensors at the same offset; then one that starts inside the other.
    const at = (offsets: number[], dims = [8n, 2n]) => manyTensors(offsets.map((o, i) => ({ name: `t${i}`, offset: BigInt(o), dims })), 64 * 3);
    expect(() => readBuf('overlap.gguf', at([0, 0]))).toThrow(/overlap.gguf: tensors 't0' \(bytes (\d+) to \d+\) and 't1' \(bytes \1 to \d+\) overlap/);
    expect(() => readBuf('overlap.gguf', at([0, 64, 32]))).toThrow(/tensors 't0' \(bytes \d+ to \d+\) and 't2' \(bytes \d+ to \d+\) overlap/);
    // Back to back (64 bytes each) is fine.
    expect(readBuf('ok2.gguf', at([0, 64, 128])).tensors.map((t) => t.name)).toEqual(['t0', 't1', 't2']);
  });

  it('a small file with 1,442 tensors all at offset 0 is rejected before any tensor is read', () => {
    // The hostile file from issue 18: 1.09 MiB, each tensor claiming the same ~800 KB.
    const b = manyTensors(Array.from({ length: 1442 }, (_, i) => ({ name: `blk.${i}.w`, offset: 0n, dims: [512n, 400n] })), 512 * 400 * 4);
    expect(b.length).toBeLessThan(1.2 * 2 ** 20);
    expect(() => readBuf('same-offset.gguf', b)).toThrow(/same-offset.gguf: tensors 'blk\.\d+\.w' \(bytes \d+ to \d+\) and 'blk\.\d+\.w' \(bytes \d+ to \d+\) overlap/);
    expect(() => readBuf('same-offset.gguf', b)).toThrow(ModelFileError);
  });

  it('every truncation of a real file fails cleanly', () => {
    const full = readFileSync(STORIES);
    const header = readGGUF(STORIES).dataOffset;
    const cuts = [0, 3, 4, 8, 20, 24, 100, 1000, 5000, header - 1, header, header + 100, full.length - 1];
    for (let i = 0; i < 40; i++) cuts.push(Math.floor((i / 40) * full.length));
    for (const cut of cuts) {
      const f = path.join(tmp, 'cut.gguf');
      writeFileSync(f, full.subarray(0, cut));
      expect(() => readGGUF(f), `cut at ${cut}`).toThrow(ModelFileError);
    }
  });

  it('random corruption of the header never crashes: it reads or throws ModelFileError', () => {
    const full = readFileSync(STORIES);
    const header = readGGUF(STORIES).dataOffset;
    const r = rng(99);
    for (let i = 0; i < 300; i++) {
      const b = Buffer.from(full.subarray(0, Math.min(full.length, header + 4096)));
      for (let k = 0; k < 1 + Math.floor(r() * 4); k++) b[Math.floor(r() * header)] = Math.floor(r() * 256);
      const f = path.join(tmp, 'fuzz.gguf');
      writeFileSync(f, b);
      try {
        readGGUF(f);
      } catch (e) {
        expect(e, `iteration ${i}`).toBeInstanceOf(ModelFileError);
      }
    }
  });

  it('a model missing a tensor or with a wrong shape names it', () => {
    const g = readGGUF(STORIES);
    const f = path.join(tmp, 'missing.gguf');
    const keep = g.tensors.filter((t) => t.name !== 'blk.2.ffn_up.weight');
    const meta: GGUFMetadataEntry[] = [...g.metadata].map(([key, value]) => ({
      key, value, type: g.metadataTypes.get(key)!,
      elementType: key === 'tokenizer.ggml.tokens' ? GGUF_VALUE.STRING : key === 'tokenizer.ggml.scores' ? GGUF_VALUE.FLOAT32 : GGUF_VALUE.INT32,
    }));
    writeGGUF(f, meta, keep.map((t) => ({ name: t.name, shape: t.shape, type: 'F32' as const, data: loadTensor(g, t).data as Float32Array })));
    const gm = readGGUF(f);
    expect(() => llamaWeightsFromGGUF(gm, llamaConfigFromGGUF(gm))).toThrow(/missing.gguf: missing tensor 'blk.2.ffn_up.weight'/);
    const f2 = path.join(tmp, 'shape.gguf');
    writeGGUF(f2, meta, g.tensors.map((t) => ({
      name: t.name, shape: t.name === 'blk.1.attn_k.weight' ? [16, 64] : t.shape, type: 'F32' as const,
      data: t.name === 'blk.1.attn_k.weight' ? new Float32Array(16 * 64) : (loadTensor(g, t).data as Float32Array),
    })));
    const gs = readGGUF(f2);
    expect(() => llamaWeightsFromGGUF(gs, llamaConfigFromGGUF(gs))).toThrow(/tensor 'blk.1.attn_k.weight' has shape \[16, 64\], expected \[32, 64\]/);
    copyFileSync(STORIES, path.join(tmp, 'ok.gguf'));
  });
});
