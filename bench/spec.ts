/**
 * Speculative decoding: acceptance rate and greedy decode tok/s against plain decoding of the same
 * target in the same run, for k = 1..8 (fixed) and adaptive k, with identical output checked:
 *   - the shakespeare target (F32 and Q8_0) with its draft model,
 *   - the target with its own Q4_0 as the draft (self-speculation),
 *   - n-gram prompt lookup on a repeat-the-passage prompt.
 * Runs in process through the scheduler (the Engine's worker runs the same code).
 *
 * With --tinyllama: the memory-bound case, a TinyLlama-1.1B-shaped random-weight F16 target (written
 * by bench/random-model.ts, as bench:e2e does) with its own Q4_0 as the draft.
 *
 *   npm run bench:spec [-- --tokens 200] [-- --ks 1,2,4,8] [-- --models DIR] [-- --tinyllama]
 */
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getBackend, runtimeInfo } from '../src/backend/index.js';
import { loadModelFile, type LoadedModel } from '../src/model/load.js';
import { SampleJob, type Speculation } from '../src/runtime/generate.js';
import { PagedKvCache } from '../src/runtime/kv/cache.js';
import { Scheduler } from '../src/runtime/scheduler.js';
import { makeProposer } from '../src/runtime/speculate.js';

const args = process.argv.slice(2);
const arg = (n: string) => {
  const i = args.indexOf(n);
  return i >= 0 ? args[i + 1] : undefined;
};
const TOKENS = Number(arg('--tokens') ?? 200);
const KS = (arg('--ks') ?? '1,2,3,4,5,6,7,8').split(',').map(Number);
const dir = arg('--models') ?? path.resolve(import.meta.dirname, '../../shared/models/shakespeare');
if (!existsSync(dir)) throw new Error(`shakespeare models not found in ${dir} (pass --models DIR)`);
const be = getBackend('cpu');
const load = (f: string) => loadModelFile(path.join(dir, f), be);
const cacheFor = (m: LoadedModel) => new PagedKvCache({ layers: m.model.config.layers, kvHeads: m.model.config.kvHeads, headDim: m.model.config.headDim, numBlocks: 128, prefixCaching: false });

/** Greedy generation of TOKENS tokens; returns tokens, seconds and the speculation counts. */
function generate(target: LoadedModel, prompt: number[], spec: ((s: Scheduler) => Speculation) | null) {
  const cache = cacheFor(target);
  const sched = new Scheduler(target.model, cache);
  const out: number[] = [];
  let stats = { proposed: 0, accepted: 0 };
  const job = new SampleJob(sched, target.tokenizer, prompt, { temperature: 0, maxTokens: TOKENS, ignoreEos: true }, {
    onDelta: (d) => d.token !== null && out.push(d.token), onDone: (_, u) => (stats = u.speculation ?? stats), onError: (e) => { throw e; },
  }, spec ? spec(sched) : null);
  sched.submit(job);
  // Time decoding only: the prompt and first token first.
  while (out.length === 0) sched.step();
  const t0 = performance.now();
  sched.runToCompletion();
  const s = (performance.now() - t0) / 1e3;
  cache.dispose();
  return { tokens: out, tokPerS: (out.length - 1) / s, ...stats };
}

function row(label: string, base: ReturnType<typeof generate>, r: ReturnType<typeof generate>) {
  const same = r.tokens.length === base.tokens.length && r.tokens.every((t, i) => t === base.tokens[i]);
  console.log(`| ${label} | ${r.proposed ? ((100 * r.accepted) / r.proposed).toFixed(1) + '%' : '—'} | ${r.tokPerS.toFixed(1)} | ${base.tokPerS.toFixed(1)} | ${(r.tokPerS / base.tokPerS).toFixed(2)}× | ${same ? 'yes' : 'NO'} |`);
}

if (args.includes('--tinyllama')) {
  const { TINYLLAMA, writeRandomModel } = await import('./random-model.js');
  const tdir = path.join(os.tmpdir(), 'tessera-e2e');
  const file = (t: 'F16' | 'Q4_0') => path.join(tdir, `tinyllama-random-22L-${t}.gguf`);
  for (const t of ['F16', 'Q4_0'] as const) if (!existsSync(file(t))) writeRandomModel(file(t), TINYLLAMA, t);
  const target = loadModelFile(file('F16'), be), q4 = loadModelFile(file('Q4_0'), be);
  const prompt = Array.from({ length: 64 }, (_, j) => 259 + ((j * 104729) % 31000));
  const base = generate(target, prompt, null);
  console.log(`TinyLlama-shaped F16 target, its own Q4_0 as the draft, ${TOKENS} greedy tokens: plain ${base.tokPerS.toFixed(1)} tok/s`);
  console.log('| k | acceptance | tok/s | plain tok/s | speedup | same output |\n| --- | --- | --- | --- | --- | --- |');
  const q4Cache = cacheFor(q4);
  for (const k of KS) row(String(k), base, generate(target, prompt, (s) => ({ proposer: makeProposer({ draft: { model: q4.model, cache: q4Cache }, draftMax: k }, { temperature: 0 }, () => s.newSeq() + 1000), draftMax: k, adaptive: false })));
  row('adaptive (max 8)', base, generate(target, prompt, (s) => ({ proposer: makeProposer({ draft: { model: q4.model, cache: q4Cache }, draftMax: 8 }, { temperature: 0 }, () => s.newSeq() + 1000), draftMax: 8 })));
  process.exit(0);
}

const info = runtimeInfo();
console.log(`tessera speculative bench — ${new Date().toISOString().slice(0, 10)} — ${os.cpus()[0]?.model} x${os.cpus().length} — ${info.isa}, ${info.threads} threads — ${TOKENS} greedy tokens`);
const val = readFileSync(path.join(dir, 'val.txt'), 'utf8');
const draft = load('draft/shakespeare-draft-F32.gguf');
for (const type of ['F32', 'Q8_0']) {
  const target = load(`target/shakespeare-target-${type}.gguf`);
  const prompt = target.tokenizer.encode(val.slice(0, 400), { addBos: true });
  const base = generate(target, prompt, null);
  console.log(`\ntarget ${type}, draft model (draft F32): plain ${base.tokPerS.toFixed(1)} tok/s`);
  console.log('| k | acceptance | tok/s | plain tok/s | speedup | same output |\n| --- | --- | --- | --- | --- | --- |');
  const draftCache = cacheFor(draft);
  const mk = (k: number, adaptive: boolean) => (s: Scheduler): Speculation =>
    ({ proposer: makeProposer({ draft: { model: draft.model, cache: draftCache }, draftMax: k }, { temperature: 0 }, () => s.newSeq() + 1000), draftMax: k, adaptive });
  for (const k of KS) row(String(k), base, generate(target, prompt, mk(k, false)));
  row('adaptive (max 8)', base, generate(target, prompt, mk(8, true)));
  if (type === 'Q8_0') {
    const q4 = load('target/shakespeare-target-Q4_0.gguf');
    const q4Cache = cacheFor(q4);
    console.log(`\ntarget Q8_0, its own Q4_0 as the draft (self-speculation)`);
    console.log('| k | acceptance | tok/s | plain tok/s | speedup | same output |\n| --- | --- | --- | --- | --- | --- |');
    for (const k of [2, 4, 6, 8]) row(String(k), base, generate(target, prompt, (s) => ({ proposer: makeProposer({ draft: { model: q4.model, cache: q4Cache }, draftMax: k }, { temperature: 0 }, () => s.newSeq() + 1000), draftMax: k, adaptive: false })));
    row('adaptive (max 8)', base, generate(target, prompt, (s) => ({ proposer: makeProposer({ draft: { model: q4.model, cache: q4Cache }, draftMax: 8 }, { temperature: 0 }, () => s.newSeq() + 1000), draftMax: 8 })));
    // n-gram lookup: a passage, then its beginning again: the continuation repeats it.
    const passage = val.slice(2000, 2700);
    const rep = target.tokenizer.encode(`${passage}\n\n${passage.slice(0, 60)}`, { addBos: true });
    const baseRep = generate(target, rep, null);
    console.log(`\ntarget Q8_0, n-gram prompt lookup (n <= 3) on a repeat-the-passage prompt: plain ${baseRep.tokPerS.toFixed(1)} tok/s`);
    console.log('| k | acceptance | tok/s | plain tok/s | speedup | same output |\n| --- | --- | --- | --- | --- | --- |');
    for (const k of KS) row(String(k), baseRep, generate(target, rep, () => ({ proposer: makeProposer({ lookupNgram: 3, draftMax: k }, {}, () => 0), draftMax: k, adaptive: false })));
    row('adaptive (max 8)', baseRep, generate(target, rep, () => ({ proposer: makeProposer({ lookupNgram: 3, draftMax: 8 }, {}, () => 0), draftMax: 8 })));
  }
}
