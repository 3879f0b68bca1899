/**
 * The token table every tokenizer model shares: text <-> id, scores, token types (GGUF's
 * tokenizer.ggml.token_type) and the special-token partition that runs before any model,
 * as llama.cpp's llama-vocab.cpp `tokenizer_st_partition` does.
 */
import { byteTokenText } from './unicode.js';

/** GGUF token types (llama.cpp llama_token_type). */
export const TOKEN_TYPE = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;
export type TokenType = (typeof TOKEN_TYPE)[keyof typeof TOKEN_TYPE];

/** A piece of input after the special-token partition: raw text, or an id already decided. */
export type Fragment = string | number;

export class Vocab {
  readonly tokens: readonly string[];
  readonly scores: Float32Array;
  readonly types: Uint8Array;
  readonly ids = new Map<string, number>();
  /** Ids whose surrounding whitespace is swallowed (llama.cpp LSTRIP / RSTRIP attributes). */
  readonly lstrip = new Set<number>();
  readonly rstrip = new Set<number>();
  readonly maxTokenLength: number;
  readonly #byteIds = new Int32Array(256).fill(-1);
  #specials: number[] | undefined;

  /**
   * `what` names the source in errors (a file name or "tokenizer.json"). Duplicate token texts
   * are an error: llama.cpp refuses them too, since text -> id would be ambiguous.
   */
  constructor(tokens: readonly string[], scores: Float32Array, types: Uint8Array, fail: (msg: string) => never) {
    this.tokens = tokens;
    this.scores = scores;
    this.types = types;
    let maxLen = 0;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!;
      const prev = this.ids.get(t);
      if (prev !== undefined) fail(`duplicate token ${JSON.stringify(t)} at ids ${prev} and ${i}`);
      this.ids.set(t, i);
      if (t.length > maxLen) maxLen = t.length;
    }
    this.maxTokenLength = maxLen;
    for (let b = 0; b < 256; b++) {
      const id = this.ids.get(byteTokenText(b));
      if (id !== undefined) this.#byteIds[b] = id;
    }
  }

  get size(): number {
    return this.tokens.length;
  }

  /** The `<0xXX>` token for a byte, or -1. */
  byteId(b: number): number {
    return this.#byteIds[b]!;
  }

  isSpecialType(id: number): boolean {
    const t = this.types[id];
    return t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.USER_DEFINED || t === TOKEN_TYPE.UNKNOWN;
  }

  /** Control, user-defined and unknown tokens, longest text first (llama.cpp cache_special_tokens). */
  get specials(): readonly number[] {
    if (!this.#specials) {
      const s: number[] = [];
      for (let i = 0; i < this.tokens.length; i++) if (this.isSpecialType(i)) s.push(i);
      s.sort((a, b) => this.tokens[b]!.length - this.tokens[a]!.length || a - b);
      this.#specials = s;
    }
    return this.#specials;
  }

  /** Forgets the cached special list after token types change. */
  invalidateSpecials(): void {
    this.#specials = undefined;
  }

  /**
   * Splits text around special tokens. User-defined tokens are always split out (Hugging Face
   * tokenizers treat added tokens that way); control and unknown tokens only with parseSpecial.
   */
  partition(text: string, parseSpecial: boolean): Fragment[] {
    let frags: Fragment[] = text.length ? [text] : [];
    for (const id of this.specials) {
      const t = this.types[id];
      if (!parseSpecial && (t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.UNKNOWN)) continue;
      const tok = this.tokens[id]!;
      // Fragments are substrings of the input, so one search of the input rules a token out.
      if (tok.length === 0 || !text.includes(tok)) continue;
      const next: Fragment[] = [];
      for (const f of frags) {
        if (typeof f === 'number') {
          next.push(f);
          continue;
        }
        let start = 0;
        const end = f.length;
        for (;;) {
          const m = f.indexOf(tok, start);
          if (m < 0 || m >= end) break;
          let leftEnd = m;
          if (this.lstrip.has(id)) while (leftEnd > start && isCSpace(f.charCodeAt(leftEnd - 1))) leftEnd--;
          if (leftEnd > start) next.push(f.slice(start, leftEnd));
          next.push(id);
          start = m + tok.length;
          if (this.rstrip.has(id)) while (start < end && isCSpace(f.charCodeAt(start))) start++;
        }
        if (start < end) next.push(f.slice(start, end));
      }
      frags = next;
    }
    return frags;
  }
}

/** C isspace() in the "C" locale, which llama.cpp uses for lstrip/rstrip. */
function isCSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}
