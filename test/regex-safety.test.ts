import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { rng } from './helpers.js';
import { ModelFileError } from '../src/formats/errors.js';
import { BYTE_LEVEL_REGEX } from '../src/tokenizer/hf-json.js';
import { Tokenizer } from '../src/tokenizer/index.js';
import { compileRegex, ggufPreTokenizer, KNOWN_PRE_TYPES, PRE_TOKENIZER_PATTERNS, splitMatches, splitWithRegexes } from '../src/tokenizer/pretokenize.js';
import { backtrackingHazard, compileFileRegex } from '../src/tokenizer/regex-safety.js';
import { parseRegex } from '../src/tokenizer/regex.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const PATH = 'pre_tokenizer.pretokenizers[1].pattern.Regex';
const hazard = (pattern: string) => backtrackingHazard(parseRegex(pattern));

/** Every `{"Regex": ...}` anywhere in a tokenizer.json, with its JSON path. */
function regexesIn(json: unknown, at = ''): [string, string][] {
  if (Array.isArray(json)) return json.flatMap((x, i) => regexesIn(x, `${at}[${i}]`));
  if (json === null || typeof json !== 'object') return [];
  const o = json as Record<string, unknown>;
  const own: [string, string][] = typeof o.Regex === 'string' ? [[`${at}.Regex`, o.Regex]] : [];
  // The vocabulary and merges hold no patterns and are most of the file.
  const keys = Object.keys(o).filter((k) => at !== '' || (k !== 'model' && k !== 'added_tokens'));
  return [...own, ...keys.flatMap((k) => regexesIn(o[k], at ? `${at}.${k}` : k))];
}

/** tokenizer.json files in the repo's fixtures and, where present, in ../shared/models. */
function tokenizerFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (/tokenizer\.json(\.gz)?$/.test(name)) out.push(p);
    }
  };
  walk(path.join(here, 'fixtures'));
  walk(path.join(here, '..', '..', 'shared', 'models'));
  return out;
}

/**
 * Pre-tokenizer patterns of released models, as their tokenizer.json (or tiktoken) writes them.
 * Where llama.cpp's list (PRE_TOKENIZER_PATTERNS) already has the same text it is not repeated.
 */
const RELEASED: [string, string][] = [
  ['GPT-2 / StarCoder / Falcon ByteLevel', BYTE_LEVEL_REGEX],
  ['Llama 3', "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
  ['Qwen2', "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
  ['DeepSeek LLM', '[\\r\\n]'],
  ['DeepSeek LLM', '\\s+$'],
  ['DeepSeek Coder', '\\s?\\p{L}+'],
  ['DeepSeek Coder', '\\s?\\p{P}+'],
  ['DeepSeek Coder', '[一-龥ࠀ-一가-퟿]+'],
  ['cl100k (tiktoken, possessive)', "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s"],
  ['o200k / GPT-4o', "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
  ['BLOOM (nested class)', ' ?[^(\\s|[.,!?…。，、।۔،])]+'],
  ['Digits', '\\p{N}'],
];

describe('every pattern the repo knows passes the check', () => {
  it("llama.cpp's pre-tokenizer lists, for every family", () => {
    expect(PRE_TOKENIZER_PATTERNS.length).toBeGreaterThan(15);
    for (const p of PRE_TOKENIZER_PATTERNS) expect([p, hazard(p)]).toEqual([p, undefined]);
  });

  it('every tokenizer.ggml.pre value compiles', () => {
    for (const pre of KNOWN_PRE_TYPES) expect([pre, ggufPreTokenizer(pre)!.regexes.length > 0]).toEqual([pre, true]);
    // llama.cpp's DeepSeek letter class, range ends included (e.g. U+1F5F-U+1F7D, U+212A-U+212D).
    const letters = ggufPreTokenizer('deepseek-llm')!.regexes[1]!;
    for (const cp of [0x1f5f, 0x1f7d, 0x1fd3, 0x1fdb, 0x1fbe, 0x2126, 0x212a, 0x212d, 0x10400, 0x1e943])
      expect([cp.toString(16), splitMatches(String.fromCodePoint(cp), letters)]).toEqual([cp.toString(16), [{ text: String.fromCodePoint(cp), match: true }]]);
    expect(splitMatches('1', letters)).toEqual([{ text: '1', match: false }]);
  });

  it('released models', () => {
    for (const [name, p] of RELEASED) {
      expect([name, hazard(p)]).toEqual([name, undefined]);
      expect(compileFileRegex(p, name)).toBeInstanceOf(RegExp);
    }
  });

  it('every Regex in every tokenizer.json fixture', () => {
    const files = tokenizerFiles();
    expect(files.some((f) => f.endsWith('qwen3-tokenizer.json.gz'))).toBe(true);
    let seen = 0;
    for (const f of files) {
      const raw = readFileSync(f);
      const json: unknown = JSON.parse((f.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8'));
      for (const [where, p] of regexesIn(json)) {
        seen++;
        expect([f, where, hazard(p)]).toEqual([f, where, undefined]);
        expect(compileFileRegex(p, where)).toBeInstanceOf(RegExp);
      }
    }
    expect(seen).toBeGreaterThan(0);
  });
});

describe('catastrophic patterns are refused, naming the path and why', () => {
  const refused: [string, string, RegExp][] = [
    ['(a+)+$', '`(a+)+`', /exponential/],
    ['(a*)*b', '`(a*)*`', /exponential/],
    ['(a|a)*c', '`(a|a)*`', /exponential/],
    ['(a|aa)+$', '`(a|aa)+`', /exponential/],
    ['(\\w+\\s?)+$', '`(\\w+\\s?)+`', /exponential/],
    ['(x+x+)+y', '`(x+x+)+`', /exponential/],
    ['^(\\d+)*$', '`(\\d+)*`', /exponential/],
    ['(?:' + 'a|'.repeat(100) + 'a)*x', 'a|a|a', /exponential/],
    ['x(?:\\p{L}|\\p{Lu})*;', '`(?:\\p{L}|\\p{Lu})*`', /exponential/],
    ['(?:a|a){30}', '`(?:a|a){30}`', /more than 64 ways/],
    ['(?:a|a)'.repeat(7) + 'x', '`' + '(?:a|a)'.repeat(7) + 'x`', /more than 64 ways/],
    ['(?:|)'.repeat(22) + 'x', '(?:|)(?:|)', /more than 64 ways/],
    ['a' + '(?:b?)'.repeat(22) + '$', 'a(?:b?)(?:b?)', /more than 64 ways/],
    ['(.*a){20}', '`(.*a){20}`', /polynomial/],
    ['\\d+\\d+x', '`\\d+` and `\\d+`', /polynomial/],
    ['\\s*\\s*$', '`\\s*` and `\\s*`', /polynomial/],
    ['(?:(?=.*x)a)*', '`(?=.*x)`', /polynomial/],
    ['(?:(a)\\1)+', '`\\1`', /backreference/],
    ['(a)\\1*', '`\\1`', /backreference/],
  ];
  for (const [pattern, culprit, why] of refused)
    it(pattern.length > 40 ? pattern.slice(0, 40) + '...' : pattern, () => {
      let message = '';
      try {
        compileFileRegex(pattern, PATH);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toContain(PATH);
      expect(message).toContain(culprit);
      expect(message).toMatch(why);
      expect(message).toContain('cannot backtrack catastrophically');
    });

  it('refuses patterns too big to check rather than checking for ever', () => {
    expect(() => compileFileRegex('a|'.repeat(5000) + 'b', PATH)).toThrow(/too large to check/);
    expect(() => compileFileRegex('a'.repeat(70_000), PATH)).toThrow(new RegExp(`at most 65536 characters for ${PATH.replace(/[[\].]/g, '\\$&')}`));
  });
});

describe('safe look-alikes are accepted', () => {
  // Each is one step away from a refused pattern: the check must tell them apart.
  const accepted = [
    '(\\w+\\s)+$', // \w and \s never overlap: one way to split
    '(a|b)*c',
    '(?:ab)+$',
    'a+b+c',
    '\\d+\\.\\d+',
    '(a|a)*', // nothing after it can fail: the first path tried succeeds
    '(a+)+',
    '\\d+\\d+',
    '(?:\\p{L}|\\p{N})+$',
    '(?:\\p{Lu}|\\p{Ll})*x',
    '(?:[a-z]|\\p{Nd})+;',
    '(?:ab|cd){1,1000}$',
    'x{1000}',
    '\\p{N}{1,3}',
    '(?:a|a){5}x', // 32 ways to read five a's: a constant
    '(?:a|b|c|d)(?:a|b|c|d)(?:a|b|c|d)(?:a|b|c|d)x',
    // One loop then something that can fail, retried from every start: O(n^2) in one run, accepted.
    '\\s+$',
  ];
  for (const p of accepted) it(p, () => expect(hazard(p)).toBeUndefined());
});

describe('character class overlap, against a brute-force scan of the code space', () => {
  // `(?:A|B)*;` is exponential exactly when A and B share a character.
  const classes = ['\\p{L}', '\\p{Lu}', '[a-z]', '\\d', '\\p{N}', '\\s', '[^\\s\\p{L}\\p{N}]', '\\p{P}', '[\\r\\n]', '[\\u{1F600}-\\u{1F64F}]', '\\p{So}', '\\p{Han}', '[一-龥]'];
  // Sets built from General_Category and spelled-out ranges are decided exactly; others (scripts) only soundly.
  const exact = (c: string) => !c.includes('Han');
  let all = '';
  const planes = () => {
    if (!all) {
      const cps: number[] = [];
      for (let c = 0; c < 0x30000; c++) if (c < 0xd800 || c > 0xdfff) cps.push(c);
      for (let c = 0xe0000; c < 0xf0000; c++) cps.push(c);
      const parts: string[] = [];
      for (let i = 0; i < cps.length; i += 4096) parts.push(String.fromCodePoint(...cps.slice(i, i + 4096)));
      all = parts.join('');
    }
    return all;
  };
  it('refuses every overlapping pair and accepts disjoint ones', () => {
    for (let i = 0; i < classes.length; i++)
      for (let j = i + 1; j < classes.length; j++) {
        const a = classes[i]!, b = classes[j]!;
        const share = new RegExp(`(?=${compileRegex(a).source})${compileRegex(b).source}`, 'u').test(planes());
        const refused = hazard(`(?:${a}|${b})*;`) !== undefined;
        if (share) expect([a, b, refused]).toEqual([a, b, true]);
        else if (exact(a) && exact(b)) expect([a, b, refused]).toEqual([a, b, false]);
      }
  });
});

describe('translation to JS', () => {
  it('case-folds classes inside (?i:...), as Oniguruma does', () => {
    const re = compileRegex("'(?i:[sdmt]|ll)");
    expect("'S 'LL 'x 'Ll".match(re)).toEqual(["'S", "'LL", "'Ll"]);
  });

  it('merges a class nested in a class (BLOOM)', () => {
    const re = compileRegex(' ?[^(\\s|[.,!?…。，、।۔،])]+');
    expect(splitMatches('Hello, world! (x)', re).map((s) => s.text)).toEqual(['Hello', ',', ' world', '! (', 'x', ')']);
  });

  it('a lone trailing run `C+$` splits exactly as the plain regex does', () => {
    const r = rng(7);
    const alphabet = [' ', '\t', '\n', 'a', 'b', '1', '🦙', '\u3000'];
    for (const p of ['\\s+$', '\\s*$', '[ab]+?$', '\\d{2,}$', '(?i:a)+$']) {
      const parsed = parseRegex(p);
      expect(parsed.js).not.toBe(parsed.root.js);
      const fast = new RegExp(parsed.js, 'gu'), plain = new RegExp(parsed.root.js, 'gu');
      for (let n = 0; n < 400; n++) {
        let t = '';
        for (let k = Math.floor(r() * 24); k > 0; k--) t += alphabet[Math.floor(r() * alphabet.length)];
        expect([p, t, splitMatches(t, fast)]).toEqual([p, t, splitMatches(t, plain)]);
      }
    }
  });

  it("DeepSeek LLM's pre-tokenizer gets through a megabyte of spaces before a digit", () => {
    // `\s+$` tried from every space would take quadratic time here (minutes); the test would time out.
    const text = ' '.repeat(1 << 20) + '1';
    expect(splitWithRegexes(text, ggufPreTokenizer('deepseek-llm')!.regexes)).toEqual([' '.repeat(1 << 20), '1']);
  });

  it('refuses what it cannot carry to JS, with the offset', () => {
    expect(() => compileRegex('[a&&b]')).toThrow(/'&&'.*offset 2/);
    expect(() => compileRegex('[a[^b]]')).toThrow(/negated class inside a class/);
    expect(() => compileRegex('(?P<n>a)')).toThrow(/group JS can run/);
    expect(() => compileRegex('\\pL')).toThrow(/'\{' after \\p/);
    expect(() => compileRegex('a**')).toThrow(/one quantifier/);
    expect(() => compileRegex('(a')).toThrow(/'\)' to close the group opened at offset 0/);
    expect(() => compileRegex('a)')).toThrow(/'\(' before this '\)'/);
    expect(() => compileRegex('(?:'.repeat(300) + ')'.repeat(300))).toThrow(/nested at most/);
  });
});

describe('tokenizer.json with a catastrophic pattern', () => {
  const tokenizer = (pre: unknown, normalizer: unknown = null) => ({
    model: { type: 'BPE', vocab: { a: 0, b: 1, ab: 2 }, merges: ['a b'] },
    normalizer,
    pre_tokenizer: pre,
  });
  const evilSplit = { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: '(a+)+$' }, behavior: 'Isolated' }, { type: 'ByteLevel', use_regex: false }] };

  it('is refused at load with the file, the path and why', () => {
    expect(() => Tokenizer.fromHuggingFaceJSON(tokenizer(evilSplit))).toThrow(ModelFileError);
    expect(() => Tokenizer.fromHuggingFaceJSON(tokenizer(evilSplit))).toThrow(
      /^tokenizer\.json: Expected a regex that cannot backtrack catastrophically for pre_tokenizer\.pretokenizers\[0\]\.pattern\.Regex but received "\(a\+\)\+\$": nested quantifier `\(a\+\)\+` can take exponential time/,
    );
    const evilReplace = { type: 'Sequence', normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '(\\w+\\s?)+$' }, content: '' }] };
    expect(() => Tokenizer.fromHuggingFaceJSON(tokenizer(null, evilReplace))).toThrow(/normalizer\.normalizers\[1\]\.pattern\.Regex.*exponential/);
  });

  it('a Sequence is bounded in length, and a repeated pattern is analysed once but compiled fresh each time', () => {
    const split = { type: 'Split', pattern: { Regex: '(?:ab)+|a|b' }, behavior: 'Isolated' };
    // A fuzzed file chaining 5,002 pre-tokenizers took seconds to load (each regex analysed) and to encode.
    const long = { type: 'Sequence', pretokenizers: Array.from({ length: 65 }, () => split) };
    expect(() => Tokenizer.fromHuggingFaceJSON(tokenizer(long))).toThrow(/^tokenizer\.json: Expected at most 64 steps in pre_tokenizer\.pretokenizers but received 65/);
    const longNorm = { type: 'Sequence', normalizers: Array.from({ length: 65 }, () => ({ type: 'NFC' })) };
    expect(() => Tokenizer.fromHuggingFaceJSON(tokenizer(null, longNorm))).toThrow(/at most 64 steps in normalizer\.normalizers but received 65/);
    const ok = { type: 'Sequence', pretokenizers: Array.from({ length: 64 }, () => split) };
    expect(Tokenizer.fromHuggingFaceJSON(tokenizer(ok)).encode('ababa')).toEqual([2, 2, 0]);
    // The memo keeps the verdict, not the RegExp: global regexes carry lastIndex, so each caller gets its own.
    const a = compileFileRegex('(?:ab)+|a|b', 'x'), b = compileFileRegex('(?:ab)+|a|b', 'y');
    expect(a).not.toBe(b);
    expect(a.source).toBe(b.source);
    expect(() => compileFileRegex('(a+)+$', 'z')).toThrow(/exponential/);
    expect(() => compileFileRegex('(a+)+$', 'z')).toThrow(/exponential/); // refusals are never remembered as safe
  });

  it('names the file it was read from', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tessera-redos-'));
    try {
      const file = path.join(dir, 'tokenizer.json');
      writeFileSync(file, JSON.stringify(tokenizer(evilSplit)));
      expect(() => Tokenizer.fromHuggingFaceJSON(file)).toThrow(/^tokenizer\.json: .*pre_tokenizer\.pretokenizers\[0\]\.pattern\.Regex/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('loads and splits when the pattern is safe', () => {
    const safe = { type: 'Split', pattern: { Regex: '(?:ab)+|a|b' }, behavior: 'Isolated' };
    const tok = Tokenizer.fromHuggingFaceJSON(tokenizer(safe));
    expect(tok.encode('ababa')).toEqual([2, 2, 0]);
  });
});
