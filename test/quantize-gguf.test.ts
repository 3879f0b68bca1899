// `tessera quantize --method gptq|rtn` from GGUF and llama2.c inputs: a complete Hugging Face
// directory (config.json, generation_config.json, tokenizer.json / tokenizer_config.json /
// special_tokens_map.json, model.safetensors with GPTQ projections).
//  - Tokenizers: the tokenizer.json written for each vocabulary is byte-identical to the one
//    Hugging Face's `tokenizers` encoded in fixtures/hf-export/reference.json, whose ids equal
//    tessera's ids of the *source* vocabulary (independent reference); tessera reading the file
//    back encodes and decodes like the source.
//  - Weights: shakespeare-draft exists as a llama.cpp GGUF (permuted Q/K) and as its Hugging Face
//    original (made independently): RTN from either is tensor-for-tensor identical, GPTQ from
//    either gives the same greedy text. stories260K's GGUF and llama2.c checkpoint give identical
//    projections; the written models' logits stay within quantisation error of the sources.
//  - config.json: read back by tessera's Hugging Face reader it is the source's config.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getBackend } from '../src/backend/index.js';
import { readGGUF } from '../src/formats/gguf.js';
import { loadSafetensor, readSafetensorsHeader } from '../src/formats/safetensors.js';
import type { LlamaConfig } from '../src/model/config.js';
import { LlamaModel } from '../src/model/llama.js';
import { loadModelFile } from '../src/model/load.js';
import { llamaConfigFromHF } from '../src/model/load-hf.js';
import { hfConfigJson, hfExportProblem, hfLayout, shortestFloat32 } from '../src/quant/hf-checkpoint.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { forwardTokens } from '../src/runtime/runner.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/half.js';
import { Tensor } from '../src/tensor/tensor.js';
import { hfTokenizerFromGGUF, llama2cTokenizerGGUF } from '../src/tokenizer/hf-export.js';
import { Tokenizer } from '../src/tokenizer/index.js';
import { greedyAlone, relL2 } from './helpers.js';
import {
  SHAKESPEARE_GGUF, SHAKESPEARE_HF, STORIES_BIN, STORIES_GGUF, TEXTS, TOKENIZER_SOURCES, writeBpeQwen2Gguf, writeMoeGguf,
} from './quantize-gguf-models.js';

const be = getBackend('auto');
const cli = new URL('../bin/tessera.js', import.meta.url).pathname;
/** `tessera quantize ...` in a child process; resolves (never rejects) with its exit status and output. */
const run = (...args: string[]) =>
  new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, [cli, 'quantize', ...args], { encoding: 'utf8', maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr })));
const tmp = mkdtempSync(path.join(os.tmpdir(), 'tessera-quantize-gguf-'));
const ref = JSON.parse(readFileSync(new URL('./fixtures/hf-export/reference.json', import.meta.url), 'utf8')) as {
  tokenizers: Record<string, { sha256: string; ids: number[][] }>;
};

/** Logits of every position of `tokens` (T, vocab), in one forward. */
function logits(m: LlamaModel, tokens: number[]): Float32Array {
  const cache = new PagedKvCache({ layers: m.config.layers, kvHeads: m.config.kvHeads, headDim: m.config.headDim, numBlocks: 64, prefixCaching: false });
  try {
    cache.add(0);
    return forwardTokens(m, cache, 0, tokens, { allLogits: true }).data.slice();
  } finally {
    cache.dispose();
  }
}

/** Every tensor of a directory's model.safetensors, by name, as raw bytes. */
function tensorBytes(dir: string): Map<string, { dtype: string; bytes: Buffer }> {
  const out = new Map<string, { dtype: string; bytes: Buffer }>();
  for (const [name, e] of readSafetensorsHeader(path.join(dir, 'model.safetensors')).tensors) {
    const t = loadSafetensor(e);
    out.set(name, { dtype: e.dtype, bytes: Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength) });
  }
  return out;
}

/** A config as read back from config.json: float32 values from a GGUF are written as their shortest decimal. */
const asWritten = (c: LlamaConfig): LlamaConfig => ({ ...c, normEps: shortestFloat32(c.normEps), ropeTheta: shortestFloat32(c.ropeTheta), ropeStyle: 'neox' });

/**
 * AutoGPTQ's asymmetric round-to-nearest of a (N, K) weight in groups along K, dequantised, written
 * independently of src/quant (scale rounded to f16 as stored; v1 zero points are at least 1).
 */
function rtnReference(w: Float32Array, N: number, K: number, bits: number, gs: number): Float32Array {
  const out = new Float32Array(w.length), maxq = 2 ** bits - 1;
  for (let n = 0; n < N; n++)
    for (let g0 = 0; g0 < K; g0 += gs) {
      const vals = Array.from(w.subarray(n * K + g0, n * K + Math.min(K, g0 + gs)));
      let lo = Math.min(0, ...vals), hi = Math.max(0, ...vals);
      if (lo === 0 && hi === 0) [lo, hi] = [-1, 1];
      let sc = (hi - lo) / maxq, z = Math.round(-lo / sc);
      if (z < 1) [z, sc] = [1, hi / (maxq - 1)];
      sc = f16ToF32(f32ToF16(sc));
      z = Math.min(z, maxq);
      vals.forEach((x, i) => (out[n * K + g0 + i] = sc * (Math.min(Math.max(Math.round(x / sc) + z, 0), maxq) - z)));
    }
  return out;
}

const json = (dir: string, f: string) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as Record<string, unknown>;

describe('tokenizer.json from GGUF and llama2.c vocabularies', () => {
  for (const [name, src] of Object.entries(TOKENIZER_SOURCES))
    it(`${name}: Hugging Face tokenizers' ids of the written file are tessera's ids of the source; tessera reads it back the same`, () => {
      const g = 'gguf' in src ? readGGUF(src.gguf) : llama2cTokenizerGGUF(src.llama2c, src.vocabSize);
      const files = hfTokenizerFromGGUF(g);
      const text = JSON.stringify(files['tokenizer.json']) + '\n';
      // The reference was made from exactly this file (make-reference.py records its hash).
      expect(createHash('sha256').update(text).digest('hex')).toBe(ref.tokenizers[name]!.sha256);
      const source = 'gguf' in src ? Tokenizer.fromGGUF(g) : Tokenizer.fromLlama2c(src.llama2c, src.vocabSize);
      const back = Tokenizer.fromHuggingFaceJSON(text, JSON.parse(JSON.stringify(files['tokenizer_config.json'])));
      expect(back.bosId).toBe(source.bosId);
      expect(back.eosId).toBe(source.eosId);
      expect(back.addBos).toBe(source.addBos);
      expect(back.chatTemplate).toBe(source.chatTemplate);
      TEXTS.forEach((t, i) => {
        // The tokenizers library splits special tokens out of any text: tessera does with parseSpecial.
        const ids = source.encode(t, { parseSpecial: true });
        expect(ids, `${name} ${JSON.stringify(t)}`).toEqual(ref.tokenizers[name]!.ids[i]);
        expect(back.encode(t, { parseSpecial: true }), `${name} ${JSON.stringify(t)}`).toEqual(ids);
        expect(back.encode(t), `${name} ${JSON.stringify(t)}`).toEqual(source.encode(t));
        expect(back.decode(ids)).toBe(source.decode(ids));
      });
    });

  it('a WordPiece vocabulary is refused by name', () => {
    const g = readGGUF(new URL('./fixtures/vocab/ggml-vocab-bert-bge.gguf', import.meta.url).pathname);
    expect(() => hfTokenizerFromGGUF(g)).toThrow(/WordPiece .* cannot be written as a Llama-family tokenizer.json/);
  });
});

describe('tessera quantize from GGUF and llama2.c', () => {
  const calib = path.join(tmp, 'calib.txt');
  const shakespeare = readFileSync(new URL('./fixtures/text/shakespeare-val.txt', import.meta.url), 'utf8');
  writeFileSync(calib, shakespeare.slice(0, 20000));

  it('stories260K GGUF: a complete directory that loads, within quantisation error; the llama2.c checkpoint gives the same projections', async () => {
    const outG = path.join(tmp, 'stories-gguf'), outB = path.join(tmp, 'stories-bin');
    for (const [model, out] of [[STORIES_GGUF, outG], [STORIES_BIN, outB]] as const) {
      const res = await run('-m', model, '--method', 'rtn', '--bits', '8', '--group-size', '32', '-o', out);
      expect(res.status, res.stderr).toBe(0);
      expect(res.stderr).toMatch(/\[35\/35\] layer 4 wDown \[64x172\]: \(packed\)/);
      expect(res.stdout).toMatch(/Q\/K rows un-permuted to Hugging Face's RoPE layout; LlamaForCausalLM, SentencePiece tokenizer.json/);
      for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'quantize_config.json', 'model.safetensors'])
        expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    const g = readGGUF(STORIES_GGUF);
    const src = loadModelFile(STORIES_GGUF, be), q = loadModelFile(outG, be);
    // config.json read by tessera's Hugging Face reader is the GGUF's config, in HF's RoPE layout.
    expect(llamaConfigFromHF(outG)).toEqual(asWritten(src.model.config));
    const cfg = json(outG, 'config.json');
    expect(cfg).toMatchObject({ architectures: ['LlamaForCausalLM'], tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float32', rms_norm_eps: 1e-5 });
    expect(cfg.quantization_config).toMatchObject({ quant_method: 'gptq', bits: 8, group_size: 32, checkpoint_format: 'gptq' });
    expect(json(outG, 'tokenizer_config.json')).toMatchObject({ chat_template: g.metadata.get('tokenizer.chat_template'), bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', add_bos_token: true });
    expect(json(outG, 'generation_config.json')).toEqual({ bos_token_id: 1, eos_token_id: 2 });
    expect(q.model.weights.layers[0]!.wq.constructor.name).toBe('IntWeight');

    const tokens = src.tokenizer.encode('Once upon a time, there was a little girl named Lily. She loved to play', { addBos: true });
    expect(q.tokenizer.encode('Once upon a time, there was a little girl named Lily. She loved to play', { addBos: true })).toEqual(tokens);
    const lf = logits(src.model, tokens), lq = logits(q.model, tokens);
    expect(relL2(lq, lf)).toBeLessThan(0.02); // 8-bit RTN; a wrong Q/K layout gives ~1
    const eog = src.tokenizer.eogIds;
    expect(greedyAlone(q.model, tokens, 24, eog)).toEqual(greedyAlone(src.model, tokens, 24, eog));

    // Same weights, two formats: every projection and norm identical; llama2.c's classifier is tied.
    const a = tensorBytes(outG), b = tensorBytes(outB);
    expect(json(outB, 'config.json').tie_word_embeddings).toBe(true);
    expect(b.has('lm_head.weight')).toBe(false);
    expect([...a.keys()].filter((n) => n !== 'lm_head.weight')).toEqual([...b.keys()]);
    for (const [name, t] of b) expect(t.bytes.equals(a.get(name)!.bytes), name).toBe(true);
  });

  it('shakespeare-draft GGUF vs its Hugging Face original: RTN tensor-for-tensor identical, GPTQ greedy text identical', async () => {
    const rtn = (model: string, out: string) => run('-m', model, '--method', 'rtn', '--bits', '4', '--group-size', '128', '-o', out);
    const ra = await rtn(SHAKESPEARE_GGUF, path.join(tmp, 'sh-rtn-gguf')), rb = await rtn(SHAKESPEARE_HF, path.join(tmp, 'sh-rtn-hf'));
    expect(ra.status, ra.stderr).toBe(0);
    expect(rb.status, rb.stderr).toBe(0);
    const a = tensorBytes(path.join(tmp, 'sh-rtn-gguf')), b = tensorBytes(path.join(tmp, 'sh-rtn-hf'));
    expect([...a.keys()]).toEqual([...b.keys()]);
    for (const [name, t] of b) {
      expect(a.get(name)!.dtype, name).toBe(t.dtype);
      expect(a.get(name)!.bytes.equals(t.bytes), name).toBe(true);
    }

    const gptq = (model: string, out: string) =>
      run('-m', model, '--method', 'gptq', '--bits', '4', '--group-size', '128', '--act-order', '--calib', calib, '--samples', '4', '--seq-len', '128', '-o', out);
    const ga = await gptq(SHAKESPEARE_GGUF, path.join(tmp, 'sh-gptq-gguf')), gb = await gptq(SHAKESPEARE_HF, path.join(tmp, 'sh-gptq-hf'));
    expect(ga.status, ga.stderr).toBe(0);
    expect(gb.status, gb.stderr).toBe(0);
    const qa = loadModelFile(path.join(tmp, 'sh-gptq-gguf'), be), qb = loadModelFile(path.join(tmp, 'sh-gptq-hf'), be);
    const prompt = qb.tokenizer.encode('ROMEO:\nWhat light through yonder', { addBos: true });
    expect(qa.tokenizer.encode('ROMEO:\nWhat light through yonder', { addBos: true })).toEqual(prompt);
    const textA = greedyAlone(qa.model, prompt, 40, qa.tokenizer.eogIds), textB = greedyAlone(qb.model, prompt, 40, qb.tokenizer.eogIds);
    expect(textA.length).toBeGreaterThan(10);
    expect(qa.tokenizer.decode(textA)).toBe(qb.tokenizer.decode(textB));
  });

  it('byte-level BPE (GPT-2 vocabulary) Qwen2 F16 GGUF: Qwen2ForCausalLM, tied, f16 embeddings, q/k/v biases, same tokens', async () => {
    const gguf = path.join(tmp, 'bpe-qwen2.gguf'), out = path.join(tmp, 'bpe-qwen2');
    writeBpeQwen2Gguf(gguf);
    const res = await run('-m', gguf, '--method', 'rtn', '--bits', '4', '--group-size', '32', '-o', out);
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/from GGUF qwen2; Qwen2ForCausalLM, byte-level BPE tokenizer.json/);
    const cfg = json(out, 'config.json');
    expect(cfg).toMatchObject({ architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', tie_word_embeddings: true, torch_dtype: 'float16', rope_theta: 1e6, rms_norm_eps: 1e-6, bos_token_id: 50256, eos_token_id: 50256, use_sliding_window: false });
    const t = readSafetensorsHeader(path.join(out, 'model.safetensors')).tensors;
    expect(t.get('model.embed_tokens.weight')!.dtype).toBe('F16');
    expect(t.get('model.layers.0.self_attn.q_proj.bias')!.dtype).toBe('F32');
    expect(t.get('model.layers.1.mlp.down_proj.qweight')!.dtype).toBe('I32');
    expect(t.has('lm_head.weight')).toBe(false);
    const tok = json(out, 'tokenizer.json') as { pre_tokenizer: { pretokenizers: { type: string }[] }; model: { merges: unknown[] } };
    expect(tok.pre_tokenizer.pretokenizers.map((p) => p.type)).toEqual(['Split', 'ByteLevel']);
    expect(tok.model.merges.length).toBe(50000);

    const src = loadModelFile(gguf, be), q = loadModelFile(out, be);
    expect(llamaConfigFromHF(out)).toEqual(asWritten(src.model.config));
    for (const text of TEXTS) expect(q.tokenizer.encode(text), JSON.stringify(text)).toEqual(src.tokenizer.encode(text));
    // Reference: the source model with every projection replaced by the independent RTN above.
    const ref = loadModelFile(gguf, be);
    for (const L of ref.model.weights.layers)
      for (const role of ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const) {
        const w = L[role] as Tensor, [N, K] = w.shape as [number, number];
        L[role] = new Tensor('f32', [N, K], rtnReference(w.toFloat32(), N, K, 4, 32));
      }
    const tokens = src.tokenizer.encode('Hello, world! 1234 café 🦙 and more text to run through the model');
    const ls = logits(src.model, tokens), lq = logits(q.model, tokens), lr = logits(ref.model, tokens);
    // 4-bit moves these random-weight logits by ~30%; the checkpoint is that quantisation (what is
    // left is the integer kernels' 8-bit activations, ~2%).
    const quantError = relL2(lr, ls);
    expect(quantError).toBeGreaterThan(0.05);
    expect(relL2(lq, lr)).toBeLessThan(0.25 * quantError);
  });

  it('refuses quantised GGUFs, mixtures of experts and directories without config.json, naming what was wrong', async () => {
    const q8 = await run('-m', new URL('./fixtures/stories260K/stories260K-Q8_0.gguf', import.meta.url).pathname, '--method', 'rtn', '-o', path.join(tmp, 'x'));
    expect(q8.status).not.toBe(0);
    expect(q8.stderr).toMatch(/stories260K-Q8_0.gguf is already quantised \(tensor '[^']+' is Q8_0\): GPTQ \/ RTN from it would quantise twice/);
    const moe = path.join(tmp, 'moe.gguf');
    writeMoeGguf(moe);
    const rm = await run('-m', moe, '--method', 'rtn', '-o', path.join(tmp, 'y'));
    expect(rm.status).not.toBe(0);
    expect(rm.stderr).toMatch(/cannot write a Hugging Face GPTQ checkpoint from moe.gguf: it is a mixture of experts \(2 experts per layer\)/);
    const empty = path.join(tmp, 'empty');
    mkdirSync(empty, { recursive: true });
    expect((await run('-m', empty, '--method', 'rtn', '-o', path.join(tmp, 'z'))).stderr).toMatch(/is a directory without config.json/);
  });
});

describe('Hugging Face config and layout', () => {
  const base: LlamaConfig = {
    architecture: 'llama', dim: 256, layers: 3, heads: 8, kvHeads: 2, headDim: 32, ffnDim: 688, vocabSize: 1000, contextLength: 4096,
    normEps: 1e-6, ropeTheta: 500000, ropeDim: 32, ropeStyle: 'neox', ropeScale: 1, slidingWindow: 0,
  };
  const roundTrip = (c: LlamaConfig) => {
    const dir = mkdtempSync(path.join(tmp, 'cfg-'));
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfigJson(c, { tied: false, bos: 1, eos: 2, dtype: 'f16', float32Source: false })));
    return { read: llamaConfigFromHF(dir), json: json(dir, 'config.json') };
  };

  it('every hyper-parameter reads back through the Hugging Face config reader', () => {
    for (const [c, arch] of [
      [base, 'LlamaForCausalLM'],
      [{ ...base, ropeScale: 4, ropeTheta: 10000 }, 'LlamaForCausalLM'],
      [{ ...base, slidingWindow: 4096 }, 'MistralForCausalLM'], // a llama GGUF with a window is Mistral
      [{ ...base, architecture: 'mistral' }, 'MistralForCausalLM'],
      [{ ...base, architecture: 'mistral', slidingWindow: 2048 }, 'MistralForCausalLM'],
      [{ ...base, architecture: 'qwen2' }, 'Qwen2ForCausalLM'],
      [{ ...base, architecture: 'qwen2', slidingWindow: 1024 }, 'Qwen2ForCausalLM'],
    ] as const) {
      const { read, json: j } = roundTrip(c);
      expect(j.architectures).toEqual([arch]);
      expect(read).toEqual({ ...c, architecture: read.architecture });
      expect(read.architecture).toBe(arch === 'Qwen2ForCausalLM' ? 'qwen2' : arch === 'MistralForCausalLM' ? 'mistral' : 'llama');
    }
    expect(roundTrip({ ...base, ropeScale: 4 }).json.rope_scaling).toEqual({ type: 'linear', rope_type: 'linear', factor: 4 });
  });

  it('float32 values from a GGUF are written as their shortest decimal', () => {
    expect(shortestFloat32(Math.fround(1e-5))).toBe(1e-5);
    expect(shortestFloat32(Math.fround(1e-6))).toBe(1e-6);
    expect(shortestFloat32(Math.fround(0.1))).toBe(0.1);
    expect(shortestFloat32(500000)).toBe(500000);
  });

  it('hfLayout un-permutes Q/K: the same logits with NeoX RoPE; shapes it cannot express are named', () => {
    const m = loadModelFile(STORIES_GGUF, be).model;
    const tokens = [1, 403, 407, 261, 378, 432, 280, 412];
    const before = logits(m, tokens);
    expect(hfExportProblem(m)).toBeNull();
    const h = hfLayout(m);
    expect(h.config.ropeStyle).toBe('neox');
    expect(relL2(logits(h, tokens), before)).toBeLessThan(1e-5);

    const partial = new LlamaModel({ ...m.config, ropeStyle: 'interleaved', ropeDim: 4 }, m.weights, be);
    expect(hfExportProblem(partial)).toMatch(/RoPE rotates 4 of 8 dims per head/);
    const L0 = m.weights.layers[0]!;
    const biased = new LlamaModel(m.config, { ...m.weights, layers: [{ ...L0, bq: Tensor.from('f32', [64], new Float32Array(64)) }, ...m.weights.layers.slice(1)] }, be);
    expect(hfExportProblem(biased)).toMatch(/layer 0 has q\/k\/v biases, which LlamaForCausalLM does not have/);
    const packed = loadModelFile(new URL('./fixtures/stories260K/stories260K-Q4_0.gguf', import.meta.url).pathname, be).model;
    expect(hfExportProblem(packed)).toMatch(/layer 0 wq is stored as .*: a quantised source would be quantised twice/);
  });
});

process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
