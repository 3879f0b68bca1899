/**
 * The cost of one batched decode step: B sequences (64-token histories) each decoding one token
 * in one forward, through the runner alone (no scheduler, no prompts), on the TinyLlama-shaped
 * random model of bench:serve, against a 512-token prefill in the same run. Shows where batched
 * decoding meets the compute ceiling.
 *
 *   npx tsx bench/decode-step.ts [-- --type Q4_0|F16] [-- --batches 1,4,8,9,16,32,64]
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getBackend } from '../src/backend/index.js';
import { loadModelFile } from '../src/model/load.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { runBatch } from '../src/runtime/runner.js';
import { TINYLLAMA, writeRandomModel } from './random-model.js';

const args = process.argv.slice(2);
const arg = (n: string) => {
  const i = args.indexOf(n);
  return i >= 0 ? args[i + 1] : undefined;
};
const type = (arg('--type') ?? 'Q4_0') as 'Q4_0' | 'F16';
const batches = (arg('--batches') ?? '1,4,8,9,16,32,64').split(',').map(Number);
const file = path.join(os.tmpdir(), 'tessera-e2e', `tinyllama-random-22L-${type}.gguf`);
if (!existsSync(file)) writeRandomModel(file, TINYLLAMA, type);
const { model: m } = loadModelFile(file, getBackend('cpu'));
const c = m.config;
const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: 2000, prefixCaching: false });
const B = Math.max(...batches);
for (let s = 0; s < B; s++) {
  cache.add(s);
  runBatch(m, cache, [{ seq: s, tokens: Array.from({ length: 64 }, (_, j) => 300 + s + j) }]);
}
console.log(`decode step on the TinyLlama-shaped ${type} model — ${new Date().toISOString().slice(0, 10)}`);
for (const b of batches) {
  const R = 5, t0 = performance.now();
  for (let r = 0; r < R; r++) runBatch(m, cache, Array.from({ length: b }, (_, s) => ({ seq: s, tokens: [400 + r] })));
  const ms = (performance.now() - t0) / R;
  console.log(`B=${b}: ${ms.toFixed(1)} ms/step, ${((b / ms) * 1000).toFixed(1)} tok/s`);
}
const t0 = performance.now();
cache.add(B);
runBatch(m, cache, [{ seq: B, tokens: Array.from({ length: 512 }, (_, j) => 300 + j) }]);
console.log(`prefill 512 tokens: ${(512 / ((performance.now() - t0) / 1e3)).toFixed(1)} tok/s`);
