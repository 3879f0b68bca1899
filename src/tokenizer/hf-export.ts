/**
 * Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json)
 * from a GGUF vocabulary, shaped as transformers' GGUF converter writes them
 * (transformers/integrations/ggml.py, GGUFLlamaConverter / GGUFGPTConverter):
 *  - tokenizer.ggml.model "llama" (SentencePiece BPE by score): a BPE model with byte_fallback and
 *    fuse_unk whose merges are built from the scores ("merges on the fly": every split of a piece
 *    into two pieces, ranked by the piece's score), a Prepend("▁") + Replace(" ", "▁") normalizer
 *    (legacy Llama), and the Replace / ByteFallback / Fuse / Strip decoder.
 *  - "gpt2" (byte-level BPE): the vocabulary and merges as they are, and, unlike the converter's
 *    plain ByteLevel, the pre-tokenizer llama.cpp runs for tokenizer.ggml.pre: one Split(Regex,
 *    Isolated) per regex, then ByteLevel without its own regex (as Llama 3's tokenizer.json does).
 * Token types, special ids, add_bos/add_eos and the space prefix come from specFromGGUF, so the
 * files describe the tokenizer tessera runs on the GGUF (llama.cpp's defaults and fix-ups included).
 */
import { ModelFileError } from '../formats/errors.js';
import type { GGUFFile, GGUFValue } from '../formats/gguf.js';
import { specFromGGUF } from './from-gguf.js';
export { llama2cTokenizerGGUF } from './from-gguf.js';
import { ggufPreTokenizer } from './pretokenize.js';
import type { TokenizerSpec } from './spec.js';
import { TOKEN_TYPE } from './vocab.js';

type Json = Record<string, unknown>;

export interface HfTokenizerFiles {
  'tokenizer.json': Json;
  'tokenizer_config.json': Json;
  'special_tokens_map.json': Json;
  /** The spec the files were made from (special ids for config.json / generation_config.json). */
  spec: TokenizerSpec;
}

export interface HfTokenizerOptions {
  /** tokenizer_config.json's model_max_length (the model's context). */
  maxLength?: number;
}

/** The three tokenizer files for a GGUF's vocabulary (tokenizer.ggml.model llama or gpt2). */
export function hfTokenizerFromGGUF(g: GGUFFile, o: HfTokenizerOptions = {}): HfTokenizerFiles {
  const spec = specFromGGUF(g);
  const file = g.path.split('/').pop()!;
  const fail = (m: string): never => {
    throw new ModelFileError(file, m);
  };
  if (spec.kind === 'wpm') fail('a WordPiece (tokenizer.ggml.model "bert") vocabulary cannot be written as a Llama-family tokenizer.json');
  const v = spec.vocab;
  const vocab: Json = Object.create(null) as Json;
  v.tokens.forEach((t, i) => (vocab[t] = i));

  // Control and unknown tokens are special added tokens (always split out of the text by the
  // tokenizers library; tessera does so with parseSpecial); user-defined ones are added tokens
  // that are not special, which both split out of any text.
  const added: Json[] = [];
  for (let id = 0; id < v.size; id++) {
    const t = v.types[id];
    if (t !== TOKEN_TYPE.CONTROL && t !== TOKEN_TYPE.UNKNOWN && t !== TOKEN_TYPE.USER_DEFINED) continue;
    added.push({
      id, content: v.tokens[id], single_word: false, lstrip: v.lstrip.has(id), rstrip: v.rstrip.has(id),
      normalized: false, special: t !== TOKEN_TYPE.USER_DEFINED,
    });
  }

  const tok = (id: number | undefined) => (id === undefined ? null : v.tokens[id]!);
  const bos = tok(spec.special.bos), eos = tok(spec.special.eos), unk = tok(spec.special.unk), pad = tok(spec.special.pad);
  let model: Json, normalizer: Json | null = null, preTokenizer: Json | null = null, decoder: Json;
  if (spec.kind === 'spm') {
    model = {
      type: 'BPE', dropout: null, unk_token: unk, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: spmMerges(v.tokens, v.scores),
    };
    normalizer = {
      type: 'Sequence',
      normalizers: [
        ...(spec.addSpacePrefix ? [{ type: 'Prepend', prepend: '\u2581' }] : []),
        { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' },
      ],
    };
    decoder = {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(spec.addSpacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    };
  } else {
    const pre = g.metadata.get('tokenizer.ggml.pre') ?? 'default';
    const family = ggufPreTokenizer(pre as string)!; // specFromGGUF checked the name
    model = {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
      fuse_unk: false, byte_fallback: false, ignore_merges: spec.ignoreMerges, vocab, merges: ggufMerges(g.metadata.get('tokenizer.ggml.merges'), fail),
    };
    preTokenizer = {
      type: 'Sequence',
      pretokenizers: [
        ...family.patterns.map((p) => ({ type: 'Split', pattern: { Regex: p }, behavior: 'Isolated', invert: false })),
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    };
    decoder = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };
  }

  const tokenizer: Json = {
    version: '1.0', truncation: null, padding: null, added_tokens: added,
    normalizer, pre_tokenizer: preTokenizer, post_processor: postProcessor(spec), decoder, model,
  };
  const config: Json = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: bos, eos_token: eos, unk_token: unk, ...(pad !== null ? { pad_token: pad } : {}),
    add_bos_token: spec.addBos, add_eos_token: spec.addEos,
    clean_up_tokenization_spaces: false,
    ...(o.maxLength !== undefined ? { model_max_length: o.maxLength } : {}),
    ...(spec.chatTemplate !== undefined ? { chat_template: spec.chatTemplate } : {}),
  };
  const map: Json = {};
  for (const [k, t] of [['bos_token', bos], ['eos_token', eos], ['unk_token', unk], ['pad_token', pad]] as const) if (t !== null) map[k] = t;
  return { 'tokenizer.json': tokenizer, 'tokenizer_config.json': config, 'special_tokens_map.json': map, spec };
}

/** BOS / EOS around a sequence (TemplateProcessing), or null when neither is added. */
function postProcessor(spec: TokenizerSpec): Json | null {
  if (!spec.addBos && !spec.addEos) return null;
  const v = spec.vocab;
  const bos = spec.addBos ? v.tokens[spec.special.bos!]! : null;
  const eos = spec.addEos ? v.tokens[spec.special.eos!]! : null;
  const seq = (id: 'A' | 'B', typeId: number) => ({ Sequence: { id, type_id: typeId } });
  const sp = (t: string, typeId: number) => ({ SpecialToken: { id: t, type_id: typeId } });
  const around = (inner: Json, typeId: number): Json[] => [...(bos ? [sp(bos, typeId)] : []), inner, ...(eos ? [sp(eos, typeId)] : [])];
  const special: Json = {};
  for (const [t, id] of [[bos, spec.special.bos], [eos, spec.special.eos]] as const) if (t !== null) special[t] = { id: t, ids: [id], tokens: [t] };
  return { type: 'TemplateProcessing', single: around(seq('A', 0), 0), pair: [...around(seq('A', 0), 0), ...around(seq('B', 1), 1)], special_tokens: special };
}

/** tokenizer.ggml.merges ("left right" strings) as [left, right] pairs. */
function ggufMerges(m: GGUFValue | undefined, fail: (m: string) => never): [string, string][] {
  // specFromGGUF has checked that the merges are strings with a space past index 0.
  return (m as string[]).map((s) => {
    const sp = s.indexOf(' ', 1);
    if (sp < 0) fail(`tokenizer.ggml.merges: ${JSON.stringify(s)} has no space between its two parts`);
    return [s.slice(0, sp), s.slice(sp + 1)];
  });
}

/**
 * Merges for a SentencePiece vocabulary, as GGUFTokenizerSkeleton builds them when a GGUF has
 * none: for each piece (in id order), every split into two pieces of the vocabulary, those of one
 * piece ordered by (left score, right score) descending; then all of them by the piece's score,
 * descending (both sorts stable). A BPE that merges by this rank merges the highest-scoring piece
 * first, as SentencePiece does.
 */
export function spmMerges(tokens: readonly string[], scores: Float32Array): [string, string][] {
  const score = new Map<string, number>();
  tokens.forEach((t, i) => score.set(t, scores[i]!));
  const all: { l: string; r: string; s: number }[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const cps = Array.from(tokens[i]!);
    const local: { l: string; r: string; s: number }[] = [];
    for (let k = 1; k < cps.length; k++) {
      const l = cps.slice(0, k).join(''), r = cps.slice(k).join('');
      if (score.has(l) && score.has(r)) local.push({ l, r, s: scores[i]! });
    }
    local.sort((a, b) => score.get(b.l)! - score.get(a.l)! || score.get(b.r)! - score.get(a.r)!);
    all.push(...local);
  }
  all.sort((a, b) => b.s - a.s);
  return all.map((m) => [m.l, m.r]);
}

