// Mixtral-style MoE models: logits vs llama.cpp on random-weight GGUFs written here (several E/k,
// GQA), merged 3-D expert tensors vs per-expert tensors, js vs cpu, and routing statistics.
// llama.cpp's outputs are recorded in test/fixtures/llamacpp/mixtral.* (for the exact file bytes);
// llama.cpp itself runs too when the peer is installed (npm run peer:install).
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/index.js';
import { loadTensor, readGGUF, writeGGUF } from '../src/formats/gguf.js';
import { llamaConfigFromHF, llamaWeightsFromHF } from '../src/model/load-hf.js';
import { llamaGGUFMetadata, spmVocabOf } from '../src/formats/llama-gguf.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from '../src/model/load-gguf.js';
import { LlamaModel } from '../src/model/llama.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { moeStats } from '../src/runtime/moe-stats.js';
import { nativeAvailable, randn, relL2, rng, writeSafetensors } from './helpers.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { LlamaCppReference, needsLlamaCpp, recording, recordedPositions, useLlamaCpp } from './llamacpp-peer.js';

const root = path.resolve(import.meta.dirname, '..');
const STORIES = path.join(root, 'models/stories260K/stories260K.gguf');
const dir = mkdtempSync(path.join(tmpdir(), 'tessera-moe-'));
const TOKENS = [1, 403, 407, 261, 378, 432, 269, 281, 333, 261, 368, 300, 284, 327, 46, 402];

interface Shape { dim: number; layers: number; heads: number; kvHeads: number; ffn: number; E: number; k: number }

/** A Mixtral GGUF (architecture llama + expert_count) with random weights and stories260K's vocab. */
export function writeRandomMixtral(file: string, s: Shape, type: 'F32' | 'F16' | 'Q8_0' | 'Q4_0' = 'F32', perExpert = false, seed = 1) {
  const vocab = readGGUF(STORIES);
  const r = rng(seed * 1000 + s.E * 10 + s.k);
  const hd = s.dim / s.heads;
  const meta = llamaGGUFMetadata({ ...s, experts: s.E, expertsUsed: s.k }, spmVocabOf(vocab), type, 'tessera-random-mixtral');

  const mat = (name: string, shape: number[], t: 'F32' | 'F16' | 'Q8_0' | 'Q4_0' = type) => ({ name, shape, type: t, data: randn(shape.reduce((a, b) => a * b, 1), r, 1 / Math.sqrt(shape[shape.length - 1]!)) });
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
  return forwardTokens(m, cache, 0, Int32Array.from(TOKENS), { allLogits: true }).data;
}

const llamaCpp = useLlamaCpp();
const reference = new LlamaCppReference('mixtral');

/** Rows of a flat (positions x 512) logits array. */
const rowsOf = (flat: Float32Array, positions: number[]) => positions.map((p) => flat.subarray(p * 512, (p + 1) * 512));

/** Mean-centred log-probabilities, ours vs llama.cpp, row by row, over tokens llama.cpp reported. */
function centredError(ours: Float32Array[], ref: Float64Array[]): number {
  let num = 0, den = 0;
  ref.forEach((r, i) => {
    const o = ours[i]!;
    const idx = [...r.keys()].filter((j) => Number.isFinite(r[j]!));
    const mo = idx.reduce((a, j) => a + o[j]!, 0) / idx.length, mr = idx.reduce((a, j) => a + r[j]!, 0) / idx.length;
    for (const j of idx) {
      num += (o[j]! - mo - (r[j]! - mr)) ** 2;
      den += (r[j]! - mr) ** 2;
    }
  });
  return Math.sqrt(num / den);
}

/** Quantised experts: within 1e-2, and the same argmax at most rows, wherever llama.cpp has a clear winner. */
function checkQuantised(ours: Float32Array[], ref: Float64Array[]) {
  expect(centredError(ours, ref)).toBeLessThan(1e-2);
  let clear = 0;
  ref.forEach((r, i) => {
    const o = ours[i]!;
    const sorted = r.filter(Number.isFinite).sort((a, b) => b - a);
    if (sorted[0]! - sorted[1]! < 0.05) return; // a near tie: either order is within the noise
    clear++;
    expect(o.indexOf(Math.max(...o))).toBe(r.indexOf(sorted[0]!));
  });
  expect(clear).toBeGreaterThan(ref.length / 2);
}

const SHAPES: Shape[] = [
  { dim: 128, layers: 2, heads: 4, kvHeads: 2, ffn: 192, E: 4, k: 2 },
  { dim: 128, layers: 2, heads: 4, kvHeads: 1, ffn: 128, E: 8, k: 2 },
  { dim: 96, layers: 3, heads: 3, kvHeads: 3, ffn: 160, E: 4, k: 1 },
  { dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 96, E: 6, k: 3 },
];

/** The comparison cases: [name, shape, weight type]; each GGUF is written once. */
const CASES: [string, Shape, 'F32' | 'Q8_0' | 'Q4_0'][] = [
  ...SHAPES.map((s): [string, Shape, 'F32'] => [`F32 E=${s.E} k=${s.k} kvHeads=${s.kvHeads}`, s, 'F32']),
  ...(['Q8_0', 'Q4_0'] as const).map((t): [string, Shape, 'Q8_0' | 'Q4_0'] => [`${t} experts`, SHAPES[0]!, t]),
];
const caseFile = (name: string) => path.join(dir, `mix-${name.replace(/[^a-z0-9]+/gi, '_')}.gguf`);
const ours = new Map<string, Float32Array>();
/** Our logits on a case's GGUF (written on first use). */
function oursFor([name, s, type]: [string, Shape, 'F32' | 'Q8_0' | 'Q4_0']): Float32Array {
  if (!ours.has(name)) {
    writeRandomMixtral(caseFile(name), s, type);
    ours.set(name, logits(caseFile(name)));
  }
  return ours.get(name)!;
}
/** F32 within 1e-4; quantised experts see checkQuantised. */
function check(type: 'F32' | 'Q8_0' | 'Q4_0', o: Float32Array[], ref: Float64Array[]) {
  if (type === 'F32') expect(centredError(o, ref)).toBeLessThan(1e-4);
  else checkQuantised(o, ref);
}

// Live first: while recording (npm run peer:fixtures) these write what the next block reads.
describe('Mixtral vs llama.cpp (live, every position)', () => {
  it.for(CASES)('%s', async (c, ctx) => {
    needsLlamaCpp(ctx);
    const [name, , type] = c;
    const o = oursFor(c);
    const live = await llamaCpp.logProbs(caseFile(name), TOKENS, 512, 64);
    check(type, rowsOf(o, TOKENS.map((_, i) => i)), live);
    reference.recordLogProbs(name, caseFile(name), TOKENS, live);
    if (!recording) {
      // The recorded outputs are still llama.cpp's.
      const rec = reference.logProbs(name, caseFile(name), TOKENS);
      expect(centredError(rec.rows.map((r) => Float32Array.from(r)), rec.positions.map((p) => live[p]!))).toBeLessThan(type === 'F32' ? 1e-5 : 1e-3);
    }
  });
});

describe(`Mixtral vs llama.cpp's recorded outputs (positions ${recordedPositions(TOKENS.length).join(', ')})`, () => {
  it.for(CASES)('%s', (c) => {
    const [name, , type] = c;
    const o = oursFor(c);
    const { positions, rows } = reference.logProbs(name, caseFile(name), TOKENS);
    check(type, rowsOf(o, positions), rows);
  });
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

describe('Mixtral from Hugging Face safetensors', () => {
  it('MixtralForCausalLM (unpermuted Q/K, NeoX RoPE, block_sparse_moe experts) gives the GGUF logits', () => {
    const s = SHAPES[0]!;
    const gf = path.join(dir, 'hf-src.gguf');
    writeRandomMixtral(gf, s, 'F32', false, 11);
    const g = readGGUF(gf);
    const hd = s.dim / s.heads;
    const tensor = (name: string) => loadTensor(g, g.tensors.find((t) => t.name === name)!, 'f32').data as Float32Array;
    // llama.cpp's converter permutes Q/K rows per head: GGUF row (h, i, a) = HF row (h, a, i).
    const unpermute = (w: Float32Array, nHead: number) => {
      const out = new Float32Array(w.length);
      for (let h = 0; h < nHead; h++)
        for (let i = 0; i < hd / 2; i++)
          for (let a = 0; a < 2; a++) out.set(w.subarray((h * hd + 2 * i + a) * s.dim, (h * hd + 2 * i + a + 1) * s.dim), (h * hd + a * (hd / 2) + i) * s.dim);
      return out;
    };
    const entries: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[] = [];
    const add = (name: string, shape: number[], data: Float32Array) => entries.push({ name, dtype: 'F32', shape, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
    add('model.embed_tokens.weight', [512, s.dim], tensor('token_embd.weight'));
    add('model.norm.weight', [s.dim], tensor('output_norm.weight'));
    add('lm_head.weight', [512, s.dim], tensor('output.weight'));
    for (let l = 0; l < s.layers; l++) {
      const p = `model.layers.${l}.`, q = `blk.${l}.`;
      add(p + 'input_layernorm.weight', [s.dim], tensor(q + 'attn_norm.weight'));
      add(p + 'post_attention_layernorm.weight', [s.dim], tensor(q + 'ffn_norm.weight'));
      add(p + 'self_attn.q_proj.weight', [s.dim, s.dim], unpermute(tensor(q + 'attn_q.weight'), s.heads));
      add(p + 'self_attn.k_proj.weight', [s.kvHeads * hd, s.dim], unpermute(tensor(q + 'attn_k.weight'), s.kvHeads));
      add(p + 'self_attn.v_proj.weight', [s.kvHeads * hd, s.dim], tensor(q + 'attn_v.weight'));
      add(p + 'self_attn.o_proj.weight', [s.dim, s.dim], tensor(q + 'attn_output.weight'));
      add(p + 'block_sparse_moe.gate.weight', [s.E, s.dim], tensor(q + 'ffn_gate_inp.weight'));
      const gate = tensor(q + 'ffn_gate_exps.weight'), up = tensor(q + 'ffn_up_exps.weight'), down = tensor(q + 'ffn_down_exps.weight');
      const fd = s.ffn * s.dim;
      for (let e = 0; e < s.E; e++) {
        add(`${p}block_sparse_moe.experts.${e}.w1.weight`, [s.ffn, s.dim], gate.subarray(e * fd, (e + 1) * fd));
        add(`${p}block_sparse_moe.experts.${e}.w3.weight`, [s.ffn, s.dim], up.subarray(e * fd, (e + 1) * fd));
        add(`${p}block_sparse_moe.experts.${e}.w2.weight`, [s.dim, s.ffn], down.subarray(e * fd, (e + 1) * fd));
      }
    }
    const hf = path.join(dir, 'hf-mixtral');
    mkdirSync(hf, { recursive: true });
    writeSafetensors(path.join(hf, 'model.safetensors'), entries);
    writeFileSync(path.join(hf, 'config.json'), JSON.stringify({
      architectures: ['MixtralForCausalLM'], hidden_size: s.dim, num_hidden_layers: s.layers, num_attention_heads: s.heads,
      num_key_value_heads: s.kvHeads, intermediate_size: s.ffn, vocab_size: 512, max_position_embeddings: 256, rms_norm_eps: 1e-5,
      rope_theta: 10000, num_local_experts: s.E, num_experts_per_tok: s.k, tie_word_embeddings: false,
    }));
    const c = llamaConfigFromHF(hf);
    expect(c.experts).toBe(s.E);
    const m = new LlamaModel(c, llamaWeightsFromHF(hf, c), getBackend(nativeAvailable ? 'cpu' : 'js'));
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 16 });
    cache.add(0);
    const ours = forwardTokens(m, cache, 0, Int32Array.from(TOKENS), { allLogits: true }).data;
    expect(relL2(ours, logits(gf))).toBeLessThan(1e-5);
  });
});
