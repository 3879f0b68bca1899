/**
 * The Tokenizer: special-token partition, then the vocabulary's model (SentencePiece BPE,
 * byte-level BPE or WordPiece) per text fragment, then BOS/EOS, in the order llama.cpp's
 * llama_vocab::impl::tokenize runs them; plus detokenisation and chat templates.
 */
import type { GGUFFile } from '../formats/gguf.js';
import { bpeWord } from './bpe.js';
import { renderChatTemplate, type ChatMessage, type ChatTemplateOptions } from './chat-template.js';
import { checkId, decodeIds, pieceBytes, StreamDecoder, type DecodeOptions } from './decoder.js';
import { llama2cTokenizerGGUF, specFromGGUF } from './from-gguf.js';
import { specFromHuggingFace, type HuggingFaceSource } from './hf-json.js';
import type { TokenizerSpec } from './spec.js';
import { spmTokenize } from './spm.js';
import { toWellFormed, utf8Bytes } from './unicode.js';
import { TOKEN_TYPE } from './vocab.js';
import { wordPieceTokenize } from './wordpiece.js';

export interface EncodeOptions {
  /** Prepend BOS (BERT: [CLS]). Default: the model's add_bos_token. */
  addBos?: boolean;
  /** Append EOS (BERT: [SEP]). Default: the model's add_eos_token. */
  addEos?: boolean;
  /** Turn control tokens written in the text ("<|im_end|>") into their ids. Default false. */
  parseSpecial?: boolean;
}

/** Words repeat a lot in real text; caching their BPE result is what GPT-2's encoder.py does too. */
const WORD_CACHE_LIMIT = 65536;
const WORD_CACHE_MAX_LENGTH = 64;

export class Tokenizer {
  readonly #spec: TokenizerSpec;
  readonly #wordCache = new Map<string, number[]>();
  #maxPieceBytes = 0;

  private constructor(spec: TokenizerSpec) {
    this.#spec = spec;
  }

  /** From GGUF metadata (`tokenizer.ggml.model` llama, gpt2 or bert). */
  static fromGGUF(g: GGUFFile): Tokenizer {
    if (g === null || typeof g !== 'object' || !(g.metadata instanceof Map))
      throw new TypeError(`Expected a GGUFFile (from readGGUF) for g but received ${g === null ? 'null' : typeof g}`);
    return new Tokenizer(specFromGGUF(g));
  }

  /**
   * From llama2.c's tokenizer.bin (SentencePiece pieces with spaces instead of U+2581, scores,
   * "<0xXX>" byte pieces; ids 0/1/2 are <unk>, <s>, </s>), as the same SPM tokenizer the GGUF
   * path builds.
   */
  static fromLlama2c(file: string, vocabSize: number): Tokenizer {
    return new Tokenizer(specFromGGUF(llama2cTokenizerGGUF(file, vocabSize)));
  }

  /**
   * From a Hugging Face tokenizer.json (model.type BPE): the parsed object, its JSON text, or a
   * path to it. With a path, a tokenizer_config.json next to it supplies the chat template and
   * BOS/EOS settings unless `config` is given.
   */
  static fromHuggingFaceJSON(json: HuggingFaceSource, config?: Record<string, unknown>): Tokenizer {
    return new Tokenizer(specFromHuggingFace(json, config));
  }

  get kind(): 'spm' | 'bpe' | 'wpm' {
    return this.#spec.kind;
  }
  get vocabSize(): number {
    return this.#spec.vocab.size;
  }
  get bosId(): number | undefined {
    return this.#spec.special.bos;
  }
  get eosId(): number | undefined {
    return this.#spec.special.eos;
  }
  get eotId(): number | undefined {
    return this.#spec.special.eot;
  }
  get eomId(): number | undefined {
    return this.#spec.special.eom;
  }
  get unkId(): number | undefined {
    return this.#spec.special.unk;
  }
  get sepId(): number | undefined {
    return this.#spec.special.sep;
  }
  get padId(): number | undefined {
    return this.#spec.special.pad;
  }
  /** Tokens that end generation: EOS, EOT, EOM and the end-of-turn tokens llama.cpp recognises by text. */
  get eogIds(): ReadonlySet<number> {
    return this.#spec.eog;
  }
  get addBos(): boolean {
    return this.#spec.addBos;
  }
  get addEos(): boolean {
    return this.#spec.addEos;
  }
  get chatTemplate(): string | undefined {
    return this.#spec.chatTemplate;
  }

  isEog(id: number): boolean {
    return this.#spec.eog.has(id);
  }

  /** The token's vocabulary text as stored (e.g. "▁Hello", "Ġworld", "<0x0A>"). */
  piece(id: number): string {
    checkId(this.#spec, id, 'id');
    return this.#spec.vocab.tokens[id]!;
  }

  /** The most bytes of text one token stands for (special tokens as their text); found once. */
  get maxPieceBytes(): number {
    if (this.#maxPieceBytes === 0) {
      const out: number[] = [];
      let max = 1;
      for (let id = 0; id < this.#spec.vocab.tokens.length; id++) {
        out.length = 0;
        pieceBytes(this.#spec, id, {}, { runStart: false }, out);
        if (out.length > max) max = out.length;
      }
      this.#maxPieceBytes = max;
    }
    return this.#maxPieceBytes;
  }

  /** The bytes the token stands for in decoded text (special tokens as their text). */
  pieceBytes(id: number): Uint8Array {
    checkId(this.#spec, id, 'id');
    const out: number[] = [];
    pieceBytes(this.#spec, id, {}, { runStart: false }, out);
    return Uint8Array.from(out);
  }

  /** GGUF token type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte (0 undefined). */
  tokenType(id: number): number {
    checkId(this.#spec, id, 'id');
    return this.#spec.vocab.types[id]!;
  }

  score(id: number): number {
    checkId(this.#spec, id, 'id');
    return this.#spec.vocab.scores[id]!;
  }

  /** Control, user-defined or unknown: tokens the special-token partition matches. */
  isSpecial(id: number): boolean {
    checkId(this.#spec, id, 'id');
    return this.#spec.vocab.isSpecialType(id);
  }

  isControl(id: number): boolean {
    checkId(this.#spec, id, 'id');
    return this.#spec.vocab.types[id] === TOKEN_TYPE.CONTROL;
  }

  /** The id of a token given by its exact vocabulary text, or undefined. */
  tokenToId(text: string): number | undefined {
    return this.#spec.vocab.ids.get(text);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new TypeError(`Expected a string for text but received ${text === null ? 'null' : typeof text}`);
    if (opts === null || typeof opts !== 'object') throw new TypeError(`Expected an options object for opts but received ${String(opts)}`);
    const spec = this.#spec;
    const addBos = opts.addBos ?? spec.addBos;
    const addEos = opts.addEos ?? spec.addEos;
    const out: number[] = [];
    if (addBos) {
      if (spec.special.bos === undefined) throw new RangeError(`Expected a BOS token for addBos but ${spec.source} defines none`);
      out.push(spec.special.bos);
    }
    const frags = spec.vocab.partition(toWellFormed(text), opts.parseSpecial ?? false);
    let prevSpecial = true;
    let first = true;
    for (const f of frags) {
      if (typeof f === 'number') {
        out.push(f);
        prevSpecial = true;
      } else {
        this.#encodeText(f, prevSpecial, first, out);
        prevSpecial = false;
      }
      first = false;
    }
    if (addEos) {
      const id = spec.kind === 'wpm' ? spec.special.sep ?? spec.special.eos : spec.special.eos;
      if (id === undefined) throw new RangeError(`Expected an EOS token for addEos but ${spec.source} defines none`);
      out.push(id);
    }
    return out;
  }

  #encodeText(text: string, prevSpecial: boolean, first: boolean, out: number[]): void {
    const spec = this.#spec;
    switch (spec.kind) {
      case 'spm': {
        const t = (spec.addSpacePrefix && prevSpecial ? ' ' : '') + text;
        spmTokenize(t.replaceAll(' ', '\u2581'), spec.vocab, spec.special.unk, out);
        return;
      }
      case 'wpm':
        wordPieceTokenize(text, spec.vocab, spec.special.unk, spec.wordPiece!, out);
        return;
      case 'bpe': {
        const normalized = spec.normalize ? spec.normalize(text, first) : text;
        const words = spec.preTokenize ? spec.preTokenize(normalized, first) : [normalized];
        for (const w of words) if (w.length) this.#bpe(w, out);
      }
    }
  }

  #bpe(word: string, out: number[]): void {
    const cacheable = word.length <= WORD_CACHE_MAX_LENGTH;
    const hit = cacheable ? this.#wordCache.get(word) : undefined;
    if (hit) {
      for (const id of hit) out.push(id);
      return;
    }
    const start = out.length;
    this.#bpeUncached(word, out);
    if (cacheable) {
      if (this.#wordCache.size >= WORD_CACHE_LIMIT) this.#wordCache.clear();
      this.#wordCache.set(word, out.slice(start));
    }
  }

  #bpeUncached(word: string, out: number[]): void {
    const spec = this.#spec;
    const v = spec.vocab;
    if (spec.ignoreMerges) {
      const id = v.ids.get(word);
      if (id !== undefined) {
        out.push(id);
        return;
      }
    }
    let prevUnk = false;
    for (const sym of bpeWord(word, spec.merges!)) {
      const id = v.ids.get(sym);
      if (id !== undefined) {
        out.push(id);
        prevUnk = false;
        continue;
      }
      // Only single characters outside the vocabulary get here (a merge always yields a token).
      for (const ch of sym) {
        const cid = v.ids.get(ch);
        if (cid !== undefined) {
          out.push(cid);
          prevUnk = false;
          continue;
        }
        if (spec.byteFallback) {
          const bytes = utf8Bytes(ch);
          const bids = Array.from(bytes, (b) => v.byteId(b));
          if (bids.every((b) => b >= 0)) {
            out.push(...bids);
            prevUnk = false;
            continue;
          }
        }
        const unk = spec.special.unk;
        if (unk !== undefined && !(spec.fuseUnk && prevUnk)) out.push(unk);
        prevUnk = unk !== undefined;
      }
    }
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number')
      throw new TypeError(`Expected an array of token ids for ids but received ${ids === null ? 'null' : typeof ids}`);
    return decodeIds(this.#spec, ids, opts);
  }

  /**
   * The text one token adds where it stands: `state.runStart` says whether it starts a run (the
   * start of the text, or after a special token), where a SentencePiece space prefix is dropped.
   * The state advances; pass a copy to look at alternatives. Control tokens give ''.
   */
  tokenText(id: number, state: { runStart: boolean } = { runStart: false }): string {
    checkId(this.#spec, id, 'id');
    const bytes: number[] = [];
    pieceBytes(this.#spec, id, { skipSpecial: true }, state, bytes);
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(Uint8Array.from(bytes));
  }

  /** A decoder for ids arriving one at a time; its output concatenated equals decode() of all ids. */
  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    return new StreamDecoder(this.#spec, opts);
  }

  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
    return renderChatTemplate(this.#spec.chatTemplate, messages, opts, { bosToken: this.#spec.bosToken, eosToken: this.#spec.eosToken });
  }
}
