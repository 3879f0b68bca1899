/**
 * The scheduler: continuous batching over jobs (vLLM's scheduler, Kwon et al. 2023, with chunked
 * prefill). Each step it keeps every running job going (a decode token per sequence, or the next
 * chunk of a prompt), admits waiting jobs first come first served while the token budget
 * (maxBatchTokens), the sequence cap (maxSequences) and the KV blocks allow, runs one forward over
 * all of it through the runner, and hands each job its logits.
 *
 * When KV blocks run out it preempts the newest running job: its blocks are freed and it is
 * recomputed later (from the prefix cache where its prompt blocks survived). A job fails with
 * KvCacheFullError only when it alone needs more than the whole cache.
 *
 * Batch invariance: a sequence's logits never depend on what shares its batch or on whether it was
 * preempted. Prompt tokens are always computed in "long" segments (at least LONG_SEGMENT tokens,
 * so every linear takes the GEMM and attention its multi-row path, whose rows do not depend on
 * the segment's length; a prompt shorter than that is always one segment), and every other token
 * as a one-token segment, exactly like a decode step (see runner.ts and model/batch.ts).
 */
import type { LlamaModel } from '../model/llama.js';
import * as check from '../tensor/check.js';
import { KvCacheFullError, type PagedKvCache } from './kv/cache.js';
import { runBatch, type RunEntry } from './runner.js';

/**
 * Minimum prompt chunk: above the kernels' row thresholds (dense GEMV <= 12 rows, attention's
 * one-token path <= 8 query rows), so a chunk's rows compute the same for any chunk length.
 */
export const LONG_SEGMENT = 16;

function sharedPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/** One sequence of a job and the tokens it should hold. */
export interface SeqWork {
  seq: number;
  /** Every token the sequence should hold; the cache already holds the first cache.length(seq). */
  tokens: readonly number[];
  /** tokens[0, promptLength) are the prompt (long chunks, cacheable); later ones go one per segment. */
  promptLength: number;
  /** Logits of this many last tokens (speculative verification); all pending tokens then run in one step. Default 1. */
  logitRows?: number;
  /**
   * Scoring (teacher forcing): logits of every row of each step that computes a position >=
   * logitsFrom, delivered to advance() after that step (possibly before all tokens are in the
   * cache); no prefix-cache match reaches past it. Whole chunks: the output projection then runs
   * on a chunk's rows as one long call wherever the text was cut (a few rows would take the GEMV,
   * whose rounding differs). Replaces logitRows.
   */
  logitsFrom?: number;
}

export interface JobContext {
  readonly cache: PagedKvCache;
  readonly model: LlamaModel;
  /** A fresh sequence id. */
  newSeq(): number;
}

/** A unit of work the scheduler runs: sampling one sequence, a beam search, ... */
export interface Job {
  /** Sequences this job runs at once (for maxSequences). */
  readonly width: number;
  /** True once finished, failed or aborted (the scheduler then releases it). */
  readonly done: boolean;
  /** Sequences with tokens to compute next; all of them run in the same step. */
  work(ctx: JobContext): SeqWork[];
  /**
   * After a step: the logits (vocab) of every sequence whose tokens are now all in the cache (with
   * logitsFrom: every row of this step, (rows, vocab) flattened; they end at the sequence's cache
   * length).
   */
  advance(logits: Map<number, Float32Array>, ctx: JobContext): void;
  /** Frees the job's sequences so it can be recomputed later (preemption). */
  reset(ctx: JobContext): void;
  /** Fails the job (it frees nothing; release follows). */
  fail(err: Error): void;
  /** Frees everything the job holds. */
  release(ctx: JobContext): void;
}

export interface SchedulerOptions {
  /** Tokens per forward step (decode tokens plus prefill chunks). Default 512. */
  maxBatchTokens?: number;
  /** Sequences running at once. Default 64. */
  maxSequences?: number;
}

export interface SchedulerStats {
  running: number;
  waiting: number;
  kvBlocksUsed: number;
  kvBlocksFree: number;
  kvBlocksCached: number;
  /** Prompt tokens served from the prefix cache / prompt tokens looked up. */
  prefixHitRate: number;
  /** Tokens sampled per second over the last few seconds. */
  tokensPerSecond: number;
  preemptions: number;
  /** Tokens run through the model so far (prompt chunks, decoded and draft tokens); tokens found in the KV cache are not counted. */
  tokensComputed: number;
}

type PlannedStep = Planned & { tokens: number; blocks: number };

interface Planned {
  job: Job;
  entries: RunEntry[];
  /** Which sequences get logits this step. */
  wants: Set<number>;
}

export class Scheduler implements JobContext {
  readonly maxBatchTokens: number;
  readonly maxSequences: number;
  readonly #running: Job[] = [];
  readonly #waiting: Job[] = [];
  #nextSeq = 0;
  #preemptions = 0;
  #computed = 0;
  readonly #recent: [number, number][] = []; // (time ms, sampled tokens) per step

  constructor(
    readonly model: LlamaModel,
    readonly cache: PagedKvCache,
    options: SchedulerOptions = {},
  ) {
    const o = check.options<SchedulerOptions>(options, 'scheduler options');
    this.maxBatchTokens = check.int(o.maxBatchTokens ?? 512, 'maxBatchTokens', LONG_SEGMENT);
    this.maxSequences = check.int(o.maxSequences ?? 64, 'maxSequences', 1);
  }

  newSeq(): number {
    return this.#nextSeq++;
  }

  /** Queues a job; it starts at the next step that has room for it. */
  submit(job: Job): void {
    if (job.width > this.maxBatchTokens)
      throw new RangeError(`Expected at most maxBatchTokens = ${this.maxBatchTokens} sequences in one request but it runs ${job.width} at once`);
    this.#waiting.push(job);
  }

  /** Jobs queued or running. */
  get pending(): number {
    return this.#running.length + this.#waiting.length;
  }

  stats(): SchedulerStats {
    const b = this.cache.stats();
    const now = Date.now();
    while (this.#recent.length && now - this.#recent[0]![0] > 5000) this.#recent.shift();
    const span = this.#recent.length > 1 ? (now - this.#recent[0]![0]) / 1000 : 0;
    const toks = this.#recent.reduce((s, r) => s + r[1], 0);
    return {
      running: this.#running.length,
      waiting: this.#waiting.length,
      kvBlocksUsed: b.used,
      kvBlocksFree: b.free,
      kvBlocksCached: b.cached,
      prefixHitRate: b.queriedTokens ? b.hitTokens / b.queriedTokens : 0,
      tokensPerSecond: span > 0 ? toks / span : 0,
      preemptions: this.#preemptions,
      tokensComputed: this.#computed,
    };
  }

  /** Releases finished jobs now (e.g. right after an abort) so their blocks come back at once. */
  sweep(): void {
    for (const list of [this.#running, this.#waiting])
      for (let i = list.length - 1; i >= 0; i--)
        if (list[i]!.done) {
          list[i]!.release(this);
          list.splice(i, 1);
        }
  }

  /**
   * Plans a job's next step within `room` tokens: entries for the runner, or null when a sequence
   * cannot make progress in this room (the job waits). Starts sequences the cache lacks, reusing
   * cached prompt blocks.
   */
  #plan(job: Job, room: number): PlannedStep | null {
    const work = job.work(this);
    if (work.length === 0) return null;
    const entries: RunEntry[] = [];
    const wants = new Set<number>();
    let tokens = 0, blocks = 0;
    for (const w of work) {
      if (!this.cache.has(w.seq)) {
        this.cache.add(w.seq);
        // Leave at least a long segment of the prompt to compute, so its class never changes.
        if (w.promptLength >= 2 * LONG_SEGMENT)
          this.cache.blocks.matchPrefix(w.seq, w.tokens.slice(0, w.promptLength) as number[], Math.min(w.promptLength - LONG_SEGMENT, w.logitsFrom ?? Infinity));
      }
      const have = this.cache.length(w.seq), P = w.promptLength, N = w.tokens.length;
      if (have >= N) continue;
      const segments: number[] = [];
      let take = 0;
      const left = room - tokens;
      if (have < P) {
        const rem = P - have;
        let n = Math.min(rem, left);
        if (P < LONG_SEGMENT) {
          if (n < rem) return null; // a short prompt is always one segment
        } else {
          if (rem - n > 0 && rem - n < LONG_SEGMENT) n = rem - LONG_SEGMENT;
          if (n < Math.min(LONG_SEGMENT, rem)) return null;
        }
        segments.push(n);
        take = n;
      }
      if (have + take >= P) {
        const k = Math.min(N - (have + take), left - take);
        for (let i = 0; i < k; i++) segments.push(1);
        take += k;
      }
      if (take === 0) return null;
      const rows = w.logitRows ?? 1;
      if (w.logitsFrom === undefined && rows > 1 && (take < N - have || rows > N - have)) return null; // verification rows must run together
      const start = have;
      const cacheable = Math.max(0, Math.min(P, start + take) - start);
      let logits: RunEntry['logits'] = start + take === N ? (rows > 1 ? rows : 'last') : 'none';
      if (w.logitsFrom !== undefined) logits = start + take > w.logitsFrom ? 'all' : 'none';
      // Prompt and generated tokens in one entry: only the prompt part may be cached.
      entries.push({ seq: w.seq, tokens: w.tokens.slice(start, start + take), segments, logits, cacheable: cacheable === take });
      if (w.logitsFrom === undefined ? start + take === N : logits !== 'none') wants.add(w.seq);
      tokens += take;
      blocks += this.cache.blocks.blocksNeeded(w.seq, take);
    }
    if (entries.length === 0) return null;
    return { job, entries, wants, tokens, blocks };
  }

  /** #plan, failing the job (not the step) when the job itself throws (a bad draft, ...). */
  #tryPlan(job: Job, room: number): PlannedStep | null {
    try {
      return this.#plan(job, room);
    } catch (err) {
      job.fail(err as Error);
      return null;
    }
  }

  /** The prompt of a job none of whose sequences has started, or null. */
  #freshPrompt(job: Job): readonly number[] | null {
    const w = job.work(this);
    if (w.length !== 1 || this.cache.has(w[0]!.seq)) return null;
    return w[0]!.tokens.slice(0, w[0]!.promptLength);
  }

  #preempt(job: Job): void {
    job.reset(this);
    this.#preemptions++;
    this.#waiting.unshift(job);
  }

  /** Runs one forward step. Returns false when there was nothing to run. */
  step(): boolean {
    this.sweep();
    const plan: Planned[] = [];
    let room = this.maxBatchTokens, reserved = 0;
    // 1. Running jobs, oldest first; out of blocks -> preempt the newest.
    for (let i = 0; i < this.#running.length; i++) {
      const job = this.#running[i]!;
      const p = this.#tryPlan(job, room);
      if (!p) continue;
      while (p.blocks + reserved > this.cache.blocks.available && this.#running[this.#running.length - 1] !== job) {
        this.#preempt(this.#running.pop()!);
      }
      if (p.blocks + reserved > this.cache.blocks.available) {
        this.#running.splice(i--, 1);
        if (this.#running.length === 0 && plan.length === 0) {
          job.fail(new KvCacheFullError(`KV cache full: this request needs more than the whole cache (${this.cache.numBlocks} blocks of ${this.cache.blockSize} tokens); raise kvCacheBytes or shorten it`));
          job.release(this);
        } else this.#preempt(job);
        continue;
      }
      plan.push(p);
      room -= p.tokens;
      reserved += p.blocks;
    }
    // 2. Waiting jobs, first come first served, while room, sequences and blocks allow. A job whose
    // prompt shares at least two blocks with a prompt admitted in this same step waits one step:
    // then it starts on that prompt's cached blocks instead of computing them again (n > 1
    // samples of one prompt, a shared system prompt arriving at once).
    let width = this.#running.reduce((s, j) => s + j.width, 0);
    const admitted: (readonly number[])[] = [];
    const deferred: Job[] = [];
    while (this.#waiting.length && room > 0) {
      const job = this.#waiting[0]!;
      if (job.done) {
        this.#waiting.shift();
        job.release(this);
        continue;
      }
      if (width + job.width > this.maxSequences && this.#running.length > 0) break;
      let prompt: readonly number[] | null;
      try {
        prompt = this.#freshPrompt(job);
      } catch (err) {
        this.#waiting.shift();
        job.fail(err as Error);
        job.release(this);
        continue;
      }
      if (this.cache.blocks.prefixCaching && prompt && admitted.some((a) => sharedPrefix(a, prompt) >= 2 * LONG_SEGMENT)) {
        deferred.push(this.#waiting.shift()!);
        continue;
      }
      const p = this.#tryPlan(job, room);
      if (job.done) {
        this.#waiting.shift();
        job.release(this);
        continue;
      }
      if (!p || p.blocks + reserved > this.cache.blocks.available) {
        if (this.#running.length === 0 && plan.length === 0) {
          this.#waiting.shift();
          job.fail(new KvCacheFullError(`KV cache full: this request needs more than the whole cache (${this.cache.numBlocks} blocks of ${this.cache.blockSize} tokens); raise kvCacheBytes or shorten it`));
          job.release(this);
          continue;
        }
        job.reset(this); // gives back prefix blocks it matched
        break;
      }
      this.#waiting.shift();
      this.#running.push(job);
      width += job.width;
      plan.push(p);
      room -= p.tokens;
      reserved += p.blocks;
      if (prompt) admitted.push(prompt);
    }
    this.#waiting.unshift(...deferred);
    if (plan.length === 0) return this.#running.some((j) => !j.done);
    // 3. One forward over everything planned.
    let results: Float32Array[];
    try {
      results = runBatch(this.model, this.cache, plan.flatMap((p) => p.entries));
    } catch (err) {
      for (const p of plan) p.job.fail(err as Error);
      this.sweep();
      return true;
    }
    for (const p of plan) for (const e of p.entries) this.#computed += e.tokens.length;
    let r = 0, sampled = 0;
    for (const p of plan) {
      const logits = new Map<number, Float32Array>();
      for (const e of p.entries) {
        const l = results[r++]!;
        if (p.wants.has(e.seq)) logits.set(e.seq, l);
      }
      if (logits.size === 0) continue;
      sampled += logits.size;
      try {
        p.job.advance(logits, this);
      } catch (err) {
        p.job.fail(err as Error);
      }
    }
    this.#recent.push([Date.now(), sampled]);
    if (this.#recent.length > 4096) this.#recent.shift();
    this.sweep();
    return true;
  }

  /** Runs steps until every job is done (synchronous; the Engine's worker steps between messages). */
  runToCompletion(): void {
    while (this.pending > 0) if (!this.step() && this.#waiting.length === 0) break;
  }

  /** Fails and releases every job. */
  clear(err: Error): void {
    for (const j of [...this.#running, ...this.#waiting]) {
      if (!j.done) j.fail(err);
      j.release(this);
    }
    this.#running.length = 0;
    this.#waiting.length = 0;
  }
}
