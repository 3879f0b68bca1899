/**
 * Paged KV cache (vLLM's PagedAttention, Kwon et al. 2023): per layer a block pool
 * (numBlocks, blockSize, kvHeads, headDim) for K and one for V; a sequence is a list of block ids.
 * Sequences grow block by block; running out of blocks is a KvCacheFullError, never corruption.
 * fork() shares blocks (reference counts); a shared, partly filled last block is copied before
 * it is written (copy-on-write), so beams and shared prefixes never copy full blocks.
 */
import { Tensor } from '../tensor/tensor.js';

export class KvCacheFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KvCacheFullError';
  }
}

export interface KvCacheOptions {
  layers: number;
  kvHeads: number;
  headDim: number;
  blockSize?: number;
  /** Number of blocks, or derive it from maxBytes. */
  numBlocks?: number;
  /** Memory budget for K and V of all layers (bytes). */
  maxBytes?: number;
}

interface Sequence {
  blocks: number[];
  length: number;
}

export class PagedKvCache {
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Per layer: K and V pools, each (numBlocks, blockSize, kvHeads, headDim) f32. */
  readonly k: Tensor<'f32'>[];
  readonly v: Tensor<'f32'>[];
  readonly #free: number[];
  readonly #ref: Int32Array;
  readonly #seqs = new Map<number, Sequence>();

  constructor(o: KvCacheOptions) {
    this.blockSize = o.blockSize ?? 16;
    this.layers = o.layers;
    this.kvHeads = o.kvHeads;
    this.headDim = o.headDim;
    const blockBytes = 2 * o.layers * this.blockSize * o.kvHeads * o.headDim * 4;
    const n = o.numBlocks ?? Math.floor((o.maxBytes ?? 256 * 2 ** 20) / blockBytes);
    if (!Number.isInteger(n) || n < 1)
      throw new RangeError(`Expected room for at least one KV block (${blockBytes} bytes) but the budget allows ${n}`);
    this.numBlocks = n;
    const shape = [n, this.blockSize, o.kvHeads, o.headDim];
    this.k = Array.from({ length: o.layers }, () => new Tensor('f32', shape));
    this.v = Array.from({ length: o.layers }, () => new Tensor('f32', shape));
    this.#free = Array.from({ length: n }, (_, i) => n - 1 - i);
    this.#ref = new Int32Array(n);
  }

  get freeBlocks(): number {
    return this.#free.length;
  }

  /** Tokens this cache can still take for a new sequence. */
  get freeTokens(): number {
    return this.#free.length * this.blockSize;
  }

  length(seq: number): number {
    return this.#get(seq).length;
  }

  has(seq: number): boolean {
    return this.#seqs.has(seq);
  }

  #get(seq: number): Sequence {
    const s = this.#seqs.get(seq);
    if (!s) throw new RangeError(`Unknown sequence ${seq} in the KV cache`);
    return s;
  }

  /** Starts an empty sequence. */
  add(seq: number): void {
    if (this.#seqs.has(seq)) throw new RangeError(`Sequence ${seq} already exists in the KV cache`);
    this.#seqs.set(seq, { blocks: [], length: 0 });
  }

  /**
   * Reserves room for n more tokens of seq and returns their slots (block * blockSize + offset).
   * All or nothing: on KvCacheFullError the sequence is unchanged.
   */
  append(seq: number, n: number): Int32Array {
    const s = this.#get(seq);
    const partial = s.length % this.blockSize !== 0 ? s.blocks.length - 1 : -1;
    const cow = partial >= 0 && n > 0 && this.#ref[s.blocks[partial]!]! > 1 ? 1 : 0;
    const need = Math.ceil((s.length + n) / this.blockSize) - s.blocks.length;
    if (need + cow > this.#free.length)
      throw new KvCacheFullError(
        `KV cache full: sequence ${seq} needs ${need + cow} more blocks of ${this.blockSize} tokens but ${this.#free.length} are free (${this.numBlocks} in total)`,
      );
    if (cow) s.blocks[partial] = this.#copyBlock(s.blocks[partial]!);
    for (let i = 0; i < need; i++) {
      const b = this.#free.pop()!;
      this.#ref[b] = 1;
      s.blocks.push(b);
    }
    const slots = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const p = s.length + i;
      slots[i] = s.blocks[Math.floor(p / this.blockSize)]! * this.blockSize + (p % this.blockSize);
    }
    s.length += n;
    return slots;
  }

  /** Drops tokens beyond newLength (e.g. rejected speculative tokens), freeing whole blocks. */
  truncate(seq: number, newLength: number): void {
    const s = this.#get(seq);
    if (!Number.isInteger(newLength) || newLength < 0 || newLength > s.length)
      throw new RangeError(`Expected a length in [0, ${s.length}] for sequence ${seq} but received ${newLength}`);
    const keep = Math.ceil(newLength / this.blockSize);
    while (s.blocks.length > keep) this.#release(s.blocks.pop()!);
    s.length = newLength;
  }

  /** A new sequence dst sharing all of src's tokens (no copy until one of them writes). */
  fork(src: number, dst: number): void {
    const s = this.#get(src);
    if (this.#seqs.has(dst)) throw new RangeError(`Sequence ${dst} already exists in the KV cache`);
    for (const b of s.blocks) this.#ref[b]!++;
    this.#seqs.set(dst, { blocks: [...s.blocks], length: s.length });
  }

  free(seq: number): void {
    const s = this.#seqs.get(seq);
    if (!s) return;
    for (const b of s.blocks) this.#release(b);
    this.#seqs.delete(seq);
  }

  #release(b: number): void {
    if (--this.#ref[b]! === 0) this.#free.push(b);
  }

  /** Copies block b (every layer's K and V) into a free block; drops one reference to b. */
  #copyBlock(b: number): number {
    const nb = this.#free.pop()!;
    this.#ref[nb] = 1;
    const span = this.blockSize * this.kvHeads * this.headDim;
    for (const t of [...this.k, ...this.v]) t.data.copyWithin(nb * span, b * span, (b + 1) * span);
    this.#release(b);
    return nb;
  }

  /** Block tables (B, maxBlocks) and lengths for a batch of sequences. */
  batch(seqs: readonly number[], queryCounts: readonly number[]): { blockTables: Tensor<'i32'>; contextLens: Tensor<'i32'>; queryStart: Tensor<'i32'> } {
    const ss = seqs.map((q) => this.#get(q));
    const maxBlocks = Math.max(1, ...ss.map((s) => s.blocks.length));
    const tables = new Int32Array(ss.length * maxBlocks);
    ss.forEach((s, i) => tables.set(s.blocks, i * maxBlocks));
    const starts = new Int32Array(ss.length + 1);
    queryCounts.forEach((n, i) => (starts[i + 1] = starts[i]! + n));
    return {
      blockTables: new Tensor('i32', [ss.length, maxBlocks], tables),
      contextLens: new Tensor('i32', [ss.length], Int32Array.from(ss, (s) => s.length)),
      queryStart: new Tensor('i32', [ss.length + 1], starts),
    };
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
    this.#seqs.clear();
  }
}
