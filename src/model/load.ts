/**
 * Opens a model as a runnable model plus its tokenizer. Formats: a GGUF file (llama, mistral,
 * qwen2), a Hugging Face directory (config.json + safetensors + tokenizer.json), or a llama2.c
 * checkpoint (.bin with tokenizer.bin beside it).
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import { Backend } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import { ModelFileError } from '../formats/errors.js';
import { GGUF_MAGIC, readGGUF, type GGUFFile } from '../formats/gguf.js';
import { readLlama2c, readLlama2cHeader } from '../formats/llama2c.js';
import { llamaFromLlama2c } from './load-llama2c.js';
import { llamaConfigFromHF, llamaWeightsFromHF, type HFLoadInfo } from './load-hf.js';
import { existsSync } from 'node:fs';
import type { TextTokenizer } from '../tokenizer/text.js';
import { Tokenizer } from '../tokenizer/index.js';
import { LlamaModel } from './llama.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from './load-gguf.js';

export interface LoadedModel {
  model: LlamaModel;
  tokenizer: Tokenizer & TextTokenizer;
  chatTemplate: string | null;
  /** The GGUF header when loaded from GGUF. */
  gguf: GGUFFile | null;
  /** How a quantised Hugging Face checkpoint was read (GPTQ settings and zero-point convention), else null. */
  quantization?: string | null;
  /** Things the caller should tell the user (e.g. GPTQ layers run as dequantised f32). */
  warnings?: string[];
}

function magicOf(file: string): number {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    return readSync(fd, b, 0, 4, 0) === 4 ? b.readUInt32LE(0) : 0;
  } finally {
    closeSync(fd);
  }
}

/** Which format a model path is, with the standard errors for missing or unknown ones. */
function modelKind(file: string): 'hf' | 'gguf' | 'llama2c' {
  const name = path.basename(file);
  let st;
  try {
    st = statSync(file);
  } catch {
    throw new ModelFileError(name, `model file not found (${file})`);
  }
  if (st.isDirectory()) {
    for (const f of ['config.json', 'tokenizer.json'])
      if (!existsSync(path.join(file, f))) throw new ModelFileError(name, `no ${f} in the directory`);
    return 'hf';
  }
  if (magicOf(file) === GGUF_MAGIC) return 'gguf';
  if (file.endsWith('.bin')) return 'llama2c';
  throw new ModelFileError(name, 'not a GGUF file (tessera reads GGUF files, Hugging Face directories and llama2.c .bin checkpoints)');
}

/** Loads a model to run on `backend` (default: getBackend(), the native 'cpu' backend when built, else 'js'). */
export function loadModelFile(file: string, backend: Backend = getBackend(), onProgress?: (done: number, total: number) => void): LoadedModel {
  if (!(backend instanceof Backend)) throw new TypeError(`Expected a Backend (from getBackend()) or nothing for backend but received ${backend === null ? 'null' : typeof backend}`);
  const kind = modelKind(file);
  if (kind === 'hf') {
    const config = llamaConfigFromHF(file);
    const info: HFLoadInfo = { gptq: null, dequantized: [] };
    const weights = llamaWeightsFromHF(file, config, onProgress, info);
    const tokenizer = Tokenizer.fromHuggingFaceJSON(path.join(file, 'tokenizer.json')) as Tokenizer & TextTokenizer;
    const g = info.gptq;
    const quantization = g
      ? `GPTQ ${g.bits}-bit ${g.groupSize === -1 ? 'per-channel' : `g${g.groupSize}`}${g.descAct ? ' act-order' : ''}${g.sym ? ' sym' : ''}, ` +
        `checkpoint_format ${g.checkpointFormat} (${g.zeroFormat === 'v1' ? 'v1: stored zero points are zero - 1' : 'v2: zero points stored as they are'}), from ${g.source}`
      : null;
    const warnings = info.dequantized.length
      ? [`${info.dequantized.length} GPTQ projections have no packed kernel and run as dequantised f32 weights (simulated), e.g. ${info.dequantized[0]}`]
      : [];
    return { model: new LlamaModel(config, weights, backend), tokenizer, chatTemplate: tokenizer.chatTemplate ?? null, gguf: null, quantization, warnings };
  }
  if (kind === 'llama2c') return loadLlama2c(file, backend);
  const g = readGGUF(file);
  const config = llamaConfigFromGGUF(g);
  const weights = llamaWeightsFromGGUF(g, config, onProgress);
  const tokenizer = Tokenizer.fromGGUF(g) as Tokenizer & TextTokenizer;
  const tpl = g.metadata.get('tokenizer.chat_template');
  return { model: new LlamaModel(config, weights, backend), tokenizer, chatTemplate: typeof tpl === 'string' ? tpl : null, gguf: g };
}

/** llama2.c: the checkpoint and a tokenizer.bin (or tok*.bin) next to it. */
function loadLlama2c(file: string, backend: Backend): LoadedModel {
  const ck = readLlama2c(file);
  const { config, weights } = llamaFromLlama2c(ck);
  const tokenizer = llama2cTokenizer(file, config.vocabSize) as Tokenizer & TextTokenizer;
  return { model: new LlamaModel(config, weights, backend), tokenizer, chatTemplate: null, gguf: null };
}

/** Only the tokenizer of a model (GGUF metadata, a Hugging Face directory's tokenizer.json, or a
 *  llama2.c checkpoint's tokenizer.bin), without reading any weights. */
export function loadTokenizer(file: string): Tokenizer {
  const kind = modelKind(file);
  if (kind === 'hf') return Tokenizer.fromHuggingFaceJSON(path.join(file, 'tokenizer.json'));
  if (kind === 'gguf') return Tokenizer.fromGGUF(readGGUF(file));
  return llama2cTokenizer(file, Math.abs(readLlama2cHeader(file).vocabSize));
}

/** llama2.c's tokenizer.bin (or tok<vocab>.bin) next to a checkpoint. */
function llama2cTokenizer(file: string, vocab: number): Tokenizer {
  const cands = ['tokenizer.bin', `tok${vocab}.bin`].map((f) => path.join(path.dirname(file), f));
  const tokFile = cands.find((f) => existsSync(f));
  if (!tokFile) throw new ModelFileError(path.basename(file), `no tokenizer next to it (looked for ${cands.map((c) => path.basename(c)).join(', ')})`);
  return Tokenizer.fromLlama2c(tokFile, vocab);
}
