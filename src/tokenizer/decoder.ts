/**
 * Detokenisation: token ids -> bytes -> text. Byte-fallback tokens (<0xXX>) and byte-level BPE
 * tokens can end inside a UTF-8 character, so text is only produced from complete characters:
 * the streaming decoder holds an incomplete tail in a streaming TextDecoder until the rest
 * arrives, which makes the concatenated stream identical to decoding all bytes at once.
 */
import type { TokenizerSpec } from './spec.js';
import { byteLevelDecode, parseByteToken, utf8Bytes } from './unicode.js';
import { TOKEN_TYPE } from './vocab.js';

export interface DecodeOptions {
  /** Leave out control and unknown tokens (BOS, EOS, <unk>, ...). Default false: they are written as their text. */
  skipSpecial?: boolean;
}

/** Per-sequence state: whether the next text token starts a run (start of input or after a special token). */
export interface DecodeState {
  runStart: boolean;
}

export function checkId(spec: TokenizerSpec, id: number, where: string): void {
  if (!Number.isInteger(id) || id < 0 || id >= spec.vocab.size)
    throw new RangeError(`Expected an integer token id in [0, ${spec.vocab.size}) for ${where} but received ${String(id)}`);
}

/** Appends the bytes one token contributes to `out`. */
export function pieceBytes(spec: TokenizerSpec, id: number, opts: DecodeOptions, state: DecodeState, out: number[]): void {
  const v = spec.vocab;
  const text = v.tokens[id]!;
  switch (v.types[id]) {
    case TOKEN_TYPE.CONTROL:
    case TOKEN_TYPE.UNKNOWN:
      state.runStart = true;
      if (!opts.skipSpecial) for (const b of utf8Bytes(text)) out.push(b);
      return;
    case TOKEN_TYPE.USER_DEFINED:
      // Written verbatim: encode split them out of the raw text before any escaping.
      state.runStart = true;
      for (const b of utf8Bytes(text)) out.push(b);
      return;
    case TOKEN_TYPE.UNUSED:
      return;
    case TOKEN_TYPE.BYTE: {
      const b = parseByteToken(text);
      if (b >= 0) {
        out.push(b);
        state.runStart = false;
        return;
      }
      break;
    }
  }
  const start = out.length;
  if (spec.decode.byteLevel) byteLevelDecode(text, out);
  else {
    const s = spec.decode.unescapeSpaces ? text.replaceAll('\u2581', ' ') : text;
    for (const b of utf8Bytes(s)) out.push(b);
  }
  // Undo the space encode prefixed to this run (SentencePiece add_space_prefix, WordPiece's word marker).
  if (state.runStart && spec.decode.stripLeadingSpace && out[start] === 0x20) out.splice(start, 1);
  state.runStart = false;
}

export function decodeIds(spec: TokenizerSpec, ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
  const bytes: number[] = [];
  const state: DecodeState = { runStart: true };
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    checkId(spec, id, `ids[${i}]`);
    pieceBytes(spec, id, opts, state, bytes);
  }
  // ignoreBOM keeps a leading U+FEFF as text instead of swallowing it as a byte-order mark.
  return new TextDecoder('utf-8', { ignoreBOM: true }).decode(Uint8Array.from(bytes));
}

/** Incremental detokeniser: push ids one at a time, get only complete characters back. */
export class StreamDecoder {
  readonly #spec: TokenizerSpec;
  readonly #opts: DecodeOptions;
  readonly #state: DecodeState = { runStart: true };
  #decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  #count = 0;

  constructor(spec: TokenizerSpec, opts: DecodeOptions = {}) {
    this.#spec = spec;
    this.#opts = { ...opts };
  }

  /** Text completed by this token; '' while a character is still incomplete. */
  push(id: number): string {
    checkId(this.#spec, id, `push(id) #${this.#count}`);
    this.#count++;
    const bytes: number[] = [];
    pieceBytes(this.#spec, id, this.#opts, this.#state, bytes);
    return bytes.length ? this.#decoder.decode(Uint8Array.from(bytes), { stream: true }) : '';
  }

  /** Ends the stream: any incomplete trailing bytes come out as U+FFFD. The decoder can then be reused. */
  flush(): string {
    const s = this.#decoder.decode();
    this.#decoder = new TextDecoder('utf-8', { ignoreBOM: true });
    this.#state.runStart = true;
    this.#count = 0;
    return s;
  }
}
