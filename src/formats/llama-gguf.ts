/**
 * Metadata for writing Llama-family GGUFs (llama.cpp's `llama` architecture keys, Mixtral's
 * expert counts, a SentencePiece vocabulary), shared by the GGUF-writing tests, benchmarks and
 * converters so every writer produces what llama.cpp loads.
 */
import { GGUF_VALUE, type GGUFFile, type GGUFMetadataEntry } from './gguf.js';

export interface LlamaGGUFShape {
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  contextLength?: number;
  /** MoE: experts per layer and experts used per token. */
  experts?: number;
  expertsUsed?: number;
  /** rope.freq_base (default 10000), attention.layer_norm_rms_epsilon (default 1e-5). */
  ropeFreqBase?: number;
  normEps?: number;
  /** Linear RoPE scaling: writes rope.scaling.type = linear and rope.scaling.factor. */
  ropeScalingFactor?: number;
}

export interface SpmVocab {
  tokens: string[];
  scores: Float32Array;
  types: Int32Array;
  bos: number;
  eos: number;
}

/** The SentencePiece vocabulary of a GGUF (e.g. stories260K's) for reuse in a written model. */
export function spmVocabOf(g: GGUFFile): SpmVocab {
  return {
    tokens: g.metadata.get('tokenizer.ggml.tokens') as string[],
    scores: g.metadata.get('tokenizer.ggml.scores') as Float32Array,
    types: g.metadata.get('tokenizer.ggml.token_type') as Int32Array,
    bos: (g.metadata.get('tokenizer.ggml.bos_token_id') as number) ?? 1,
    eos: (g.metadata.get('tokenizer.ggml.eos_token_id') as number) ?? 2,
  };
}

/** A synthetic SentencePiece vocabulary of size n: <unk>, <s>, </s>, 256 byte tokens, then pieces. */
export function syntheticSpmVocab(n: number): SpmVocab {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
  }
  while (tokens.length < n) {
    tokens.push(`▁t${tokens.length}`);
    types.push(1);
  }
  return { tokens, scores: Float32Array.from(tokens, (_, i) => -i), types: Int32Array.from(types), bos: 1, eos: 2 };
}

const FILE_TYPE: Record<string, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7 };

export function llamaGGUFMetadata(s: LlamaGGUFShape, vocab: SpmVocab, fileType: 'F32' | 'F16' | 'Q8_0' | 'Q4_0', name = 'tessera', arch: 'llama' | 'qwen2' = 'llama'): GGUFMetadataEntry[] {
  const u32 = (key: string, value: number): GGUFMetadataEntry => ({ key, type: GGUF_VALUE.UINT32, value });
  return [
    { key: 'general.architecture', type: GGUF_VALUE.STRING, value: arch },
    { key: 'general.name', type: GGUF_VALUE.STRING, value: name },
    u32('general.file_type', FILE_TYPE[fileType]!),
    u32(`${arch}.context_length`, s.contextLength ?? 256),
    u32(`${arch}.embedding_length`, s.dim),
    u32(`${arch}.feed_forward_length`, s.ffn),
    u32(`${arch}.block_count`, s.layers),
    u32(`${arch}.attention.head_count`, s.heads),
    u32(`${arch}.attention.head_count_kv`, s.kvHeads),
    u32(`${arch}.rope.dimension_count`, s.dim / s.heads),
    { key: `${arch}.attention.layer_norm_rms_epsilon`, type: GGUF_VALUE.FLOAT32, value: s.normEps ?? 1e-5 },
    { key: `${arch}.rope.freq_base`, type: GGUF_VALUE.FLOAT32, value: s.ropeFreqBase ?? 10000 },
    ...(s.ropeScalingFactor
      ? [{ key: `${arch}.rope.scaling.type`, type: GGUF_VALUE.STRING, value: 'linear' }, { key: `${arch}.rope.scaling.factor`, type: GGUF_VALUE.FLOAT32, value: s.ropeScalingFactor }]
      : []),
    ...(s.experts ? [u32(`${arch}.expert_count`, s.experts), u32(`${arch}.expert_used_count`, s.expertsUsed ?? 2)] : []),
    { key: 'tokenizer.ggml.model', type: GGUF_VALUE.STRING, value: 'llama' },
    { key: 'tokenizer.ggml.tokens', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.STRING, value: vocab.tokens },
    { key: 'tokenizer.ggml.scores', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.FLOAT32, value: vocab.scores },
    { key: 'tokenizer.ggml.token_type', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.INT32, value: vocab.types },
    u32('tokenizer.ggml.bos_token_id', vocab.bos),
    u32('tokenizer.ggml.eos_token_id', vocab.eos),
  ];
}
