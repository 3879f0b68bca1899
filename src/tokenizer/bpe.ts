/**
 * Byte-pair encoding by merge rank, as GPT-2's encoder.py `bpe()` and llama.cpp's
 * llm_tokenizer_bpe_session: merge the adjacent pair with the lowest rank (ties: leftmost)
 * until no ranked pair remains. A priority queue with lazy invalidation keeps a word of n
 * symbols at O(n log n).
 */
import { MinHeap } from './heap.js';

/** left -> right -> rank (the index in the merges list). */
export type MergeRanks = Map<string, Map<string, number>>;

/** Parses merges given as "left right" strings (split at the first space after index 0) or pairs. */
export function buildMergeRanks(merges: readonly (string | readonly [string, string])[], fail: (msg: string) => never): MergeRanks {
  const ranks: MergeRanks = new Map();
  merges.forEach((m, i) => {
    let a: string, b: string;
    if (typeof m === 'string') {
      const sp = m.indexOf(' ', 1);
      if (sp < 0) fail(`merge #${i} ${JSON.stringify(m)} has no space between its two parts`);
      a = m.slice(0, sp);
      b = m.slice(sp + 1);
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
      [a, b] = m;
    } else {
      return fail(`merge #${i} is neither "left right" nor [left, right]: ${JSON.stringify(m)}`);
    }
    let inner = ranks.get(a);
    if (!inner) ranks.set(a, (inner = new Map()));
    // The first occurrence wins, as with llama.cpp's bpe_ranks.emplace.
    if (!inner.has(b)) inner.set(b, i);
  });
  return ranks;
}

interface Pair {
  left: number;
  right: number;
  rank: number;
  text: string;
}

const before = (a: Pair, b: Pair) => a.rank < b.rank || (a.rank === b.rank && a.left < b.left);

/** Splits a word into code points and merges them; returns the final symbols in order. */
export function bpeWord(word: string, ranks: MergeRanks): string[] {
  const sym = Array.from(word);
  const n = sym.length;
  if (n < 2) return sym;
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  const queue = new MinHeap<Pair>(before);
  const tryAdd = (l: number, r: number) => {
    if (l < 0 || r < 0) return;
    const rank = ranks.get(sym[l]!)?.get(sym[r]!);
    if (rank !== undefined) queue.push({ left: l, right: r, rank, text: sym[l]! + sym[r]! });
  };
  for (let i = 1; i < n; i++) tryAdd(i - 1, i);
  for (let p = queue.pop(); p !== undefined; p = queue.pop()) {
    const l = p.left, r = p.right;
    const ls = sym[l]!, rs = sym[r]!;
    // Stale entry: either side changed since it was queued.
    if (ls.length === 0 || rs.length === 0 || ls.length + rs.length !== p.text.length || ls + rs !== p.text) continue;
    sym[l] = p.text;
    sym[r] = '';
    next[l] = next[r]!;
    if (next[r]! >= 0) prev[next[r]!] = l;
    tryAdd(prev[l]!, l);
    tryAdd(l, next[l]!);
  }
  const out: string[] = [];
  for (let i = 0; i !== -1; i = next[i]!) out.push(sym[i]!);
  return out;
}
