// Mixtral-style MoE models: logits vs llama.cpp on random-weight GGUFs written here (several E/k,
// GQA), merged 3-D expert tensors vs per-expert tensors, js vs cpu, and routing statistics.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getBackend } from '../src/index.js';
import { readGGUF, writeGGUF } from '../src/formats/gguf.js';
import { llamaGGUFMetadata, spmVocabOf } from '../src/formats/llama-gguf.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from '../src/model/load-gguf.js';
import { LlamaModel } from '../src/model/llama.js';
import { PagedKvCache } from '../src/runtime/kv-cache.js';
import { moeStats } from '../src/runtime/moe-stats.js';
import { nativeAvailable, randn, relL2, rng } from './helpers.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const dir = mkdtempSync(path.join(tmpdir(), 'tessera-moe-'));
const TOKENS = [1, 403, 407, 261, 378, 432, 269, 281, 333, 261, 368, 300, 284, 327, 46, 402];

interface Shape { dim: number; layers: number; heads: number; kvHeads: number; ffn: number; E: number; k: number }

/** A Mixtral GGUF (architecture llama + expert_count) with random weights and stories260K's vocab. */
export function writeRandomMixtral(file: string, s: Shape, type: 'F32' | 'F16' | 'Q8_0' = 'F32', perExpert = false, seed = 1) {
  const vocab = readGGUF(STORIES);
  const r = rng(seed * 1000 + s.E * 10 + s.k);
  const hd = s.dim / s.heads;
  const meta = llamaGGUFMetadata({ ...s, experts: s.E, expertsUsed: s.k }, spmVocabOf(vocab), type, 'tessera-random-mixtral');

  const mat = (name: string, shape: number[], t: 'F32' | 'F16' | 'Q8_0' = type) => ({ name, shape, type: t, data: randn(shape.reduce((a, b) => a * b, 1), r, 1 / Math.sqrt(shape[shape.length - 1]!)) });
  const norm = (name: string) => ({ name, shape: [s.dim], type: 'F32' as const, data: Float32Array.from({ length: s.dim }, () => 0.8 + 0.4 * r()) });
  const tensors = [mat('token_embd.weight', [512, s.dim], 'F32'), norm('output_norm.weight'), mat('output.weight', [512, s.dim])];
  for (let l = 0; l < s.layers; l++) {
    const p = `blk.${l}.`;
    tensors.push(norm(p + 'attn_norm.weight'), norm(p + 'ffn_norm.weight'),
      mat(p + 'attn_q.weight', [s.dim, s.dim]), mat(p + 'attn_k.weight', [s.kvHeads * hd, s.dim]), mat(p + 'attn_v.weight', [s.kvHeads * hd, s.dim]),
      mat(p + 'attn_output.weight', [s.dim, s.dim]),
      // router logits spread enough that top-k choices are not near ties
      { ...mat(p + 'ffn_gate_inp.weight', [s.E, s.dim], 'F32'), data: randn(s.E * s.dim, r, 3 / Math.sqrt(s.dim)) });
    const gate = mat(p + 'ffn_gate_exps.weight', [s.E, s.ffn, s.dim]);
    const up = mat(p + 'ffn_up_exps.weight', [s.E, s.ffn, s.dim]);
    const down = mat(p + 'ffn_down_exps.weight', [s.E, s.dim, s.ffn]);
    if (!perExpert) tensors.push(gate, up, down);
    else
      for (const [kind, t, rows, cols] of [['gate', gate, s.ffn, s.dim], ['up', up, s.ffn, s.dim], ['down', down, s.dim, s.ffn]] as const)
        for (let e = 0; e < s.E; e++)
          tensors.push({ name: `${p}ffn_${kind}.${e}.weight`, shape: [rows, cols], type, data: t.data.subarray(e * rows * cols, (e + 1) * rows * cols) });
  }
  writeGGUF(file, meta, tensors);
}

function logits(file: string, backend: 'cpu' | 'js' = nativeAvailable ? 'cpu' : 'js'): Float32Array {
  const g = readGGUF(file);
  const c = llamaConfigFromGGUF(g);
  const m = new LlamaModel(c, llamaWeightsFromGGUF(g, c), getBackend(backend));
  const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 16 });
  cache.add(0);
  return m.forward(Int32Array.from(TOKENS), cache, 0, { allLogits: true }).data;
}

type Llama = Awaited<ReturnType<typeof import('node-llama-cpp').getLlama>>;
let llama: Llama | null = null;
beforeAll(async () => {
  if (!nativeAvailable) return;
  const { getLlama } = await import('node-llama-cpp');
  llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
}, 120_000);
afterAll(async () => {
  await llama?.dispose();
});

async function llamaCppLogits(file: string): Promise<Float64Array[]> {
  const model = await llama!.loadModel({ modelPath: file });
  const ctx = await model.createContext({ contextSize: 64, flashAttention: false, threads: { ideal: 2, min: 1 }, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' } as never);
  const res = await ctx.getSequence().controlledEvaluate(TOKENS.map((t) => [t, { generateNext: { probabilities: true } }]) as never);
  await ctx.dispose();
  await model.dispose();
  return res.map((x) => {
    const row = new Float64Array(512).fill(Number.NaN);
    for (const [k, p] of (x as { next: { probabilities: Map<number, number> } }).next.probabilities) row[k] = Math.log(p);
    return row;
  });
}

/** Mean-centred log-probabilities, ours vs llama.cpp, over tokens llama.cpp reported. */
function centredError(ours: Float32Array, ref: Float64Array[]): number {
  let num = 0, den = 0;
  ref.forEach((r, i) => {
    const o = ours.subarray(i * 512, (i + 1) * 512);
    const idx = [...r.keys()].filter((j) => Number.isFinite(r[j]!));
    const mo = idx.reduce((a, j) => a + o[j]!, 0) / idx.length, mr = idx.reduce((a, j) => a + r[j]!, 0) / idx.length;
    for (const j of idx) {
      num += (o[j]! - mo - (r[j]! - mr)) ** 2;
      den += (r[j]! - mr) ** 2;
    }
  });
  return Math.sqrt(num / den);
}

const SHAPES: Shape[] = [
  { dim: 128, layers: 2, heads: 4, kvHeads: 2, ffn: 192, E: 4, k: 2 },
  { dim: 128, layers: 2, heads: 4, kvHeads: 1, ffn: 128, E: 8, k: 2 },
  { dim: 96, layers: 3, heads: 3, kvHeads: 3, ffn: 160, E: 4, k: 1 },
  { dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 96, E: 6, k: 3 },
];

describe.runIf(nativeAvailable)('Mixtral vs llama.cpp', () => {
  it.each(SHAPES)('F32 logits within 1e-4 (E=$E k=$k kvHeads=$kvHeads)', async (s) => {
    const file = path.join(dir, `mix-${s.E}-${s.k}-${s.kvHeads}.gguf`);
    writeRandomMixtral(file, s);
    expect(centredError(logits(file), await llamaCppLogits(file))).toBeLessThan(1e-4);
  }, 60_000);
});

describe('Mixtral layouts and backends', () => {
  it('per-expert tensors give the same logits as merged 3-D expert tensors', () => {
    const s = SHAPES[0]!;
    const a = path.join(dir, 'merged.gguf'), b = path.join(dir, 'per-expert.gguf');
    writeRandomMixtral(a, s, 'F32', false, 7);
    writeRandomMixtral(b, s, 'F32', true, 7);
    expect(relL2(logits(b), logits(a))).toBe(0);
  });

  it.runIf(nativeAvailable)('js and cpu agree: F32 within 1e-4, F16 within 1e-3', () => {
    // With f16 weights the activations are rounded to f16; a 1-ulp f32 difference between the two
    // backends can land on opposite sides of an f16 rounding boundary, so F16 agrees less tightly.
    for (const [type, tol] of [['F32', 1e-4], ['F16', 1e-3]] as const) {
      const f = path.join(dir, `jscpu-${type}.gguf`);
      writeRandomMixtral(f, SHAPES[1]!, type);
      expect(relL2(logits(f, 'cpu'), logits(f, 'js'))).toBeLessThan(tol);
    }
  });

  it('routing statistics: load histogram and the Switch/Mixtral balance loss from the definition', () => {
    const s = SHAPES[1]!;
    const f = path.join(dir, 'stats.gguf');
    writeRandomMixtral(f, s);
    const g = readGGUF(f);
    const c = llamaConfigFromGGUF(g);
    const m = new LlamaModel(c, llamaWeightsFromGGUF(g, c), getBackend(nativeAvailable ? 'cpu' : 'js'));
    const st = moeStats(m, TOKENS, { ctx: 64 });
    expect(st.layers.length).toBe(s.layers);
    for (const L of st.layers) {
      expect(L.counts.reduce((a, b) => a + b, 0)).toBe(TOKENS.length * s.k);
      // loss = E * sum_e f_e * P_e with f_e = share of the T*k assignments, P_e = mean router prob
      const f_ = L.counts.map((n) => n / (TOKENS.length * s.k));
      const expected = s.E * f_.reduce((a, fe, e) => a + fe * L.meanProb[e]!, 0) * s.k;
      expect(L.balanceLoss).toBeCloseTo(expected, 10);
      expect(L.meanProb.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    }
  });
});

describe('tessera moe-stats', () => {
  it('prints per-layer load and balance loss; refuses dense models', async () => {
    const { spawnSync } = await import('node:child_process');
    const f = path.join(dir, 'cli.gguf');
    writeRandomMixtral(f, SHAPES[0]!);
    const bin = path.join(root, 'bin/tessera.js');
    const text = path.join(root, 'test/fixtures/text/tinystories-valid-head.txt');
    const r = spawnSync(process.execPath, [bin, 'moe-stats', '-m', f, '-f', text, '--ctx', '128', '--json'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.experts).toBe(4);
    expect(j.layers.length).toBe(2);
    for (const L of j.layers) expect(L.counts.reduce((a: number, b: number) => a + b, 0)).toBe(j.tokens * 2);
    const dense = spawnSync(process.execPath, [bin, 'moe-stats', '-m', STORIES, '-f', text], { encoding: 'utf8' });
    expect(dense.status).toBe(2);
    expect(dense.stderr).toContain('no mixture-of-experts layers');
  }, 60_000);
});
