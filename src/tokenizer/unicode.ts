/**
 * Unicode helpers shared by the tokenizers: UTF-8 conversion, GPT-2's bytes-to-unicode map
 * (openai/gpt-2 encoder.py `bytes_to_unicode`), and the code point classes llama.cpp's
 * unicode.cpp uses (its whitespace set differs from JS `\s`: it has U+0085, not U+FEFF).
 */

const utf8Encoder = new TextEncoder();

/** Lone surrogates cannot be encoded as UTF-8; they become U+FFFD, as TextEncoder does. */
export function toWellFormed(s: string): string {
  return s.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

export function utf8Bytes(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

/** llama.cpp's White_Space set (gen-unicode-data.py), as a regex class body. */
export const WHITESPACE_CLASS = '\\t\\n\\v\\f\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000';
const WHITESPACE_RE = new RegExp(`^[${WHITESPACE_CLASS}]$`, 'u');

export function isWhitespace(ch: string): boolean {
  return WHITESPACE_RE.test(ch);
}

const PUNCT_RE = /^\p{P}$/u;
const SYMBOL_RE = /^\p{S}$/u;
const MARK_RE = /^\p{M}$/u;
/** llama.cpp's CONTROL flag: categories Cc, Cf, Co, Cs (not Cn, which it calls undefined). */
const CONTROL_RE = /^[\p{Cc}\p{Cf}\p{Co}\p{Cs}]$/u;

export const isPunctuation = (ch: string) => PUNCT_RE.test(ch);
export const isSymbol = (ch: string) => SYMBOL_RE.test(ch);
export const isMark = (ch: string) => MARK_RE.test(ch);
export const isControlChar = (ch: string) => CONTROL_RE.test(ch);

/** UnicodeData's simple lowercase mapping: one code point in, one out. */
export function simpleLower(ch: string): string {
  const l = ch.toLowerCase();
  if (l === ch) return ch;
  const first = String.fromCodePoint(l.codePointAt(0)!);
  return first;
}

/** llama.cpp's "NFD": each code point maps to the first code point of its decomposition. */
export function nfdFirst(ch: string): string {
  const d = ch.normalize('NFD');
  return d === ch ? ch : String.fromCodePoint(d.codePointAt(0)!);
}

// ---- GPT-2 byte-level alphabet -----------------------------------------------------------

function buildByteMaps(): { toChar: string[]; toByte: Map<string, number> } {
  const toChar: string[] = new Array(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) toChar[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
  const toByte = new Map<string, number>();
  toChar.forEach((c, b) => toByte.set(c, b));
  return { toChar, toByte };
}

const BYTE_MAPS = buildByteMaps();
/** byte -> the printable character GPT-2 uses for it. */
export const BYTE_TO_CHAR: readonly string[] = BYTE_MAPS.toChar;
/** inverse of BYTE_TO_CHAR. */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = BYTE_MAPS.toByte;

/** Text -> its UTF-8 bytes spelled in the GPT-2 byte alphabet. */
export function byteLevelEncode(s: string): string {
  const bytes = utf8Bytes(s);
  let out = '';
  for (let i = 0; i < bytes.length; i++) out += BYTE_TO_CHAR[bytes[i]!];
  return out;
}

/** GPT-2 byte-alphabet text -> bytes; characters outside the alphabet keep their UTF-8 bytes. */
export function byteLevelDecode(s: string, out: number[]): void {
  for (const ch of s) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b !== undefined) out.push(b);
    else for (const x of utf8Bytes(ch)) out.push(x);
  }
}

/** "<0xAB>" -> 0xAB, or -1 when the text is not a byte token. */
export function parseByteToken(text: string): number {
  const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
  return m ? parseInt(m[1]!, 16) : -1;
}

export function byteTokenText(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
}
