/**
 * Opens a model as a runnable model plus its tokenizer. Formats: a GGUF file (llama, mistral,
 * qwen2), a Hugging Face directory (config.json + safetensors + tokenizer.json), or a llama2.c
 * checkpoint (.bin with tokenizer.bin beside it).
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Backend } from '../backend/backend.js';
import { ModelFileError } from '../formats/errors.js';
import { GGUF_MAGIC, readGGUF, type GGUFFile } from '../formats/gguf.js';
import { readLlama2c, readLlama2cHeader } from '../formats/llama2c.js';
import { llamaFromLlama2c } from './load-llama2c.js';
import { llamaConfigFromHF, llamaWeightsFromHF } from './load-hf.js';
import { existsSync } from 'node:fs';
import type { TextTokenizer } from '../runtime/generate.js';
import { Tokenizer } from '../tokenizer/index.js';
import { LlamaModel } from './llama.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from './load-gguf.js';

export interface LoadedModel {
  model: LlamaModel;
  tokenizer: Tokenizer & TextTokenizer;
  chatTemplate: string | null;
  /** The GGUF header when loaded from GGUF. */
  gguf: GGUFFile | null;
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

export function loadModelFile(file: string, backend: Backend, onProgress?: (done: number, total: number) => void): LoadedModel {
  const name = path.basename(file);
  let st;
  try {
    st = statSync(file);
  } catch {
    throw new ModelFileError(name, `model file not found (${file})`);
  }
  if (st.isDirectory()) {
    const config = llamaConfigFromHF(file);
    const weights = llamaWeightsFromHF(file, config, onProgress);
    const tj = path.join(file, 'tokenizer.json');
    if (!existsSync(tj)) throw new ModelFileError(name, 'no tokenizer.json in the directory');
    const tokenizer = Tokenizer.fromHuggingFaceJSON(tj) as Tokenizer & TextTokenizer;
    return { model: new LlamaModel(config, weights, backend), tokenizer, chatTemplate: tokenizer.chatTemplate ?? null, gguf: null };
  }
  if (magicOf(file) !== GGUF_MAGIC) {
    if (file.endsWith('.bin')) return loadLlama2c(file, backend);
    throw new ModelFileError(name, 'not a GGUF file (tessera reads GGUF files, Hugging Face directories and llama2.c .bin checkpoints)');
  }
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
  const dir = path.dirname(file);
  const cands = ['tokenizer.bin', `tok${config.vocabSize}.bin`].map((f) => path.join(dir, f));
  const tokFile = cands.find((f) => existsSync(f));
  if (!tokFile) throw new ModelFileError(path.basename(file), `no tokenizer next to it (looked for ${cands.map((c) => path.basename(c)).join(', ')})`);
  const tokenizer = Tokenizer.fromLlama2c(tokFile, config.vocabSize) as Tokenizer & TextTokenizer;
  return { model: new LlamaModel(config, weights, backend), tokenizer, chatTemplate: null, gguf: null };
}

/** Only the tokenizer of a model (GGUF metadata, a Hugging Face directory's tokenizer.json, or a
 *  llama2.c checkpoint's tokenizer.bin), without reading any weights. */
export function loadTokenizer(file: string): Tokenizer {
  const name = path.basename(file);
  let st;
  try {
    st = statSync(file);
  } catch {
    throw new ModelFileError(name, `model file not found (${file})`);
  }
  if (st.isDirectory()) {
    const tj = path.join(file, 'tokenizer.json');
    if (!existsSync(tj)) throw new ModelFileError(name, 'no tokenizer.json in the directory');
    return Tokenizer.fromHuggingFaceJSON(tj);
  }
  if (magicOf(file) === GGUF_MAGIC) return Tokenizer.fromGGUF(readGGUF(file));
  if (file.endsWith('.bin')) {
    const vocab = Math.abs(readLlama2cHeader(file).vocabSize);
    const dir = path.dirname(file);
    const tokFile = ['tokenizer.bin', `tok${vocab}.bin`].map((f) => path.join(dir, f)).find((f) => existsSync(f));
    if (!tokFile) throw new ModelFileError(name, 'no tokenizer.bin next to it');
    return Tokenizer.fromLlama2c(tokFile, vocab);
  }
  throw new ModelFileError(name, 'not a GGUF file, Hugging Face directory or llama2.c checkpoint');
}
