// Logits vs llama.cpp (node-llama-cpp 3.21.1, its bundled CPU build) on stories260K in F32, F16,
// Q8_0 and Q4_0, and on random-weight Llama GGUFs written by our GGUF writer (GQA, several shapes).
// Compared in log space with each row's mean removed (llama.cpp only exposes probabilities).
// Always against llama.cpp's outputs recorded in test/fixtures/llamacpp/llamacpp.* (four positions
// per case, for the exact file bytes: a changed model writer fails on the hash); also against
// llama.cpp itself, every position, when the peer is installed (npm run peer:install).
// These run on tessera's js backend when its native addon is missing (and on cpu when it is built).
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/index.js';
import { readGGUF, writeGGUF } from '../src/formats/gguf.js';
import { llamaGGUFMetadata, spmVocabOf } from '../src/formats/llama-gguf.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from '../src/model/load-gguf.js';
import { LlamaModel } from '../src/model/llama.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { nativeAvailable, randn, relL2, rng } from './helpers.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { LlamaCppReference, needsLlamaCpp, recording, useLlamaCpp } from './llamacpp-peer.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const FIX = path.join(root, 'test/fixtures/stories260K');
const backend = nativeAvailable ? 'cpu' : 'js';

const llamaCpp = useLlamaCpp();
const reference = new LlamaCppReference('llamacpp');

function ourLogits(file: string, tokens: number[], be: 'cpu' | 'js' = backend): Float32Array[] {
  const g = readGGUF(file);
  const c = llamaConfigFromGGUF(g);
  const m = new LlamaModel(c, llamaWeightsFromGGUF(g, c, { quantized: 'packed' }), getBackend(be));
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 32, blockSize: 16 });
  cache.add(0);
  const out = forwardTokens(m, cache, 0, Int32Array.from(tokens), { allLogits: true });
  const V = c.vocabSize;
  return Array.from({ length: tokens.length }, (_, i) => out.data.subarray(i * V, (i + 1) * V));
}

/** Row-mean-centred comparison over entries llama.cpp reported with p > 0. */
function compare(ours: Float32Array[], ref: Float64Array[]): { err: number; argmaxEqual: boolean } {
  let num = 0, den = 0, argmaxEqual = true;
  ours.forEach((o, r) => {
    const ref0 = ref[r]!;
    const idx = [...ref0.keys()].filter((i) => Number.isFinite(ref0[i]!));
    expect(idx.length).toBeGreaterThan(o.length * 0.9); // nearly every token reported
    const mo = idx.reduce((a, i) => a + o[i]!, 0) / idx.length;
    const mr = idx.reduce((a, i) => a + ref0[i]!, 0) / idx.length;
    for (const i of idx) {
      const d = o[i]! - mo - (ref0[i]! - mr);
      num += d * d;
      den += (ref0[i]! - mr) ** 2;
    }
    let ao = 0, ar = 0;
    for (let i = 1; i < o.length; i++) {
      if (o[i]! > o[ao]!) ao = i;
      if ((ref0[i] ?? -Infinity) > (ref0[ar] ?? -Infinity)) ar = i;
    }
    if (ao !== ar) argmaxEqual = false;
  });
  return { err: Math.sqrt(num / den), argmaxEqual };
}

/**
 * Relative L2 within tol and every argmax equal. Matching llama.cpp's numerics takes what it
 * does: Q8_0/Q4_0 weights multiply activations quantised to 8-bit blocks, and F16 weights
 * activations rounded to f16 (stories260K's quantised files keep ffn_down in F16).
 */
function checkAgainstLlamaCpp(err: number, argmaxEqual: boolean, tol: number) {
  expect(err).toBeLessThan(tol);
  expect(argmaxEqual).toBe(true);
}

const TOKENS = [1, 403, 407, 261, 378, 432, 269, 281, 333, 261, 368, 300, 284, 327, 46, 402, 405, 269, 288, 388, 296, 266, 431, 46];

type Shape = { dim: number; layers: number; heads: number; kvHeads: number; ffn: number };
type WeightType = 'F32' | 'F16' | 'Q8_0' | 'Q4_0';
const TOL: Record<WeightType, number> = { F32: 1e-4, F16: 1e-3, Q8_0: 1e-2, Q4_0: 1e-2 };

/** A case: its name (the recorded outputs' key), its GGUF (written on first use) and tolerance. */
interface Case { name: string; file: () => string; tol: number }
const dir = mkdtempSync(path.join(tmpdir(), 'tessera-llama-'));
/** A random-weight GGUF, written once per test file run. */
function randomFile(name: string, s: Shape, type: WeightType, arch: 'llama' | 'qwen2' = 'llama'): () => string {
  const file = path.join(dir, `${name}.gguf`);
  return () => {
    if (!existsSync(file)) writeRandomLlama(file, s, type, arch);
    return file;
  };
}

const shapes: Shape[] = [
  { dim: 128, layers: 2, heads: 4, kvHeads: 2, ffn: 256 },
  { dim: 192, layers: 3, heads: 6, kvHeads: 1, ffn: 320 },
  { dim: 256, layers: 2, heads: 8, kvHeads: 8, ffn: 512 },
];
const cases: Case[] = [
  { name: 'stories260K F32', file: () => STORIES, tol: TOL.F32 },
  ...(['F16', 'Q8_0', 'Q4_0'] as const).map((t) => ({ name: `stories260K ${t}`, file: () => path.join(FIX, `stories260K-${t}.gguf`), tol: TOL[t] })),
  ...shapes.flatMap((s) => (['F32', 'F16', 'Q8_0', 'Q4_0'] as const).map((t) => {
    const name = `random-weight Llama ${t} dim ${s.dim} layers ${s.layers} heads ${s.heads} kvHeads ${s.kvHeads} ffn ${s.ffn}`;
    return { name, file: randomFile(`rand-${s.dim}-${s.layers}-${s.heads}-${s.kvHeads}-${t}`, s, t), tol: TOL[t] };
  })),
  // Qwen2: QKV biases, NeoX RoPE
  { name: 'Qwen2 random-weight F32', file: randomFile('qwen2', shapes[0]!, 'F32', 'qwen2'), tol: TOL.F32 },
];

const ours = new Map<string, Float32Array[]>();
/** Our logits at every position of TOKENS for a case (computed once). */
function oursFor(c: Case): Float32Array[] {
  if (!ours.has(c.name)) ours.set(c.name, ourLogits(c.file(), TOKENS));
  return ours.get(c.name)!;
}

// Live first: while recording (npm run peer:fixtures) these write what the next block reads.
describe(`logits match llama.cpp at every position (live, tessera on ${backend})`, () => {
  it.for(cases.map((c) => [c.name, c] as const))('%s', async ([, c], ctx) => {
    needsLlamaCpp(ctx);
    const file = c.file();
    const live = await llamaCpp.logProbs(file, TOKENS, 512, 512);
    const { err, argmaxEqual } = compare(oursFor(c), live);
    checkAgainstLlamaCpp(err, argmaxEqual, c.tol);
    reference.recordLogProbs(c.name, file, TOKENS, live);
    // The recorded outputs are still llama.cpp's (ten times closer to it than tessera must be).
    if (!recording) {
      const rec = reference.logProbs(c.name, file, TOKENS);
      expect(compare(rec.rows.map((r) => Float32Array.from(r)), rec.positions.map((p) => live[p]!)).err).toBeLessThan(c.tol / 10);
    }
  });
});

describe(`logits match llama.cpp's recorded outputs (tessera on ${backend})`, () => {
  it.for(cases.map((c) => [c.name, c] as const))('%s', ([, c]) => {
    const { positions, rows } = reference.logProbs(c.name, c.file(), TOKENS);
    const o = oursFor(c);
    const { err, argmaxEqual } = compare(positions.map((p) => o[p]!), rows);
    checkAgainstLlamaCpp(err, argmaxEqual, c.tol);
  });

  it('a model file that is not the one recorded is refused, naming the command that records it again', () => {
    expect(() => reference.logProbs('stories260K F32', path.join(FIX, 'stories260K-F16.gguf'), TOKENS)).toThrow(
      /stories260K-F16.gguf is not the file llama.cpp's outputs for 'stories260K F32' were recorded from .*npm run peer:fixtures/,
    );
  });
});

describe('backends', () => {
  it.runIf(nativeAvailable)('js and cpu backends agree within 1e-4', () => {
    const a = ourLogits(STORIES, TOKENS, 'cpu'), b = ourLogits(STORIES, TOKENS, 'js');
    a.forEach((row, i) => expect(relL2(row, b[i]!)).toBeLessThan(1e-4));
  });
});

/** A Llama GGUF with random weights (scaled so activations stay O(1)) and stories260K's vocab. */
function writeRandomLlama(file: string, s: Shape, type: WeightType, arch: 'llama' | 'qwen2' = 'llama') {
  const vocab = readGGUF(STORIES);
  const r = rng(s.dim * 31 + s.layers * 7 + s.kvHeads);
  const hd = s.dim / s.heads;
  const meta = llamaGGUFMetadata(s, spmVocabOf(vocab), type, 'tessera-random', arch);

  const mat = (name: string, rows: number, cols: number, t = type) => ({ name, shape: [rows, cols], type: t, data: randn(rows * cols, r, 1 / Math.sqrt(cols)) });
  const norm = (name: string) => ({ name, shape: [s.dim], type: 'F32' as const, data: Float32Array.from({ length: s.dim }, () => 0.8 + 0.4 * r()) });
  const tensors = [
    { name: 'token_embd.weight', shape: [512, s.dim], type, data: randn(512 * s.dim, r) },
    norm('output_norm.weight'),
    mat('output.weight', 512, s.dim, type === 'Q4_0' ? 'Q8_0' : type),
  ];
  for (let l = 0; l < s.layers; l++) {
    tensors.push(norm(`blk.${l}.attn_norm.weight`), norm(`blk.${l}.ffn_norm.weight`),
      mat(`blk.${l}.attn_q.weight`, s.dim, s.dim), mat(`blk.${l}.attn_k.weight`, s.kvHeads * hd, s.dim),
      mat(`blk.${l}.attn_v.weight`, s.kvHeads * hd, s.dim), mat(`blk.${l}.attn_output.weight`, s.dim, s.dim),
      mat(`blk.${l}.ffn_gate.weight`, s.ffn, s.dim), mat(`blk.${l}.ffn_up.weight`, s.ffn, s.dim), mat(`blk.${l}.ffn_down.weight`, s.dim, s.ffn));
    if (arch === 'qwen2')
      for (const [n, rows] of [['q', s.dim], ['k', s.kvHeads * hd], ['v', s.kvHeads * hd]] as const)
        tensors.push({ name: `blk.${l}.attn_${n}.bias`, shape: [rows], type: 'F32', data: randn(rows, r, 0.5) });
  }
  writeGGUF(file, meta, tensors);
}
