// llama.cpp (node-llama-cpp, CPU build) as the reference the comparison tests share.
import { afterAll, beforeAll } from 'vitest';

type Llama = Awaited<ReturnType<typeof import('node-llama-cpp').getLlama>>;

/**
 * Starts llama.cpp before the file's tests and disposes it after; returns a function giving
 * llama.cpp's log-probabilities at every position of `tokens` (F32 KV cache, no flash attention).
 */
export function useLlamaCpp(): (file: string, tokens: number[], vocab: number, contextSize?: number) => Promise<Float64Array[]> {
  let llama: Llama | null = null;
  beforeAll(async () => {
    const { getLlama } = await import('node-llama-cpp');
    llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  }, 120_000);
  afterAll(async () => {
    await llama?.dispose();
  });
  return async (file, tokens, vocab, contextSize = 256) => {
    const model = await llama!.loadModel({ modelPath: file });
    try {
      const ctx = await model.createContext({
        contextSize, flashAttention: false, threads: { ideal: 2, min: 1 }, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32',
      } as never);
      try {
        const res = await ctx.getSequence().controlledEvaluate(tokens.map((t) => [t, { generateNext: { probabilities: true } }]) as never);
        return res.map((r) => {
          const row = new Float64Array(vocab).fill(Number.NaN);
          for (const [k, p] of r!.next!.probabilities!) row[k] = Math.log(p);
          return row;
        });
      } finally {
        await ctx.dispose();
      }
    } finally {
      await model.dispose();
    }
  };
}
