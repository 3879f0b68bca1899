/**
 * Tiny, structurally valid models and tokenizers, written by tessera's own writers (writeGGUF,
 * writeSafetensors, the GPTQ packer): the seed corpus (fuzz/make-corpus.ts) and the starting
 * point of the hostile-but-valid generators. dim 32, 4 heads (2 KV heads), ffn 32, random weights.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GGUF_VALUE, writeGGUF, type GGUFMetadataEntry } from '../src/formats/gguf.js';
import { gptqConfigJson, gptqTensors } from '../src/formats/gptq-checkpoint.js';
import { writeSafetensors } from '../src/formats/safetensors.js';
import { quantizeRtn } from '../src/quant/gptq.js';
import { Tensor } from '../src/tensor/tensor.js';
import { BYTE_TO_CHAR } from '../src/tokenizer/unicode.js';
import type { Rng } from './rng.js';

export type Bundle = Record<string, Uint8Array>;

const enc = new TextEncoder();
export const json = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v, null, 1));

export interface Shape {
  dim: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  layers: number;
  ctx: number;
  experts?: number;
  expertsUsed?: number;
}
export const TINY: Shape = { dim: 32, heads: 4, kvHeads: 2, ffn: 32, layers: 1, ctx: 64 };

export const CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
export const LLAMA2_TEMPLATE = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

function randn(rng: Rng, n: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(rng.next(), 1e-12), v = rng.next();
    const m = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}

function withTmp<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(path.join(tmpdir(), 'tessera-seed-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- vocabularies ---------------------------------------------------------------------------

const PIECES = ['▁t', 'he', '▁the', 'in', 'er', 'an', 'on', 'en', '▁a', '▁s', '▁O', 'nce', '▁up', '▁time', '.', ','];
const MERGES = ['▁ t', 'h e', '▁t he', 'i n', 'e r', 'a n', 'o n', 'e n', '▁ a', '▁ s', '▁ O', 'n c', 'nc e', '▁ u', '▁u p', 'i m', 'im e', '▁t ime'];
const LETTERS = [...'abcdefghijklmnopqrstuvwxyzOIL'];

/** A small SentencePiece vocabulary (ids 0-2 <unk> <s> </s>, optional byte tokens, letters, pieces, ChatML controls). */
export function spmVocab(bytes: boolean): { tokens: string[]; scores: number[]; types: number[] } {
  const tokens = ['<unk>', '<s>', '</s>'], types = [2, 3, 3];
  if (bytes) for (let b = 0; b < 256; b++) (tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`), types.push(6));
  for (const t of ['▁', ...LETTERS, ...PIECES, 'ime', '▁u', 'nc', '▁ti', 'im']) if (!tokens.includes(t)) (tokens.push(t), types.push(1));
  tokens.push('<|im_start|>', '<|im_end|>');
  types.push(3, 3);
  return { tokens, scores: tokens.map((_, i) => -i), types };
}

/** A small byte-level BPE vocabulary (GPT-2 byte alphabet, a few merges, <|endoftext|> and ChatML controls). */
export function byteLevelVocab(): { tokens: string[]; merges: string[]; types: number[] } {
  const tokens = [...BYTE_TO_CHAR];
  const merges = ['Ġ t', 'h e', 'Ġt he', 'i n', 'e r', 'a n', 'Ġ a', 'o n', 'Ġ s', 'Ġ O', 'n c', 'nc e', 'Ġ u', 'Ġu p'];
  for (const m of merges) tokens.push(m.replace(' ', ''));
  const types = tokens.map(() => 1);
  tokens.push('<|endoftext|>', '<|im_start|>', '<|im_end|>');
  types.push(3, 3, 3);
  return { tokens, merges, types };
}

// ---- GGUF -----------------------------------------------------------------------------------

export type WType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0';

export interface GgufSeed {
  type: WType;
  arch?: 'llama' | 'qwen2' | 'mistral';
  tokenizer?: 'spm' | 'spm-bytes' | 'gpt2';
  shape?: Partial<Shape>;
  template?: string;
  tiedOutput?: boolean;
  alignment?: number;
}

export function ggufSeed(rng: Rng, o: GgufSeed): Bundle {
  const s = { ...TINY, ...o.shape };
  const arch = o.arch ?? 'llama';
  const hd = s.dim / s.heads;
  const u32 = (key: string, value: number): GGUFMetadataEntry => ({ key, type: GGUF_VALUE.UINT32, value });
  const meta: GGUFMetadataEntry[] = [
    { key: 'general.architecture', type: GGUF_VALUE.STRING, value: arch },
    { key: 'general.name', type: GGUF_VALUE.STRING, value: 'fuzz-seed' },
    u32(`${arch}.context_length`, s.ctx), u32(`${arch}.embedding_length`, s.dim), u32(`${arch}.feed_forward_length`, s.ffn),
    u32(`${arch}.block_count`, s.layers), u32(`${arch}.attention.head_count`, s.heads), u32(`${arch}.attention.head_count_kv`, s.kvHeads),
    u32(`${arch}.rope.dimension_count`, hd),
    { key: `${arch}.attention.layer_norm_rms_epsilon`, type: GGUF_VALUE.FLOAT32, value: 1e-5 },
    { key: `${arch}.rope.freq_base`, type: GGUF_VALUE.FLOAT32, value: 10000 },
  ];
  if (s.experts) meta.push(u32(`${arch}.expert_count`, s.experts), u32(`${arch}.expert_used_count`, s.expertsUsed ?? 1));
  let V: number;
  if ((o.tokenizer ?? 'spm') === 'gpt2') {
    const v = byteLevelVocab();
    V = v.tokens.length;
    meta.push(
      { key: 'tokenizer.ggml.model', type: GGUF_VALUE.STRING, value: 'gpt2' },
      { key: 'tokenizer.ggml.pre', type: GGUF_VALUE.STRING, value: 'qwen2' },
      { key: 'tokenizer.ggml.tokens', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.STRING, value: v.tokens },
      { key: 'tokenizer.ggml.token_type', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.INT32, value: Int32Array.from(v.types) },
      { key: 'tokenizer.ggml.merges', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.STRING, value: v.merges },
      u32('tokenizer.ggml.bos_token_id', V - 3), u32('tokenizer.ggml.eos_token_id', V - 3),
    );
  } else {
    const v = spmVocab(o.tokenizer === 'spm-bytes');
    V = v.tokens.length;
    meta.push(
      { key: 'tokenizer.ggml.model', type: GGUF_VALUE.STRING, value: 'llama' },
      { key: 'tokenizer.ggml.tokens', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.STRING, value: v.tokens },
      { key: 'tokenizer.ggml.scores', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.FLOAT32, value: Float32Array.from(v.scores) },
      { key: 'tokenizer.ggml.token_type', type: GGUF_VALUE.ARRAY, elementType: GGUF_VALUE.INT32, value: Int32Array.from(v.types) },
      u32('tokenizer.ggml.bos_token_id', 1), u32('tokenizer.ggml.eos_token_id', 2),
    );
  }
  if (o.template) meta.push({ key: 'tokenizer.chat_template', type: GGUF_VALUE.STRING, value: o.template });
  const t = o.type;
  const qt = (cols: number): WType => ((t === 'Q8_0' || t === 'Q4_0') && cols % 32 ? 'F16' : t);
  const m = (name: string, rows: number, cols: number, E = 0) => ({ name, shape: E ? [E, rows, cols] : [rows, cols], type: qt(cols), data: randn(rng, (E || 1) * rows * cols, 1 / Math.sqrt(cols)) });
  const norm = (name: string, n = s.dim) => ({ name, shape: [n], type: 'F32' as const, data: Float32Array.from(randn(rng, n, 0.1), (x) => 1 + x) });
  const tensors: { name: string; shape: number[]; type: WType; data: Float32Array }[] = [m('token_embd.weight', V, s.dim), norm('output_norm.weight')];
  if (!o.tiedOutput) tensors.push(m('output.weight', V, s.dim));
  for (let l = 0; l < s.layers; l++) {
    const p = `blk.${l}.`;
    tensors.push(norm(p + 'attn_norm.weight'), norm(p + 'ffn_norm.weight'), m(p + 'attn_q.weight', s.dim, s.dim), m(p + 'attn_k.weight', s.kvHeads * hd, s.dim),
      m(p + 'attn_v.weight', s.kvHeads * hd, s.dim), m(p + 'attn_output.weight', s.dim, s.dim));
    if (arch === 'qwen2') tensors.push(norm(p + 'attn_q.bias', s.dim), norm(p + 'attn_k.bias', s.kvHeads * hd), norm(p + 'attn_v.bias', s.kvHeads * hd));
    if (s.experts)
      tensors.push({ ...m(p + 'ffn_gate_inp.weight', s.experts, s.dim), type: 'F32' }, m(p + 'ffn_gate_exps.weight', s.ffn, s.dim, s.experts),
        m(p + 'ffn_up_exps.weight', s.ffn, s.dim, s.experts), m(p + 'ffn_down_exps.weight', s.dim, s.ffn, s.experts));
    else tensors.push(m(p + 'ffn_gate.weight', s.ffn, s.dim), m(p + 'ffn_up.weight', s.ffn, s.dim), m(p + 'ffn_down.weight', s.dim, s.ffn));
  }
  return withTmp((dir) => {
    const f = path.join(dir, 'model.gguf');
    writeGGUF(f, meta, tensors, o.alignment);
    return { 'model.gguf': new Uint8Array(readFileSync(f)) };
  });
}

// ---- Hugging Face tokenizer.json -------------------------------------------------------------

export type HfTokKind = 'spm-bytefallback' | 'bytelevel' | 'metaspace' | 'split-regex';

export function hfTokenizer(kind: HfTokKind, template?: string): Bundle {
  let vocab: Record<string, number>, merges: string[], extra: Record<string, unknown>;
  const added: Record<string, unknown>[] = [];
  if (kind === 'bytelevel' || kind === 'split-regex') {
    const v = byteLevelVocab();
    vocab = Object.fromEntries(v.tokens.map((t, i) => [t, i]));
    merges = v.merges;
    const n = v.tokens.length;
    for (const [i, t] of [[n - 3, '<|endoftext|>'], [n - 2, '<|im_start|>'], [n - 1, '<|im_end|>']] as const)
      added.push({ id: i, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    extra = {
      normalizer: kind === 'split-regex' ? { type: 'NFC' } : null,
      pre_tokenizer: kind === 'split-regex'
        ? { type: 'Sequence', pretokenizers: [
            { type: 'Split', pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, behavior: 'Isolated', invert: false },
            { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false }] }
        : { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    };
  } else {
    const v = spmVocab(kind === 'spm-bytefallback');
    vocab = Object.fromEntries(v.tokens.map((t, i) => [t, i]));
    merges = MERGES;
    for (const i of [0, 1, 2]) added.push({ id: i, content: v.tokens[i], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    extra = kind === 'metaspace'
      ? {
          normalizer: null,
          pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
          post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
          decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
        }
      : {
          normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
          pre_tokenizer: null,
          post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
          decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
        };
  }
  const tok = {
    version: '1.0', truncation: null, padding: null, added_tokens: added, ...extra,
    model: { type: 'BPE', dropout: null, unk_token: kind.startsWith('spm') || kind === 'metaspace' ? '<unk>' : null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: kind !== 'bytelevel', byte_fallback: kind === 'spm-bytefallback', ignore_merges: kind === 'split-regex', vocab, merges },
  };
  const bl = kind === 'bytelevel' || kind === 'split-regex';
  const cfg: Record<string, unknown> = bl
    ? { bos_token: null, eos_token: '<|im_end|>', add_bos_token: false, pad_token: '<|endoftext|>' }
    : { bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', add_bos_token: true, add_eos_token: false };
  if (template) cfg.chat_template = template;
  return { 'tokenizer.json': json(tok), 'tokenizer_config.json': json(cfg) };
}

export function vocabSizeOf(b: Bundle): number {
  const t = JSON.parse(new TextDecoder().decode(b['tokenizer.json']!)) as { model: { vocab: Record<string, number> }; added_tokens: { id: number }[] };
  return Math.max(...Object.values(t.model.vocab), ...t.added_tokens.map((a) => a.id)) + 1;
}

// ---- Hugging Face safetensors model (dense or GPTQ) --------------------------------------------

export interface HfSeed {
  arch?: 'LlamaForCausalLM' | 'Qwen2ForCausalLM' | 'MistralForCausalLM';
  dtype?: 'f32' | 'f16' | 'bf16';
  tokenizer?: HfTokKind;
  shards?: number;
  tied?: boolean;
  gptq?: { bits: 2 | 3 | 4 | 8; groupSize: number; sym: boolean; v2: boolean; configFile?: boolean };
}

export function hfSeed(rng: Rng, o: HfSeed): Bundle {
  const s = TINY;
  const arch = o.arch ?? 'LlamaForCausalLM';
  const tok = hfTokenizer(o.tokenizer ?? 'metaspace', CHATML);
  const V = vocabSizeOf(tok);
  const hd = s.dim / s.heads;
  const dt = o.dtype ?? 'f32';
  const dense = (rows: number, cols: number) => Tensor.from(dt, [rows, cols], randn(rng, rows * cols, 1 / Math.sqrt(cols)));
  const vec = (n: number, base = 1) => Tensor.from(dt, [n], Float32Array.from(randn(rng, n, 0.1), (x) => base + x));
  const tensors: { name: string; tensor: Tensor }[] = [{ name: 'model.embed_tokens.weight', tensor: dense(V, s.dim) }];
  const proj = (prefix: string, rows: number, cols: number) => {
    if (!o.gptq) return tensors.push({ name: `${prefix}.weight`, tensor: dense(rows, cols) });
    const W = randn(rng, rows * cols, 1 / Math.sqrt(cols));
    const l = quantizeRtn(W, rows, cols, { bits: o.gptq.bits, groupSize: o.gptq.groupSize, sym: o.gptq.sym, zeroFormat: o.gptq.v2 ? 'v2' : 'v1' });
    return tensors.push(...gptqTensors(prefix, l));
  };
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    tensors.push({ name: p + 'input_layernorm.weight', tensor: vec(s.dim) }, { name: p + 'post_attention_layernorm.weight', tensor: vec(s.dim) });
    proj(p + 'self_attn.q_proj', s.dim, s.dim);
    proj(p + 'self_attn.k_proj', s.kvHeads * hd, s.dim);
    proj(p + 'self_attn.v_proj', s.kvHeads * hd, s.dim);
    proj(p + 'self_attn.o_proj', s.dim, s.dim);
    if (arch === 'Qwen2ForCausalLM')
      tensors.push({ name: p + 'self_attn.q_proj.bias', tensor: vec(s.dim, 0) }, { name: p + 'self_attn.k_proj.bias', tensor: vec(s.kvHeads * hd, 0) }, { name: p + 'self_attn.v_proj.bias', tensor: vec(s.kvHeads * hd, 0) });
    proj(p + 'mlp.gate_proj', s.ffn, s.dim);
    proj(p + 'mlp.up_proj', s.ffn, s.dim);
    proj(p + 'mlp.down_proj', s.dim, s.ffn);
  }
  tensors.push({ name: 'model.norm.weight', tensor: vec(s.dim) });
  if (!o.tied) tensors.push({ name: 'lm_head.weight', tensor: dense(V, s.dim) });
  const config: Record<string, unknown> = {
    architectures: [arch], model_type: arch.replace('ForCausalLM', '').toLowerCase(), hidden_size: s.dim, intermediate_size: s.ffn,
    num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, num_hidden_layers: s.layers, vocab_size: V, max_position_embeddings: s.ctx,
    rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: !!o.tied, torch_dtype: dt === 'f32' ? 'float32' : dt === 'f16' ? 'float16' : 'bfloat16',
  };
  const out: Bundle = { ...tok };
  if (o.gptq) {
    const q = gptqConfigJson({ bits: o.gptq.bits, groupSize: o.gptq.groupSize, descAct: false, sym: o.gptq.sym, zeroFormat: o.gptq.v2 ? 'v2' : 'v1', damp: 0.01 });
    if (o.gptq.configFile) out['quantize_config.json'] = json(q);
    else config.quantization_config = q;
  }
  out['config.json'] = json(config);
  return withTmp((dir) => {
    const shards = o.shards ?? 1;
    if (shards === 1) {
      writeSafetensors(path.join(dir, 'm'), tensors, { format: 'pt' });
      out['model.safetensors'] = new Uint8Array(readFileSync(path.join(dir, 'm')));
      return out;
    }
    const weightMap: Record<string, string> = {};
    for (let k = 0; k < shards; k++) {
      const name = `model-${String(k + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
      const part = tensors.filter((_, i) => i % shards === k);
      writeSafetensors(path.join(dir, name), part, { format: 'pt' });
      out[name] = new Uint8Array(readFileSync(path.join(dir, name)));
      for (const t of part) weightMap[t.name] = name;
    }
    out['model.safetensors.index.json'] = json({ metadata: { total_size: 0 }, weight_map: weightMap });
    return out;
  });
}

// ---- llama2.c ---------------------------------------------------------------------------------

export function llama2cSeed(rng: Rng, o: { sharedClassifier?: boolean } = {}): Bundle {
  const D = 16, F = 32, L = 1, H = 2, KV = 1, S = 32;
  const pieces = ['<unk>', '\n<s>\n', '\n</s>\n', ' ', ...LETTERS, ' a', ' the', ' Once', ' upon', ' time', 'he', 'in', 'er', 'an', '.', ',', '\n'];
  const V = pieces.length;
  const hd = D / H, kvd = KV * hd;
  const shared = o.sharedClassifier ?? true;
  const header = Int32Array.from([D, F, L, H, KV, shared ? V : -V, S]);
  const n = V * D + L * D + L * D * D + 2 * L * kvd * D + L * D * D + L * D + 3 * L * F * D + D + S * hd + (shared ? 0 : V * D);
  const w = randn(rng, n, 0.2);
  // norms near 1 (they sit at fixed offsets; close enough for a seed: the forward only has to stay finite)
  const model = new Uint8Array(28 + n * 4);
  model.set(new Uint8Array(header.buffer), 0);
  model.set(new Uint8Array(w.buffer), 28);
  const parts: Uint8Array[] = [new Uint8Array(Uint32Array.from([Math.max(...pieces.map((p) => enc.encode(p).length))]).buffer)];
  pieces.forEach((p, i) => {
    const b = enc.encode(p);
    const h = new DataView(new ArrayBuffer(8));
    h.setFloat32(0, i < 3 ? 0 : -i, true);
    h.setInt32(4, b.length, true);
    parts.push(new Uint8Array(h.buffer), b);
  });
  const tok = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let off = 0;
  for (const p of parts) (tok.set(p, off), (off += p.length));
  return { 'model.bin': model, 'tokenizer.bin': tok };
}
