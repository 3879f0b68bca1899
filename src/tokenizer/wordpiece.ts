/**
 * WordPiece (BERT), as llama.cpp's llm_tokenizer_wpm: BERT-style normalisation (lowercase,
 * accent stripping via the first code point of NFD, control characters dropped, punctuation and
 * CJK ideographs split into single-character words), then greedy longest-match per word with
 * a U+2581 "phantom space" prefix, which is how llama.cpp's GGUF conversion spells word starts
 * (continuations drop BERT's "##"). A word with an unmatchable position becomes [UNK].
 */
import { isControlChar, isMark, isPunctuation, isSymbol, isWhitespace, nfdFirst, simpleLower } from './unicode.js';
import type { Vocab } from './vocab.js';

export interface WordPieceOptions {
  lowercase: boolean;
  stripAccents: boolean;
}

function isChineseChar(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    // 0x2B920, not 0x2B820: Hugging Face's BERT pre-tokenizer has it so, and llama.cpp follows.
    (cp >= 0x2b920 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

export function wordPieceWords(text: string, opts: WordPieceOptions): string[] {
  const words: string[] = [''];
  for (let ch of text) {
    if (opts.stripAccents) ch = nfdFirst(ch);
    if (isWhitespace(ch)) {
      if (words[words.length - 1]!.length) words.push('');
      continue;
    }
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd || isControlChar(ch)) continue;
    if (opts.stripAccents && isMark(ch)) continue;
    const s = opts.lowercase ? simpleLower(ch) : ch;
    if (isPunctuation(ch) || (cp < 0x7f && isSymbol(ch)) || isChineseChar(cp)) {
      if (words[words.length - 1]!.length) words.push('');
      words[words.length - 1] = s;
      words.push('');
    } else {
      words[words.length - 1] += s;
    }
  }
  if (!words[words.length - 1]!.length) words.pop();
  return words;
}

export function wordPieceTokenize(text: string, vocab: Vocab, unkId: number | undefined, opts: WordPieceOptions, out: number[]): void {
  const maxLen = vocab.maxTokenLength;
  for (const word of wordPieceWords(text, opts)) {
    if (!word.length) continue;
    const w = '\u2581' + word;
    const n = w.length;
    const mark = out.length;
    for (let i = 0; i < n; i++) {
      let matched = false;
      for (let j = Math.min(n, i + maxLen + 1); j > i; j--) {
        const id = vocab.ids.get(w.slice(i, j));
        if (id !== undefined) {
          out.push(id);
          matched = true;
          i = j - 1;
          break;
        }
      }
      if (!matched) {
        out.length = mark;
        break;
      }
    }
    if (out.length === mark && unkId !== undefined) out.push(unkId);
  }
}
