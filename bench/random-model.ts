/**
 * Random-weight Llama-family GGUF files of a real model's shape (written by tessera's GGUF writer),
 * for speed comparisons: the kernels' speed does not depend on the weights' values.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { writeGGUF } from '../src/formats/gguf.js';
import { llamaGGUFMetadata, syntheticSpmVocab } from '../src/formats/llama-gguf.js';

export interface RandomShape {
  name: string;
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  vocab: number;
  ctx: number;
  experts: number;
  used: number;
}

/** TinyLlama-1.1B: dim 2048, 22 layers, 32 heads, 4 KV heads, ffn 5632, vocab 32000. */
export const TINYLLAMA: RandomShape = { name: 'tinyllama', dim: 2048, layers: 22, heads: 32, kvHeads: 4, ffn: 5632, vocab: 32000, ctx: 2048, experts: 0, used: 0 };

let seed = 1;
function randn(n: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    // sum of 4 uniforms: cheap, roughly normal
    const a = seed & 0xff, b = (seed >>> 8) & 0xff, c = (seed >>> 16) & 0xff, d = seed >>> 24;
    out[i] = ((a + b + c + d) / 1020 - 0.5) * 3.46 * scale;
  }
  return out;
}

export function writeRandomModel(file: string, s: RandomShape, type: 'F16' | 'Q8_0' | 'Q4_0'): void {
  seed = 1;
  const hd = s.dim / s.heads;
  const meta = llamaGGUFMetadata({ ...s, contextLength: s.ctx, experts: s.experts, expertsUsed: s.used }, syntheticSpmVocab(s.vocab), type, `${s.name}-shaped-random-${type}`);

  const m = (name: string, rows: number, cols: number, t: 'F16' | 'Q8_0' | 'Q4_0' | 'F32' = type, E = 0) =>
    ({ name, shape: E ? [E, rows, cols] : [rows, cols], type: t, load: () => randn((E || 1) * rows * cols, 1 / Math.sqrt(cols)) });
  const norm = (name: string) => ({ name, shape: [s.dim], type: 'F32' as const, load: () => new Float32Array(s.dim).fill(1) });
  // llama.cpp's own quantisation keeps token_embd at the file type and output at Q6_K/Q8_0; we use Q8_0 for Q4_0 files.
  const tensors = [m('token_embd.weight', s.vocab, s.dim), norm('output_norm.weight'), m('output.weight', s.vocab, s.dim, type === 'Q4_0' ? 'Q8_0' : type)];
  for (let l = 0; l < s.layers; l++)
    tensors.push(norm(`blk.${l}.attn_norm.weight`), norm(`blk.${l}.ffn_norm.weight`),
      m(`blk.${l}.attn_q.weight`, s.dim, s.dim), m(`blk.${l}.attn_k.weight`, s.kvHeads * hd, s.dim), m(`blk.${l}.attn_v.weight`, s.kvHeads * hd, s.dim),
      m(`blk.${l}.attn_output.weight`, s.dim, s.dim),
      ...(s.experts
        ? [m(`blk.${l}.ffn_gate_inp.weight`, s.experts, s.dim, 'F32'), m(`blk.${l}.ffn_gate_exps.weight`, s.ffn, s.dim, type, s.experts),
            m(`blk.${l}.ffn_up_exps.weight`, s.ffn, s.dim, type, s.experts), m(`blk.${l}.ffn_down_exps.weight`, s.dim, s.ffn, type, s.experts)]
        : [m(`blk.${l}.ffn_gate.weight`, s.ffn, s.dim), m(`blk.${l}.ffn_up.weight`, s.ffn, s.dim), m(`blk.${l}.ffn_down.weight`, s.dim, s.ffn)]));
  writeGGUF(file, meta, tensors);
}

/** The random model of this shape and type under dir, written (and timed) if it is not there yet; its path. */
export function ensureRandomModel(dir: string, s: RandomShape, type: 'F16' | 'Q8_0' | 'Q4_0'): string {
  const file = path.join(dir, `${s.name}-random-${s.layers}L-${type}.gguf`);
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true });
    const t0 = performance.now();
    writeRandomModel(file, s, type);
    console.log(`wrote ${file} (${(statSync(file).size / 1e9).toFixed(2)} GB) in ${((performance.now() - t0) / 1e3).toFixed(0)} s`);
  }
  return file;
}

