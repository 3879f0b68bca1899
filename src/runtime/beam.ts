/**
 * Beam search (as Hugging Face's BeamSearchScorer): keep `beams` running hypotheses; each step
 * extends each by its 2 x beams best next tokens, keeps the best `beams` non-final candidates, and
 * moves candidates ending in an end-of-generation token (ranked within the top `beams`) to the
 * finished list, which keeps the best `beams` by sum(log p) / length^lengthPenalty (length: the
 * generated tokens, the end token included). The search is done once `beams` hypotheses finished
 * (earlyStopping true) or, with earlyStopping false, once the best candidate's sum(log p) /
 * step^lengthPenalty cannot beat the worst finished one (HF's heuristic); at maxTokens the
 * running beams join the finished list unless it was done. Beams share their prefix in the paged
 * KV cache (fork + copy-on-write), and all beams of a search run in one forward per step.
 */
import type { LlamaModel } from '../model/llama.js';
import * as check from '../tensor/check.js';
import { Tensor } from '../tensor/tensor.js';
import type { TextTokenizer } from '../tokenizer/text.js';
import { checkFiniteLogits } from './errors.js';
import type { Delta, FinishReason, GenerateOptions, GenerationJob, JobEvents } from './generate.js';
import { checkPrompt, firstStop, resolveGenerateOptions } from './generate.js';
import type { PagedKvCache } from './kv/cache.js';
import { runBatch } from './runner.js';
import type { JobContext, SeqWork } from './scheduler.js';

export interface BeamSearchOptions {
  beams: number;
  maxTokens?: number;
  /** Exponent of the length normalisation (> 0 favours longer outputs). Default 1. */
  lengthPenalty?: number;
  /** true: stop once `beams` hypotheses are finished; false: stop when this step's best candidate,
   *  normalised at the current length, cannot beat the worst finished one. Default true (Hugging
   *  Face's default is false). */
  earlyStopping?: boolean;
  eogIds?: ReadonlySet<number>;
}

export interface BeamHypothesis {
  tokens: number[];
  /** Sum of token log-probabilities. */
  logprob: number;
  /** logprob / length^lengthPenalty, the ranking score. */
  score: number;
  finished: boolean;
}

interface Beam {
  seq: number;
  tokens: number[];
  logprob: number;
}

/**
 * The search as a state machine over cache sequences: work() says which sequences need which
 * tokens, advance() takes their logits. `firstSeq` holds the prompt; the beams fork it under ids
 * from newSeq. release() frees every sequence the search created (and firstSeq when owned).
 */
export class BeamSearch {
  readonly #model: LlamaModel;
  readonly #prompt: readonly number[];
  readonly #B: number;
  readonly #maxTokens: number;
  readonly #lp: number;
  readonly #early: boolean;
  readonly #eog: ReadonlySet<number>;
  readonly #newSeq: () => number;
  readonly #firstSeq: number;
  readonly #ownsFirst: boolean;
  readonly #owned = new Set<number>();
  #beams: Beam[] = [];
  #finished: BeamHypothesis[] = []; // the best `beams` finished hypotheses, best first
  #step = 0;
  #result: BeamHypothesis[] | null = null;

  constructor(model: LlamaModel, prompt: readonly number[], options: BeamSearchOptions, firstSeq: number, newSeq: () => number, ownsFirst = false) {
    const o = check.options<BeamSearchOptions>(options, 'beam options');
    this.#B = check.int(o.beams, 'beams', 1, 64);
    this.#maxTokens = check.int(o.maxTokens ?? 64, 'maxTokens', 1);
    this.#lp = check.num(o.lengthPenalty ?? 1, 'lengthPenalty');
    if (o.earlyStopping !== undefined && typeof o.earlyStopping !== 'boolean') throw new TypeError('Expected a boolean for earlyStopping');
    this.#early = o.earlyStopping ?? true;
    this.#eog = o.eogIds ?? new Set<number>();
    if (prompt.length === 0) throw new RangeError('Expected a non-empty prompt (at least one token)');
    this.#model = model;
    this.#prompt = prompt;
    this.#firstSeq = firstSeq;
    this.#newSeq = newSeq;
    this.#ownsFirst = ownsFirst;
    this.restart();
  }

  /** The best hypotheses (best first) once the search is over, else null. */
  get result(): BeamHypothesis[] | null {
    return this.#result;
  }

  /** Back to the start (after the caller freed every sequence: preemption). */
  restart(): void {
    this.#beams = [{ seq: this.#firstSeq, tokens: [], logprob: 0 }];
    this.#finished = [];
    this.#step = 0;
    this.#result = null;
    this.#owned.clear();
  }

  /** Sequences and the tokens each should hold: the prompt, then its beam's tokens. */
  work(): SeqWork[] {
    if (this.#result) return [];
    return this.#beams.map((b) => ({ seq: b.seq, tokens: [...this.#prompt, ...b.tokens], promptLength: this.#prompt.length }));
  }

  #norm(logprob: number, len: number): number {
    return logprob / Math.pow(Math.max(1, len), this.#lp);
  }

  /** Adds a hypothesis to the finished list, which keeps the best `beams` (HF BeamHypotheses.add). */
  #addFinished(h: BeamHypothesis): void {
    const f = this.#finished;
    if (f.length >= this.#B && h.score <= f[f.length - 1]!.score) return;
    let i = f.length;
    while (i > 0 && f[i - 1]!.score < h.score) i--;
    f.splice(i, 0, h);
    if (f.length > this.#B) f.pop();
  }

  /** One step: the logits of every beam's last token. */
  advance(logits: Map<number, Float32Array>, cache: PagedKvCache): void {
    if (this.#result) return;
    const be = this.#model.backend, V = this.#model.config.vocabSize, B = this.#B;
    const cands: { beam: Beam; token: number; logprob: number }[] = [];
    const k = Math.min(2 * B, V);
    for (const b of this.#beams) {
      const l = logits.get(b.seq);
      if (!l) throw new RangeError(`Expected logits for beam sequence ${b.seq}`);
      checkFiniteLogits(l, this.#prompt.length + b.tokens.length - 1);
      const top = be.topK(be.logSoftmax(new Tensor('f32', [1, V], l)), k);
      for (let j = 0; j < k; j++) cands.push({ beam: b, token: top.indices.data[j]!, logprob: b.logprob + top.values.data[j]! });
    }
    cands.sort((a, c) => c.logprob - a.logprob);
    const next: { beam: Beam; token: number; logprob: number }[] = [];
    for (let r = 0; r < cands.length && next.length < B; r++) {
      const c = cands[r]!;
      if (this.#eog.has(c.token)) {
        if (r < B) this.#addFinished({ tokens: c.beam.tokens, logprob: c.logprob, score: this.#norm(c.logprob, c.beam.tokens.length + 1), finished: true });
      } else next.push(c);
    }
    const cur = ++this.#step;
    // Done (HF BeamHypotheses.is_done): enough finished and, without early stopping, no candidate
    // of this step (the best, cands[0]) normalised at the current length beats the worst finished.
    const f = this.#finished;
    if (f.length >= B && (this.#early || f[f.length - 1]!.score >= this.#norm(cands[0]!.logprob, cur))) {
      this.#result = [...f];
      return;
    }
    if (next.length === 0) return this.#conclude(this.#beams);
    // Fork the cache for every selected continuation; the first taker of a beam reuses its sequence.
    const used = new Set<number>();
    const plan = next.map((c) => {
      let seq = c.beam.seq;
      if (used.has(seq)) {
        seq = this.#newSeq();
        cache.fork(c.beam.seq, seq);
        this.#owned.add(seq);
      }
      used.add(c.beam.seq);
      return { c, seq };
    });
    for (const b of this.#beams)
      if (!used.has(b.seq) && b.seq !== this.#firstSeq) {
        cache.free(b.seq);
        this.#owned.delete(b.seq);
      }
    this.#beams = plan.map(({ c, seq }) => ({ seq, tokens: [...c.beam.tokens, c.token], logprob: c.logprob }));
    if (cur >= this.#maxTokens) this.#conclude(this.#beams);
  }

  /** The search ends without being done (max tokens): the running beams compete with the finished ones. */
  #conclude(running: Beam[]): void {
    for (const b of running) this.#addFinished({ tokens: b.tokens, logprob: b.logprob, score: this.#norm(b.logprob, b.tokens.length), finished: false });
    this.#result = [...this.#finished];
  }

  /** Frees the sequences the search made (and the first one when it owns it). */
  release(cache: PagedKvCache): void {
    for (const s of this.#owned) cache.free(s);
    this.#owned.clear();
    if (this.#ownsFirst) cache.free(this.#firstSeq);
  }
}

/**
 * Beam search to completion over `firstSeq` (empty or holding part of the prompt); one forward per
 * step for all beams. Forks get ids from newSeq (default: counting up from firstSeq + 1) and are
 * freed when it returns or throws; firstSeq stays the caller's.
 */
export function beamSearch(model: LlamaModel, cache: PagedKvCache, firstSeq: number, prompt: readonly number[], options: BeamSearchOptions, newSeq?: () => number): BeamHypothesis[] {
  let counter = firstSeq + 1;
  const search = new BeamSearch(model, prompt, options, firstSeq, newSeq ?? (() => counter++));
  try {
    for (;;) {
      const work = search.work();
      if (work.length === 0) return search.result!;
      const entries = work.map((w) => ({ seq: w.seq, tokens: w.tokens.slice(cache.length(w.seq)) }));
      const logits = runBatch(model, cache, entries);
      search.advance(new Map(entries.map((e, i) => [e.seq, logits[i]!])), cache);
    }
  } finally {
    search.release(cache);
  }
}

/** Beam search as a scheduler job: searches whole, then streams the best beam cut at the first stop string. */
export class BeamJob implements GenerationJob {
  readonly width: number;
  readonly #search: BeamSearch | null;
  readonly #tok: TextTokenizer;
  readonly #stop: string[];
  readonly #events: JobEvents;
  readonly #promptLength: number;
  readonly #maxTokens: number;
  readonly #wanted: number;
  #done = false;

  constructor(ctx: JobContext, tok: TextTokenizer, prompt: readonly number[], options: GenerateOptions, events: JobEvents) {
    const r = resolveGenerateOptions(options, tok);
    const ctxLen = ctx.model.config.contextLength;
    checkPrompt(prompt, ctxLen, ctx.model.config.vocabSize);
    this.#tok = tok;
    this.#stop = r.stop;
    this.#events = events;
    this.#promptLength = prompt.length;
    this.#wanted = r.maxTokens;
    // Beams stop at the context length like sampling does.
    this.#maxTokens = Math.min(r.maxTokens, ctxLen - prompt.length);
    this.width = check.int(options.beams!, 'beams', 1, 64);
    if (this.#maxTokens <= 0) {
      this.#search = null;
      this.#finish(r.maxTokens === 0 ? 'length' : 'context', 0);
      return;
    }
    this.#search = new BeamSearch(ctx.model, prompt, {
      beams: this.width, maxTokens: this.#maxTokens, lengthPenalty: options.lengthPenalty, earlyStopping: options.earlyStopping, eogIds: r.stopTokens,
    }, ctx.newSeq(), () => ctx.newSeq(), true);
  }

  get done(): boolean {
    return this.#done;
  }

  work(): SeqWork[] {
    return this.#done || !this.#search ? [] : this.#search.work();
  }

  advance(logits: Map<number, Float32Array>, ctx: JobContext): void {
    const s = this.#search;
    if (this.#done || !s) return;
    s.advance(logits, ctx.cache);
    const res = s.result;
    if (!res) return;
    const best = res[0]!;
    const dec = this.#tok.createStreamDecoder({ skipSpecial: true });
    let text = '';
    const emit = (d: Delta) => this.#events.onDelta(d);
    let n = 0;
    for (const t of best.tokens) {
      const piece = dec.push(t);
      n++;
      const stopAt = this.#stop.length ? firstStop(text + piece, this.#stop) : -1;
      if (stopAt >= 0) {
        emit({ text: (text + piece).slice(text.length, stopAt), token: t, logprob: null });
        return this.#finish('stop', n);
      }
      text += piece;
      emit({ text: piece, token: t, logprob: null });
    }
    const tail = dec.flush();
    if (tail) emit({ text: tail, token: null, logprob: null });
    this.#finish(best.finished ? 'stop' : this.#maxTokens < this.#wanted ? 'context' : 'length', n);
  }

  #finish(reason: FinishReason, completion: number): void {
    if (this.#done) return;
    this.#done = true;
    this.#events.onDone(reason, { promptTokens: this.#promptLength, completionTokens: completion });
  }

  abort(): void {
    this.#finish('abort', 0);
  }

  reset(ctx: JobContext): void {
    this.#search?.release(ctx.cache);
    this.#search?.restart();
  }

  fail(err: Error): void {
    if (this.#done) return;
    this.#done = true;
    this.#events.onError(err);
  }

  release(ctx: JobContext): void {
    this.#search?.release(ctx.cache);
  }
}
