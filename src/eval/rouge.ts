/**
 * ROUGE-L (Lin, 2004): precision, recall and F-measure of the longest common subsequence of
 * tokens, as Google's rouge-score package (`RougeScorer(['rougeL'], use_stemmer)`) computes it:
 * its default tokenizer lowercases, turns every run of characters other than a-z and 0-9 into a
 * space and splits on whitespace; with `stem`, tokens longer than 3 characters go through NLTK's
 * Porter stemmer (porter.ts); an empty side scores 0. The corpus figure is the plain mean of the
 * per-pair scores (rouge-score's BootstrapAggregator reports the median of resampled means, which
 * only approaches it). Pure: imports nothing outside src/eval.
 */
import { porterStem } from './porter.js';

export interface RougeOptions {
  /** Porter-stem tokens longer than 3 characters (rouge-score's use_stemmer=True). Default false. */
  stem?: boolean;
}

function checkRougeOptions(o: RougeOptions): boolean {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new TypeError('Expected an options object for the ROUGE options');
  for (const k of Object.keys(o))
    if (k !== 'stem' && (o as Record<string, unknown>)[k] !== undefined) throw new TypeError(`Unknown option '${k}' in the ROUGE options (known: stem)`);
  if (o.stem !== undefined && typeof o.stem !== 'boolean') throw new TypeError('Expected a boolean for options.stem');
  return o.stem ?? false;
}

export interface RougeScore {
  precision: number;
  recall: number;
  fmeasure: number;
}

/** rouge-score's default tokenizer (tokenize.tokenize, with the Porter stemmer when options.stem). */
export function rougeTokenize(text: string, options: RougeOptions = {}): string[] {
  if (typeof text !== 'string') throw new TypeError('Expected a string for text');
  const stem = checkRougeOptions(options);
  // Python's str.lower() and String#toLowerCase both apply Unicode's full default case mapping;
  // what is left of non-ASCII letters afterwards is a separator either way.
  const tokens = text.toLowerCase().replace(/[^a-z0-9]+/g, ' ').split(' ').filter((t) => t.length > 0);
  return stem ? tokens.map((t) => (t.length > 3 ? porterStem(t) : t)) : tokens;
}

/** Length of the longest common subsequence (the last cell of rouge-score's _lcs_table), in O(min) memory. */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  const [long, short] = a.length >= b.length ? [a, b] : [b, a];
  let prev = new Int32Array(short.length + 1), cur = new Int32Array(short.length + 1);
  for (let i = 1; i <= long.length; i++) {
    const x = long[i - 1];
    for (let j = 1; j <= short.length; j++) cur[j] = x === short[j - 1] ? prev[j - 1]! + 1 : Math.max(prev[j]!, cur[j - 1]!);
    [prev, cur] = [cur, prev];
  }
  return prev[short.length]!;
}

const fmeasure = (p: number, r: number) => (p + r > 0 ? (2 * p * r) / (p + r) : 0);

/** ROUGE-L of one prediction against its target (rouge-score's `score(target, prediction)['rougeL']`). */
export function rougeL(target: string, prediction: string, options: RougeOptions = {}): RougeScore {
  if (typeof target !== 'string') throw new TypeError('Expected a string for target');
  if (typeof prediction !== 'string') throw new TypeError('Expected a string for prediction');
  const t = rougeTokenize(target, options), p = rougeTokenize(prediction, options);
  if (t.length === 0 || p.length === 0) return { precision: 0, recall: 0, fmeasure: 0 };
  const lcs = lcsLength(t, p);
  const precision = lcs / p.length, recall = lcs / t.length;
  return { precision, recall, fmeasure: fmeasure(precision, recall) };
}

/**
 * ROUGE-L of one prediction against several targets: the score of the target with the highest
 * F-measure (the first on ties), as rouge-score's `score_multi`.
 */
export function rougeLMulti(targets: readonly string[], prediction: string, options: RougeOptions = {}): RougeScore {
  if (!Array.isArray(targets) || targets.length === 0) throw new RangeError('Expected at least one target (an array of strings) for targets');
  let best: RougeScore | null = null;
  for (const t of targets) {
    const s = rougeL(t, prediction, options);
    if (!best || s.fmeasure > best.fmeasure) best = s;
  }
  return best!;
}

/**
 * Mean ROUGE-L over pairs (targets[i], predictions[i]); also every pair's score. A target may be
 * several references (rougeLMulti: the best one counts).
 */
export function corpusRougeL(targets: readonly (string | readonly string[])[], predictions: readonly string[], options: RougeOptions = {}): RougeScore & { scores: RougeScore[] } {
  checkRougeOptions(options);
  if (!Array.isArray(targets)) throw new TypeError('Expected an array of strings for targets');
  if (!Array.isArray(predictions)) throw new TypeError('Expected an array of strings for predictions');
  if (targets.length !== predictions.length) throw new RangeError(`Expected as many predictions as targets (${targets.length}) but received ${predictions.length}`);
  if (targets.length === 0) throw new RangeError('Expected at least one pair for targets and predictions');
  const scores = targets.map((t, i) => {
    if (typeof t !== 'string' && !(Array.isArray(t) && t.every((x) => typeof x === 'string'))) throw new TypeError(`Expected a string (or an array of strings) for targets[${i}]`);
    if (typeof predictions[i] !== 'string') throw new TypeError(`Expected a string for predictions[${i}]`);
    return typeof t === 'string' ? rougeL(t, predictions[i]!, options) : rougeLMulti(t as string[], predictions[i]!, options);
  });
  const mean = (k: keyof RougeScore) => scores.reduce((s, x) => s + x[k], 0) / scores.length;
  return { precision: mean('precision'), recall: mean('recall'), fmeasure: mean('fmeasure'), scores };
}
