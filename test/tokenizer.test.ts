import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ModelFileError } from '../src/formats/errors.js';
import { readGGUF, type GGUFFile, type GGUFValue } from '../src/formats/gguf.js';
import { Tokenizer } from '../src/tokenizer/index.js';
import { rng } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const VOCAB = path.join(here, 'fixtures', 'vocab');
const STORIES = path.join(here, '..', 'models', 'stories260K', 'stories260K.gguf');

/**
 * Reads llama.cpp's vocab test vectors exactly as tests/test-tokenizer-0.cpp does: the .inp text
 * is split on "\n__ggml_vocab_test__\n" (so nothing is stripped and the file's final separator
 * leaves no empty trailing case), each .out line is whitespace-separated ids, and the strings
 * are tokenized with add_special = false, parse_special = false.
 */
function vectors(name: string): [string, number[]][] {
  const raw = readFileSync(path.join(VOCAB, `ggml-vocab-${name}.gguf.inp`), 'utf8');
  const sep = '\n__ggml_vocab_test__\n';
  const inp: string[] = [];
  let pos = 0;
  while (pos < raw.length) {
    const next = raw.indexOf(sep, pos);
    if (next < 0) {
      inp.push(raw.slice(pos));
      break;
    }
    inp.push(raw.slice(pos, next));
    pos = next + sep.length;
  }
  const out = readFileSync(path.join(VOCAB, `ggml-vocab-${name}.gguf.out`), 'utf8').split('\n');
  if (out[out.length - 1] === '') out.pop();
  expect(out.length).toBe(inp.length);
  return inp.map((s, i) => {
    const line = out[i]!.trim();
    return [s, line ? line.split(/\s+/).map(Number) : []];
  });
}

const cache = new Map<string, Tokenizer>();
function ggufTokenizer(name: string): Tokenizer {
  let t = cache.get(name);
  if (!t) cache.set(name, (t = Tokenizer.fromGGUF(readGGUF(path.join(VOCAB, `ggml-vocab-${name}.gguf`)))));
  return t;
}
function qwen3(): Tokenizer {
  let t = cache.get('qwen3');
  if (!t) {
    const json = JSON.parse(gunzipSync(readFileSync(path.join(VOCAB, 'qwen3-tokenizer.json.gz'))).toString('utf8'));
    const config = JSON.parse(readFileSync(path.join(VOCAB, 'qwen3-tokenizer_config.json'), 'utf8'));
    cache.set('qwen3', (t = Tokenizer.fromHuggingFaceJSON(json, config)));
  }
  return t;
}

const GGUF_VOCABS = ['llama-spm', 'phi-3', 'gpt-2', 'mpt', 'starcoder', 'deepseek-coder', 'bert-bge'];
/** Vocabularies whose encode keeps every byte (WordPiece lowercases and drops accents). */
const LOSSLESS = ['llama-spm', 'phi-3', 'gpt-2', 'mpt', 'starcoder', 'deepseek-coder', 'qwen2'];
const byName = (name: string) => (name === 'qwen2' ? qwen3() : ggufTokenizer(name));

const noHalfCharacters = (s: string) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);

describe('llama.cpp vocab test vectors', () => {
  for (const name of [...GGUF_VOCABS, 'qwen2']) {
    it(`${name}: every .inp string gives the .out ids`, () => {
      const tok = byName(name);
      const cases = vectors(name);
      expect(cases.length).toBe(46);
      const failures: string[] = [];
      for (const [s, ids] of cases) {
        const got = tok.encode(s, { addBos: false, addEos: false, parseSpecial: false });
        if (JSON.stringify(got) !== JSON.stringify(ids)) failures.push(`${JSON.stringify(s)}: expected ${ids.join(' ')} but got ${got.join(' ')}`);
      }
      expect(failures).toEqual([]);
    });
  }

  for (const name of LOSSLESS) {
    it(`${name}: decode(encode(s)) === s, and streaming decode matches`, () => {
      const tok = byName(name);
      for (const [s] of vectors(name)) {
        const ids = tok.encode(s, { addBos: false });
        expect(tok.decode(ids)).toBe(s);
        const stream = tok.createStreamDecoder();
        let text = '';
        for (const id of ids) {
          const chunk = stream.push(id);
          expect(noHalfCharacters(chunk)).toBe(true);
          expect(chunk).not.toContain('\uFFFD');
          text += chunk;
        }
        text += stream.flush();
        expect(text).toBe(s);
      }
    });
  }

  it('bert-bge: WordPiece lowercases, strips accents and splits punctuation', () => {
    const tok = ggufTokenizer('bert-bge');
    expect(tok.decode(tok.encode('Hello, World!', { addBos: false, addEos: false }))).toBe('hello , world !');
    const ids = tok.encode('Cửa Việt');
    expect(ids[0]).toBe(101); // [CLS]
    expect(ids[ids.length - 1]).toBe(102); // [SEP]
    expect(tok.decode(ids, { skipSpecial: true })).toBe('cua viet');
  });
});

describe('stories260K (SentencePiece BPE with byte fallback)', () => {
  const tok = Tokenizer.fromGGUF(readGGUF(STORIES));

  it('encodes "Once upon a time" with BOS as llama2.c does', () => {
    // Expected ids from the reference SentencePiece library, independently of this code:
    //   python3 -c "import sentencepiece as s; p=s.SentencePieceProcessor(model_file='tok512.model');
    //               print([p.bos_id()] + p.encode('Once upon a time'))"
    // on shared/models/stories260K/tok512.model (sentencepiece 0.2.2) -> [1, 403, 407, 261, 378].
    expect(tok.encode('Once upon a time')).toEqual([1, 403, 407, 261, 378]);
    expect(tok.vocabSize).toBe(512);
    expect(tok.bosId).toBe(1);
    expect(tok.eosId).toBe(2);
    expect(tok.addBos).toBe(true);
    expect(tok.isControl(1)).toBe(true);
    expect(tok.isSpecial(0)).toBe(true); // <unk>
    expect(tok.isSpecial(403)).toBe(false);
    expect(tok.piece(403)).toBe('▁Once');
    expect(tok.tokenType(3)).toBe(6); // <0x00> is a byte token
  });

  it('falls back to bytes for emoji and CJK, and the stream never splits a character', () => {
    // Same sentencepiece command as above with 'Hello 🦙 世界'.
    const ids = tok.encode('Hello 🦙 世界');
    expect(ids).toEqual([1, 346, 306, 414, 410, 243, 162, 169, 156, 410, 231, 187, 153, 234, 152, 143]);
    expect(tok.decode(ids)).toBe('<s>Hello 🦙 世界');
    expect(tok.decode(ids, { skipSpecial: true })).toBe('Hello 🦙 世界');
    const stream = tok.createStreamDecoder({ skipSpecial: true });
    const chunks = ids.map((id) => stream.push(id));
    // 🦙 is F0 9F A6 99 (<0xF0> = id 243 ...): nothing comes out until its fourth byte.
    expect(chunks.slice(5, 9)).toEqual(['', '', '', '🦙']);
    expect(chunks.slice(10, 16)).toEqual(['', '', '世', '', '', '界']);
    for (const c of chunks) expect(noHalfCharacters(c)).toBe(true);
    expect(chunks.join('') + stream.flush()).toBe(tok.decode(ids, { skipSpecial: true }));
  });

  it('streams random multi-byte text through byte fallback exactly like whole decode', () => {
    const r = rng(7);
    const alphabet = ['a', ' ', 'é', '世', '界', '🦙', '😶‍🌫️', 'ñ', '\n', 'ü', '한', '🚀', 'Z'];
    for (let trial = 0; trial < 20; trial++) {
      let s = '';
      for (let i = 0; i < 40; i++) s += alphabet[Math.floor(r() * alphabet.length)];
      const ids = tok.encode(s, { addBos: false });
      expect(tok.decode(ids)).toBe(s);
      const stream = tok.createStreamDecoder();
      let out = '';
      for (const id of ids) {
        const c = stream.push(id);
        expect(noHalfCharacters(c)).toBe(true);
        expect(c).not.toContain('\uFFFD');
        out += c;
      }
      expect(out + stream.flush()).toBe(s);
    }
  });

  it('flush() turns a dangling partial character into U+FFFD, like whole decode', () => {
    const stream = tok.createStreamDecoder();
    expect(stream.push(243)).toBe(''); // <0xF0>
    expect(stream.push(162)).toBe(''); // <0x9F>
    expect(stream.flush()).toBe(tok.decode([243, 162]));
    expect(tok.decode([243, 162])).toBe('\uFFFD');
  });
});

describe('Hugging Face tokenizer.json', () => {
  it('qwen3 tokenizer.json: parses special tokens only when asked, and has the Qwen end-of-turn ids', () => {
    const tok = qwen3();
    const im_start = tok.tokenToId('<|im_start|>')!;
    const im_end = tok.tokenToId('<|im_end|>')!;
    expect([im_start, im_end]).toEqual([151644, 151645]);
    expect(tok.eosId).toBe(im_end);
    expect(tok.isEog(im_end)).toBe(true);
    expect(tok.addBos).toBe(false);
    const withSpecial = tok.encode('<|im_start|>user\nHi<|im_end|>', { parseSpecial: true });
    expect(withSpecial[0]).toBe(im_start);
    expect(withSpecial[withSpecial.length - 1]).toBe(im_end);
    const literal = tok.encode('<|im_start|>user', { parseSpecial: false });
    expect(literal).not.toContain(im_start);
    expect(tok.decode(literal)).toBe('<|im_start|>user');
    expect(tok.decode(withSpecial, { skipSpecial: true })).toBe('user\nHi');
  });

  it('gpt-2 vocab exported to tokenizer.json form tokenizes like the GGUF', () => {
    const g = readGGUF(path.join(VOCAB, 'ggml-vocab-gpt-2.gguf'));
    const tokens = g.metadata.get('tokenizer.ggml.tokens') as string[];
    const merges = g.metadata.get('tokenizer.ggml.merges') as string[];
    const vocab: Record<string, number> = {};
    tokens.forEach((t, i) => (vocab[t] = i));
    const json = {
      version: '1.0',
      added_tokens: [{ id: 50256, content: '<|endoftext|>', special: true, lstrip: false, rstrip: false, normalized: false, single_word: false }],
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
    };
    const hf = Tokenizer.fromHuggingFaceJSON(JSON.stringify(json));
    // One huge id would size the token table by itself (16.7M placeholders): refused, not allocated.
    const sparse = { ...json, added_tokens: [{ ...json.added_tokens[0]!, id: (1 << 24) - 1 }] };
    expect(() => Tokenizer.fromHuggingFaceJSON(JSON.stringify(sparse))).toThrow(/Expected token ids below \d+ \(twice the \d+ tokens given, plus 1024\) but received 16777215/);
    const gguf = ggufTokenizer('gpt-2');
    expect(hf.vocabSize).toBe(gguf.vocabSize);
    for (const [s, ids] of vectors('gpt-2')) {
      expect(hf.encode(s)).toEqual(ids);
      expect(hf.decode(ids)).toBe(s);
    }
    expect(hf.encode('Hello<|endoftext|>world', { parseSpecial: true })).toEqual(gguf.encode('Hello<|endoftext|>world', { parseSpecial: true }));
  });

  it('SentencePiece-style tokenizer.json (Prepend/Replace normalizer, byte_fallback) matches sentencepiece', () => {
    const tok = Tokenizer.fromHuggingFaceJSON(path.join(VOCAB, 'shakespeare-tokenizer.json'));
    // Expected ids from sentencepiece 0.2.2 on shared/models/shakespeare/target/hf/tokenizer.model
    // (the same tokenizer as a SentencePiece model): p.encode(s) for each string.
    const expected: [string, number[]][] = [
      ['ROMEO:\nBut soft, what light through yonder window breaks?', [826, 983, 13, 1002, 322, 379, 977, 962, 975, 454, 368, 362, 287, 967, 795, 286, 518, 276, 265, 525, 304, 763, 581, 966, 1004]],
      ['  leading spaces and trailing  ', [960, 960, 282, 961, 349, 303, 431, 964, 978, 283, 302, 259, 364, 441, 303, 960, 960]],
      ['Hello 🦙 世界 naïve café', [329, 435, 963, 960, 243, 162, 169, 156, 960, 231, 187, 153, 234, 152, 143, 284, 964, 198, 178, 299, 281, 964, 977, 198, 172]],
      ['', []],
      ['\n\n\tx', [960, 13, 13, 12, 1015]],
      ['3.14159 dollars $$$', [960, 1021, 985, 52, 55, 52, 56, 60, 400, 277, 288, 966, 960, 1023, 1023, 1023]],
    ];
    expect(tok.addBos).toBe(true); // TemplateProcessing puts <s> first
    for (const [s, ids] of expected) {
      expect(tok.encode(s, { addBos: false })).toEqual(ids);
      expect(tok.decode(ids)).toBe(s);
    }
    expect(tok.encode('ROMEO')[0]).toBe(1);
  });
});

describe('special tokens', () => {
  it('gpt-2: <|endoftext|> is one id only with parseSpecial', () => {
    const tok = ggufTokenizer('gpt-2');
    expect(tok.encode('Hello<|endoftext|>world', { parseSpecial: true })).toEqual([15496, 50256, 6894]);
    expect(tok.encode('Hello<|endoftext|>world')).not.toContain(50256);
    expect(tok.decode([15496, 50256, 6894])).toBe('Hello<|endoftext|>world');
    expect(tok.decode([15496, 50256, 6894], { skipSpecial: true })).toBe('Helloworld');
    expect(tok.eosId).toBe(50256);
    expect(tok.isControl(50256)).toBe(true);
  });

  it('llama-spm: BOS by default, EOS on request, space prefix after special tokens', () => {
    const tok = ggufTokenizer('llama-spm');
    const ids = tok.encode('Hello', { addEos: true });
    expect(ids[0]).toBe(1);
    expect(ids[ids.length - 1]).toBe(2);
    // add_space_prefix: "Hello" is tokenized as " Hello".
    expect(tok.encode('Hello', { addBos: false })).toEqual([15043]);
    const parsed = tok.encode('</s>Hello', { addBos: false, parseSpecial: true });
    expect(parsed[0]).toBe(2);
    expect(parsed.slice(1)).toEqual(tok.encode('Hello', { addBos: false }));
    expect(tok.decode(parsed)).toBe('</s>Hello');
  });
});

describe('chat templates', () => {
  it('renders phi-3 tokenizer.chat_template from the GGUF with bos_token', () => {
    const tok = ggufTokenizer('phi-3');
    const out = tok.applyChatTemplate([
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'How are you?' },
    ]);
    // The template: bos, then per user '<|user|>\n' + content + '<|end|>\n<|assistant|>\n',
    // per assistant content + '<|end|>\n' (checked with Python jinja2 3.1.6).
    expect(out).toBe('<s><|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nHow are you?<|end|>\n<|assistant|>\n');
  });

  it('renders the Qwen3 template from tokenizer_config.json with a generation prompt', () => {
    const out = qwen3().applyChatTemplate(
      [
        { role: 'system', content: 'You are helpful.' },
        { role: 'user', content: 'Hi' },
      ],
      { addGenerationPrompt: true },
    );
    // Expected from Python jinja2 3.1.6 rendering the same template (transformers' variables).
    expect(out).toBe('<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
  });

  it('takes a template from options, and errors clearly without one', () => {
    const tok = ggufTokenizer('gpt-2');
    const t = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}{{ eos_token }}";
    expect(tok.applyChatTemplate([{ role: 'user', content: 'x' }], { template: t, addGenerationPrompt: true })).toBe('[user]x[assistant]<|endoftext|>');
    expect(() => tok.applyChatTemplate([{ role: 'user', content: 'x' }])).toThrow(/chat template/);
    expect(() => tok.applyChatTemplate([{ role: 'user' } as never], { template: t })).toThrow(TypeError);
  });
});

describe('robustness', () => {
  it('never throws on odd strings', () => {
    const odd = ['', '\uD800', 'a\uDFFFb', '\uDBFF\uDBFF', '\u0000\u0001\u007F', '\uFEFFbom', '\u0085\u00A0\u2028', 'e\u0301\u0301\u0301', '🏳️‍🌈'.repeat(5), '\u{10FFFF}\u{E0001}'];
    for (const name of [...GGUF_VOCABS, 'qwen2']) {
      const tok = byName(name);
      for (const s of odd) {
        const ids = tok.encode(s, { parseSpecial: true });
        for (const id of ids) expect(id >= 0 && id < tok.vocabSize).toBe(true);
        expect(typeof tok.decode(ids)).toBe('string');
      }
    }
    // Lone surrogates are encoded as U+FFFD, as TextEncoder would.
    const tok = ggufTokenizer('gpt-2');
    expect(tok.decode(tok.encode('a\uD800b'))).toBe('a\uFFFDb');
    expect(tok.decode(tok.encode('\uFEFFbom'))).toBe('\uFEFFbom');
  });

  // Long inputs once took quadratic merge loops; tests assert what comes out, never timings.
  it('encodes long inputs and decodes them back', () => {
    const r = rng(3);
    const words = ['the', ' quick', ' brown', ' fox', '\n', '  ', '3141', ' 世界', ' 🦙', ',', ' naïve'];
    let mixed = '';
    while (mixed.length < 100_000) mixed += words[Math.floor(r() * words.length)];
    const inputs = [mixed, 'a'.repeat(50_000), ' '.repeat(50_000) + 'x', '🦙'.repeat(10_000)];
    for (const name of ['gpt-2', 'llama-spm', 'qwen2', 'bert-bge']) {
      const tok = byName(name);
      for (const s of inputs) {
        const ids = tok.encode(s, { addBos: false });
        expect(ids.length).toBeGreaterThan(0);
        expect(ids.every((id) => id >= 0 && id < tok.vocabSize)).toBe(true);
        if (name !== 'bert-bge') expect(tok.decode(ids)).toBe(s);
      }
    }
  });
});

describe('errors', () => {
  const fake = (entries: [string, GGUFValue][]): GGUFFile => ({
    path: '/tmp/fake.gguf',
    version: 3,
    alignment: 32,
    metadata: new Map(entries),
    metadataTypes: new Map(),
    tensors: [],
    dataOffset: 0,
    fileSize: 0,
  });
  const base: [string, GGUFValue][] = [
    ['tokenizer.ggml.model', 'llama'],
    ['tokenizer.ggml.tokens', ['<unk>', '<s>', '</s>', 'a']],
    ['tokenizer.ggml.scores', new Float32Array(4)],
    ['tokenizer.ggml.token_type', Int32Array.from([2, 3, 3, 1])],
  ];
  const without = (k: string) => base.filter(([key]) => key !== k);

  it('a minimal valid vocabulary loads', () => {
    const tok = Tokenizer.fromGGUF(fake(base));
    // The prefixed "▁" is not in this vocabulary and it has no <0xXX> tokens: each of its three
    // UTF-8 bytes becomes <unk> (llama.cpp would throw here).
    expect(tok.encode('aa', { addBos: false })).toEqual([0, 0, 0, 3, 3]);
  });

  it('names the missing or inconsistent field', () => {
    expect(() => Tokenizer.fromGGUF(fake(without('tokenizer.ggml.model')))).toThrow(ModelFileError);
    expect(() => Tokenizer.fromGGUF(fake(without('tokenizer.ggml.model')))).toThrow(/tokenizer\.ggml\.model/);
    expect(() => Tokenizer.fromGGUF(fake([...without('tokenizer.ggml.model'), ['tokenizer.ggml.model', 'rwkv']]))).toThrow(/tokenizer\.ggml\.model.*rwkv/);
    expect(() => Tokenizer.fromGGUF(fake(without('tokenizer.ggml.tokens')))).toThrow(/tokenizer\.ggml\.tokens/);
    expect(() => Tokenizer.fromGGUF(fake([...without('tokenizer.ggml.scores'), ['tokenizer.ggml.scores', new Float32Array(3)]]))).toThrow(/Expected 4 entries in tokenizer\.ggml\.scores.*received 3/);
    expect(() => Tokenizer.fromGGUF(fake([...without('tokenizer.ggml.token_type'), ['tokenizer.ggml.token_type', new Int32Array(5)]]))).toThrow(/tokenizer\.ggml\.token_type/);
    expect(() => Tokenizer.fromGGUF(fake([...without('tokenizer.ggml.tokens'), ['tokenizer.ggml.tokens', ['a', 'b', 'a', 'c']]]))).toThrow(/duplicate token/);
    const gpt2: [string, GGUFValue][] = [
      ['tokenizer.ggml.model', 'gpt2'],
      ['tokenizer.ggml.tokens', ['a', 'b', 'ab']],
    ];
    expect(() => Tokenizer.fromGGUF(fake(gpt2))).toThrow(/tokenizer\.ggml\.merges/);
    expect(() => Tokenizer.fromGGUF(fake([...gpt2, ['tokenizer.ggml.merges', ['a b']], ['tokenizer.ggml.pre', 'no-such-pre']]))).toThrow(/tokenizer\.ggml\.pre.*no-such-pre/);
    expect(Tokenizer.fromGGUF(fake([...gpt2, ['tokenizer.ggml.merges', ['a b']]])).encode('ab')).toEqual([2]);
    expect(() => Tokenizer.fromGGUF({} as GGUFFile)).toThrow(TypeError);
  });

  it('rejects bad ids and arguments', () => {
    const tok = ggufTokenizer('gpt-2');
    expect(() => tok.decode([1, 50257])).toThrow(RangeError);
    expect(() => tok.decode([1, 50257])).toThrow(/ids\[1\].*50257/);
    expect(() => tok.decode([-1])).toThrow(RangeError);
    expect(() => tok.decode([1.5])).toThrow(RangeError);
    expect(() => tok.createStreamDecoder().push(99999999)).toThrow(RangeError);
    expect(() => tok.piece(-3)).toThrow(RangeError);
    expect(() => tok.encode(42 as never)).toThrow(TypeError);
    expect(() => tok.encode('x', { addBos: true })).not.toThrow();
  });

  it('tokenizer.json: unsupported model types and malformed input', () => {
    expect(() => Tokenizer.fromHuggingFaceJSON({ model: { type: 'Unigram', vocab: [] } })).toThrow(/model\.type.*Unigram/);
    expect(() => Tokenizer.fromHuggingFaceJSON({ model: { type: 'BPE', vocab: { a: 0 }, merges: [] }, pre_tokenizer: { type: 'Nope' } })).toThrow(/pre_tokenizer\.type.*Nope/);
    expect(() => Tokenizer.fromHuggingFaceJSON('{ not json')).toThrow(TypeError);
    expect(() => Tokenizer.fromHuggingFaceJSON(path.join(VOCAB, 'missing.json'))).toThrow(ModelFileError);
  });
});
