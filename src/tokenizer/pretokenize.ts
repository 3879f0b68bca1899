/**
 * Pre-tokenizers: the regex splits that cut text into words before BPE. The GGUF regex lists
 * per `tokenizer.ggml.pre` follow llama.cpp's llama-vocab.cpp (llm_tokenizer_bpe); each regex in
 * a list splits every piece the previous one produced, keeping both matches and the text between
 * them (Hugging Face's Split with behavior "Isolated"). Patterns written for Oniguruma/Rust are
 * translated to JS by regex.ts.
 */
import { parseRegex } from './regex.js';

const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const GPT4O =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const TEKKEN =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

interface PreType {
  regexes: string[];
  /** llama.cpp skips merges for a word that is itself a token (llama3-style vocabularies). */
  ignoreMerges?: boolean;
  addBos?: boolean;
}

const PRE_TYPES: Record<string, PreType> = {
  default: {
    regexes: ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2, '\\p{N}+', '[0-9][0-9][0-9]'],
  },
  llama3: { regexes: [LLAMA3], ignoreMerges: true, addBos: true },
  dbrx: { regexes: [LLAMA3] },
  chatglm4: { regexes: [LLAMA3] },
  // U+1F7D, U+1FD3, U+1FDB, U+1FBE, U+2126 and U+212A are escapes: NFC (which this file is in)
  // turns them into other letters, and three of llama.cpp's ranges into ranges out of order.
  'deepseek-llm': {
    regexes: [
      '[\r\n]',
      '\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1F7Dᾀ-ᾴᾶ-ᾼ\u1FBEῂ-ῄῆ-ῌῐ-\u1FD3ῖ-\u1FDBῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212A-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+',
      '\\s?[!-/:-~！-／：-～‘-‟　-。]+',
      '\\s+$',
      '[一-龥ࠀ-一가-퟿]+',
      '\\p{N}+',
    ],
  },
  'deepseek-coder': {
    regexes: ['[\r\n]', '\\s?\\p{L}+', '\\s?\\p{P}+', '[一-龥ࠀ-一가-퟿]+', '\\p{N}'],
  },
  'deepseek-v3': {
    regexes: [
      '\\p{N}{1,3}',
      '[一-龥぀-ゟ゠-ヿ]+',
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    ],
  },
  falcon: {
    regexes: ['[\\p{P}\\$\\+<=>\\^~\\|`]+', GPT2, '[0-9][0-9][0-9]'],
  },
  starcoder: { regexes: ['\\p{N}', GPT2] },
  gpt2: { regexes: [GPT2] },
  qwen2: { regexes: [QWEN2] },
  poro: { regexes: [' ?[^(\\s|.,!?…。，、।۔،)]+'] },
  viking: { regexes: [' ?[^(\\s|.,!?…。，、।۔،)]+', '\\p{N}'] },
  tekken: { regexes: [TEKKEN], ignoreMerges: true, addBos: true },
  gpt4o: { regexes: [GPT4O] },
};

/** tokenizer.ggml.pre value -> llama.cpp pre-tokenizer family. */
const PRE_ALIASES: Record<string, string> = {
  default: 'default',
  llama3: 'llama3', 'llama-v3': 'llama3', 'llama-bpe': 'llama3', falcon3: 'llama3', 'falcon-h1': 'llama3', pixtral: 'llama3',
  'midm-2.0': 'llama3', lfm2: 'llama3',
  dbrx: 'dbrx', 'smaug-bpe': 'dbrx',
  'chatglm-bpe': 'chatglm4', glm4: 'chatglm4',
  'deepseek-llm': 'deepseek-llm',
  'deepseek-coder': 'deepseek-coder',
  'deepseek-v3': 'deepseek-v3',
  falcon: 'falcon',
  starcoder: 'starcoder', refact: 'starcoder', 'command-r': 'starcoder', smollm: 'starcoder', codeshell: 'starcoder',
  exaone: 'starcoder', 'minerva-7b': 'starcoder',
  'gpt-2': 'gpt2', 'phi-2': 'gpt2', 'jina-es': 'gpt2', 'jina-de': 'gpt2', gigachat: 'gpt2', 'jina-v2-es': 'gpt2',
  'jina-v2-de': 'gpt2', 'jina-v1-en': 'gpt2', 'jina-v2-code': 'gpt2', 'roberta-bpe': 'gpt2', mpt: 'gpt2', olmo: 'gpt2',
  jais: 'gpt2', trillion: 'gpt2', exaone4: 'gpt2', 'a.x-4.0': 'gpt2', mellum: 'gpt2', 'modern-bert': 'gpt2',
  qwen2: 'qwen2', 'deepseek-r1-qwen': 'qwen2', stablelm2: 'qwen2', hunyuan: 'qwen2', megrez: 'qwen2',
  'poro-chat': 'poro', bloom: 'poro', 'gpt3-finnish': 'poro',
  viking: 'viking',
  tekken: 'tekken',
  'gpt-4o': 'gpt4o', llama4: 'gpt4o',
};

export const KNOWN_PRE_TYPES: readonly string[] = Object.keys(PRE_ALIASES);

/** Every regex of every pre-tokenizer family, as written (for checking them all). */
export const PRE_TOKENIZER_PATTERNS: readonly string[] = [...new Set(Object.values(PRE_TYPES).flatMap((t) => t.regexes))];

export interface PreTokenizerSpec {
  family: string;
  /** The patterns as written (Oniguruma / Rust syntax), e.g. for a tokenizer.json Split. */
  patterns: readonly string[];
  regexes: RegExp[];
  ignoreMerges: boolean;
  addBos: boolean;
}

/** Looks up a `tokenizer.ggml.pre` value; undefined when llama.cpp would not know it either. */
export function ggufPreTokenizer(pre: string): PreTokenizerSpec | undefined {
  const family = PRE_ALIASES[pre];
  if (family === undefined) return undefined;
  const t = PRE_TYPES[family]!;
  return { family, patterns: t.regexes, regexes: t.regexes.map(compileRegex), ignoreMerges: !!t.ignoreMerges, addBos: !!t.addBos };
}

/** Translates an Oniguruma / Rust-regex pattern (Hugging Face, llama.cpp) into a JS `gu` regex (regex.ts). */
export function compileRegex(pattern: string): RegExp {
  return new RegExp(parseRegex(pattern).js, 'gu');
}

/** Splits text by a regex, keeping matches and the gaps between them as separate pieces. */
export function splitMatches(text: string, re: RegExp): { text: string; match: boolean }[] {
  const out: { text: string; match: boolean }[] = [];
  re.lastIndex = 0;
  let last = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    if (m[0].length === 0) {
      // An empty match splits nothing; step past it by a whole code point.
      const c = text.charCodeAt(re.lastIndex);
      re.lastIndex += c >= 0xd800 && c <= 0xdbff ? 2 : 1;
      if (re.lastIndex > text.length) break;
      continue;
    }
    if (m.index > last) out.push({ text: text.slice(last, m.index), match: false });
    out.push({ text: m[0], match: true });
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push({ text: text.slice(last), match: false });
  return out;
}

/** Applies a regex list in sequence, each to every piece the previous produced (llama.cpp unicode_regex_split). */
export function splitWithRegexes(text: string, regexes: readonly RegExp[]): string[] {
  let pieces = [text];
  for (const re of regexes) {
    const next: string[] = [];
    for (const p of pieces) for (const s of splitMatches(p, re)) next.push(s.text);
    pieces = next;
  }
  return pieces;
}
