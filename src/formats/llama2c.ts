/**
 * llama2.c checkpoints (Karpathy's run.c format): a 7 x int32 header
 * (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
 * means a separate classifier follows), then f32 tensors in a fixed order. And its tokenizer.bin
 * (uint32 max_token_length, then per token: f32 score, i32 length, bytes).
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import { Tensor } from '../tensor/tensor.js';
import { ModelFileError } from './errors.js';

export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
}

export interface Llama2cCheckpoint {
  /** The checkpoint's file name, for error messages. */
  file: string;
  header: Llama2cHeader;
  /** Tensors in row-major [out, in] form, per layer stacked as arrays. */
  tokEmbd: Tensor<'f32'>;
  attnNorm: Tensor<'f32'>[];
  wq: Tensor<'f32'>[];
  wk: Tensor<'f32'>[];
  wv: Tensor<'f32'>[];
  wo: Tensor<'f32'>[];
  ffnNorm: Tensor<'f32'>[];
  w1: Tensor<'f32'>[];
  w2: Tensor<'f32'>[];
  w3: Tensor<'f32'>[];
  outNorm: Tensor<'f32'>;
  output: Tensor<'f32'>;
}

/** Just the 7-int header (vocabSize negative when a separate classifier follows). */
export function readLlama2cHeader(file: string): { dim: number; vocabSize: number } {
  const fd = openSync(file, 'r');
  try {
    const hb = Buffer.alloc(28);
    if (readSync(fd, hb, 0, 28, 0) !== 28) throw new ModelFileError(path.basename(file), 'truncated: the header alone is 28 bytes');
    return { dim: hb.readInt32LE(0), vocabSize: hb.readInt32LE(20) };
  } finally {
    closeSync(fd);
  }
}

export function readLlama2c(file: string): Llama2cCheckpoint {
  const name = path.basename(file);
  const fail = (m: string): never => {
    throw new ModelFileError(name, m);
  };
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size < 28) fail(`truncated: ${size} bytes, the header alone is 28`);
    const hb = Buffer.alloc(28);
    readSync(fd, hb, 0, 28, 0);
    const [dim, hidden, layers, heads, kvHeads, vocabRaw, seqLen] = Array.from({ length: 7 }, (_, i) => hb.readInt32LE(i * 4)) as number[];
    const fields = { dim, hidden_dim: hidden, n_layers: layers, n_heads: heads, n_kv_heads: kvHeads, seq_len: seqLen };
    for (const [k, v] of Object.entries(fields)) if (!(v! >= 1 && v! <= 1 << 20)) fail(`header field ${k} = ${v} is out of range`);
    if (vocabRaw === 0 || Math.abs(vocabRaw!) > 1 << 22) fail(`header field vocab_size = ${vocabRaw} is out of range`);
    if (dim! % heads!) fail(`dim ${dim} is not a multiple of n_heads ${heads}`);
    if (heads! % kvHeads!) fail(`n_heads ${heads} is not a multiple of n_kv_heads ${kvHeads}`);
    if ((dim! / heads!) % 2) fail(`the head size dim / n_heads = ${dim! / heads!} is odd (RoPE rotates pairs of dimensions)`);
    const h: Llama2cHeader = {
      dim: dim!, hiddenDim: hidden!, layers: layers!, heads: heads!, kvHeads: kvHeads!, vocabSize: Math.abs(vocabRaw!), seqLen: seqLen!, sharedClassifier: vocabRaw! > 0,
    };
    const hd = h.dim / h.heads, kvd = h.kvHeads * hd;
    const L = h.layers, D = h.dim, F = h.hiddenDim, V = h.vocabSize;
    const need = 7 + V * D + L * D + L * D * D + 2 * L * kvd * D + L * D * D + L * D + 3 * L * F * D + D + h.seqLen * hd + (h.sharedClassifier ? 0 : V * D);
    if (need * 4 > size) fail(`truncated: the header describes ${need * 4} bytes but the file has ${size}`);
    // run.c reads what the header describes and ignores the rest; extra bytes mean a header field
    // (n_layers, or vocab_size's sign, which says whether a classifier follows) does not match the tensors.
    if (need * 4 < size) fail(`the header describes ${need * 4} bytes but the file has ${size}: a header field (n_layers, dims, or vocab_size's sign for the classifier) does not match the tensors`);
    let pos = 28;
    const take = (shape: number[]): Tensor<'f32'> => {
      const n = shape.reduce((a, b) => a * b, 1);
      const t = new Tensor('f32', shape);
      const got = readSync(fd, new Uint8Array(t.data.buffer), 0, n * 4, pos);
      if (got !== n * 4) fail(`short read at offset ${pos}`);
      pos += n * 4;
      return t;
    };
    const stack = (shape: number[]) => Array.from({ length: L }, () => take(shape));
    const tokEmbd = take([V, D]);
    const attnNorm = stack([D]);
    const wq = stack([D, D]);
    const wk = stack([kvd, D]);
    const wv = stack([kvd, D]);
    const wo = stack([D, D]);
    const ffnNorm = stack([D]);
    const w1 = stack([F, D]);
    const w2 = stack([D, F]);
    const w3 = stack([F, D]);
    const outNorm = take([D]);
    pos += h.seqLen * hd * 4; // freq_cis_real and freq_cis_imag (seq_len, head_size/2) each: recomputed instead
    const output = h.sharedClassifier ? tokEmbd : take([V, D]);
    return { file: name, header: h, tokEmbd, attnNorm, wq, wk, wv, wo, ffnNorm, w1, w2, w3, outNorm, output };
  } finally {
    closeSync(fd);
  }
}

export interface Llama2cVocab {
  maxTokenLength: number;
  pieces: string[];
  scores: Float32Array;
}

/** tokenizer.bin: pieces as UTF-8 strings (llama2.c's byte pieces are "<0xXX>"). */
export function readLlama2cTokenizer(file: string, vocabSize: number): Llama2cVocab {
  const name = path.basename(file);
  const b = readFileSync(file);
  const fail = (m: string): never => {
    throw new ModelFileError(name, m);
  };
  if (b.length < 4) fail('truncated: missing max_token_length');
  const maxLen = b.readUInt32LE(0);
  const pieces: string[] = [];
  const scores = new Float32Array(vocabSize);
  let pos = 4;
  for (let i = 0; i < vocabSize; i++) {
    if (pos + 8 > b.length) fail(`truncated: token ${i} of ${vocabSize}`);
    scores[i] = b.readFloatLE(pos);
    const len = b.readInt32LE(pos + 4);
    if (len < 0 || len > maxLen || pos + 8 + len > b.length) fail(`token ${i}: length ${len} is invalid`);
    pieces.push(b.toString('utf8', pos + 8, pos + 8 + len));
    pos += 8 + len;
  }
  return { maxTokenLength: maxLen, pieces, scores };
}
