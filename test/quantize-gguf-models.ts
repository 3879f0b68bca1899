// Inputs shared by test/quantize-gguf.test.ts and the script that made its Python reference
// (test/fixtures/hf-export/make-reference.py): the vocabularies whose tokenizer.json is checked,
// the texts, and small GGUF models built from real vocabularies.
import { readFileSync } from 'node:fs';
import { ggufMetadataEntries, readGGUF, writeGGUF, type GGUFMetadataEntry, type GGUFTensorInput } from '../src/formats/gguf.js';
import { llamaGGUFMetadata, syntheticSpmVocab } from '../src/formats/llama-gguf.js';
import { randn, rng } from './helpers.js';

const fixture = (p: string) => new URL(`./fixtures/${p}`, import.meta.url).pathname;
export const STORIES_GGUF = new URL('../models/stories260K/stories260K.gguf', import.meta.url).pathname;
export const STORIES_BIN = fixture('stories260K/stories260K.bin');
export const SHAKESPEARE_GGUF = fixture('shakespeare-draft/shakespeare-draft-F32.gguf');
export const SHAKESPEARE_HF = fixture('shakespeare-draft/hf');
export const GPT2_VOCAB = fixture('vocab/ggml-vocab-gpt-2.gguf');

/** name -> a GGUF file, or a llama2.c tokenizer.bin (with its vocabulary size). */
export const TOKENIZER_SOURCES: Record<string, { gguf: string } | { llama2c: string; vocabSize: number }> = {
  'stories260K': { gguf: STORIES_GGUF },
  'stories260K-llama2c': { llama2c: fixture('stories260K/tok512.bin'), vocabSize: 512 },
  'shakespeare': { gguf: SHAKESPEARE_GGUF },
  'llama-spm': { gguf: fixture('vocab/ggml-vocab-llama-spm.gguf') },
  'phi-3': { gguf: fixture('vocab/ggml-vocab-phi-3.gguf') },
  'gpt-2': { gguf: GPT2_VOCAB },
  'starcoder': { gguf: fixture('vocab/ggml-vocab-starcoder.gguf') },
  'deepseek-coder': { gguf: fixture('vocab/ggml-vocab-deepseek-coder.gguf') },
};

/** llama.cpp's tokenizer test strings plus spaces, digits, unicode, byte fallback and special-token texts. */
export const TEXTS: string[] = JSON.parse(readFileSync(fixture('hf-export/texts.json'), 'utf8'));

/**
 * A small Qwen2 model (dim 64, 2 layers, GQA 2/1, q/k/v biases, tied embeddings) with GPT-2's
 * byte-level BPE vocabulary (50257 tokens, tokenizer.ggml.pre "gpt-2"), random F16 weights.
 */
export function writeBpeQwen2Gguf(file: string): void {
  const vocab = readGGUF(GPT2_VOCAB);
  const tok = ggufMetadataEntries(vocab).filter((e) => e.key.startsWith('tokenizer.'));
  const s = { dim: 64, layers: 2, heads: 2, kvHeads: 1, ffn: 128, contextLength: 128, ropeFreqBase: 1e6, normEps: 1e-6 };
  const n = (tok.find((e) => e.key === 'tokenizer.ggml.tokens')!.value as string[]).length;
  const meta: GGUFMetadataEntry[] = [
    ...llamaGGUFMetadata(s, syntheticSpmVocab(260), 'F16', 'bpe-qwen2', 'qwen2').filter((e) => !e.key.startsWith('tokenizer.')),
    ...tok,
  ];
  const r = rng(17), hd = s.dim / s.heads;
  const m = (name: string, rows: number, cols: number): GGUFTensorInput => ({ name, shape: [rows, cols], type: 'F16', data: randn(rows * cols, r, 0.15) });
  const v = (name: string, len: number, base = 0): GGUFTensorInput => ({ name, shape: [len], type: 'F32', data: Float32Array.from(randn(len, r, 0.1), (x) => base + x) });
  const tensors = [m('token_embd.weight', n, s.dim), v('output_norm.weight', s.dim, 1)];
  for (let l = 0; l < s.layers; l++)
    tensors.push(
      v(`blk.${l}.attn_norm.weight`, s.dim, 1), m(`blk.${l}.attn_q.weight`, s.dim, s.dim), v(`blk.${l}.attn_q.bias`, s.dim),
      m(`blk.${l}.attn_k.weight`, s.kvHeads * hd, s.dim), v(`blk.${l}.attn_k.bias`, s.kvHeads * hd),
      m(`blk.${l}.attn_v.weight`, s.kvHeads * hd, s.dim), v(`blk.${l}.attn_v.bias`, s.kvHeads * hd), m(`blk.${l}.attn_output.weight`, s.dim, s.dim),
      v(`blk.${l}.ffn_norm.weight`, s.dim, 1), m(`blk.${l}.ffn_gate.weight`, s.ffn, s.dim), m(`blk.${l}.ffn_up.weight`, s.ffn, s.dim), m(`blk.${l}.ffn_down.weight`, s.dim, s.ffn),
    );
  writeGGUF(file, meta, tensors);
}

/** A two-expert MoE `llama` GGUF (what `tessera quantize` refuses). */
export function writeMoeGguf(file: string): void {
  const s = { dim: 32, layers: 1, heads: 2, kvHeads: 2, ffn: 32, experts: 2, expertsUsed: 1 };
  const r = rng(5);
  const m = (name: string, shape: number[]): GGUFTensorInput => ({ name, shape, type: 'F32', data: randn(shape.reduce((a, b) => a * b), r, 0.1) });
  const ones = (name: string): GGUFTensorInput => ({ name, shape: [s.dim], type: 'F32', data: new Float32Array(s.dim).fill(1) });
  writeGGUF(file, llamaGGUFMetadata(s, syntheticSpmVocab(300), 'F32'), [
    m('token_embd.weight', [300, s.dim]), ones('output_norm.weight'), ones('blk.0.attn_norm.weight'), ones('blk.0.ffn_norm.weight'),
    m('blk.0.attn_q.weight', [s.dim, s.dim]), m('blk.0.attn_k.weight', [s.dim, s.dim]), m('blk.0.attn_v.weight', [s.dim, s.dim]), m('blk.0.attn_output.weight', [s.dim, s.dim]),
    m('blk.0.ffn_gate_inp.weight', [2, s.dim]), m('blk.0.ffn_gate_exps.weight', [2, s.ffn, s.dim]), m('blk.0.ffn_up_exps.weight', [2, s.ffn, s.dim]), m('blk.0.ffn_down_exps.weight', [2, s.dim, s.ffn]),
  ]);
}
