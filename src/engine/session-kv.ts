/**
 * ChatSession KV in the worker. Each session pins one cache sequence: the K/V of its last turn
 * (rendered prompt plus reply, as far as it was computed). The next turn's job starts on a fork of
 * it (shared blocks, copy-on-write) cut to the longest prefix its own prompt shares with the pin,
 * so only the tokens after that prefix are prefilled. Re-rendering the history need not reproduce
 * the tokens the model generated (a reply re-tokenized, a template that rewrites earlier turns):
 * whatever differs is simply computed again. When the turn ends (finished or aborted) its
 * sequence becomes the new pin.
 */
import type { PagedKvCache } from '../runtime/kv/cache.js';

export class SessionKv {
  readonly #pins = new Map<number, number | null>(); // session -> pinned cache sequence
  readonly #cache: PagedKvCache;
  readonly #newSeq: () => number;

  constructor(cache: PagedKvCache, newSeq: () => number) {
    this.#cache = cache;
    this.#newSeq = newSeq;
  }

  /**
   * Starts the turn's (still empty) sequence `seq` on the pinned prefix it shares with `prompt`:
   * at most prompt.length - 1 tokens, since the last prompt token must run to give the first
   * logits. Returns how many tokens it reused.
   */
  start(session: number, seq: number, prompt: readonly number[]): number {
    if (!this.#pins.has(session)) this.#pins.set(session, null);
    const pin = this.#pins.get(session)!;
    if (pin === null) return 0;
    const have = this.#cache.blocks.tokens(pin);
    const limit = Math.min(have.length, prompt.length - 1);
    let n = 0;
    while (n < limit && have[n] === prompt[n]) n++;
    if (n === 0) return 0;
    this.#cache.fork(pin, seq);
    this.#cache.truncate(seq, n);
    return n;
  }

  /** The turn's sequence ended: a copy of it (shared blocks) becomes the session's pin. */
  keep(session: number, seq: number): void {
    if (!this.#pins.has(session) || !this.#cache.has(seq)) return; // closed meanwhile, or preempted and not restarted
    const old = this.#pins.get(session);
    const pin = this.#newSeq();
    this.#cache.fork(seq, pin);
    if (old !== null && old !== undefined) this.#cache.free(old);
    this.#pins.set(session, pin);
  }

  /** Frees the session's pinned sequence. */
  close(session: number): void {
    const pin = this.#pins.get(session);
    if (pin !== null && pin !== undefined) this.#cache.free(pin);
    this.#pins.delete(session);
  }
}
