/**
 * Quantisation report: GPTQ vs RTN on two trained models, as `npm run bench:quant` prints it.
 *
 *  - shakespeare target (../shared/models/shakespeare/target/hf): calibration windows from its
 *    training text, evaluation on its held-out validation text.
 *  - stories260K (models/stories260K): TinyStories validation head (test/fixtures/text), the first
 *    five stories for calibration, the last five for evaluation.
 *
 * For each: perplexity (llama.cpp chunks, ctx 256) for f32 and each quantisation, and per
 * projection the relative reconstruction error ||X W^T - X Q^T||_F / ||X W^T||_F on held-out
 * activations (the inputs each projection sees in the f32 model on the evaluation text).
 * 4- and 8-bit rows run on the integer kernels; 3-bit rows are simulated (dequantised f32).
 *
 *   npm run bench:quant [-- --samples 128] [-- --seq-len 256] [-- --json FILE]
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backend/index.js';
import { loadModelFile } from '../src/model/load.js';
import type { LinearRole, LinearWeight } from '../src/model/llama.js';
import { quantizeModel, type QuantizeModelOptions } from '../src/quant/quantize-model.js';
import { calibrationWindows } from '../src/cli/quantize.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { perplexity } from '../src/runtime/perplexity.js';
import { dequantizeGptq } from '../src/tensor/gptq.js';
import { Tensor } from '../src/tensor/tensor.js';
import { forwardTokens } from '../src/runtime/runner.js';

const args = process.argv.slice(2);
const arg = (n: string) => {
  const i = args.indexOf(n);
  return i >= 0 ? args[i + 1] : undefined;
};
const SAMPLES = Number(arg('--samples') ?? 128), SEQ = Number(arg('--seq-len') ?? 256), CTX = 256;
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const shared = path.join(root, '..', 'shared', 'models');
const be = getBackend('cpu');

interface Setup {
  name: string;
  model: string;
  calib: string;
  eval: string;
  configs: { label: string; o: Omit<QuantizeModelOptions, 'onLayer'> }[];
}

const q = (method: 'gptq' | 'rtn', bits: 3 | 4, groupSize: number, extra: Partial<QuantizeModelOptions> = {}) => ({
  label: `${method.toUpperCase()} ${bits}-bit ${groupSize === -1 ? 'per-channel' : `g${groupSize}`}${extra.actOrder ? ' act-order' : ''}${bits === 3 ? ' (simulated)' : ''}`,
  o: { method, bits, groupSize, ...extra },
});
const CONFIGS4 = [q('rtn', 4, 128), q('gptq', 4, 128), q('gptq', 4, 128, { actOrder: true }), q('rtn', 4, 32), q('gptq', 4, 32), q('rtn', 4, -1), q('gptq', 4, -1)];

const stories = readFileSync(path.join(root, 'test/fixtures/text/tinystories-valid-head.txt'), 'utf8').split('<|endoftext|>');
const SETUPS: Setup[] = [
  {
    name: 'shakespeare target (3.4M, HF f32)', model: path.join(shared, 'shakespeare/target/hf'),
    calib: readFileSync(path.join(shared, 'shakespeare/train.txt'), 'utf8'), eval: readFileSync(path.join(shared, 'shakespeare/val.txt'), 'utf8'),
    configs: [...CONFIGS4, q('rtn', 3, 128), q('gptq', 3, 128)],
  },
  {
    name: 'stories260K (GGUF f32)', model: path.join(root, 'models/stories260K/stories260K.gguf'),
    calib: stories.slice(0, 5).join('\n'), eval: stories.slice(5).join('\n'),
    configs: CONFIGS4,
  },
];

const ROLES: LinearRole[] = ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'];

function main() {
  const out: unknown[] = [];
  for (const s of SETUPS) {
    if (!existsSync(s.model)) {
      console.log(`skipping ${s.name}: ${s.model} not found`);
      continue;
    }
    const base = loadModelFile(s.model, be);
    const tok = base.tokenizer, bos = tok.bosId ?? null;
    const evalTokens = tok.encode(s.eval, { addBos: true });
    const calibTokens = tok.encode(s.calib, { addBos: true });
    const seq = Math.min(SEQ, Math.floor(calibTokens.length / 2));
    const windows = calibrationWindows(calibTokens, SAMPLES, seq, 0, bos);
    const f32ppl = perplexity(base.model, evalTokens, { ctx: CTX, bosId: bos }).ppl;
    // Held-out activations: each projection's inputs in the f32 model over the evaluation text.
    const held = new Map<string, { x: Float32Array; T: number }>();
    const c = base.model.config;
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil(CTX / 16) + 1 });
    for (let i = 0; i + CTX <= Math.min(evalTokens.length, 4 * CTX); i += CTX) {
      cache.add(0);
      forwardTokens(base.model, cache, 0, Int32Array.from(evalTokens.slice(i, i + CTX)), { observer: {
        onLinearInput: (l, roles, x) => {
          for (const r of roles) {
            const k = `${l}.${r}`, prev = held.get(k);
            const cat = new Float32Array((prev?.x.length ?? 0) + x.data.length);
            if (prev) cat.set(prev.x);
            cat.set(x.data, prev?.x.length ?? 0);
            held.set(k, { x: cat, T: (prev?.T ?? 0) + x.shape[0]! });
          }
        },
      } });
      cache.free(0);
    }
    cache.dispose();
    const refY = new Map<string, Float32Array>();
    for (let l = 0; l < c.layers; l++)
      for (const r of ROLES) {
        const h = held.get(`${l}.${r}`)!, w = base.model.weights.layers[l]![r] as Tensor;
        refY.set(`${l}.${r}`, be.linear(new Tensor('f32', [h.T, w.shape[1]!], h.x), new Tensor('f32', [...w.shape], w.toFloat32())).data);
      }
    console.log(`\n## ${s.name}\n`);
    console.log(`calibration: ${windows.length} windows x ${seq} tokens; evaluation: ${evalTokens.length} tokens (ppl: chunks of ${CTX}); held-out activations: ${held.get('0.wq')!.T} tokens\n`);
    const results: { label: string; ppl: number; errors: Map<string, number | null>; skipped: string[]; seconds: number }[] = [];
    for (const cfg of s.configs) {
      const m = loadModelFile(s.model, be);
      const t0 = performance.now();
      const qm = quantizeModel(m.model, cfg.o.method === 'gptq' ? windows : [], cfg.o);
      const seconds = (performance.now() - t0) / 1e3;
      const ppl = perplexity(m.model, evalTokens, { ctx: CTX, bosId: bos }).ppl;
      const errors = new Map<string, number | null>();
      const skipped: string[] = [];
      for (const r of qm.report) {
        const k = `${r.layer}.${r.role}`;
        const ql = qm.layers.get(k);
        if (!ql) {
          errors.set(k, null);
          skipped.push(`layer ${r.layer} ${r.role} [${r.N}x${r.K}]: ${r.reason}`);
          continue;
        }
        const h = held.get(k)!, ref = refY.get(k)!;
        const y = be.linear(new Tensor('f32', [h.T, r.K], h.x), new Tensor('f32', [r.N, r.K], dequantizeGptq(ql))).data;
        let num = 0, den = 0;
        for (let i = 0; i < y.length; i++) {
          num += (y[i]! - ref[i]!) ** 2;
          den += ref[i]! ** 2;
        }
        errors.set(k, Math.sqrt(num / den));
      }
      results.push({ label: cfg.label, ppl, errors, skipped, seconds });
      m.model.dispose();
      process.stderr.write(`${s.name}: ${cfg.label} ppl ${ppl.toFixed(4)} (${seconds.toFixed(1)} s)\n`);
    }
    // Perplexity table.
    console.log('| weights | perplexity | vs f32 | quantise time |');
    console.log('|---|---|---|---|');
    console.log(`| f32 | ${f32ppl.toFixed(4)} | - | - |`);
    for (const r of results) console.log(`| ${r.label} | ${r.ppl.toFixed(4)} | ${((100 * (r.ppl - f32ppl)) / f32ppl >= 0 ? '+' : '')}${((100 * (r.ppl - f32ppl)) / f32ppl).toFixed(2)}% | ${r.seconds.toFixed(1)} s |`);
    // Per-layer reconstruction errors, GPTQ vs RTN at each grouping.
    const pairs = [['RTN 4-bit g128', 'GPTQ 4-bit g128'], ['RTN 4-bit g32', 'GPTQ 4-bit g32'], ['RTN 4-bit per-channel', 'GPTQ 4-bit per-channel'], ['RTN 3-bit g128 (simulated)', 'GPTQ 3-bit g128 (simulated)']];
    console.log('\nPer-projection relative reconstruction error on held-out activations (RTN / GPTQ):\n');
    const present = pairs.filter(([a, b]) => results.some((r) => r.label === a) && results.some((r) => r.label === b));
    console.log(`| projection | ${present.map(([a]) => a.replace('RTN ', '')).join(' | ')} |`);
    console.log(`|---|${present.map(() => '---').join('|')}|`);
    const wins = present.map(() => [0, 0]);
    for (let l = 0; l < c.layers; l++)
      for (const role of ROLES) {
        const k = `${l}.${role}`;
        const w = base.model.weights.layers[l]![role] as LinearWeight;
        const cells = present.map(([a, b], i) => {
          const ea = results.find((r) => r.label === a)!.errors.get(k), eb = results.find((r) => r.label === b)!.errors.get(k);
          if (ea === null || eb === null || ea === undefined || eb === undefined) return 'unquantised';
          wins[i]![1]!++;
          if (eb < ea) wins[i]![0]!++;
          return `${ea.toFixed(4)} / ${eb.toFixed(4)}${eb < ea ? '' : ' ✗'}`;
        });
        console.log(`| ${l}.${role} [${w.shape.join('x')}] | ${cells.join(' | ')} |`);
      }
    console.log(`| GPTQ lower in | ${wins.map(([w, n]) => `${w}/${n}`).join(' | ')} |`);
    const skipped = new Set(results.flatMap((r) => r.skipped));
    if (skipped.size) console.log(`\nLeft unquantised (all configurations): ${[...skipped].join('; ')}`);
    out.push({ name: s.name, f32ppl, windows: windows.length, seq, results: results.map((r) => ({ ...r, errors: Object.fromEntries(r.errors) })) });
    base.model.dispose();
  }
  const json = arg('--json');
  if (json) writeFileSync(json, JSON.stringify(out, null, 1));
}

main();
