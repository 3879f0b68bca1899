/**
 * Model load: time to load, time to the first token and peak RSS, tessera's `Engine.load` side by
 * side with llama.cpp (node-llama-cpp 3.21.1 from the peer package, `npm run peer:install`; it
 * mmaps the file; run this with
 * UV_THREADPOOL_SIZE=1, which `npm run bench:load` sets) on the same TinyLlama-1.1B-shaped
 * random-weight GGUF files (F16 and Q4_0, written by bench/random-model.ts and cached in
 * os.tmpdir()/tessera-e2e, shared with bench:e2e). Every run is a fresh child process (peak RSS is
 * its VmHWM), the runtimes alternate, and the page cache is warm (each file is read once first).
 *
 *   load        tessera: Engine.load (model, tokenizer, KV cache, scheduler, in the worker);
 *               llama.cpp: loadModel + createContext (its KV cache); "model only": loadModel alone
 *   first token from the start of the load to the first generated token of an 8-token prompt
 *   peak RSS    VmHWM of the process; "over" = peak - baseline (RSS before the load, the runtime
 *               itself) - file size - KV cache bytes (what a file-sized mapping plus the cache
 *               would explain; negative is better)
 *
 *   npm run bench:load [-- --types F16,Q4_0] [-- --runs 3] [-- --dir DIR] [-- --small] [-- --read]
 *                      [-- --json FILE]
 *   --small  a 4-layer model, for a quick check
 *   --read   also run tessera with TESSERA_NO_MMAP=1 (tensors read into memory, the old path)
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureRandomModel, TINYLLAMA } from './random-model.js';
import { getLlamaCpp, requireLlamaCppPeer } from './peer/node-llama-cpp.js';

const CTX = 2048; // KV cache: tokens per sequence, both runtimes
const PROMPT = [1, 450, 4996, 17354, 1701, 432, 17204, 975]; // 8 tokens

interface ChildResult {
  loadMs: number;
  modelOnlyMs?: number;
  firstTokenMs: number;
  baselineRss: number;
  peakRss: number;
  kvBytes: number;
}

function status(field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.memoryUsage().rss;
}

const args = process.argv.slice(2);
const arg = (n: string) => {
  const i = args.indexOf(n);
  return i >= 0 ? args[i + 1] : undefined;
};
const small = args.includes('--small');
const SHAPE = { ...TINYLLAMA, layers: small ? 4 : TINYLLAMA.layers };

async function childTessera(file: string): Promise<ChildResult> {
  // The compiled package (npm run bench:load builds it first), as users run it: from the sources,
  // the worker would spend the first seconds compiling TypeScript.
  const dist = '../dist/';
  const { Engine } = (await import(dist + 'index.js')) as typeof import('../src/index.js');
  const { readGGUF } = (await import(dist + 'formats/gguf.js')) as typeof import('../src/formats/gguf.js');
  const { llamaConfigFromGGUF } = (await import(dist + 'model/load-gguf.js')) as typeof import('../src/model/load-gguf.js');
  const c = llamaConfigFromGGUF(readGGUF(file));
  const kvBytes = c.layers * 2 * c.kvHeads * c.headDim * 4 * CTX; // f32 K and V
  const baselineRss = status('VmRSS');
  const t0 = performance.now();
  const engine = await Engine.load(file, { backend: 'cpu', kvCacheBytes: kvBytes, prefixCaching: false });
  const loadMs = performance.now() - t0;
  const r = await engine.generate(PROMPT, { maxTokens: 1, temperature: 0 });
  const firstTokenMs = performance.now() - t0;
  if (r.completionTokens !== 1) throw new Error(`tessera generated ${r.completionTokens} tokens`);
  const peakRss = status('VmHWM');
  await engine.dispose();
  return { loadMs, firstTokenMs, baselineRss, peakRss, kvBytes };
}

async function childLlamaCpp(file: string): Promise<ChildResult> {
  const llama = await getLlamaCpp();
  const baselineRss = status('VmRSS');
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath: file });
  const modelOnlyMs = performance.now() - t0;
  const ctx = await model.createContext({ contextSize: CTX, batchSize: 512, threads: { ideal: 2, min: 2 } });
  const loadMs = performance.now() - t0;
  const seq = ctx.getSequence();
  let firstTokenMs = 0;
  for await (const _t of seq.evaluate(PROMPT, { temperature: 0 })) {
    firstTokenMs = performance.now() - t0;
    break;
  }
  const peakRss = status('VmHWM');
  // Its default KV cache is f16 (llama.cpp's --cache-type-k/v f16).
  const kvBytes = SHAPE.layers * 2 * SHAPE.kvHeads * (SHAPE.dim / SHAPE.heads) * 2 * CTX;
  await ctx.dispose();
  await model.dispose();
  await llama.dispose();
  return { loadMs, modelOnlyMs, firstTokenMs, baselineRss, peakRss, kvBytes };
}

if (args[0] === '--child') {
  const [, runtime, file] = args;
  const r = runtime === 'llama.cpp' ? await childLlamaCpp(file!) : await childTessera(file!);
  process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);
  process.exit(0);
}

const types = (arg('--types') ?? 'F16,Q4_0').split(',') as ('F16' | 'Q8_0' | 'Q4_0')[];
const runs = Number(arg('--runs') ?? 3);
const dir = arg('--dir') ?? path.join(os.tmpdir(), 'tessera-e2e');
const withRead = args.includes('--read');
const jsonOut = arg('--json');
const self = fileURLToPath(import.meta.url);
requireLlamaCppPeer('bench:load');

if (process.env.UV_THREADPOOL_SIZE !== '1') console.warn('note: run with UV_THREADPOOL_SIZE=1 as the other benches do (npm run bench:load does)');

function warm(file: string): void {
  const fd = openSync(file, 'r');
  const buf = Buffer.allocUnsafe(16 << 20);
  try {
    for (let pos = 0; ; pos += buf.length) if (readSync(fd, buf, 0, buf.length, pos) <= 0) break;
  } finally {
    closeSync(fd);
  }
}

function runChild(runtime: string, file: string, env: NodeJS.ProcessEnv = {}): ChildResult {
  const out = execFileSync(process.execPath, ['--import', 'tsx', self, '--child', runtime, file, ...(small ? ['--small'] : [])], {
    env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24,
  });
  const line = out.split('\n').find((l) => l.startsWith('RESULT '));
  if (!line) throw new Error(`${runtime} child printed no result:\n${out}`);
  return JSON.parse(line.slice(7)) as ChildResult;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mib = (b: number) => (b / 2 ** 20).toFixed(0);
const sec = (ms: number) => (ms / 1e3).toFixed(2);

console.log(`tessera load bench — ${new Date().toISOString().slice(0, 10)} — ${os.cpus()[0]?.model} x${os.cpus().length} — ` +
  `${SHAPE.name}-shaped, ${SHAPE.layers} layers, KV for ${CTX} tokens, median of ${runs} runs (fresh process each)\n`);
mkdirSync(dir, { recursive: true });
const table: Record<string, unknown>[] = [];
for (const type of types) {
  const file = ensureRandomModel(dir, SHAPE, type);
  const fileBytes = statSync(file).size;
  warm(file);
  const variants: { name: string; runtime: string; env?: NodeJS.ProcessEnv }[] = [
    { name: 'tessera', runtime: 'tessera' },
    ...(withRead ? [{ name: 'tessera (read)', runtime: 'tessera', env: { TESSERA_NO_MMAP: '1' } }] : []),
    { name: 'llama.cpp', runtime: 'llama.cpp' },
  ];
  const results = new Map<string, ChildResult[]>(variants.map((v) => [v.name, []]));
  for (let r = 0; r < runs; r++)
    for (const v of r % 2 ? [...variants].reverse() : variants) {
      const res = runChild(v.runtime, file, v.env);
      results.get(v.name)!.push(res);
      console.log(`  ${type} run ${r + 1} ${v.name.padEnd(15)} load ${sec(res.loadMs)} s${res.modelOnlyMs !== undefined ? ` (model ${sec(res.modelOnlyMs)} s)` : ''}, ` +
        `first token ${sec(res.firstTokenMs)} s, peak RSS ${mib(res.peakRss)} MiB (baseline ${mib(res.baselineRss)})`);
    }
  for (const v of variants) {
    const rs = results.get(v.name)!;
    const m = (f: (x: ChildResult) => number) => median(rs.map(f));
    table.push({
      type, runtime: v.name, fileMiB: Number(mib(fileBytes)), loadS: m((x) => x.loadMs) / 1e3,
      modelOnlyS: rs[0]!.modelOnlyMs !== undefined ? m((x) => x.modelOnlyMs!) / 1e3 : null,
      firstTokenS: m((x) => x.firstTokenMs) / 1e3, peakRssMiB: m((x) => x.peakRss) / 2 ** 20, baselineMiB: m((x) => x.baselineRss) / 2 ** 20,
      kvMiB: rs[0]!.kvBytes / 2 ** 20, overMiB: m((x) => x.peakRss - x.baselineRss - fileBytes - x.kvBytes) / 2 ** 20,
    });
  }
}

console.log('\n| file | runtime | load s | (model only) | first token s | peak RSS MiB | baseline MiB | file MiB | KV MiB | over MiB |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of table as { type: string; runtime: string; loadS: number; modelOnlyS: number | null; firstTokenS: number; peakRssMiB: number; baselineMiB: number; fileMiB: number; kvMiB: number; overMiB: number }[])
  console.log(`| ${r.type} | ${r.runtime} | ${r.loadS.toFixed(2)} | ${r.modelOnlyS === null ? '' : r.modelOnlyS.toFixed(2)} | ${r.firstTokenS.toFixed(2)} | ` +
    `${r.peakRssMiB.toFixed(0)} | ${r.baselineMiB.toFixed(0)} | ${r.fileMiB} | ${r.kvMiB.toFixed(0)} | ${r.overMiB.toFixed(0)} |`);
for (const type of types) {
  const t = table.find((r) => r.type === type && r.runtime === 'tessera') as { loadS: number; firstTokenS: number } | undefined;
  const l = table.find((r) => r.type === type && r.runtime === 'llama.cpp') as { loadS: number; firstTokenS: number } | undefined;
  if (t && l) console.log(`${type}: tessera / llama.cpp load ${(t.loadS / l.loadS).toFixed(2)}x, first token ${(t.firstTokenS / l.firstTokenS).toFixed(2)}x`);
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(table, null, 2));
