/**
 * `npm run soak -- --minutes N`: a long mixed load on one Engine (stories260K), checking that it
 * stays healthy:
 *  - every request settles: it resolves, or rejects with an Error that has a message; a watchdog
 *    flags any request still unsettled after --stuck-seconds;
 *  - no KV block leaks: at each quiescence point (every --check-seconds: stop sending, wait for all
 *    requests to settle) engine.stats() must show 0 running, 0 waiting and 0 used KV blocks (blocks
 *    kept for prefix reuse are "cached", not used, and allowed);
 *  - RSS stays flat: sampled at each quiescence point; after warm-up (the first quarter of the run,
 *    at least 30 s) it may not grow by more than --rss-bound-mb (default 48 MiB) from its post-warm-up
 *    minimum, and the least-squares slope is reported.
 * Requests mix text / token-id / chat prompts, random sampling settings, stop strings, beam search,
 * aborts at random times (AbortController) and consumers that stop reading a stream early, with a
 * share of bad inputs (wrong types, out-of-range values, empty and too-long prompts, invalid chat
 * messages), which must be rejected with an Error. Prints a summary table; exits 1 on any failure.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Engine, type EngineGenerateOptions } from '../src/engine/engine.js';
import type { Prompt } from '../src/engine/protocol.js';
import { runtimeInfo } from '../src/backend/index.js';
import { Rng } from '../fuzz/rng.js';

// ---- options ------------------------------------------------------------------------------------------

const root = path.resolve(import.meta.dirname, '..');
interface Options {
  minutes: number;
  model: string;
  concurrency: number;
  seed: number;
  checkSeconds: number;
  stuckSeconds: number;
  rssBoundMb: number;
  backend: 'cpu' | 'js' | 'auto';
}

function usage(msg: string): never {
  console.error(`soak: ${msg}\nUsage: npm run soak -- [--minutes N] [--model FILE] [--concurrency C] [--seed S] [--check-seconds S] [--stuck-seconds S] [--rss-bound-mb M] [--backend cpu|js|auto]`);
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const shared = path.resolve(root, '..', 'shared', 'models', 'stories260K', 'stories260K.gguf');
  const o: Options = {
    minutes: 2, model: existsSync(shared) ? shared : path.join(root, 'models', 'stories260K', 'stories260K.gguf'), concurrency: 16,
    seed: 1, checkSeconds: 15, stuckSeconds: 120, rssBoundMb: 48, backend: 'auto',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => argv[++i] ?? usage(`${a} expects a value`);
    const num = (min: number) => {
      const s = v();
      const n = Number(s);
      if (!Number.isFinite(n) || n < min) usage(`${a} expects a number >= ${min} but received '${s}'`);
      return n;
    };
    switch (a) {
      case '--minutes': o.minutes = num(0.1); break;
      case '--model': o.model = path.resolve(v()); break;
      case '--concurrency': o.concurrency = Math.floor(num(1)); break;
      case '--seed': o.seed = Math.floor(num(0)); break;
      case '--check-seconds': o.checkSeconds = num(1); break;
      case '--stuck-seconds': o.stuckSeconds = num(1); break;
      case '--rss-bound-mb': o.rssBoundMb = num(1); break;
      case '--backend': {
        const b = v();
        if (b !== 'cpu' && b !== 'js' && b !== 'auto') usage(`--backend expects cpu, js or auto but received '${b}'`);
        o.backend = b;
        break;
      }
      default: usage(`unknown argument '${a}'`);
    }
  }
  return o;
}

// ---- random requests -------------------------------------------------------------------------------------

const CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const PROMPTS = ['Once upon a time', 'The little dog', 'Lily and Ben went to the park.', 'One day, a girl named Sue', 'Tom had a red ball', 'The sun was hot and', ' '];
const STOPS = ['.', 'Lily', ' the', '\n', 'ball', 'and', 'zzz'];

interface Req {
  /** Which kind, for the summary. */
  kind: string;
  /** A bad input: it must be rejected. */
  bad: boolean;
  prompt: Prompt | unknown;
  options: EngineGenerateOptions & Record<string, unknown>;
  /** Abort after this many ms (undefined: never; 0: before sending). */
  abortAfter?: number;
  /** Stop reading the stream after this many deltas. */
  readDeltas?: number;
}

function goodRequest(r: Rng, vocab: number, chat: boolean): Req {
  const options: EngineGenerateOptions & Record<string, unknown> = {
    maxTokens: r.pick([1, 4, 16, 32, 64, 128, 200]),
    temperature: r.pick([0, 0, 0.5, 0.8, 1, 1.5]),
    topK: r.pick([0, 1, 5, 40, 100]),
    topP: r.pick([1, 0.9, 0.5, 0.1]),
    minP: r.pick([0, 0.05, 0.2]),
    seed: r.int(1000),
  };
  if (r.chance(0.3)) options.stop = Array.from({ length: 1 + r.int(3) }, () => r.pick(STOPS));
  if (r.chance(0.2)) options.repetitionPenalty = r.pick([1.1, 1.3]);
  if (r.chance(0.1)) Object.assign(options, { presencePenalty: 0.5, frequencyPenalty: 0.3 });
  if (r.chance(0.1)) options.ignoreEos = true;
  if (r.chance(0.1)) options.topLogprobs = r.int(6);
  if (r.chance(0.05)) options.stopTokens = [r.int(vocab)];
  if (r.chance(0.1)) options.tokenTexts = true;
  let kind = 'text';
  let prompt: Prompt = r.pick(PROMPTS) + (r.chance(0.3) ? ' ' + r.pick(PROMPTS) : '');
  if (r.chance(0.06)) {
    kind = 'beam';
    Object.assign(options, { beams: 2 + r.int(3), maxTokens: 1 + r.int(24) });
  } else if (r.chance(0.15)) {
    kind = 'ids';
    prompt = [1, ...Array.from({ length: 1 + r.int(40) }, () => r.int(vocab))];
  } else if (r.chance(0.15)) {
    kind = 'chat';
    prompt = { messages: [{ role: 'user', content: r.pick(PROMPTS) }], ...(chat ? {} : { template: CHATML }) };
  } else if (r.chance(0.1)) {
    kind = 'shared-prefix'; // the same long prefix often: prefix-cache hits and block reuse
    prompt = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' + r.pick(PROMPTS);
  }
  const req: Req = { kind, bad: false, prompt, options };
  if (r.chance(0.2)) req.abortAfter = r.chance(0.1) ? 0 : r.int(400);
  else if (r.chance(0.1)) req.readDeltas = r.int(5);
  return req;
}

function badRequest(r: Rng, vocab: number, ctx: number): Req {
  const bad: [string, Prompt | unknown, Record<string, unknown>][] = [
    ['prompt-null', null, {}],
    ['prompt-number', 42, {}],
    ['prompt-object', { text: 'hi' }, {}],
    ['prompt-float-ids', [1, 2.5, 3], {}],
    ['prompt-negative-id', [1, -4], {}],
    ['prompt-id-out-of-vocab', [1, vocab + 7], {}],
    ['prompt-empty-ids', [], {}],
    ['prompt-empty-no-bos', '', { addBos: false }],
    ['prompt-too-long', 'Once upon a time '.repeat(Math.ceil(ctx / 2)), {}],
    ['prompt-too-long-ids', Array.from({ length: ctx + 5 }, (_, i) => 1 + (i % (vocab - 1))), {}],
    ['chat-bad-role', { messages: [{ role: 5, content: 'hi' }] }, {}],
    ['chat-no-content', { messages: [{ role: 'user' }] }, {}],
    ['chat-not-array', { messages: 'hello' }, {}],
    ['chat-bad-template', { messages: [{ role: 'user', content: 'hi' }], template: '{% for %}' }, {}],
    ['chat-template-throws', { messages: [{ role: 'user', content: 'hi' }], template: "{{ raise_exception('no') }}" }, {}],
    ['maxTokens-negative', 'Once', { maxTokens: -1 }],
    ['maxTokens-string', 'Once', { maxTokens: '10' }],
    ['temperature-nan', 'Once', { temperature: Number.NaN }],
    ['temperature-negative', 'Once', { temperature: -1 }],
    ['topP-above-1', 'Once', { topP: 2 }],
    ['topK-negative', 'Once', { topK: -3 }],
    ['minP-above-1', 'Once', { minP: 1.5 }],
    ['seed-float', 'Once', { seed: 1.5 }],
    ['stop-empty-string', 'Once', { stop: [''] }],
    ['stop-not-array', 'Once', { stop: 'x' }],
    ['stopTokens-negative', 'Once', { stopTokens: [-1] }],
    ['beams-zero', 'Once', { beams: 0 }],
    ['beams-huge', 'Once', { beams: 100000 }],
    ['topLogprobs-99', 'Once', { topLogprobs: 99 }],
    ['repetitionPenalty-zero', 'Once', { repetitionPenalty: 0 }],
    ['options-function', 'Once', { onToken: () => 1 }],
    ['signal-not-signal', 'Once', { signal: {} }],
  ];
  const [kind, prompt, options] = r.pick(bad);
  return { kind, bad: true, prompt, options: options as EngineGenerateOptions & Record<string, unknown> };
}

// ---- the run ---------------------------------------------------------------------------------------------

interface Outcome {
  settled: boolean;
  ok: boolean;
  finish?: string;
  error?: string;
  message?: string;
  tokens: number;
  problem?: string;
}

const mb = (n: number) => n / 2 ** 20;

async function runOne(engine: Engine, req: Req): Promise<Outcome> {
  const ac = req.abortAfter !== undefined ? new AbortController() : null;
  if (ac && req.abortAfter === 0) ac.abort();
  const timer = ac && req.abortAfter! > 0 ? setTimeout(() => ac.abort(), req.abortAfter) : null;
  const options = ac ? { ...req.options, signal: ac.signal } : req.options;
  try {
    if (req.readDeltas !== undefined) {
      const it = engine.stream(req.prompt as Prompt, options);
      let n = 0;
      for await (const d of it) {
        if (d.token !== null) n++;
        if (n >= req.readDeltas) break; // the consumer walks away: the engine must abort and free the request
      }
      return { settled: true, ok: true, finish: 'consumer-stopped', tokens: n };
    }
    const res = await engine.generate(req.prompt as Prompt, options);
    return { settled: true, ok: true, finish: res.finishReason, tokens: res.completionTokens };
  } catch (err) {
    if (!(err instanceof Error)) return { settled: true, ok: false, error: 'non-Error', tokens: 0, problem: `rejected with a non-Error: ${String(err)}` };
    if (!err.message) return { settled: true, ok: false, error: err.name, tokens: 0, problem: `rejected with an empty message (${err.name})` };
    if (err.name === 'AbortError') return { settled: true, ok: true, finish: 'abort (rejected)', tokens: 0 };
    return { settled: true, ok: false, error: err.name, message: err.message, tokens: 0 };
  } finally {
    if (timer) clearTimeout(timer);
  }
}

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  const gc = (globalThis as { gc?: () => void }).gc;
  const t0 = performance.now();
  const engine = await Engine.load(o.model, { backend: o.backend, kvCacheBytes: 6 * 2 ** 20, maxSequences: 16 });
  const c = engine.info.config;
  console.log(`soak: ${path.relative(process.cwd(), o.model)} on ${engine.info.backend} (${runtimeInfo().isa ?? 'js'}), ${o.minutes} min, ${o.concurrency} concurrent, seed ${o.seed}, checks every ${o.checkSeconds} s`);
  const r = new Rng(o.seed);
  const endAt = t0 + o.minutes * 60_000;
  const warmupMs = Math.max(30_000, (o.minutes * 60_000) / 4);

  const counts = new Map<string, number>();
  const bump = (k: string) => counts.set(k, (counts.get(k) ?? 0) + 1);
  const problems: string[] = [];
  const acceptedBad = new Map<string, number>();
  let sent = 0, settled = 0, tokens = 0;
  const inflight = new Map<number, { req: Req; since: number }>();
  const samples: { t: number; rss: number; heap: number; stats: Awaited<ReturnType<Engine['stats']>> }[] = [];
  let stuck = 0;

  // The watchdog: a request unsettled after stuckSeconds is a failure (reported once).
  const flagged = new Set<number>();
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const [id, f] of inflight)
      if (!flagged.has(id) && now - f.since > o.stuckSeconds * 1000) {
        flagged.add(id);
        stuck++;
        problems.push(`request #${id} (${f.req.kind}) unsettled after ${o.stuckSeconds} s`);
      }
  }, 1000);

  const launch = (): Promise<void> => {
    const id = ++sent;
    const req = r.chance(0.25) ? badRequest(r, c.vocabSize, c.contextLength) : goodRequest(r, c.vocabSize, engine.info.chatTemplate !== null);
    inflight.set(id, { req, since: performance.now() });
    return runOne(engine, req).then((out) => {
      inflight.delete(id);
      settled++;
      tokens += out.tokens;
      if (out.problem) problems.push(`${req.kind}: ${out.problem}`);
      if (req.bad && out.ok) acceptedBad.set(req.kind, (acceptedBad.get(req.kind) ?? 0) + 1);
      bump(out.ok ? `${req.bad ? 'bad input resolved' : 'resolved'}: ${out.finish}` : `${req.bad ? 'bad input rejected' : 'rejected'}: ${out.error}`);
      if (!req.bad && !out.ok && out.error !== 'KvCacheFullError') problems.push(`good request ${req.kind} rejected with ${out.error}: ${out.message} (options ${JSON.stringify(req.options)})`);
    });
  };

  let nextCheck = performance.now() + o.checkSeconds * 1000;
  while (performance.now() < endAt) {
    // Keep `concurrency` requests in flight until the next check, then let everything settle.
    const running = new Set<Promise<void>>();
    while (performance.now() < Math.min(nextCheck, endAt)) {
      while (running.size < o.concurrency) {
        const p: Promise<void> = launch().finally(() => running.delete(p));
        running.add(p);
      }
      await Promise.race(running);
      if (r.chance(0.05)) await engine.stats(); // stats while busy must answer too
    }
    await Promise.all(running);
    const stats = await engine.stats();
    gc?.();
    const mu = process.memoryUsage();
    samples.push({ t: (performance.now() - t0) / 1000, rss: mu.rss, heap: mu.heapUsed, stats });
    if (stats.running || stats.waiting || stats.kvBlocksUsed)
      problems.push(`at ${samples.at(-1)!.t.toFixed(0)} s, quiescent engine reports running ${stats.running}, waiting ${stats.waiting}, KV blocks used ${stats.kvBlocksUsed}`);
    nextCheck = performance.now() + o.checkSeconds * 1000;
  }
  clearInterval(watchdog);
  const wall = (performance.now() - t0) / 1000;
  await engine.dispose();

  // ---- RSS trend after warm-up ----
  const post = samples.filter((s) => s.t * 1000 >= warmupMs);
  let slope = 0, growth = 0;
  if (post.length >= 2) {
    const n = post.length, mx = post.reduce((a, s) => a + s.t, 0) / n, my = post.reduce((a, s) => a + mb(s.rss), 0) / n;
    const sxy = post.reduce((a, s) => a + (s.t - mx) * (mb(s.rss) - my), 0), sxx = post.reduce((a, s) => a + (s.t - mx) ** 2, 0);
    slope = sxx > 0 ? (sxy / sxx) * 60 : 0; // MiB per minute
    growth = mb(post.at(-1)!.rss) - Math.min(...post.map((s) => mb(s.rss)));
    if (growth > o.rssBoundMb) problems.push(`RSS grew ${growth.toFixed(1)} MiB after warm-up (bound ${o.rssBoundMb} MiB)`);
  }

  // ---- summary ----
  console.log(`\n${'outcome'.padEnd(44)}${'count'.padStart(8)}`);
  for (const [k, n] of [...counts].sort((a, b) => b[1] - a[1])) console.log(`${k.padEnd(44)}${String(n).padStart(8)}`);
  console.log(`\nrequests ${sent} sent, ${settled} settled, ${stuck} stuck; ${tokens} tokens generated (${(tokens / wall).toFixed(0)} tok/s over ${wall.toFixed(0)} s)`);
  console.log(`\n${'t (s)'.padStart(7)}${'RSS MiB'.padStart(10)}${'heap MiB'.padStart(10)}${'KV used'.padStart(9)}${'cached'.padStart(8)}${'free'.padStart(7)}${'hit rate'.padStart(10)}${'preempt'.padStart(9)}`);
  for (const s of samples)
    console.log(`${s.t.toFixed(0).padStart(7)}${mb(s.rss).toFixed(1).padStart(10)}${mb(s.heap).toFixed(1).padStart(10)}${String(s.stats.kvBlocksUsed).padStart(9)}${String(s.stats.kvBlocksCached).padStart(8)}${String(s.stats.kvBlocksFree).padStart(7)}${s.stats.prefixHitRate.toFixed(2).padStart(10)}${String(s.stats.preemptions).padStart(9)}${s.t * 1000 < warmupMs ? '  (warm-up)' : ''}`);
  console.log(`RSS after warm-up (${(warmupMs / 1000).toFixed(0)} s): slope ${slope.toFixed(2)} MiB/min, growth ${growth.toFixed(1)} MiB (bound ${o.rssBoundMb} MiB), ${post.length} samples`);
  if (acceptedBad.size) console.log(`bad inputs that were accepted (not failures, but validation gaps): ${[...acceptedBad].map(([k, n]) => `${k} x${n}`).join(', ')}`);
  if (problems.length) {
    // Grouped by message with numbers and the example's options left out: one line per distinct problem.
    const groups = new Map<string, { n: number; example: string }>();
    for (const p of problems) {
      const key = p.replace(/ \(options .*\)$/, '').replace(/-?\d+(\.\d+)?/g, 'N').replace(/good request \S+/, 'good request');
      const g = groups.get(key);
      if (g) g.n++;
      else groups.set(key, { n: 1, example: p });
    }
    console.log(`\nsoak: FAILED (${problems.length} problem(s), ${groups.size} distinct)`);
    for (const g of [...groups.values()].sort((a, b) => b.n - a.n).slice(0, 20)) console.log(`  ${g.n}x  e.g. ${g.example}`);
    return 1;
  }
  console.log('\nsoak: ok');
  return 0;
}

process.exit(await main());
