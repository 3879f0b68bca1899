/**
 * Corpus and sentence BLEU (Papineni et al., 2002) exactly as sacreBLEU 2.x computes it (Post,
 * 2018): mteval-v13a tokenisation, clipped n-gram counts up to order 4 against the most generous
 * reference, the closest reference length for the brevity penalty (shorter on ties), and the
 * geometric mean of the precisions with sacreBLEU's smoothing ('exp' by default: NIST's, the
 * k-th zero precision becomes 1 / (2^k total)). Pure: imports nothing.
 */

export type BleuTokenize = '13a' | 'none';
export type BleuSmooth = 'exp' | 'floor' | 'add-k' | 'none';

export interface BleuOptions {
  /** Tokeniser: '13a' (sacreBLEU's default, as mteval-v13a.pl) or 'none' (split on whitespace only). */
  tokenize?: BleuTokenize;
  /** Smoothing (sacreBLEU's smooth_method). Default 'exp' (corpus BLEU) as sacreBLEU. */
  smoothMethod?: BleuSmooth;
  /** 'floor' (default 0.1) and 'add-k' (default 1) smoothing value. */
  smoothValue?: number;
  /** Lowercase hypotheses and references first. Default false. */
  lowercase?: boolean;
  /** Average only over the orders that have n-grams (sacreBLEU's effective_order). Default false (true in sentenceBleu). */
  effectiveOrder?: boolean;
  /** Largest n-gram order. Default 4. */
  maxNgramOrder?: number;
}

export interface BleuScore {
  /** BLEU in points (0-100). */
  score: number;
  /** Matched (clipped) n-grams per order. */
  counts: number[];
  /** Hypothesis n-grams per order. */
  totals: number[];
  /** Precision per order in percent (after smoothing). */
  precisions: number[];
  /** Brevity penalty. */
  bp: number;
  /** Hypothesis tokens. */
  sysLen: number;
  /** Reference tokens (closest reference per segment). */
  refLen: number;
  /** sysLen / refLen (0 with no reference tokens). */
  ratio: number;
  /** sacreBLEU's signature, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp`. */
  signature: string;
}

/** Python's str.split() whitespace: what sacreBLEU splits tokens on (JS \s differs: \x1c-\x1f, \x85, \ufeff). */
const PY_SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const SPLIT = new RegExp(`[${PY_SPACE}]+`, 'u');
const TRAILING = new RegExp(`[${PY_SPACE}]+$`, 'u');

/** Python's `s.split()`: no empty tokens. */
function pySplit(s: string): string[] {
  return s.split(SPLIT).filter((t) => t.length > 0);
}

// mteval-v13a's language-dependent rules, as sacreBLEU's TokenizerRegexp applies them in order.
const RULES: [RegExp, string][] = [
  // ASCII punctuation and symbols: { | } ~ [ \ ] ^ _ ` space ! " # $ % & ( ) * + : ; < = > ? @ /
  [/([{-~[-` -&(-+:-@/])/gu, ' $1 '],
  // period and comma unless preceded by a digit
  [/([^0-9])([.,])/gu, '$1 $2 '],
  // period and comma unless followed by a digit
  [/([.,])([^0-9])/gu, ' $1 $2'],
  // dash when preceded by a digit
  [/([0-9])(-)/gu, '$1 $2 '],
];

/** sacreBLEU's '13a' tokenisation of one line (tokens joined by single spaces). */
export function tokenize13a(line: string): string {
  let s = line.replaceAll('<skipped>', '').replaceAll('-\n', '').replaceAll('\n', ' ');
  if (s.includes('&')) s = s.replaceAll('&quot;', '"').replaceAll('&amp;', '&').replaceAll('&lt;', '<').replaceAll('&gt;', '>');
  s = ` ${s} `;
  for (const [re, repl] of RULES) s = s.replace(re, repl);
  return pySplit(s).join(' ');
}

const SMOOTH_DEFAULTS: Record<BleuSmooth, number | null> = { none: null, floor: 0.1, 'add-k': 1, exp: null };

interface Resolved {
  tokenize: BleuTokenize;
  smoothMethod: BleuSmooth;
  smoothValue: number | null;
  lowercase: boolean;
  effectiveOrder: boolean;
  maxOrder: number;
}

function resolve(options: BleuOptions, defaults: { effectiveOrder: boolean }): Resolved {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new TypeError('Expected an options object for the BLEU options');
  const known = ['tokenize', 'smoothMethod', 'smoothValue', 'lowercase', 'effectiveOrder', 'maxNgramOrder'];
  for (const k of Object.keys(options))
    if (!known.includes(k) && (options as Record<string, unknown>)[k] !== undefined) throw new TypeError(`Unknown option '${k}' in the BLEU options (known: ${known.join(', ')})`);
  const tokenize = options.tokenize ?? '13a';
  if (tokenize !== '13a' && tokenize !== 'none') throw new RangeError(`Expected '13a' or 'none' for options.tokenize but received ${String(tokenize)}`);
  const smoothMethod = options.smoothMethod ?? 'exp';
  if (!Object.hasOwn(SMOOTH_DEFAULTS, smoothMethod)) throw new RangeError(`Expected 'exp', 'floor', 'add-k' or 'none' for options.smoothMethod but received ${String(smoothMethod)}`);
  const sv = options.smoothValue;
  if (sv !== undefined && (typeof sv !== 'number' || !Number.isFinite(sv) || sv < 0)) throw new RangeError(`Expected a finite number >= 0 for options.smoothValue but received ${String(sv)}`);
  const maxOrder = options.maxNgramOrder ?? 4;
  if (!Number.isInteger(maxOrder) || maxOrder < 1 || maxOrder > 16) throw new RangeError(`Expected an integer in [1, 16] for options.maxNgramOrder but received ${String(maxOrder)}`);
  for (const k of ['lowercase', 'effectiveOrder'] as const)
    if (options[k] !== undefined && typeof options[k] !== 'boolean') throw new TypeError(`Expected a boolean for options.${k}`);
  return {
    tokenize, smoothMethod, smoothValue: sv ?? SMOOTH_DEFAULTS[smoothMethod], lowercase: options.lowercase ?? false,
    effectiveOrder: options.effectiveOrder ?? defaults.effectiveOrder, maxOrder,
  };
}

/** sacreBLEU's _preprocess_segment: optional lowercase, trailing whitespace off, tokenise; then the tokens. */
function tokens(line: string, r: Resolved): string[] {
  let s = r.lowercase ? line.toLowerCase() : line;
  s = s.replace(TRAILING, '');
  return pySplit(r.tokenize === '13a' ? tokenize13a(s) : s);
}

/** The tokens BLEU counts for one line under these options (tokenize, lowercase), as sacreBLEU preprocesses a segment. */
export function bleuTokens(line: string, options: Pick<BleuOptions, 'tokenize' | 'lowercase'> = {}): string[] {
  if (typeof line !== 'string') throw new TypeError('Expected a string for line');
  return tokens(line, resolve(options, { effectiveOrder: false }));
}

/** Counts of every n-gram (orders 1..max) of a token list, keyed by the tokens joined with a space (tokens hold none). */
function ngrams(toks: readonly string[], max: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let n = 1; n <= max; n++)
    for (let i = 0; i + n <= toks.length; i++) {
      const k = toks.slice(i, i + n).join(' ');
      m.set(k, (m.get(k) ?? 0) + 1);
    }
  return m;
}

/** The reference length closest to the hypothesis length, the shorter one on a tie (sacreBLEU's rule). */
function closestRefLen(hypLen: number, refLens: readonly number[]): number {
  let bestDiff = -1, best = -1;
  for (const len of refLens) {
    const d = Math.abs(hypLen - len);
    if (bestDiff === -1 || d < bestDiff) [bestDiff, best] = [d, len];
    else if (d === bestDiff && len < best) best = len;
  }
  return best;
}

/** One segment's sufficient statistics: [hypLen, refLen, correct(1..N), total(1..N)]. */
function segmentStats(hyp: string, refs: readonly string[], r: Resolved): number[] {
  const refCounts = new Map<string, number>();
  const refLens: number[] = [];
  for (const ref of refs) {
    const t = tokens(ref, r);
    refLens.push(t.length);
    for (const [k, c] of ngrams(t, r.maxOrder)) refCounts.set(k, Math.max(refCounts.get(k) ?? 0, c));
  }
  const h = tokens(hyp, r);
  const correct = new Array<number>(r.maxOrder).fill(0), total = new Array<number>(r.maxOrder).fill(0);
  for (const [k, c] of ngrams(h, r.maxOrder)) {
    const n = k.split(' ').length - 1;
    total[n] += c;
    correct[n] += Math.min(c, refCounts.get(k) ?? 0);
  }
  return [h.length, closestRefLen(h.length, refLens), ...correct, ...total];
}

/** sacreBLEU's my_log: log, with log(0) floored to -9999999999. */
const myLog = (x: number) => (x === 0 ? -9999999999 : Math.log(x));

/** BLEU from summed statistics (sacreBLEU's BLEU.compute_bleu). */
function compute(stats: readonly number[], r: Resolved, nrefs: string): BleuScore {
  const N = r.maxOrder;
  const sysLen = stats[0]!, refLen = stats[1]!;
  const correct = stats.slice(2, 2 + N), total = stats.slice(2 + N, 2 + 2 * N);
  const bp = sysLen < refLen ? (sysLen > 0 ? Math.exp(1 - refLen / sysLen) : 0) : 1;
  const precisions = new Array<number>(N).fill(0);
  const smoothStr = r.smoothMethod + (SMOOTH_DEFAULTS[r.smoothMethod] !== null ? `[${r.smoothValue!.toFixed(2)}]` : '');
  const signature = `nrefs:${nrefs}|case:${r.lowercase ? 'lc' : 'mixed'}|eff:${r.effectiveOrder ? 'yes' : 'no'}|tok:${r.tokenize}|smooth:${smoothStr}`;
  const done = (score: number): BleuScore => ({ score, counts: correct, totals: total, precisions, bp, sysLen, refLen, ratio: refLen ? sysLen / refLen : 0, signature });
  if (!correct.some((c) => c !== 0)) return done(0);
  let smoothMteval = 1, effOrder = N;
  for (let n = 1; n <= N; n++) {
    if (r.smoothMethod === 'add-k' && n > 1) {
      correct[n - 1] += r.smoothValue!;
      total[n - 1] += r.smoothValue!;
    }
    if (total[n - 1] === 0) break;
    if (r.effectiveOrder) effOrder = n;
    if (correct[n - 1] === 0) {
      if (r.smoothMethod === 'exp') {
        smoothMteval *= 2;
        precisions[n - 1] = 100 / (smoothMteval * total[n - 1]!);
      } else if (r.smoothMethod === 'floor') precisions[n - 1] = (100 * r.smoothValue!) / total[n - 1]!;
    } else precisions[n - 1] = (100 * correct[n - 1]!) / total[n - 1]!;
  }
  let sum = 0;
  for (let i = 0; i < effOrder; i++) sum += myLog(precisions[i]!);
  return done(bp * Math.exp(sum / effOrder));
}

function checkLines(x: unknown, name: string): string[] {
  if (!Array.isArray(x)) throw new TypeError(`Expected an array of strings for ${name}`);
  x.forEach((s, i) => {
    if (typeof s !== 'string') throw new TypeError(`Expected a string for ${name}[${i}] but received ${s === null ? 'null' : typeof s}`);
  });
  return x as string[];
}

/**
 * Corpus BLEU of hypotheses against one or more reference streams, as sacreBLEU's
 * `corpus_bleu(hyps, [refs1, refs2, ...])`: each stream has one reference per hypothesis.
 */
export function corpusBleu(hypotheses: readonly string[], references: readonly (readonly string[])[], options: BleuOptions = {}): BleuScore {
  const r = resolve(options, { effectiveOrder: false });
  const hyps = checkLines(hypotheses, 'hypotheses');
  if (!Array.isArray(references) || references.length === 0) throw new TypeError('Expected at least one reference stream (an array of arrays of strings) for references');
  const streams = references.map((s, i) => checkLines(s, `references[${i}]`));
  streams.forEach((s, i) => {
    if (s.length !== hyps.length) throw new RangeError(`Expected ${hyps.length} references (one per hypothesis) in references[${i}] but received ${s.length}`);
  });
  const sums = new Array<number>(2 + 2 * r.maxOrder).fill(0);
  hyps.forEach((h, i) => segmentStats(h, streams.map((s) => s[i]!), r).forEach((v, j) => (sums[j] += v)));
  return compute(sums, r, String(streams.length));
}

/** Sentence BLEU of one hypothesis against its references (sacreBLEU's sentence_bleu: effective order on). */
export function sentenceBleu(hypothesis: string, references: readonly string[], options: BleuOptions = {}): BleuScore {
  const r = resolve(options, { effectiveOrder: true });
  if (typeof hypothesis !== 'string') throw new TypeError('Expected a string for hypothesis');
  const refs = checkLines(references, 'references');
  if (refs.length === 0) throw new RangeError('Expected at least one reference for references');
  return compute(segmentStats(hypothesis, refs, r), r, String(refs.length));
}
