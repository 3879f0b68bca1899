/**
 * The runner: the only caller of LlamaModel.forward. It turns "these sequences get these new
 * tokens" into a ForwardBatch (slots reserved in the paged cache, block tables, queryStart, logit
 * rows), runs one forward over all of them, and hands each sequence its logits.
 */
import type { ForwardBatch, ForwardObserver } from '../model/batch.js';
import type { LlamaModel } from '../model/llama.js';
import { Tensor } from '../tensor/tensor.js';
import type { PagedKvCache } from './kv-cache.js';

export interface RunEntry {
  /** Cache sequence the tokens are appended to. */
  seq: number;
  /** New tokens of this sequence (at least one). */
  tokens: ArrayLike<number>;
  /** Which of its rows need logits. Default 'last'. */
  logits?: 'last' | 'all' | 'none';
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
  const B = entries.length;
  const starts = new Int32Array(B + 1);
  entries.forEach((e, i) => (starts[i + 1] = starts[i]! + e.tokens.length));
  const T = starts[B]!;
  const tokens = new Int32Array(T), positions = new Int32Array(T), slots = new Int32Array(T);
  const before = entries.map((e) => cache.length(e.seq));
  let reserved = 0;
  try {
    for (; reserved < B; reserved++) {
      const e = entries[reserved]!;
      const a = starts[reserved]!;
      slots.set(cache.append(e.seq, e.tokens.length), a);
      for (let i = 0; i < e.tokens.length; i++) {
        tokens[a + i] = e.tokens[i]!;
        positions[a + i] = before[reserved]! + i;
      }
    }
    const counts = Int32Array.from(entries, (e) => ((e.logits ?? 'last') === 'all' ? e.tokens.length : (e.logits ?? 'last') === 'last' ? 1 : 0));
    const logitRows = new Int32Array(counts.reduce((s, n) => s + n, 0));
    let r = 0;
    entries.forEach((e, i) => {
      for (let j = e.tokens.length - counts[i]!; j < e.tokens.length; j++) logitRows[r++] = starts[i]! + j;
    });
    const t = cache.batch(entries.map((e) => e.seq), entries.map((e) => e.tokens.length));
    const batch: ForwardBatch = {
      tokens: new Tensor('i32', [T], tokens),
      positions: new Tensor('i32', [T], positions),
      slots: new Tensor('i32', [T], slots),
      blockTables: t.blockTables,
      contextLens: t.contextLens,
      queryStart: t.queryStart,
      logitRows: new Tensor('i32', [logitRows.length], logitRows),
      queryStartHost: starts,
      logitCountsHost: counts,
    };
    const out = model.forward(batch, cache, observer);
    if (observer?.stopAfterLayer !== undefined) return [out.data];
    const V = model.config.vocabSize;
    const res: Float32Array[] = [];
    let row = 0;
    for (let i = 0; i < B; i++) {
      res.push(out.data.subarray(row * V, (row + counts[i]!) * V));
      row += counts[i]!;
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
