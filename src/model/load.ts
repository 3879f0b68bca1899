/** Opens a model file as a runnable model plus its tokenizer. Formats: GGUF (llama, mistral, qwen2). */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Backend } from '../backend/backend.js';
import { ModelFileError } from '../formats/errors.js';
import { GGUF_MAGIC, readGGUF, type GGUFFile } from '../formats/gguf.js';
import type { TextTokenizer } from '../runtime/generate.js';
import { Tokenizer } from '../tokenizer/index.js';
import { LlamaModel } from './llama.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from './load-gguf.js';

export interface LoadedModel {
  model: LlamaModel;
  tokenizer: Tokenizer & TextTokenizer;
  chatTemplate: string | null;
  gguf: GGUFFile;
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
  if (st.isDirectory()) throw new ModelFileError(name, 'is a directory; tessera reads GGUF model files here');
  if (magicOf(file) !== GGUF_MAGIC) throw new ModelFileError(name, 'not a GGUF file (tessera reads GGUF model files here)');
  const g = readGGUF(file);
  const config = llamaConfigFromGGUF(g);
  const weights = llamaWeightsFromGGUF(g, config, onProgress);
  const tokenizer = Tokenizer.fromGGUF(g) as Tokenizer & TextTokenizer;
  const tpl = g.metadata.get('tokenizer.chat_template');
  return { model: new LlamaModel(config, weights, backend), tokenizer, chatTemplate: typeof tpl === 'string' ? tpl : null, gguf: g };
}
