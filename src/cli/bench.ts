/** `tessera bench`: prefill and decode speed of a model on this machine. */
import { runtimeInfo } from '../backend/index.js';
import { PagedKvCache } from '../runtime/kv/cache.js';
import { MAX_TOKENS, MODEL_OPTIONS, num, openModel, parse } from './common.js';
import { UsageError } from './errors.js';
import { forwardTokens } from '../runtime/runner.js';

export const BENCH_HELP = `Usage: tessera bench [-m FILE] [-p 512] [-n 128] [-r 3] [--json]

Measures prefill (a prompt of -p tokens in one batch) and decode (-n tokens one at a time,
greedy) speed in tokens/s; median of -r runs.

Options:
  -m, --model FILE   GGUF model (default: the bundled stories260K)
  -p, --prompt N     Prompt tokens (default 512, capped by the model's context)
  -n, --gen N        Generated tokens (default 128)
  -r, --runs N       Repetitions (default 3)
      --json         Print JSON
      --backend B    cpu | js | auto
      --threads N    Native threads
  -h, --help         Show this help
`;

export function benchCommand(argv: string[]): void {
  const { values: a } = parse('bench', argv, {
    ...MODEL_OPTIONS, prompt: { type: 'string', short: 'p' }, gen: { type: 'string', short: 'n' }, runs: { type: 'string', short: 'r' }, json: { type: 'boolean' },
  });
  if (a.help) return void process.stdout.write(BENCH_HELP);
  const gen = num(a.gen, 'gen', true, 1, MAX_TOKENS) ?? 128;
  const promptTokens = num(a.prompt, 'prompt', true, 1, MAX_TOKENS) ?? 512;
  const runs = num(a.runs, 'runs', true, 1, 1000) ?? 3;
  const { model } = openModel(a, true);
  const c = model.config;
  const pp = Math.min(promptTokens, c.contextLength - gen);
  if (pp < 1) throw new UsageError(`-n ${gen} leaves no room for a prompt in the model's context of ${c.contextLength} tokens`);
  const prompt = Int32Array.from({ length: pp }, (_, i) => (i * 7919 + 3) % c.vocabSize);
  const pre: number[] = [], dec: number[] = [];
  for (let r = 0; r < runs; r++) {
    const cache = new PagedKvCache({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, numBlocks: Math.ceil((pp + gen) / 16) + 1 });
    cache.add(0);
    let t0 = performance.now();
    let logits = forwardTokens(model, cache, 0, prompt).data;
    pre.push(pp / ((performance.now() - t0) / 1e3));
    t0 = performance.now();
    for (let i = 0; i < gen; i++) {
      let best = 0;
      for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[best]!) best = j;
      logits = forwardTokens(model, cache, 0, Int32Array.of(best)).data;
    }
    dec.push(gen / ((performance.now() - t0) / 1e3));
    cache.dispose();
    process.stderr.write(`run ${r + 1}/${runs}: prefill ${pre[r]!.toFixed(1)} tok/s, decode ${dec[r]!.toFixed(1)} tok/s\n`);
  }
  const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1]!;
  const info = runtimeInfo();
  const res = { model: a.model ?? 'stories260K (bundled)', backend: model.backend.name, isa: info.isa, threads: info.threads, promptTokens: pp, genTokens: gen, prefillTokS: med(pre), decodeTokS: med(dec) };
  if (a.json) process.stdout.write(JSON.stringify(res) + '\n');
  else process.stdout.write(`prefill ${res.prefillTokS.toFixed(1)} tok/s (${pp} tokens)   decode ${res.decodeTokS.toFixed(1)} tok/s (${gen} tokens)   [${res.backend}${res.isa ? `/${res.isa}` : ''}, ${res.threads} threads]\n`);
}
