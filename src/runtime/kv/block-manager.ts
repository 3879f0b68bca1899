/**
 * The block manager: which sequence owns which KV block (vLLM's PagedAttention, Kwon et al. 2023).
 * A sequence is a list of block ids; blocks are reference counted, so fork() shares them and a
 * shared, partly filled last block is copied before it is written (copy-on-write).
 *
 * Prefix caching (vLLM's automatic prefix caching): a full block whose tokens were all appended as
 * cacheable is registered under a key made of its tokens and the identity of the block before it
 * (so a key stands for the whole prefix, compared exactly, never a lossy hash). matchPrefix() lets
 * a new sequence start on registered blocks. A registered block nobody references stays cached and
 * is evicted least recently used first, only when a free block is needed.
 */
export class KvCacheFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KvCacheFullError';
  }
}

interface Sequence {
  blocks: number[];
  tokens: number[];
  /** Per full block: the content id of the prefix it ends (0: not registered). */
  uids: number[];
  /** All tokens so far were appended as cacheable. */
  cacheable: boolean;
}

export interface BlockStats {
  /** Blocks referenced by a sequence. */
  used: number;
  /** Blocks holding nothing. */
  free: number;
  /** Unreferenced blocks kept for prefix reuse (evictable). */
  cached: number;
  /** Prompt tokens looked up in the prefix cache, and how many were found. */
  queriedTokens: number;
  hitTokens: number;
}

export class BlockManager {
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly prefixCaching: boolean;
  readonly #copy: (src: number, dst: number) => void;
  readonly #free: number[];
  readonly #ref: Int32Array;
  readonly #key: (string | null)[];
  readonly #uid: Float64Array;
  readonly #registry = new Map<string, number>();
  readonly #lru = new Set<number>(); // unreferenced registered blocks, oldest first
  readonly #seqs = new Map<number, Sequence>();
  #nextUid = 1;
  #queried = 0;
  #hits = 0;

  constructor(numBlocks: number, blockSize: number, options: { prefixCaching?: boolean; copyBlock: (src: number, dst: number) => void }) {
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.prefixCaching = options.prefixCaching ?? true;
    this.#copy = options.copyBlock;
    this.#free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
    this.#ref = new Int32Array(numBlocks);
    this.#key = new Array<string | null>(numBlocks).fill(null);
    this.#uid = new Float64Array(numBlocks);
  }

  /** Blocks a new allocation can take now: free ones plus evictable cached ones. */
  get available(): number {
    return this.#free.length + this.#lru.size;
  }

  stats(): BlockStats {
    return {
      used: this.numBlocks - this.#free.length - this.#lru.size,
      free: this.#free.length,
      cached: this.#lru.size,
      queriedTokens: this.#queried,
      hitTokens: this.#hits,
    };
  }

  has(seq: number): boolean {
    return this.#seqs.has(seq);
  }

  length(seq: number): number {
    return this.#get(seq).tokens.length;
  }

  /** The sequence's block ids in order (do not modify). */
  blockTable(seq: number): readonly number[] {
    return this.#get(seq).blocks;
  }

  /** The sequence's tokens (do not modify). */
  tokens(seq: number): readonly number[] {
    return this.#get(seq).tokens;
  }

  get sequences(): number {
    return this.#seqs.size;
  }

  #get(seq: number): Sequence {
    const s = this.#seqs.get(seq);
    if (!s) throw new RangeError(`Unknown sequence ${seq} in the KV cache`);
    return s;
  }

  /** Starts an empty sequence. */
  add(seq: number): void {
    if (!Number.isInteger(seq)) throw new TypeError(`Expected an integer sequence id but received ${seq}`);
    if (this.#seqs.has(seq)) throw new RangeError(`Sequence ${seq} already exists in the KV cache`);
    this.#seqs.set(seq, { blocks: [], tokens: [], uids: [], cacheable: true });
  }

  /** Blocks that appending n tokens to seq would take (new blocks plus a copy-on-write). */
  blocksNeeded(seq: number, n: number): number {
    const s = this.#get(seq);
    const len = s.tokens.length;
    const partial = len % this.blockSize !== 0 ? s.blocks.length - 1 : -1;
    const cow = partial >= 0 && n > 0 && this.#ref[s.blocks[partial]!]! > 1 ? 1 : 0;
    return Math.ceil((len + n) / this.blockSize) - s.blocks.length + cow;
  }

  /**
   * Appends tokens to seq and returns their slots (block * blockSize + offset). `cacheable` marks
   * them as prompt tokens whose full blocks may be registered for prefix reuse once commit() says
   * their K/V is written. All or nothing: on KvCacheFullError the sequence is unchanged.
   */
  append(seq: number, tokens: ArrayLike<number>, cacheable = false): Int32Array {
    const s = this.#get(seq);
    const n = tokens.length;
    const need = this.blocksNeeded(seq, n);
    if (need > this.available)
      throw new KvCacheFullError(
        `KV cache full: sequence ${seq} needs ${need} more blocks of ${this.blockSize} tokens but ${this.available} are free (${this.numBlocks} in total)`,
      );
    const bs = this.blockSize;
    const len = s.tokens.length;
    if (len % bs !== 0 && n > 0) {
      const i = s.blocks.length - 1, b = s.blocks[i]!;
      if (this.#ref[b]! > 1) {
        const nb = this.#alloc();
        this.#copy(b, nb);
        this.#release(b);
        s.blocks[i] = nb;
      }
    }
    while (s.blocks.length * bs < len + n) s.blocks.push(this.#alloc());
    const slots = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const p = len + i;
      slots[i] = s.blocks[Math.floor(p / bs)]! * bs + (p % bs);
      s.tokens.push(tokens[i]!);
    }
    s.cacheable &&= cacheable;
    return slots;
  }

  /**
   * Declares seq's K/V written (the forward over its appended tokens succeeded): its newly full
   * cacheable blocks become available for prefix reuse. Until then nobody can match them.
   */
  commit(seq: number): void {
    const s = this.#get(seq);
    const full = Math.floor(s.tokens.length / this.blockSize);
    for (let i = s.uids.length; i < full; i++) s.uids.push(this.#register(s, i));
  }

  /** Registers full block i of s (if it may be cached) and returns its content id (0: none). */
  #register(s: Sequence, i: number): number {
    if (!this.prefixCaching || !s.cacheable) return 0;
    const parent = i > 0 ? s.uids[i - 1]! : 0;
    if (i > 0 && parent === 0) return 0;
    const bs = this.blockSize;
    const key = `${parent}:${s.tokens.slice(i * bs, (i + 1) * bs).join(',')}`;
    const known = this.#registry.get(key);
    if (known !== undefined) return this.#uid[known]!; // same content already cached in another block
    const b = s.blocks[i]!;
    if (this.#key[b] !== null) return this.#uid[b]!; // a shared block registered by its first owner
    this.#key[b] = key;
    this.#uid[b] = this.#nextUid++;
    this.#registry.set(key, b);
    return this.#uid[b]!;
  }

  /**
   * Starts the empty sequence seq on the longest run of cached full blocks matching tokens, using
   * at most maxTokens of them. Returns how many tokens it reused (a multiple of blockSize).
   */
  matchPrefix(seq: number, tokens: readonly number[], maxTokens = tokens.length): number {
    const s = this.#get(seq);
    if (s.tokens.length !== 0) throw new RangeError(`Expected sequence ${seq} to be empty before a prefix match`);
    const bs = this.blockSize;
    const limit = Math.min(maxTokens, tokens.length);
    this.#queried += tokens.length;
    if (!this.prefixCaching) return 0;
    let parent = 0;
    for (let i = 0; (i + 1) * bs <= limit; i++) {
      const b = this.#registry.get(`${parent}:${tokens.slice(i * bs, (i + 1) * bs).join(',')}`);
      if (b === undefined) break;
      if (this.#ref[b]!++ === 0) this.#lru.delete(b);
      s.blocks.push(b);
      parent = this.#uid[b]!;
      s.uids.push(parent);
      for (let j = i * bs; j < (i + 1) * bs; j++) s.tokens.push(tokens[j]!);
    }
    this.#hits += s.tokens.length;
    return s.tokens.length;
  }

  /** Drops tokens beyond newLength (e.g. rejected speculative tokens), freeing whole blocks. */
  truncate(seq: number, newLength: number): void {
    const s = this.#get(seq);
    if (!Number.isInteger(newLength) || newLength < 0 || newLength > s.tokens.length)
      throw new RangeError(`Expected a length in [0, ${s.tokens.length}] for sequence ${seq} but received ${newLength}`);
    const bs = this.blockSize;
    while (s.blocks.length > Math.ceil(newLength / bs)) this.#release(s.blocks.pop()!);
    s.tokens.length = newLength;
    s.uids.length = Math.floor(newLength / bs);
    if (newLength % bs !== 0) {
      // The last block will be written again: it may no longer stand for its old content.
      const b = s.blocks[s.blocks.length - 1]!;
      if (this.#key[b] !== null && this.#ref[b] === 1) this.#unregister(b);
    }
  }

  /** A new sequence dst sharing all of src's tokens (no copy until one of them writes). */
  fork(src: number, dst: number): void {
    const s = this.#get(src);
    if (this.#seqs.has(dst)) throw new RangeError(`Sequence ${dst} already exists in the KV cache`);
    for (const b of s.blocks) this.#ref[b]!++;
    this.#seqs.set(dst, { blocks: [...s.blocks], tokens: [...s.tokens], uids: [...s.uids], cacheable: s.cacheable });
  }

  /** Frees seq's blocks (registered ones stay cached until evicted). Unknown sequences are ignored. */
  free(seq: number): void {
    const s = this.#seqs.get(seq);
    if (!s) return;
    for (const b of s.blocks) this.#release(b);
    this.#seqs.delete(seq);
  }

  /** Forgets every cached block (they become free). */
  clearPrefixCache(): void {
    for (const b of [...this.#lru]) {
      this.#unregister(b);
    }
  }

  #alloc(): number {
    let b = this.#free.pop();
    if (b === undefined) {
      b = this.#lru.values().next().value as number; // least recently used cached block
      this.#unregister(b);
      this.#free.pop();
    }
    this.#ref[b] = 1;
    return b;
  }

  #release(b: number): void {
    if (--this.#ref[b]! > 0) return;
    if (this.#key[b] !== null) this.#lru.add(b);
    else this.#free.push(b);
  }

  /** Drops b's registration; an unreferenced b becomes free. */
  #unregister(b: number): void {
    this.#registry.delete(this.#key[b]!);
    this.#key[b] = null;
    this.#uid[b] = 0;
    if (this.#lru.delete(b)) this.#free.push(b);
  }
}
