/**
 * The runner: the only caller of LlamaModel.forward. It turns "these sequences get these new
 * tokens" into a ForwardBatch (slots reserved in the paged cache, block tables, queryStart, logit
 * rows), runs one forward over all of them, and hands each sequence its logits.
 *
 * A sequence's new tokens form one or more segments. A segment is what the kernels see as one
 * query block: a prefill chunk is one segment, a decode token is a segment of one. Splitting
 * tokens into one-token segments computes them exactly (bit for bit) as that many decode steps
 * would, which is how a preempted sequence is recomputed without changing its future output.
 */
import type { ForwardBatch, ForwardObserver } from '../model/batch.js';
import type { LlamaModel } from '../model/llama.js';
import { Tensor } from '../tensor/tensor.js';
import type { PagedKvCache } from './kv/cache.js';

export interface RunEntry {
  /** Cache sequence the tokens are appended to. */
  seq: number;
  /** New tokens of this sequence (at least one). */
  tokens: ArrayLike<number>;
  /** Which of its rows need logits: the last one (default), all, none, or the last n. */
  logits?: 'last' | 'all' | 'none' | number;
  /** Segments: one (default), one per token, or explicit lengths summing to tokens.length. */
  segments?: 'one' | 'tokens' | readonly number[];
  /** Prompt tokens: their full KV blocks may be kept for prefix reuse. Default false. */
  cacheable?: boolean;
}

function segmentsOf(e: RunEntry): readonly number[] {
  const n = e.tokens.length;
  const s = e.segments ?? 'one';
  if (s === 'one') return [n];
  if (s === 'tokens') return new Array<number>(n).fill(1);
  if (!Array.isArray(s) || s.some((x) => !Number.isInteger(x) || x < 1) || s.reduce((a, b) => a + b, 0) !== n)
    throw new RangeError(`Expected segment lengths (positive integers) summing to ${n} for sequence ${e.seq}`);
  return s;
}

/**
 * One forward over several sequences. Reserves KV slots for every entry (all or nothing: on any
 * error the cache is rolled back) and returns per entry its logits, (rows, vocab) flattened.
 */
export function runBatch(model: LlamaModel, cache: PagedKvCache, entries: readonly RunEntry[], observer?: ForwardObserver): Float32Array[] {
  if (entries.length === 0) throw new RangeError('Expected at least one sequence in the batch');
  const ctx = model.config.contextLength;
  const seen = new Set<number>();
  for (const e of entries) {
    if (seen.has(e.seq)) throw new RangeError(`Expected each sequence once per batch but sequence ${e.seq} appears twice`);
    seen.add(e.seq);
    if (e.tokens.length < 1) throw new RangeError(`Expected at least one token for sequence ${e.seq}`);
    const end = cache.length(e.seq) + e.tokens.length;
    if (end > ctx) throw new RangeError(`Sequence would reach ${end} tokens, past the model's context length ${ctx}`);
  }
  const segs = entries.map(segmentsOf);
  const B = segs.reduce((a, s) => a + s.length, 0);
  const T = entries.reduce((a, e) => a + e.tokens.length, 0);
  const tokens = new Int32Array(T), positions = new Int32Array(T), slots = new Int32Array(T);
  const before = entries.map((e) => cache.length(e.seq));
  let reserved = 0;
  try {
    let row = 0;
    for (; reserved < entries.length; reserved++) {
      const e = entries[reserved]!;
      slots.set(cache.append(e.seq, e.tokens, e.cacheable ?? false), row);
      for (let i = 0; i < e.tokens.length; i++) {
        tokens[row + i] = e.tokens[i]!;
        positions[row + i] = before[reserved]! + i;
      }
      row += e.tokens.length;
    }
    const maxBlocks = Math.max(1, ...entries.map((e) => cache.blocks.blockTable(e.seq).length));
    const tables = new Int32Array(B * maxBlocks), contextLens = new Int32Array(B), starts = new Int32Array(B + 1), counts = new Int32Array(B);
    const rowsPerEntry = new Int32Array(entries.length);
    let b = 0;
    entries.forEach((e, i) => {
      const table = cache.blocks.blockTable(e.seq);
      const mode = e.logits ?? 'last';
      const want = mode === 'all' ? e.tokens.length : mode === 'last' ? 1 : mode === 'none' ? 0 : mode;
      if (!Number.isInteger(want) || want < 0 || want > e.tokens.length)
        throw new RangeError(`Expected logits for 0 to ${e.tokens.length} rows of sequence ${e.seq} but received ${String(mode)}`);
      const from = e.tokens.length - want; // rows [from, n) of this entry get logits
      let done = 0;
      segs[i]!.forEach((n) => {
        tables.set(table, b * maxBlocks);
        contextLens[b] = before[i]! + done + n;
        starts[b + 1] = starts[b]! + n;
        counts[b] = Math.max(0, done + n - Math.max(done, from));
        done += n;
        rowsPerEntry[i] += counts[b]!;
        b++;
      });
    });
    const R = counts.reduce((s, n) => s + n, 0);
    const logitRows = new Int32Array(R);
    let r = 0;
    for (let s = 0; s < B; s++) for (let j = starts[s + 1]! - counts[s]!; j < starts[s + 1]!; j++) logitRows[r++] = j;
    const batch: ForwardBatch = {
      tokens: new Tensor('i32', [T], tokens),
      positions: new Tensor('i32', [T], positions),
      slots: new Tensor('i32', [T], slots),
      blockTables: new Tensor('i32', [B, maxBlocks], tables),
      contextLens: new Tensor('i32', [B], contextLens),
      queryStart: new Tensor('i32', [B + 1], starts),
      logitRows: new Tensor('i32', [R], logitRows),
      queryStartHost: starts,
      logitCountsHost: counts,
    };
    const out = model.forward(batch, cache.store, observer);
    if (observer?.stopAfterLayer !== undefined) return [out.data]; // later layers' K/V unwritten: nothing to commit
    for (const e of entries) cache.blocks.commit(e.seq);
    const V = model.config.vocabSize;
    const res: Float32Array[] = [];
    let at = 0;
    for (let i = 0; i < entries.length; i++) {
      res.push(out.data.subarray(at * V, (at + rowsPerEntry[i]!) * V));
      at += rowsPerEntry[i]!;
    }
    return res;
  } catch (err) {
    for (let i = 0; i < reserved; i++) cache.truncate(entries[i]!.seq, before[i]!);
    throw err;
  }
}

/** One sequence's new tokens through runBatch: (1, vocab) logits of the last token, or (T, vocab) with allLogits. */
export function forwardTokens(
  model: LlamaModel,
  cache: PagedKvCache,
  seq: number,
  tokens: ArrayLike<number>,
  options: { allLogits?: boolean; observer?: ForwardObserver } = {},
): Tensor<'f32'> {
  const [l] = runBatch(model, cache, [{ seq, tokens, logits: options.allLogits ? 'all' : 'last' }], options.observer);
  if (options.observer?.stopAfterLayer !== undefined) return new Tensor('f32', [tokens.length, model.config.dim], l!);
  return new Tensor('f32', [options.allLogits ? tokens.length : 1, model.config.vocabSize], l!);
}
