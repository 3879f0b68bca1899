/**
 * Speculative decoding's proposers (Leviathan et al. 2023; Chen et al. 2023): something cheap
 * guesses the next k tokens, the target model scores them all in one forward, and rejection
 * sampling keeps exactly the target's distribution. Proposers only guess; verification is the
 * runtime's (runtime/generate.ts).
 */

/** Draft tokens and, for each, the distribution it was drawn from (null: chosen deterministically). */
export interface Draft {
  tokens: number[];
  q: (Float64Array | null)[];
}

export interface Proposer {
  readonly name: string;
  /** Up to k tokens likely to follow `history` (prompt and output so far); fewer or none is fine. */
  propose(history: readonly number[], k: number): Draft;
  /** Frees what the proposer holds for this sequence. */
  release?(): void;
}

/**
 * Prompt lookup / n-gram proposer: finds the latest earlier occurrence of the last n tokens
 * (n from `max` down to `min`) in the prompt and output so far and proposes what followed it.
 */
export class NgramProposer implements Proposer {
  readonly name = 'ngram';
  constructor(readonly max = 3, readonly min = 1) {
    if (!Number.isInteger(max) || !Number.isInteger(min) || min < 1 || max < min)
      throw new RangeError(`Expected n-gram sizes 1 <= min <= max but received min ${min}, max ${max}`);
  }

  propose(history: readonly number[], k: number): Draft {
    const L = history.length;
    for (let n = Math.min(this.max, L - 1); n >= this.min; n--) {
      // Latest start i < L - n with history[i, i + n) equal to the last n tokens.
      for (let i = L - n - 1; i >= 0; i--) {
        let j = 0;
        while (j < n && history[i + j] === history[L - n + j]) j++;
        if (j < n) continue;
        const tokens = history.slice(i + n, Math.min(L, i + n + k)) as number[];
        if (tokens.length) return { tokens, q: tokens.map(() => null) };
      }
    }
    return { tokens: [], q: [] };
  }
}

/** What a draft-model proposer needs from the runtime: a sequence of the draft model it can feed and cut. */
export interface DraftSequence {
  /** Tokens the draft's cache holds. */
  readonly tokens: readonly number[];
  /** Drops cached tokens beyond n. */
  truncate(n: number): void;
  /** Appends tokens and returns the logits (vocab) after the last one. */
  feed(tokens: readonly number[]): Float32Array;
  release(): void;
}

/** How the draft turns its logits into a token (the target's sampling options, its own RNG). */
export interface DraftSampler {
  distribution(logits: Float32Array, history: readonly number[]): Float64Array;
  draw(p: Float64Array): number;
  readonly temperature: number;
}

/**
 * A smaller model sharing the target's vocabulary: it keeps its own KV cache in step with the
 * target's tokens (cut back to the common prefix, then fed the rest) and drafts k tokens by
 * sampling its own distribution under the target's sampling options (argmax when greedy).
 */
export class DraftModelProposer implements Proposer {
  readonly name = 'draft-model';
  constructor(readonly seq: DraftSequence, readonly sampler: DraftSampler) {}

  propose(history: readonly number[], k: number): Draft {
    const have = this.seq.tokens;
    let common = 0;
    while (common < have.length && common < history.length && have[common] === history[common]) common++;
    if (common === history.length) common--; // refeed the last token to get its logits
    this.seq.truncate(common);
    let logits = this.seq.feed(history.slice(common));
    const ctx = [...history];
    const tokens: number[] = [], q: Float64Array[] = [];
    for (let i = 0; i < k; i++) {
      const p = this.sampler.distribution(logits, ctx);
      const t = this.sampler.temperature === 0 ? p.indexOf(1) : this.sampler.draw(p);
      tokens.push(t);
      q.push(p);
      ctx.push(t);
      if (i + 1 < k) logits = this.seq.feed([t]);
    }
    return { tokens, q };
  }

  release(): void {
    this.seq.release();
  }
}
