/**
 * KV storage: per layer a K and a V block pool (numBlocks, blockSize, kvHeads, headDim) f32. This
 * is all the model sees (KvStorage); which sequence owns which block is block-manager.ts's job.
 */
import type { KvStorage } from '../../model/batch.js';
import { Tensor } from '../../tensor/tensor.js';

export interface KvShape {
  layers: number;
  kvHeads: number;
  headDim: number;
  /** Tokens per block. Default 16. */
  blockSize?: number;
}

/** Bytes of K and V for one block over all layers. */
export function kvBlockBytes(s: KvShape): number {
  return 2 * s.layers * (s.blockSize ?? 16) * s.kvHeads * s.headDim * 4;
}

export class KvStore implements KvStorage {
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly k: Tensor<'f32'>[];
  readonly v: Tensor<'f32'>[];
  readonly #span: number;

  constructor(s: KvShape, numBlocks: number) {
    this.blockSize = s.blockSize ?? 16;
    if (!Number.isInteger(this.blockSize) || this.blockSize < 1) throw new RangeError(`Expected a positive integer block size but received ${s.blockSize}`);
    if (!Number.isInteger(numBlocks) || numBlocks < 1)
      throw new RangeError(`Expected room for at least one KV block (${kvBlockBytes(s)} bytes) but the budget allows ${numBlocks}`);
    this.numBlocks = numBlocks;
    const shape = [numBlocks, this.blockSize, s.kvHeads, s.headDim];
    this.k = Array.from({ length: s.layers }, () => new Tensor('f32', shape));
    this.v = Array.from({ length: s.layers }, () => new Tensor('f32', shape));
    this.#span = this.blockSize * s.kvHeads * s.headDim;
  }

  /** Copies block src into block dst in every layer's K and V (copy-on-write). */
  copyBlock(src: number, dst: number): void {
    const n = this.#span;
    for (const t of this.k) t.data.copyWithin(dst * n, src * n, (src + 1) * n);
    for (const t of this.v) t.data.copyWithin(dst * n, src * n, (src + 1) * n);
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
  }
}
