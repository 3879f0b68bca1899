/**
 * Wiring speculative decoding to the runtime: a draft model's sequence in its own paged cache
 * (fed through the runner), the vocabulary check, and the proposer factory the Engine uses.
 */
import type { LlamaModel } from '../model/llama.js';
import { Sampler, type SamplingOptions } from '../sampling/sampler.js';
import { DraftModelProposer, NgramProposer, type DraftSequence, type Proposer } from '../speculative/proposer.js';
import { checkFiniteLogits } from './errors.js';
import type { PagedKvCache } from './kv/cache.js';
import { runBatch } from './runner.js';

/** A sequence of the draft model in its own cache. */
export function draftSequence(model: LlamaModel, cache: PagedKvCache, seq: number): DraftSequence {
  cache.add(seq);
  return {
    get tokens() {
      return cache.blocks.tokens(seq);
    },
    truncate: (n) => cache.truncate(seq, n),
    feed: (tokens) => {
      const l = runBatch(model, cache, [{ seq, tokens }])[0]!.slice();
      // A draft with non-finite logits cannot propose; the job then decodes without drafts.
      checkFiniteLogits(l, cache.length(seq) - 1, 'the draft model');
      return l;
    },
    release: () => cache.free(seq),
  };
}

/** Throws unless the draft tokenizes exactly like the target (same size, same pieces). */
export function checkDraftVocabulary(target: { vocabSize: number; piece(id: number): string }, draft: { vocabSize: number; piece(id: number): string }, draftName = 'the draft model'): void {
  if (target.vocabSize !== draft.vocabSize)
    throw new RangeError(`Expected ${draftName} to share the target's vocabulary but it has ${draft.vocabSize} tokens and the target ${target.vocabSize}`);
  for (let i = 0; i < target.vocabSize; i++)
    if (target.piece(i) !== draft.piece(i))
      throw new RangeError(`Expected ${draftName} to share the target's vocabulary but token ${i} is ${JSON.stringify(draft.piece(i))} there and ${JSON.stringify(target.piece(i))} in the target`);
}

export interface SpeculativeSetup {
  /** Draft model and its cache (draft-model proposer). */
  draft?: { model: LlamaModel; cache: PagedKvCache };
  /** Largest n-gram to look up (prompt-lookup proposer); used when there is no draft model. */
  lookupNgram?: number;
  /** Most draft tokens per step. */
  draftMax: number;
}

/** A proposer for one request: the draft model under the request's sampling options, or n-gram lookup. */
export function makeProposer(s: SpeculativeSetup, options: SamplingOptions, newSeq: () => number): Proposer {
  if (s.draft) {
    const seed = options.seed === undefined ? undefined : (options.seed ^ 0x5bd1e995) >>> 0; // its own RNG stream
    return new DraftModelProposer(draftSequence(s.draft.model, s.draft.cache, newSeq()), new Sampler({ ...options, seed }));
  }
  return new NgramProposer(s.lookupNgram ?? 3, 1);
}
