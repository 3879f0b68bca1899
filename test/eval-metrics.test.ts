// BLEU and ROUGE-L against the reference implementations: sacreBLEU 2.6.0 and Google's
// rouge-score numbers on a committed set of sentences (test/fixtures/eval/reference.json, made by
// make-reference.py there), plus sacreBLEU's own published test cases (its test/test_bleu.py);
// NLTK's Porter stemmer (rouge-score's use_stemmer) on the fixture texts' words and random words.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bleuTokens, corpusBleu, sentenceBleu, type BleuOptions } from '../src/eval/bleu.js';
import { porterStem } from '../src/eval/porter.js';
import { corpusRougeL, lcsLength, rougeL, rougeLMulti, rougeTokenize } from '../src/eval/rouge.js';

interface Ref {
  bleu: { name: string; hypotheses: string[]; references: string[][]; options: Record<string, unknown>; score: number; counts: number[]; totals: number[]; precisions: number[]; bp: number; sysLen: number; refLen: number; signature: string }[];
  sentenceBleu: { hypothesis: string; references: string[]; score: number; bp: number; precisions: number[] }[];
  tokenize13a: { line: string; tokens: string }[];
  rougeL: { target: string; prediction: string; precision: number; recall: number; fmeasure: number; stemmed: { precision: number; recall: number; fmeasure: number } }[];
  porterStems: [string, string][];
  randomLines: { line: string; tokens: string; lowercased: string; rouge: string[] }[];
  randomCorpora: { hypotheses: string[]; references: string[][]; options: Record<string, unknown>; score: number }[];
}
const ref = JSON.parse(readFileSync(new URL('./fixtures/eval/reference.json', import.meta.url), 'utf8')) as Ref;

/** sacreBLEU's keyword arguments as BleuOptions. */
function options(kw: Record<string, unknown>): BleuOptions {
  const names: Record<string, keyof BleuOptions> = { tokenize: 'tokenize', smooth_method: 'smoothMethod', smooth_value: 'smoothValue', lowercase: 'lowercase', effective_order: 'effectiveOrder' };
  return Object.fromEntries(Object.entries(kw).map(([k, v]) => [names[k] ?? k, v])) as BleuOptions;
}

describe('bleuTokens (13a)', () => {
  it.each(ref.tokenize13a.map((c, i) => [i, c] as const))("matches sacreBLEU's 13a tokeniser (line %i)", (_, c) => {
    expect(bleuTokens(c.line).join(' ')).toBe(c.tokens);
  });

  it("matches sacreBLEU and rouge-score's tokenizers on randomised lines (punctuation, entities, unicode, odd whitespace)", () => {
    for (const c of ref.randomLines) {
      expect(bleuTokens(c.line).join(' '), JSON.stringify(c.line)).toBe(c.tokens);
      expect(bleuTokens(c.line, { lowercase: true }).join(' '), JSON.stringify(c.line)).toBe(c.lowercased);
      expect(rougeTokenize(c.line), JSON.stringify(c.line)).toEqual(c.rouge);
    }
  });
});

describe('corpusBleu', () => {
  it.each(ref.bleu.map((c) => [c.name, c] as const))('matches sacreBLEU: %s', (_, c) => {
    const s = corpusBleu(c.hypotheses, c.references, options(c.options));
    expect(Math.abs(s.score - c.score)).toBeLessThan(1e-9);
    expect(s.counts).toEqual(c.counts);
    expect(s.totals).toEqual(c.totals);
    s.precisions.forEach((p, i) => expect(Math.abs(p - c.precisions[i]!)).toBeLessThan(1e-9));
    expect(Math.abs(s.bp - c.bp)).toBeLessThan(1e-12);
    expect([s.sysLen, s.refLen]).toEqual([c.sysLen, c.refLen]);
    expect(s.signature).toBe(c.signature.replace(/\|version:.*$/, ''));
  });

  // sacreBLEU's own test cases (test/test_bleu.py: the README example, raw_corpus_bleu, effective order).
  const refs = [
    ['The dog bit the man.', 'It was not unexpected.', 'The man bit him first.'],
    ['The dog had bit the man.', 'No one was surprised.', 'The man had bitten the dog.'],
  ];
  const hyps = ['The dog bit the man.', "It wasn't surprising.", 'The man had just bitten him.'];
  it.each([
    [hyps, {}, 48.530827],
    [['', '', ''], {}, 0],
    [hyps, { tokenize: 'none' }, 49.1919566],
    [hyps, { smoothMethod: 'none' }, 48.530827],
  ] as const)("matches sacreBLEU's README example %#", (h, o, expected) => {
    expect(Math.abs(corpusBleu(h, refs, o as BleuOptions).score - expected)).toBeLessThan(1e-6);
  });
  const raw: BleuOptions = { smoothMethod: 'floor', smoothValue: 0.01, tokenize: 'none', effectiveOrder: true };
  it.each([
    [['this is a test'], ['this is a test'], 1.0],
    [['this is a fest'], ['this is a test'], 0.223606797749979],
    [['test'], ['a test'], 0.3678794411714425],
    [['a little test'], ['a test'], 0.03218297948685433],
  ])("matches sacreBLEU's raw_corpus_bleu cases %#", (h, r, expected) => {
    expect(Math.abs(corpusBleu(h, [r], raw).score / 100 - expected)).toBeLessThan(1e-8);
  });
  it('counts n-grams as sacreBLEU test_statistics', () => {
    const s = corpusBleu(['am I am a character sequence'], [['I am a symbol string sequence a a']], raw);
    expect([s.counts, s.totals]).toEqual([[4, 2, 1, 0], [6, 5, 4, 3]]);
  });

  it('matches sacreBLEU on random corpora (1-3 reference streams, every option)', () => {
    for (const c of ref.randomCorpora) expect(Math.abs(corpusBleu(c.hypotheses, c.references, options(c.options)).score - c.score)).toBeLessThan(1e-9);
  });

  it('refuses bad input by name', () => {
    expect(() => corpusBleu(['a'], [['a', 'b']])).toThrow(/Expected 1 references \(one per hypothesis\) in references\[0\] but received 2/);
    expect(() => corpusBleu(['a'], [])).toThrow(/at least one reference stream/);
    expect(() => corpusBleu([1 as unknown as string], [['a']])).toThrow(/Expected a string for hypotheses\[0\]/);
    expect(() => corpusBleu(['a'], [['a']], { smooth: 'exp' } as BleuOptions)).toThrow(/Unknown option 'smooth'/);
    expect(() => corpusBleu(['a'], [['a']], { tokenize: 'intl' as '13a' })).toThrow(/options.tokenize/);
  });
});

describe('sentenceBleu', () => {
  it.each(ref.sentenceBleu.map((c, i) => [i, c] as const))('matches sacreBLEU sentence_bleu (%i)', (_, c) => {
    const s = sentenceBleu(c.hypothesis, c.references);
    expect(Math.abs(s.score - c.score)).toBeLessThan(1e-9);
    expect(Math.abs(s.bp - c.bp)).toBeLessThan(1e-12);
  });
});

describe('ROUGE-L', () => {
  it.each(ref.rougeL.map((c, i) => [i, c] as const))("matches rouge-score's rougeL (pair %i)", (_, c) => {
    const s = rougeL(c.target, c.prediction);
    expect(Math.abs(s.precision - c.precision)).toBeLessThan(1e-12);
    expect(Math.abs(s.recall - c.recall)).toBeLessThan(1e-12);
    expect(Math.abs(s.fmeasure - c.fmeasure)).toBeLessThan(1e-12);
  });

  it.each(ref.rougeL.map((c, i) => [i, c] as const))("matches rouge-score's rougeL with use_stemmer=True (pair %i)", (_, c) => {
    const s = rougeL(c.target, c.prediction, { stem: true });
    expect(Math.abs(s.precision - c.stemmed.precision)).toBeLessThan(1e-12);
    expect(Math.abs(s.recall - c.stemmed.recall)).toBeLessThan(1e-12);
    expect(Math.abs(s.fmeasure - c.stemmed.fmeasure)).toBeLessThan(1e-12);
  });

  it("porterStem is NLTK's PorterStemmer().stem on every word of the text fixtures and on random suffixed words", () => {
    const wrong = ref.porterStems.filter(([w, st]) => porterStem(w) !== st);
    expect(wrong.slice(0, 10).map(([w, st]) => `${w}: ${porterStem(w)} (NLTK ${st})`)).toEqual([]);
    expect(ref.porterStems.length).toBeGreaterThan(3000);
    expect(() => rougeL('a', 'b', { stemmer: true } as object)).toThrow(/Unknown option 'stemmer' in the ROUGE options/);
  });

  it('corpusRougeL is the mean of the pair scores', () => {
    const c = ref.rougeL.slice(0, 12);
    const r = corpusRougeL(c.map((x) => x.target), c.map((x) => x.prediction));
    const mean = c.reduce((s, x) => s + x.fmeasure, 0) / c.length;
    expect(Math.abs(r.fmeasure - mean)).toBeLessThan(1e-12);
    expect(() => corpusRougeL(['a'], [])).toThrow(/as many predictions as targets \(1\) but received 0/);
  });

  it("several targets: the best F-measure counts, the first on ties (rouge-score's score_multi)", () => {
    const c = ref.rougeL;
    // pairs i and 12 + i score the same prediction against REFS_A[i] and REFS_B[i]
    for (let i = 0; i < 12; i++) {
      const [a, b] = [c[i]!, c[12 + i]!];
      expect(b.prediction).toBe(a.prediction);
      const best = b.fmeasure > a.fmeasure ? b : a;
      expect(rougeLMulti([a.target, b.target], a.prediction)).toEqual({ precision: best.precision, recall: best.recall, fmeasure: best.fmeasure });
    }
    expect(rougeLMulti(['a b', 'b a'], 'a b c')).toEqual(rougeL('a b', 'a b c'));
    expect(corpusRougeL([['x y', 'a b']], ['a b']).fmeasure).toBe(1);
    expect(() => rougeLMulti([], 'a')).toThrow(/at least one target/);
  });

  it('LCS length against a brute-force search on small random token lists', () => {
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    // Longest common subsequence by trying every subsequence of a (a has at most 10 tokens).
    const brute = (a: string[], b: string[]) => {
      let best = 0;
      for (let mask = 0; mask < 1 << a.length; mask++) {
        const sub = a.filter((_, i) => mask & (1 << i));
        let j = 0;
        for (const t of b) if (j < sub.length && sub[j] === t) j++;
        if (j === sub.length) best = Math.max(best, sub.length);
      }
      return best;
    };
    for (let k = 0; k < 50; k++) {
      const a = Array.from({ length: rand(10) }, () => 'abc'[rand(3)]!);
      const b = Array.from({ length: rand(12) }, () => 'abc'[rand(3)]!);
      expect(lcsLength(a, b)).toBe(brute(a, b));
    }
    expect(rougeTokenize("It's 3.5-times BIGGER!")).toEqual(['it', 's', '3', '5', 'times', 'bigger']);
  });
});
