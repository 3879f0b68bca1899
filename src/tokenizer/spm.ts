/**
 * SentencePiece BPE by piece scores with byte fallback, as llama.cpp's llm_tokenizer_spm
 * (llama-vocab.cpp, originally from llama.cpp commit 074bea2): start from single code points,
 * repeatedly merge the adjacent pair whose concatenation is the highest-scoring vocab entry
 * (ties: leftmost), then emit each final piece, or its UTF-8 bytes as <0xXX> tokens.
 * Input is expected with spaces already escaped as U+2581.
 */
import { MinHeap } from './heap.js';
import { utf8Bytes } from './unicode.js';
import type { Vocab } from './vocab.js';

interface Bigram {
  left: number;
  right: number;
  score: number;
  size: number;
}

// Max-score first; equal scores go to the leftmost pair, as llama.cpp's comparator orders them.
const before = (a: Bigram, b: Bigram) => a.score > b.score || (a.score === b.score && a.left < b.left);

export function spmTokenize(text: string, vocab: Vocab, unkId: number | undefined, out: number[]): void {
  if (text.length === 0) return;
  const starts: number[] = [];
  for (let i = 0; i < text.length; ) {
    starts.push(i);
    const c = text.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < text.length ? 2 : 1;
  }
  const n = starts.length;
  const start = Int32Array.from(starts);
  const len = new Int32Array(n);
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    len[i] = (i + 1 < n ? start[i + 1]! : text.length) - start[i]!;
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  const queue = new MinHeap<Bigram>(before);
  // Which two symbols formed a piece, for pieces that end up outside the vocab (llama.cpp rev_merge).
  const revMerge = new Map<string, [number, number]>();

  const tryAdd = (left: number, right: number) => {
    if (left < 0 || right < 0) return;
    const s = text.slice(start[left]!, start[left]! + len[left]! + len[right]!);
    const id = vocab.ids.get(s);
    if (id === undefined) return;
    queue.push({ left, right, score: vocab.scores[id]!, size: s.length });
    revMerge.set(s, [left, right]);
  };

  for (let i = 1; i < n; i++) tryAdd(i - 1, i);
  for (let b = queue.pop(); b !== undefined; b = queue.pop()) {
    const l = b.left, r = b.right;
    // Stale entry: one side was merged away or grew since this pair was queued.
    if (len[l] === 0 || len[r] === 0 || len[l]! + len[r]! !== b.size) continue;
    len[l] += len[r]!;
    len[r] = 0;
    next[l] = next[r]!;
    if (next[r]! >= 0) prev[next[r]!] = l;
    tryAdd(prev[l]!, l);
    tryAdd(l, next[l]!);
  }

  const resegment = (i: number, depth: number) => {
    const s = text.slice(start[i]!, start[i]! + len[i]!);
    const id = vocab.ids.get(s);
    if (id !== undefined) {
      out.push(id);
      return;
    }
    const p = revMerge.get(s);
    if (p === undefined || depth > 64) {
      for (const byte of utf8Bytes(s)) {
        let bid = vocab.byteId(byte);
        if (bid < 0 && byte < 0x80) bid = vocab.ids.get(String.fromCharCode(byte)) ?? -1;
        if (bid < 0) bid = unkId ?? -1;
        if (bid >= 0) out.push(bid);
      }
      return;
    }
    resegment(p[0], depth + 1);
    resegment(p[1], depth + 1);
  };
  for (let i = 0; i !== -1; i = next[i]!) resegment(i, 0);
}
