/**
 * Builds a TokenizerSpec from a Hugging Face tokenizer.json (huggingface/tokenizers serialisation)
 * with model.type "BPE": byte-level vocabularies (ByteLevel / Split pre-tokenizers, GPT-2 and
 * Qwen style) and SentencePiece-style ones (Metaspace, or Prepend/Replace normalizers, with
 * byte_fallback). added_tokens become control tokens (special: true) or user-defined ones.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ModelFileError } from '../formats/errors.js';
import { buildMergeRanks } from './bpe.js';
import { detectEndOfGeneration } from './from-gguf.js';
import { compileRegex, splitMatches } from './pretokenize.js';
import { compileFileRegex } from './regex-safety.js';
import type { SpecialIds, TokenizerSpec } from './spec.js';
import { byteLevelEncode, parseByteToken } from './unicode.js';
import { TOKEN_TYPE, Vocab } from './vocab.js';
import { parseJson } from '../formats/json.js';

/** A parsed tokenizer.json, its JSON text, or a path to it. */
export type HuggingFaceSource = string | Record<string, unknown>;

type Json = Record<string, unknown>;
type Step = (pieces: string[], first: boolean) => string[];

/** The split ByteLevel does when use_regex is on (GPT-2's, as huggingface/tokenizers writes it). */
export const BYTE_LEVEL_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const WHITESPACE_RUN = compileRegex('\\s+');

const isObj = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? s.slice(0, 60) + '...' : s;
}

export function specFromHuggingFace(src: HuggingFaceSource, config?: Record<string, unknown>): TokenizerSpec {
  let json: unknown;
  let source = 'tokenizer.json';
  if (typeof src === 'string') {
    if (src.trimStart().startsWith('{')) {
      try {
        json = parseJson(src);
      } catch (err) {
        throw new TypeError(`Expected valid JSON text for json but received text that does not parse: ${(err as Error).message}`);
      }
    } else {
      source = path.basename(src);
      let text: string;
      try {
        text = readFileSync(src, 'utf8');
      } catch (err) {
        throw new ModelFileError(source, `cannot open: ${(err as Error).message}`);
      }
      try {
        json = parseJson(text);
      } catch (err) {
        throw new ModelFileError(source, `Expected JSON but the file does not parse: ${(err as Error).message}`);
      }
      const cfgPath = path.join(path.dirname(src), 'tokenizer_config.json');
      if (config === undefined && existsSync(cfgPath)) {
        try {
          config = parseJson(readFileSync(cfgPath, 'utf8')) as Json;
        } catch (err) {
          throw new ModelFileError('tokenizer_config.json', `Expected JSON but the file does not parse: ${(err as Error).message}`);
        }
      }
    }
  } else json = src;
  const fail = (msg: string): never => {
    throw new ModelFileError(source, msg);
  };
  if (!isObj(json)) return fail(`Expected a JSON object for the tokenizer but received ${show(json)}`);
  if (config !== undefined && !isObj(config)) throw new TypeError(`Expected an object for config but received ${show(config)}`);
  const cfg: Json = config ?? {};

  const model = json.model;
  if (!isObj(model)) return fail(`Expected an object for model but received ${show(model)}`);
  const type = model.type ?? (model.merges !== undefined ? 'BPE' : undefined);
  if (type !== 'BPE') return fail(`Expected "BPE" for model.type but received ${show(type)}`);
  for (const k of ['continuing_subword_prefix', 'end_of_word_suffix'] as const)
    if (model[k] !== undefined && model[k] !== null && model[k] !== '')
      fail(`Expected an empty model.${k} (tessera's BPE does not use one) but received ${show(model[k])}`);
  const vocabObj = model.vocab;
  if (!isObj(vocabObj)) return fail(`Expected an object of token -> id for model.vocab but received ${show(vocabObj)}`);
  const mergesV = model.merges;
  if (!Array.isArray(mergesV)) return fail(`Expected an array for model.merges but received ${show(mergesV)}`);
  const byteFallback = model.byte_fallback === true;

  // ---- vocabulary -----------------------------------------------------------------------
  const entries: [string, number, number][] = []; // text, id, type
  for (const [text, id] of Object.entries(vocabObj)) {
    if (!Number.isInteger(id) || (id as number) < 0) fail(`Expected a non-negative integer id for model.vocab[${show(text)}] but received ${show(id)}`);
    entries.push([text, id as number, TOKEN_TYPE.NORMAL]);
  }
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) return fail(`Expected an array for added_tokens but received ${show(added)}`);
  const lstrip: number[] = [], rstrip: number[] = [];
  added.forEach((a, i) => {
    if (!isObj(a) || typeof a.content !== 'string' || !Number.isInteger(a.id) || (a.id as number) < 0)
      fail(`Expected {id: integer, content: string} for added_tokens[${i}] but received ${show(a)}`);
    const t = a as { id: number; content: string; special?: boolean; lstrip?: boolean; rstrip?: boolean };
    entries.push([t.content, t.id, t.special ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED]);
    if (t.lstrip) lstrip.push(t.id);
    if (t.rstrip) rstrip.push(t.id);
  });
  let size = 0;
  for (const [, id] of entries) size = Math.max(size, id + 1);
  // Ids are (nearly) dense in every real vocabulary; a table sized by one huge id would be a
  // memory bomb (one id of 2^24 - 1 meant 16.7M placeholder tokens).
  const maxSize = Math.min(1 << 24, 2 * entries.length + 1024);
  if (size > maxSize)
    fail(`Expected token ids below ${maxSize} (twice the ${entries.length} tokens given, plus 1024) but received ${size - 1}`);
  const tokens: (string | undefined)[] = new Array(size);
  const types = new Uint8Array(size).fill(TOKEN_TYPE.UNUSED);
  for (const [text, id, t] of entries) {
    const prev = tokens[id];
    if (prev !== undefined && prev !== text) fail(`Expected one text per id but id ${id} is both ${show(prev)} and ${show(text)}`);
    tokens[id] = text;
    // An added token overrides the plain vocab entry's type.
    if (t !== TOKEN_TYPE.NORMAL || types[id] === TOKEN_TYPE.UNUSED) types[id] = t;
  }
  for (let i = 0; i < size; i++) {
    if (tokens[i] === undefined) tokens[i] = `[UNUSED_${i}]`;
    else if (byteFallback && types[i] === TOKEN_TYPE.NORMAL && parseByteToken(tokens[i]!) >= 0) types[i] = TOKEN_TYPE.BYTE;
  }
  const vocab = new Vocab(tokens as string[], new Float32Array(size), types, (msg) => fail(`model.vocab: ${msg}`));
  for (const id of lstrip) vocab.lstrip.add(id);
  for (const id of rstrip) vocab.rstrip.add(id);
  const merges = buildMergeRanks(mergesV as (string | [string, string])[], (msg) => fail(`model.merges: ${msg}`));

  // ---- special tokens -------------------------------------------------------------------
  const special: SpecialIds = {};
  const tokenText = (v: unknown): string | undefined => (typeof v === 'string' ? v : isObj(v) && typeof v.content === 'string' ? v.content : undefined);
  const idOf = (v: unknown, what: string): number | undefined => {
    const t = tokenText(v);
    if (t === undefined) return undefined;
    const id = vocab.ids.get(t);
    if (id === undefined) fail(`Expected ${what} ${show(t)} to be in the vocabulary but it is not`);
    return id;
  };
  if (model.unk_token !== undefined && model.unk_token !== null) {
    special.unk = idOf(model.unk_token, 'model.unk_token');
    if (special.unk !== undefined && vocab.types[special.unk] === TOKEN_TYPE.NORMAL) {
      vocab.types[special.unk] = TOKEN_TYPE.UNKNOWN;
      vocab.invalidateSpecials();
    }
  }
  let addBos = false, addEos = false;
  const post = parsePostProcessor(json.post_processor, vocab, fail);
  if (post.bos !== undefined) {
    special.bos = post.bos;
    addBos = true;
  }
  if (post.eos !== undefined) {
    special.eos = post.eos;
    addEos = true;
  }
  special.bos = idOf(cfg.bos_token, 'tokenizer_config bos_token') ?? special.bos;
  special.eos = idOf(cfg.eos_token, 'tokenizer_config eos_token') ?? special.eos;
  special.pad = idOf(cfg.pad_token, 'tokenizer_config pad_token');
  if (typeof cfg.add_bos_token === 'boolean') addBos = cfg.add_bos_token;
  if (typeof cfg.add_eos_token === 'boolean') addEos = cfg.add_eos_token;
  if (addBos && special.bos === undefined) fail('Expected a BOS token (post_processor or bos_token) because add_bos_token is true but received none');
  if (addEos && special.eos === undefined) fail('Expected an EOS token (post_processor or eos_token) because add_eos_token is true but received none');
  const eog = detectEndOfGeneration(vocab, special);

  // ---- pipeline -------------------------------------------------------------------------
  const normalize = parseNormalizer(json.normalizer, 'normalizer', fail);
  const pre = parsePreTokenizer(json.pre_tokenizer, 'pre_tokenizer', fail);
  const dec = { byteLevel: false, unescapeSpaces: false, stripLeadingSpace: false };
  parseDecoder(json.decoder, 'decoder', dec, fail);
  if (pre.byteLevel) dec.byteLevel = true;

  let chatTemplate: string | undefined;
  const ct = cfg.chat_template;
  if (typeof ct === 'string') chatTemplate = ct;
  else if (Array.isArray(ct)) {
    const named = ct.find((t) => isObj(t) && t.name === 'default') ?? ct[0];
    if (isObj(named) && typeof named.template === 'string') chatTemplate = named.template;
  }

  return {
    source,
    kind: 'bpe',
    vocab,
    special,
    eog,
    addBos,
    addEos,
    addSpacePrefix: false,
    merges,
    normalize: normalize ?? undefined,
    preTokenize: pre.step ? (text, first) => pre.step!([text], first) : undefined,
    ignoreMerges: model.ignore_merges === true,
    byteFallback,
    fuseUnk: model.fuse_unk === true,
    decode: dec,
    chatTemplate,
    bosToken: special.bos !== undefined ? vocab.tokens[special.bos] : undefined,
    eosToken: special.eos !== undefined ? vocab.tokens[special.eos] : undefined,
  };
}

function patternOf(p: unknown, where: string, fail: (m: string) => never): RegExp {
  if (isObj(p) && typeof p.Regex === 'string') {
    // A file's regex can be written to backtrack for ever: checked before it is used.
    try {
      return compileFileRegex(p.Regex, `${where}.Regex`);
    } catch (err) {
      return fail((err as Error).message);
    }
  }
  if (isObj(p) && typeof p.String === 'string') return new RegExp(p.String.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gu');
  return fail(`Expected {Regex} or {String} for ${where} but received ${show(p)}`);
}

function parseNormalizer(n: unknown, where: string, fail: (m: string) => never): ((s: string, first: boolean) => string) | null {
  if (n === null || n === undefined) return null;
  if (!isObj(n)) return fail(`Expected an object for ${where} but received ${show(n)}`);
  switch (n.type) {
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD': {
      const form = n.type;
      return (s) => s.normalize(form);
    }
    case 'Lowercase':
      return (s) => s.toLowerCase();
    case 'StripAccents':
      return (s) => s.replace(/\p{Mn}/gu, '');
    case 'Strip': {
      const l = n.strip_left !== false, r = n.strip_right !== false;
      return (s) => (l && r ? s.trim() : l ? s.trimStart() : r ? s.trimEnd() : s);
    }
    case 'Prepend': {
      const p = String(n.prepend ?? '');
      return (s) => (s.length ? p + s : s);
    }
    case 'Replace': {
      const re = patternOf(n.pattern, `${where}.pattern`, fail);
      const content = String(n.content ?? '');
      return (s) => s.replace(re, () => content);
    }
    case 'Sequence': {
      if (!Array.isArray(n.normalizers)) return fail(`Expected an array for ${where}.normalizers but received ${show(n.normalizers)}`);
      checkSequence(n.normalizers, `${where}.normalizers`, fail);
      const steps = n.normalizers.map((x, i) => parseNormalizer(x, `${where}.normalizers[${i}]`, fail)).filter((x) => x !== null);
      return (s, first) => steps.reduce((acc, f) => f!(acc, first), s);
    }
    default:
      return fail(`Expected a supported ${where}.type (NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip, Prepend, Replace, Sequence) but received ${show(n.type)}`);
  }
}

type Behavior = 'Removed' | 'Isolated' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';

function splitBy(text: string, re: RegExp, behavior: Behavior, invert: boolean): string[] {
  const spans = splitMatches(text, re).map((s) => ({ text: s.text, match: s.match !== invert }));
  const out: string[] = [];
  switch (behavior) {
    case 'Removed':
      for (const s of spans) if (!s.match) out.push(s.text);
      return out;
    case 'Isolated':
      return spans.map((s) => s.text);
    case 'MergedWithPrevious':
      for (const s of spans) {
        if (s.match && out.length) out[out.length - 1] += s.text;
        else out.push(s.text);
      }
      return out;
    case 'MergedWithNext': {
      let pending = '';
      for (const s of spans) {
        if (s.match) pending += s.text;
        else {
          out.push(pending + s.text);
          pending = '';
        }
      }
      if (pending) out.push(pending);
      return out;
    }
    case 'Contiguous': {
      let prevMatch = false;
      for (const s of spans) {
        if (s.match && prevMatch && out.length) out[out.length - 1] += s.text;
        else out.push(s.text);
        prevMatch = s.match;
      }
      return out;
    }
  }
}

function parsePreTokenizer(p: unknown, where: string, fail: (m: string) => never): { step?: Step; byteLevel: boolean } {
  if (p === null || p === undefined) return { byteLevel: false };
  if (!isObj(p)) return fail(`Expected an object for ${where} but received ${show(p)}`);
  const behaviorOf = (b: unknown): Behavior => {
    const v = b ?? 'Isolated';
    if (v === 'Removed' || v === 'Isolated' || v === 'MergedWithPrevious' || v === 'MergedWithNext' || v === 'Contiguous') return v;
    return fail(`Expected a split behavior for ${where}.behavior but received ${show(b)}`);
  };
  switch (p.type) {
    case 'Sequence': {
      if (!Array.isArray(p.pretokenizers)) return fail(`Expected an array for ${where}.pretokenizers but received ${show(p.pretokenizers)}`);
      checkSequence(p.pretokenizers, `${where}.pretokenizers`, fail);
      const parts = p.pretokenizers.map((x, i) => parsePreTokenizer(x, `${where}.pretokenizers[${i}]`, fail));
      const steps = parts.map((x) => x.step).filter((x): x is Step => x !== undefined);
      return { step: (pieces, first) => steps.reduce((acc, s) => s(acc, first), pieces), byteLevel: parts.some((x) => x.byteLevel) };
    }
    case 'Split': {
      const re = patternOf(p.pattern, `${where}.pattern`, fail);
      const behavior = behaviorOf(p.behavior);
      const invert = p.invert === true;
      return { step: (pieces) => pieces.flatMap((s) => splitBy(s, re, behavior, invert)), byteLevel: false };
    }
    case 'ByteLevel': {
      const prefix = p.add_prefix_space === true;
      const re = p.use_regex === false ? null : compileRegex(BYTE_LEVEL_REGEX);
      return {
        step: (pieces) =>
          pieces.flatMap((s) => {
            const t = prefix && !s.startsWith(' ') ? ' ' + s : s;
            return (re ? splitMatches(t, re).map((x) => x.text) : [t]).map(byteLevelEncode);
          }),
        byteLevel: true,
      };
    }
    case 'Metaspace': {
      const rep = typeof p.replacement === 'string' ? p.replacement : '\u2581';
      const scheme = p.prepend_scheme ?? (p.add_prefix_space === false ? 'never' : 'always');
      if (scheme !== 'always' && scheme !== 'first' && scheme !== 'never')
        return fail(`Expected "always", "first" or "never" for ${where}.prepend_scheme but received ${show(scheme)}`);
      const split = p.split !== false;
      const repRe = new RegExp(rep.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gu');
      return {
        step: (pieces, first) =>
          pieces.flatMap((s) => {
            let t = s.replaceAll(' ', rep);
            if ((scheme === 'always' || (scheme === 'first' && first)) && !t.startsWith(rep)) t = rep + t;
            return split ? splitBy(t, repRe, 'MergedWithNext', false) : [t];
          }),
        byteLevel: false,
      };
    }
    case 'Digits': {
      const re = p.individual_digits === true ? /\p{N}/gu : /\p{N}+/gu;
      return { step: (pieces) => pieces.flatMap((s) => splitBy(s, re, 'Isolated', false)), byteLevel: false };
    }
    case 'WhitespaceSplit':
      return { step: (pieces) => pieces.flatMap((s) => splitBy(s, WHITESPACE_RUN, 'Removed', false)), byteLevel: false };
    case 'Whitespace':
      return { step: (pieces) => pieces.flatMap((s) => splitBy(s, /\w+|[^\w\s]+/gu, 'Isolated', true).filter((x) => x.trim().length > 0)), byteLevel: false };
    case 'Punctuation': {
      const behavior = behaviorOf(p.behavior);
      return { step: (pieces) => pieces.flatMap((s) => splitBy(s, /\p{P}/gu, behavior, false)), byteLevel: false };
    }
    default:
      return fail(`Expected a supported ${where}.type (Sequence, Split, ByteLevel, Metaspace, Digits, WhitespaceSplit, Whitespace, Punctuation) but received ${show(p.type)}`);
  }
}

function parseDecoder(d: unknown, where: string, dec: TokenizerSpec['decode'], fail: (m: string) => never): void {
  if (d === null || d === undefined) return;
  if (!isObj(d)) return fail(`Expected an object for ${where} but received ${show(d)}`);
  switch (d.type) {
    case 'ByteLevel':
      dec.byteLevel = true;
      return;
    case 'Metaspace': {
      dec.unescapeSpaces = true;
      const scheme = d.prepend_scheme ?? (d.add_prefix_space === false ? 'never' : 'always');
      if (scheme !== 'never') dec.stripLeadingSpace = true;
      return;
    }
    case 'Replace':
      if (isObj(d.pattern) && d.pattern.String === '\u2581' && d.content === ' ') {
        dec.unescapeSpaces = true;
        return;
      }
      return fail(`Expected Replace of "\u2581" by " " for ${where} but received ${show(d)}`);
    case 'Strip':
      if (typeof d.start === 'number' && d.start > 0) dec.stripLeadingSpace = true;
      return;
    case 'ByteFallback':
    case 'Fuse':
      // Byte tokens and joining pieces are what decode always does.
      return;
    case 'Sequence':
      if (!Array.isArray(d.decoders)) return fail(`Expected an array for ${where}.decoders but received ${show(d.decoders)}`);
      checkSequence(d.decoders, `${where}.decoders`, fail);
      d.decoders.forEach((x, i) => parseDecoder(x, `${where}.decoders[${i}]`, dec, fail));
      return;
    default:
      return fail(`Expected a supported ${where}.type (ByteLevel, Metaspace, Replace, Strip, ByteFallback, Fuse, Sequence) but received ${show(d.type)}`);
  }
}

/** BOS/EOS the post-processor adds around a single sequence. */
function parsePostProcessor(p: unknown, vocab: Vocab, fail: (m: string) => never): { bos?: number; eos?: number } {
  if (!isObj(p)) return {};
  const byText = (t: unknown): number | undefined => {
    if (typeof t !== 'string') return undefined;
    const id = vocab.ids.get(t);
    if (id === undefined) fail(`Expected post_processor token ${show(t)} to be in the vocabulary but it is not`);
    return id;
  };
  switch (p.type) {
    case 'TemplateProcessing': {
      if (!Array.isArray(p.single)) return {};
      const specials = isObj(p.special_tokens) ? p.special_tokens : {};
      const idOf = (item: Json): number | undefined => {
        const st = item.SpecialToken;
        if (!isObj(st)) return undefined;
        const entry = specials[st.id as string];
        if (isObj(entry) && Array.isArray(entry.ids) && Number.isInteger(entry.ids[0])) return entry.ids[0] as number;
        return byText(st.id);
      };
      const items = p.single.filter(isObj);
      const seq = items.findIndex((x) => x.Sequence !== undefined);
      if (seq < 0) return {};
      return { bos: seq > 0 ? idOf(items[0]!) : undefined, eos: seq < items.length - 1 ? idOf(items[items.length - 1]!) : undefined };
    }
    case 'BertProcessing':
    case 'RobertaProcessing': {
      const cls = Array.isArray(p.cls) ? p.cls[1] : undefined;
      const sep = Array.isArray(p.sep) ? p.sep[1] : undefined;
      return { bos: Number.isInteger(cls) ? (cls as number) : undefined, eos: Number.isInteger(sep) ? (sep as number) : undefined };
    }
    case 'Sequence': {
      const out: { bos?: number; eos?: number } = {};
      if (Array.isArray(p.processors)) for (const x of p.processors) Object.assign(out, Object.fromEntries(Object.entries(parsePostProcessor(x, vocab, fail)).filter(([, v]) => v !== undefined)));
      return out;
    }
    default:
      return {};
  }
}

/** Steps a Sequence may chain. Released tokenizers use at most a handful; each step runs over all the text. */
export const MAX_SEQUENCE_STEPS = 64;

function checkSequence(steps: unknown[], where: string, fail: (msg: string) => never): void {
  if (steps.length > MAX_SEQUENCE_STEPS) fail(`Expected at most ${MAX_SEQUENCE_STEPS} steps in ${where} but received ${steps.length}`);
}

