/** `tessera bench`: prompt processing and generation speed of a model, reported as llama-bench does. */
import path from 'node:path';
import { runtimeInfo } from '../backend/index.js';
import type { LlamaModel } from '../model/llama.js';
import { PagedKvCache } from '../runtime/kv/cache.js';
import { IntWeight } from '../tensor/int-weight.js';
import { Tensor } from '../tensor/tensor.js';
import { MAX_TOKENS, MODEL_OPTIONS, num, openModel, parse, progress } from './common.js';
import { UsageError } from './errors.js';
import { forwardTokens } from '../runtime/runner.js';

export const BENCH_HELP = `Usage: tessera bench [-m FILE] [-p 512] [-n 128] [-r 5] [-t N] [--json]

Measures prompt processing (ppN: a prompt of -p tokens in one batch) and text generation (tgN:
-n tokens decoded one at a time from an empty context) speed in tokens/s, as llama-bench does:
each test runs once untimed to warm up, then -r times; t/s is the mean ± the sample standard
deviation over those runs. The table also gives the model's weight size and parameter count.

Options:
  -m, --model FILE          GGUF model (default: the bundled stories260K)
  -p, --n-prompt N          Prompt tokens, 0 = no pp test (default 512, capped by the model's
                            context); alias --prompt
  -n, --n-gen N             Generated tokens, 0 = no tg test (default 128); alias --gen
  -r, --repetitions N       Timed runs per test (default 5); alias --runs
      --json                Print a JSON array, one object per test: model, sizeBytes, sizeGiB,
                            params, backend, isa, threads, test, nPrompt, nGen, repetitions,
                            tokS {mean, sd}, samplesTokS
      --backend B           cpu | js | auto
  -t, --threads N           Native threads
  -ngl, --n-gpu-layers N    Accepted for llama.cpp habits and ignored (no per-layer offload)
  -h, --help                Show this help
`;

/** One row of the report (a row of llama-bench's table). */
export interface BenchRow {
  model: string;
  /** Bytes of the weights as loaded (quantised weights at their packed size). */
  sizeBytes: number;
  sizeGiB: number;
  /** Weight elements (a tied output head counted once). */
  params: number;
  backend: string;
  isa: string | null;
  threads: number;
  /** ppN or tgN. */
  test: string;
  nPrompt: number;
  nGen: number;
  repetitions: number;
  /** Tokens per second: mean and sample standard deviation over the repetitions (sd 0 for one). */
  tokS: { mean: number; sd: number };
  samplesTokS: number[];
}

/** Parameter count and bytes of a model's weights, each tensor once. */
export function weightStats(model: LlamaModel): { params: number; bytes: number } {
  const w = model.weights;
  const seen = new Set<Tensor | IntWeight>();
  for (const t of [w.tokEmbd, w.outNorm, w.output]) seen.add(t);
  for (const L of w.layers) {
    for (const t of Object.values(L)) if (t instanceof Tensor || t instanceof IntWeight) seen.add(t);
    if (L.moe) for (const t of [L.moe.router, ...L.moe.gate, ...L.moe.up, ...L.moe.down]) seen.add(t);
  }
  let params = 0, bytes = 0;
  for (const t of seen) {
    params += t.shape.reduce((a, b) => a * b, 1);
    bytes += t.byteLength;
  }
  return { params, bytes };
}

/** Mean and sample standard deviation (two-pass, so never negative; 0 for a single sample). */
export function meanSd(x: readonly number[]): { mean: number; sd: number } {
  const mean = x.reduce((a, b) => a + b, 0) / x.length;
  if (x.length < 2) return { mean, sd: 0 };
  return { mean, sd: Math.sqrt(x.reduce((a, v) => a + (v - mean) ** 2, 0) / (x.length - 1)) };
}

/** llama-bench's size and params columns: MiB below 1 GiB, M below 1e9 parameters. */
const sizeText = (b: number) => (b < 2 ** 30 ? `${(b / 2 ** 20).toFixed(2)} MiB` : `${(b / 2 ** 30).toFixed(2)} GiB`);
const paramsText = (n: number) => (n < 1e9 ? `${(n / 1e6).toFixed(2)} M` : `${(n / 1e9).toFixed(2)} B`);

export function benchCommand(argv: string[]): void {
  const { values: a } = parse('bench', argv, {
    ...MODEL_OPTIONS, 'n-prompt': { type: 'string', short: 'p' }, 'n-gen': { type: 'string', short: 'n' }, repetitions: { type: 'string', short: 'r' }, json: { type: 'boolean' },
  }, false, { '--prompt': 'n-prompt', '--gen': 'n-gen', '--runs': 'repetitions' });
  if (a.help) return void process.stdout.write(BENCH_HELP);
  const gen = num(a['n-gen'], 'n-gen', true, 0, MAX_TOKENS) ?? 128;
  const promptTokens = num(a['n-prompt'], 'n-prompt', true, 0, MAX_TOKENS) ?? 512;
  const reps = num(a.repetitions, 'repetitions', true, 1, 1000) ?? 5;
  if (gen === 0 && promptTokens === 0) throw new UsageError('-p 0 and -n 0 leave nothing to measure (see tessera bench --help)');
  const { model, tokenizer } = openModel(a, true);
  const c = model.config;
  if (gen > c.contextLength) throw new UsageError(`-n ${gen} exceeds the model's context of ${c.contextLength} tokens`);
  const pp = Math.min(promptTokens, c.contextLength);
  // Token ids do not change the work; a fixed spread keeps runs comparable (llama-bench: random ids).
  const ids = (n: number, first: number) => Int32Array.from({ length: n }, (_, i) => (i === 0 && first >= 0 ? first : (i * 7919 + 3) % c.vocabSize));
  const bos = tokenizer.bosId ?? -1;
  const withCache = (tokens: number, f: (cache: PagedKvCache) => void) => {
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil(tokens / 16) + 1 });
    cache.add(0);
    try {
      f(cache);
    } finally {
      cache.dispose();
    }
  };
  // pp: the whole prompt in one forward; tg: n single-token steps from an empty context.
  const runPrompt = (n: number) => withCache(n, (cache) => void forwardTokens(model, cache, 0, ids(n, bos)));
  const runGen = (n: number) => withCache(n, (cache) => {
    const tokens = ids(n, bos);
    for (let i = 0; i < n; i++) forwardTokens(model, cache, 0, tokens.subarray(i, i + 1));
  });
  const tests = [
    ...(pp > 0 ? [{ test: `pp${pp}`, nPrompt: pp, nGen: 0, n: pp, run: runPrompt, warm: () => runPrompt(pp) }] : []),
    ...(gen > 0 ? [{ test: `tg${gen}`, nPrompt: 0, nGen: gen, n: gen, run: runGen, warm: () => runGen(1) }] : []),
  ];
  const info = runtimeInfo();
  const { params, bytes } = weightStats(model);
  const rows: BenchRow[] = [];
  for (const t of tests) {
    t.warm();
    const report = progress(`bench ${t.test}`);
    const samples: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      t.run(t.n);
      samples.push(t.n / ((performance.now() - t0) / 1e3));
      report(r + 1, reps, `${samples[r]!.toFixed(2)} t/s`);
    }
    rows.push({
      model: a.model ? path.basename(a.model) : 'stories260K (bundled)',
      sizeBytes: bytes, sizeGiB: bytes / 2 ** 30, params,
      backend: model.backend.name, isa: model.backend.name === 'cpu' ? info.isa : null, threads: model.backend.name === 'cpu' ? info.threads : 1,
      test: t.test, nPrompt: t.nPrompt, nGen: t.nGen, repetitions: reps,
      tokS: meanSd(samples), samplesTokS: samples,
    });
  }
  if (a.json) return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
  // llama-bench's markdown table: text columns left-aligned, numbers right-aligned, widened to fit.
  const cols: [string, 'l' | 'r', (r: BenchRow) => string][] = [
    ['model', 'l', (r) => r.model],
    ['size', 'r', (r) => sizeText(r.sizeBytes)],
    ['params', 'r', (r) => paramsText(r.params)],
    ['backend', 'l', (r) => (r.isa ? `${r.backend} (${r.isa})` : r.backend)],
    ['threads', 'r', (r) => String(r.threads)],
    ['test', 'r', (r) => r.test],
    ['t/s', 'r', (r) => `${r.tokS.mean.toFixed(2)} ± ${r.tokS.sd.toFixed(2)}`],
  ];
  const cells = rows.map((r) => cols.map(([, , f]) => f(r)));
  const widths = cols.map(([h], j) => Math.max(h.length, 7, ...cells.map((c) => c[j]!.length)));
  const line = (c: string[]) => `| ${c.map((s, j) => (cols[j]![1] === 'l' ? s.padEnd(widths[j]!) : s.padStart(widths[j]!))).join(' | ')} |`;
  const lines = [
    line(cols.map(([h]) => h)),
    `| ${cols.map(([, al], j) => (al === 'l' ? '-'.repeat(widths[j]!) : '-'.repeat(widths[j]! - 1) + ':')).join(' | ')} |`,
    ...cells.map(line),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}
