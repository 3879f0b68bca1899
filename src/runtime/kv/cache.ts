/**
 * PagedKvCache: the KV storage the model writes (storage.ts) together with the block manager that
 * decides which sequence owns which block (block-manager.ts). The runner reserves slots here and
 * hands the model only the storage.
 */
import type { KvStorage } from '../../model/batch.js';
import type { Tensor } from '../../tensor/tensor.js';
import { BlockManager, type BlockStats } from './block-manager.js';
import { KvStore, kvBlockBytes, type KvShape } from './storage.js';

export { KvCacheFullError, type BlockStats } from './block-manager.js';

export interface KvCacheOptions extends KvShape {
  /** Number of blocks, or derive it from maxBytes. */
  numBlocks?: number;
  /** Memory budget for K and V of all layers (bytes). Default 256 MiB. */
  maxBytes?: number;
  /** Keep full prompt blocks for reuse by later sequences with the same prefix. Default true. */
  prefixCaching?: boolean;
}

export class PagedKvCache implements KvStorage {
  readonly store: KvStore;
  readonly blocks: BlockManager;

  constructor(o: KvCacheOptions) {
    const n = o.numBlocks ?? Math.floor((o.maxBytes ?? 256 * 2 ** 20) / kvBlockBytes(o));
    this.store = new KvStore(o, n);
    this.blocks = new BlockManager(n, this.store.blockSize, { prefixCaching: o.prefixCaching, copyBlock: (s, d) => this.store.copyBlock(s, d) });
  }

  get blockSize(): number {
    return this.store.blockSize;
  }

  get numBlocks(): number {
    return this.store.numBlocks;
  }

  get k(): readonly Tensor<'f32'>[] {
    return this.store.k;
  }

  get v(): readonly Tensor<'f32'>[] {
    return this.store.v;
  }

  /** Blocks a new allocation can take (free plus evictable cached). */
  get freeBlocks(): number {
    return this.blocks.available;
  }

  /** Tokens this cache can still take for a new sequence. */
  get freeTokens(): number {
    return this.blocks.available * this.blockSize;
  }

  stats(): BlockStats {
    return this.blocks.stats();
  }

  has(seq: number): boolean {
    return this.blocks.has(seq);
  }

  length(seq: number): number {
    return this.blocks.length(seq);
  }

  add(seq: number): void {
    this.blocks.add(seq);
  }

  /** Reserves room for tokens (or n unnamed tokens, never cached) of seq and returns their slots. */
  append(seq: number, tokens: ArrayLike<number> | number, cacheable = false): Int32Array {
    return this.blocks.append(seq, typeof tokens === 'number' ? new Int32Array(tokens).fill(-1) : tokens, typeof tokens !== 'number' && cacheable);
  }

  truncate(seq: number, newLength: number): void {
    this.blocks.truncate(seq, newLength);
  }

  fork(src: number, dst: number): void {
    this.blocks.fork(src, dst);
  }

  free(seq: number): void {
    this.blocks.free(seq);
  }

  dispose(): void {
    this.store.dispose();
  }
}
