/**
 * The loader-independent description of a tokenizer: what `fromGGUF` and
 * `fromHuggingFaceJSON` both produce and the Tokenizer class runs.
 */
import type { MergeRanks } from './bpe.js';
import type { Vocab } from './vocab.js';
import type { WordPieceOptions } from './wordpiece.js';

export type ModelKind = 'spm' | 'bpe' | 'wpm';

export interface SpecialIds {
  bos?: number;
  eos?: number;
  eot?: number;
  eom?: number;
  unk?: number;
  sep?: number;
  pad?: number;
  cls?: number;
  mask?: number;
}

export interface TokenizerSpec {
  /** File or source name, for error messages. */
  source: string;
  kind: ModelKind;
  vocab: Vocab;
  special: SpecialIds;
  /** End-of-generation ids (eos, eot, eom and llama.cpp's list of end-of-turn texts). */
  eog: Set<number>;
  addBos: boolean;
  addEos: boolean;

  /** SentencePiece: prefix a space to text at the start and after special tokens. */
  addSpacePrefix: boolean;

  /** BPE */
  merges?: MergeRanks;
  /** Normalises one text fragment (Hugging Face normalizers); `first` is true for the input's first fragment. */
  normalize?: (text: string, first: boolean) => string;
  /** Cuts one normalised fragment into words, already in the model's alphabet (byte-level when it is one). */
  preTokenize?: (text: string, first: boolean) => string[];
  ignoreMerges: boolean;
  /** Characters outside the vocabulary become <0xXX> byte tokens. */
  byteFallback: boolean;
  /** Consecutive unknown characters share one unk token. */
  fuseUnk: boolean;

  /** WordPiece */
  wordPiece?: WordPieceOptions;

  /** Detokenisation */
  decode: {
    /** Token text is in GPT-2's byte alphabet. */
    byteLevel: boolean;
    /** U+2581 in token text means a space. */
    unescapeSpaces: boolean;
    /** Drop one leading space at the start and after special tokens (undoes addSpacePrefix). */
    stripLeadingSpace: boolean;
  };

  chatTemplate?: string;
  bosToken?: string;
  eosToken?: string;
}
