/**
 * End-to-end: a TinyLlama-1.1B-shaped random-weight GGUF (dim 2048, 22 layers, 32 heads, 4 KV
 * heads, ffn 5632, vocab 32000) written by tessera's GGUF writer in F16, Q8_0 and Q4_0, run by
 * tessera and by llama.cpp (node-llama-cpp 3.21.1 from the peer package, `npm run peer:install`;
 * 2 threads; run this with UV_THREADPOOL_SIZE=1, which `npm run bench:e2e` sets) in the same process: prefill tok/s (512 tokens) and decode tok/s
 * (128 tokens), median of 3, side by side, plus the decode roofline (measured read bandwidth /
 * bytes of weights read per token).
 *
 * GPTQ4 (in --types) runs tessera on a GPTQ int4 g128 (asymmetric) version of the Q4_0 model:
 * each projection of the Q4_0 file, dequantised, rounded to nearest on GPTQ's grid (the kernel's
 * speed does not depend on how the integers were chosen; calibration is `tessera quantize`'s job),
 * against llama.cpp on the Q4_0 file itself.
 *
 *   npm run bench:e2e [-- --types F16,Q8_0,Q4_0] [-- --dir DIR] [-- --runs 3] [-- --json FILE]
 *                     [-- --small]   (a 4-layer model for a quick check)
 *                     [-- --mixtral] (a Mixtral-shaped MoE instead: dim 1024, 8 layers, 8 experts,
 *                                     top-2, ffn 2816; also reports the expert bytes a decode step reads)
 */
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getBackend, runtimeInfo } from '../src/index.js';
import { loadNative } from '../src/backend/cpu/native.js';
import { readGGUF } from '../src/formats/gguf.js';
import { TINYLLAMA, writeRandomModel } from './random-model.js';
import { getLlamaCpp, requireLlamaCppPeer } from './peer/node-llama-cpp.js';
import { llamaConfigFromGGUF, llamaWeightsFromGGUF } from '../src/model/load-gguf.js';
import { LlamaModel } from '../src/model/llama.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { quantizeRtn } from '../src/quant/gptq.js';
import { IntWeight } from '../src/tensor/int-weight.js';
import type { LinearRole, LlamaWeights } from '../src/model/llama.js';
import { forwardTokens } from '../src/runtime/runner.js';

/** Every dense projection as GPTQ int4 g128 (RTN on GPTQ's grid), on the integer kernels. */
function toGptq4(w: LlamaWeights): void {
  for (const L of w.layers)
    for (const role of ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as LinearRole[]) {
      const t = L[role];
      if (!t || t instanceof IntWeight) continue;
      const [N, K] = t.shape as [number, number];
      L[role] = IntWeight.fromGptq(quantizeRtn(t.toFloat32(), N, K, { bits: 4, groupSize: 128 }));
      t.dispose();
    }
}

const args = process.argv.slice(2);
const arg = (n: string) => {
  const i = args.indexOf(n);
  return i >= 0 ? args[i + 1] : undefined;
};
const types = (arg('--types') ?? (args.includes('--mixtral') ? 'F16,Q8_0' : 'F16,Q8_0,Q4_0,GPTQ4')).split(',') as ('F16' | 'Q8_0' | 'Q4_0' | 'GPTQ4')[];
const dir = arg('--dir') ?? path.join(os.tmpdir(), 'tessera-e2e');
const runs = Number(arg('--runs') ?? 3);
const jsonOut = arg('--json');
const small = args.includes('--small');
const PREFILL = Number(arg('--prefill') ?? 512), DECODE = Number(arg('--decode') ?? 128);

const mixtral = args.includes('--mixtral');
const SHAPE = mixtral
  ? { name: 'mixtral', dim: 1024, layers: small ? 2 : 8, heads: 8, kvHeads: 2, ffn: 2816, vocab: 32000, ctx: 2048, experts: 8, used: 2 }
  : { ...TINYLLAMA, layers: small ? 4 : 22 };

if (process.env.UV_THREADPOOL_SIZE !== '1') console.warn('note: run with UV_THREADPOOL_SIZE=1 for llama.cpp\'s best decode speed on 2 cores (npm run bench:e2e does)');

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const promptTokens = Array.from({ length: PREFILL }, (_, i) => 259 + ((i * 7919) % (SHAPE.vocab - 259)));

async function benchTessera(file: string, gptq = false) {
  const g = readGGUF(file);
  const c = llamaConfigFromGGUF(g);
  const weights = llamaWeightsFromGGUF(g, c, { repackQ4_0: !gptq }); // GPTQ4 converts the raw Q4_0 blocks itself
  if (gptq) {
    const t0 = performance.now();
    toGptq4(weights);
    console.log(`converted the projections to GPTQ int4 g128 in ${((performance.now() - t0) / 1e3).toFixed(0)} s`);
  }
  const model = new LlamaModel(c, weights, getBackend('cpu'));
  // Bytes of weights a dense decode step streams (everything but the embedding table), as loaded.
  const w = model.weights;
  const mats = [w.outNorm, w.output, ...w.layers.flatMap((L) => [L.attnNorm, L.wq, L.wk, L.wv, L.wo, L.ffnNorm, L.wGate, L.wUp, L.wDown,
    ...(L.moe ? [L.moe.router, ...L.moe.gate, ...L.moe.up, ...L.moe.down] : [])])];
  const weightBytes = mats.reduce((a, t) => a + (t ? t.byteLength : 0), 0);
  const pre: number[] = [], dec: number[] = [];
  let expertsTouched = 0;
  for (let r = 0; r < runs; r++) {
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil((PREFILL + DECODE) / 16) + 1 });
    cache.add(0);
    let t0 = performance.now();
    let logits = forwardTokens(model, cache, 0, Int32Array.from(promptTokens)).data;
    pre.push(PREFILL / ((performance.now() - t0) / 1e3));
    t0 = performance.now();
    for (let i = 0; i < DECODE; i++) {
      let best = 0;
      for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[best]!) best = j;
      logits = forwardTokens(model, cache, 0, Int32Array.of(best), { observer: c.experts ? { onRouting: (rt) => (expertsTouched += new Set(rt.experts).size) } : {} }).data;
    }
    dec.push(DECODE / ((performance.now() - t0) / 1e3));
    cache.dispose();
  }
  model.dispose();
  // MoE: the share of expert weights a decode step actually reads (distinct experts used / E, per layer).
  const expertShare = c.experts ? expertsTouched / (runs * DECODE * c.layers * c.experts) : null;
  return { prefill: median(pre), decode: median(dec), weightBytes, expertShare };
}

async function benchLlamaCpp(file: string) {
  const llama = await getLlamaCpp();
  const model = await llama.loadModel({ modelPath: file });
  const pre: number[] = [], dec: number[] = [];
  for (let r = 0; r < runs; r++) {
    const ctx = await model.createContext({ contextSize: PREFILL + DECODE + 16, batchSize: PREFILL, threads: { ideal: 2, min: 2 } });
    const seq = ctx.getSequence();
    let t0 = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(promptTokens);
    pre.push(PREFILL / ((performance.now() - t0) / 1e3));
    t0 = performance.now();
    let n = 0;
    for await (const _t of seq.evaluate([promptTokens[PREFILL - 1]!], { temperature: 0 })) {
      if (++n >= DECODE) break;
    }
    dec.push(DECODE / ((performance.now() - t0) / 1e3));
    await ctx.dispose();
  }
  await model.dispose();
  await llama.dispose();
  return { prefill: median(pre), decode: median(dec) };
}

async function main() {
  if (!loadNative()) throw new Error('native addon not built');
  requireLlamaCppPeer('bench:e2e');
  const info = runtimeInfo();
  console.log(`tessera e2e bench — ${new Date().toISOString().slice(0, 10)} — ${os.cpus()[0]?.model} x${os.cpus().length} — ${info.isa}, ${info.threads} threads — ${SHAPE.name}-shaped, ${SHAPE.layers} layers${small ? ' (--small)' : ''}`);
  const big = new Float32Array(64 << 20).fill(1);
  const n = loadNative()!;
  n.readStream(big);
  let best = Infinity;
  for (let i = 0; i < 5; i++) { const t0 = performance.now(); n.readStream(big); best = Math.min(best, performance.now() - t0); }
  const bw = big.byteLength / (best / 1e3);
  console.log(`measured read bandwidth ${(bw / 1e9).toFixed(1)} GB/s\n`);
  mkdirSync(dir, { recursive: true });
  const rows = [];
  for (const type of types) {
    const fileType = type === 'GPTQ4' ? 'Q4_0' : type;
    const file = path.join(dir, `${SHAPE.name}-random-${SHAPE.layers}L-${fileType}.gguf`);
    if (!existsSync(file)) {
      const t0 = performance.now();
      writeRandomModel(file, SHAPE, fileType);
      console.log(`wrote ${file} (${(statSync(file).size / 1e9).toFixed(2)} GB) in ${((performance.now() - t0) / 1e3).toFixed(0)} s`);
    }
    const ours = await benchTessera(file, type === 'GPTQ4');
    const theirs = await benchLlamaCpp(file);
    const fileBytes = statSync(file).size;
    const g = readGGUF(file);
    const llamaBytes = g.tensors.filter((t) => t.name !== 'token_embd.weight').reduce((a, t) => a + t.byteLength, 0);
    const row = {
      type, prefillTessera: ours.prefill, prefillLlamaCpp: theirs.prefill, prefillRatio: ours.prefill / theirs.prefill,
      decodeTessera: ours.decode, decodeLlamaCpp: theirs.decode, decodeRatio: ours.decode / theirs.decode,
      rooflineTessera: bw / ours.weightBytes, rooflineLlamaCpp: bw / llamaBytes, fileBytes, expertShare: ours.expertShare,
    };
    rows.push(row);
    console.log(`${(type === 'GPTQ4' ? 'GPTQ4 (tessera) vs Q4_0 (llama.cpp)' : type).padEnd(5)} prefill ${ours.prefill.toFixed(1)} vs ${theirs.prefill.toFixed(1)} tok/s (${row.prefillRatio.toFixed(2)}x)   ` +
      `decode ${ours.decode.toFixed(1)} vs ${theirs.decode.toFixed(1)} tok/s (${row.decodeRatio.toFixed(2)}x)   ` +
      (ours.expertShare !== null
        ? `expert weights read per decode step: ${(100 * ours.expertShare).toFixed(1)}% (k/E = ${((100 * SHAPE.used) / SHAPE.experts).toFixed(1)}%)`
        : `roofline: tessera ${row.rooflineTessera.toFixed(1)} tok/s (${((100 * ours.decode) / row.rooflineTessera).toFixed(0)}%), llama.cpp ${row.rooflineLlamaCpp.toFixed(1)} tok/s (${((100 * theirs.decode) / row.rooflineLlamaCpp).toFixed(0)}%)`));
  }
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ date: new Date().toISOString(), shape: SHAPE, bandwidthGBs: bw / 1e9, rows }, null, 2));
}

await main();
