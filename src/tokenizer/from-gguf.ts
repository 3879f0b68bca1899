/**
 * Builds a TokenizerSpec from GGUF tokenizer metadata (ggml docs/gguf.md `tokenizer.ggml.*`),
 * with the defaults and fix-ups of llama.cpp's llama_vocab::impl::load: per-model default
 * special ids and add_bos/add_eos, pre-tokenizer by `tokenizer.ggml.pre`, end-of-turn tokens
 * found by their text, and Phi-3's right-stripping special tokens.
 */
import path from 'node:path';
import { ModelFileError } from '../formats/errors.js';
import type { GGUFFile, GGUFValue } from '../formats/gguf.js';
import { readLlama2cTokenizer } from '../formats/llama2c.js';
import { buildMergeRanks } from './bpe.js';
import { ggufPreTokenizer, KNOWN_PRE_TYPES, splitWithRegexes } from './pretokenize.js';
import type { SpecialIds, TokenizerSpec } from './spec.js';
import { byteLevelEncode } from './unicode.js';
import { TOKEN_TYPE, Vocab } from './vocab.js';

const KEY = 'tokenizer.ggml.';

/** Texts llama.cpp treats as end-of-turn when no eot id is given. */
const EOT_TEXTS = ['<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<|end_of_text|>', '<EOT>', '_<EOT>', '[EOT]', '<｜end▁of▁sentence｜>', '<end_of_utterance>'];
const EOG_TEXTS = [...EOT_TEXTS, '<|eom_id|>', '<|return|>', '<|call|>', '</s>', '[EOS]', '<eos>'];

function describe(v: GGUFValue | undefined): string {
  if (v === undefined) return 'nothing (key missing)';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v)}`;
  if (Array.isArray(v)) return `an array of ${v.length} ${v.length ? typeof v[0] : 'values'}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name} of ${(v as Float32Array).length}`;
  return `${typeof v} ${String(v)}`;
}

export function specFromGGUF(g: GGUFFile): TokenizerSpec {
  const file = path.basename(g.path);
  const fail = (msg: string): never => {
    throw new ModelFileError(file, msg);
  };
  const md = g.metadata;
  const get = (k: string) => md.get(KEY + k);

  const model = get('model');
  if (typeof model !== 'string') fail(`Expected a string for ${KEY}model but received ${describe(model)}`);
  const tokensV = get('tokens');
  if (!Array.isArray(tokensV) || tokensV.some((t) => typeof t !== 'string'))
    fail(`Expected an array of strings for ${KEY}tokens but received ${describe(tokensV)}`);
  const n = (tokensV as string[]).length;
  if (n === 0) fail(`Expected at least one token in ${KEY}tokens but received an empty array`);
  // llama.cpp renames empty tokens so that text -> id stays unambiguous.
  const tokens = (tokensV as string[]).map((t, i) => (t.length ? t : `[EMPTY_${i}]`));

  const scoresV = get('scores');
  let scores = new Float32Array(n);
  if (scoresV !== undefined) {
    if (!(scoresV instanceof Float32Array) && !(scoresV instanceof Int32Array))
      fail(`Expected a float32 or int32 array for ${KEY}scores but received ${describe(scoresV)}`);
    const s = scoresV as Float32Array | Int32Array;
    if (s.length !== n) fail(`Expected ${n} entries in ${KEY}scores (one per token in ${KEY}tokens) but received ${s.length}`);
    scores = Float32Array.from(s);
  }
  const typesV = get('token_type');
  const types = new Uint8Array(n).fill(TOKEN_TYPE.NORMAL);
  if (typesV !== undefined) {
    if (!(typesV instanceof Int32Array) && !(typesV instanceof Uint32Array))
      fail(`Expected an int32 array for ${KEY}token_type but received ${describe(typesV)}`);
    const t = typesV as Int32Array;
    if (t.length !== n) fail(`Expected ${n} entries in ${KEY}token_type (one per token in ${KEY}tokens) but received ${t.length}`);
    for (let i = 0; i < n; i++) types[i] = t[i]! >= 0 && t[i]! <= 6 ? t[i]! : TOKEN_TYPE.UNDEFINED;
  }

  let kind: TokenizerSpec['kind'];
  const special: SpecialIds = {};
  let addBos = false, addEos = false, addSpacePrefix = false, ignoreMerges = false;
  let preTokenize: TokenizerSpec['preTokenize'];
  let merges: TokenizerSpec['merges'];
  switch (model) {
    case 'llama':
      kind = 'spm';
      Object.assign(special, { bos: 1, eos: 2, unk: 0 });
      addBos = true;
      addSpacePrefix = true;
      break;
    case 'bert':
      kind = 'wpm';
      Object.assign(special, { bos: 101, unk: 100, sep: 102, pad: 0, mask: 103, cls: 101 });
      addBos = true;
      addEos = true;
      break;
    case 'gpt2': {
      kind = 'bpe';
      const m = get('merges');
      if (!Array.isArray(m) || m.some((x) => typeof x !== 'string'))
        fail(`Expected an array of strings for ${KEY}merges (required when ${KEY}model is "gpt2") but received ${describe(m)}`);
      merges = buildMergeRanks(m as string[], (msg) => fail(`${KEY}merges: ${msg}`));
      Object.assign(special, { bos: 11, eos: 11 });
      const preV = get('pre');
      const preName = preV === undefined ? 'default' : preV;
      if (typeof preName !== 'string') fail(`Expected a string for ${KEY}pre but received ${describe(preV)}`);
      const pre = ggufPreTokenizer(preName as string);
      if (!pre)
        fail(`Expected a known pre-tokenizer for ${KEY}pre (one of ${KNOWN_PRE_TYPES.join(', ')}) but received ${JSON.stringify(preName)}`);
      ignoreMerges = pre!.ignoreMerges;
      addBos = pre!.addBos;
      const regexes = pre!.regexes;
      preTokenize = (text) => splitWithRegexes(text, regexes).map(byteLevelEncode);
      break;
    }
    default:
      return fail(`Expected "llama", "gpt2" or "bert" for ${KEY}model but received ${JSON.stringify(model)}`);
  }

  const flag = (k: string): boolean | undefined => {
    const v = get(k);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') fail(`Expected a bool for ${KEY}${k} but received ${describe(v)}`);
    return v as boolean;
  };
  if (kind === 'spm') addSpacePrefix = flag('add_space_prefix') ?? true;
  addBos = flag('add_bos_token') ?? addBos;
  addEos = flag('add_eos_token') ?? addEos;
  if (kind === 'wpm') addEos = flag('add_sep_token') ?? addEos;

  const ids: [keyof SpecialIds, string][] = [
    ['bos', 'bos_token_id'], ['eos', 'eos_token_id'], ['eot', 'eot_token_id'], ['eom', 'eom_token_id'],
    ['unk', 'unknown_token_id'], ['sep', 'seperator_token_id'], ['pad', 'padding_token_id'],
    ['cls', 'cls_token_id'], ['mask', 'mask_token_id'],
  ];
  for (const [name] of ids) if (special[name] !== undefined && special[name]! >= n) delete special[name];
  for (const [name, k] of ids) {
    const v = get(k);
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v)) fail(`Expected an integer for ${KEY}${k} but received ${describe(v)}`);
    // llama.cpp ignores out-of-range ids (e.g. 0xFFFFFFFF for "none") and keeps the default.
    if ((v as number) >= 0 && (v as number) < n) special[name] = v as number;
  }
  if (kind === 'wpm' && get('bos_token_id') === undefined && special.cls !== undefined) special.bos = special.cls;

  const vocab = new Vocab(tokens, scores, types, (msg) => fail(`${KEY}tokens: ${msg}`));

  const eog = detectEndOfGeneration(vocab, special);

  // Phi-3 special tokens swallow the whitespace after them (llama.cpp sets RSTRIP by model name).
  const name = md.get('general.name');
  if (typeof name === 'string' && /phi-?3/.test(name.toLowerCase())) {
    for (const id of vocab.specials) vocab.rstrip.add(id);
    const rs = vocab.ids.get('</s>');
    if (rs !== undefined) vocab.rstrip.add(rs);
    for (const t of ['<unk>', '<s>', '<|endoftext|>']) {
      const id = vocab.ids.get(t);
      if (id !== undefined) vocab.rstrip.delete(id);
    }
  }

  if (addBos && special.bos === undefined) fail(`Expected ${KEY}bos_token_id because ${KEY}add_bos_token is true but received no valid id`);
  if (addEos && kind !== 'wpm' && special.eos === undefined) fail(`Expected ${KEY}eos_token_id because ${KEY}add_eos_token is true but received no valid id`);
  if (addEos && kind === 'wpm' && special.sep === undefined) fail(`Expected ${KEY}seperator_token_id for a BERT vocabulary but received no valid id`);

  let wordPiece: TokenizerSpec['wordPiece'];
  if (kind === 'wpm') {
    const lowercase = flag('normalizer.lowercase') ?? true;
    wordPiece = { lowercase, stripAccents: flag('normalizer.strip_accents') ?? lowercase };
  }

  const tmpl = md.get('tokenizer.chat_template');
  return {
    source: file,
    kind,
    vocab,
    special,
    eog,
    addBos,
    addEos,
    addSpacePrefix,
    merges,
    preTokenize,
    ignoreMerges,
    byteFallback: false,
    fuseUnk: false,
    wordPiece,
    decode: {
      byteLevel: kind === 'bpe',
      unescapeSpaces: kind !== 'bpe',
      stripLeadingSpace: (kind === 'spm' && addSpacePrefix) || kind === 'wpm',
    },
    chatTemplate: typeof tmpl === 'string' ? tmpl : undefined,
    bosToken: special.bos !== undefined ? vocab.tokens[special.bos] : undefined,
    eosToken: special.eos !== undefined ? vocab.tokens[special.eos] : undefined,
  };
}

/**
 * Fills special.eot / special.eom from llama.cpp's list of end-of-turn texts when the file gives
 * none, forcing those tokens to control type as llama.cpp does, and returns the end-of-generation set.
 */
export function detectEndOfGeneration(vocab: Vocab, special: SpecialIds): Set<number> {
  const forceControl = (id: number) => {
    if (vocab.types[id] !== TOKEN_TYPE.CONTROL) {
      vocab.types[id] = TOKEN_TYPE.CONTROL;
      vocab.invalidateSpecials();
    }
  };
  if (special.eot === undefined) {
    for (const t of EOT_TEXTS) {
      const id = vocab.ids.get(t);
      if (id !== undefined) {
        special.eot = id;
        forceControl(id);
        break;
      }
    }
  }
  if (special.eom === undefined) {
    const id = vocab.ids.get('<|eom_id|>');
    if (id !== undefined) {
      special.eom = id;
      forceControl(id);
    }
  }
  const eog = new Set<number>();
  for (const t of EOG_TEXTS) {
    const id = vocab.ids.get(t);
    if (id !== undefined) eog.add(id);
  }
  for (const id of [special.eos, special.eot, special.eom]) if (id !== undefined) eog.add(id);
  return eog;
}

/**
 * llama2.c's tokenizer.bin as GGUF tokenizer metadata (what Tokenizer.fromLlama2c reads):
 * spaces as U+2581, ids 0/1/2 <unk>/<s>/</s>, "<0xXX>" pieces as byte tokens.
 */
export function llama2cTokenizerGGUF(file: string, vocabSize: number): GGUFFile {
  const v = readLlama2cTokenizer(file, vocabSize);
  const tokens = v.pieces.map((p, i) => (i === 1 ? '<s>' : i === 2 ? '</s>' : p.replace(/ /g, '\u2581')));
  const types = Int32Array.from(tokens, (t, i) => (i === 0 ? TOKEN_TYPE.UNKNOWN : i <= 2 ? TOKEN_TYPE.CONTROL : /^<0x[0-9A-F]{2}>$/.test(t) ? TOKEN_TYPE.BYTE : TOKEN_TYPE.NORMAL));
  const metadata = new Map<string, GGUFValue>([
    ['tokenizer.ggml.model', 'llama'],
    ['tokenizer.ggml.tokens', tokens],
    ['tokenizer.ggml.scores', v.scores],
    ['tokenizer.ggml.token_type', types],
    ['tokenizer.ggml.unknown_token_id', 0],
    ['tokenizer.ggml.bos_token_id', 1],
    ['tokenizer.ggml.eos_token_id', 2],
  ]);
  return { path: file, version: 3, alignment: 32, metadata, metadataTypes: new Map(), tensors: [], dataOffset: 0, fileSize: 0 };
}
