/**
 * Event-loop stalls: how long this thread's event loop goes without running while an Engine loads
 * a model and while it generates. The model runs in a worker thread; test/runtime.test.ts checks
 * only that the loop keeps running (no time budget in tests), this measures how well. For each
 * phase, a 1 ms interval timer gives the longest gap between two of its ticks, and
 * perf_hooks.monitorEventLoopDelay (1 ms resolution) the delay's p50 / p99 / max; "idle" is the
 * same measurement with nothing running, the timer's own jitter on this host.
 *
 *   npm run bench:event-loop [-- --model FILE] [-- --backend cpu|js] [-- --tokens 200] [-- --runs 5]
 *                            [-- --json FILE]
 *   default model: the bundled stories260K
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Engine, runtimeInfo } from '../src/index.js';

const args = process.argv.slice(2);
const arg = (n: string) => {
  const i = args.indexOf(n);
  return i >= 0 ? args[i + 1] : undefined;
};
const model = arg('--model') ?? path.resolve(import.meta.dirname, '../models/stories260K/stories260K.gguf');
const backend = (arg('--backend') ?? (runtimeInfo().native ? 'cpu' : 'js')) as 'cpu' | 'js';
const TOKENS = Number(arg('--tokens') ?? 200);
const runs = Number(arg('--runs') ?? 5);
const jsonOut = arg('--json');

interface Stall { maxGapMs: number; ticks: number; p50Ms: number; p99Ms: number; maxMs: number; wallMs: number }

/** Starts watching the loop; stop() says how long it stalled meanwhile. */
function watchLoop(): { stop(): Stall } {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const t0 = performance.now();
  let last = t0, maxGapMs = 0, ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
    ticks++;
  }, 1);
  return {
    stop() {
      clearInterval(timer);
      h.disable();
      const now = performance.now();
      maxGapMs = Math.max(maxGapMs, now - last);
      return { maxGapMs, ticks, p50Ms: h.percentile(50) / 1e6, p99Ms: h.percentile(99) / 1e6, maxMs: h.max / 1e6, wallMs: now - t0 };
    },
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function once(): Promise<{ idle: Stall; load: Stall; generate: Stall; tokS: number }> {
  let w = watchLoop();
  const engine = await Engine.load(model, { backend });
  const load = w.stop();
  try {
    w = watchLoop();
    let n = 0;
    for await (const d of engine.stream('Once upon a time', { maxTokens: TOKENS, ignoreEos: true, temperature: 0 })) if (d.token !== null) n++;
    const generate = w.stop();
    if (n !== TOKENS) throw new Error(`generated ${n} tokens, expected ${TOKENS}`);
    // Idle for as long as the generation took: the timer's own jitter.
    w = watchLoop();
    await new Promise((r) => setTimeout(r, generate.wallMs));
    const idle = w.stop();
    return { idle, load, generate, tokS: TOKENS / (generate.wallMs / 1e3) };
  } finally {
    await engine.dispose();
  }
}

async function main() {
  console.log(`tessera event-loop bench — ${new Date().toISOString().slice(0, 10)} — ${os.cpus()[0]?.model} x${os.cpus().length}, load average ${os.loadavg()[0]!.toFixed(1)} — ` +
    `${path.basename(model)} on ${backend}, ${TOKENS}-token generations, ${runs} runs`);
  const rows: Awaited<ReturnType<typeof once>>[] = [];
  for (let r = 0; r < runs; r++) {
    const x = await once();
    rows.push(x);
    const fmt = (s: Stall) => `max gap ${s.maxGapMs.toFixed(1)} ms (delay p50 ${s.p50Ms.toFixed(1)}, p99 ${s.p99Ms.toFixed(1)}, max ${s.maxMs.toFixed(1)} ms; ${s.ticks} ticks in ${s.wallMs.toFixed(0)} ms)`;
    console.log(`run ${r + 1}: load ${fmt(x.load)}\n       generate ${fmt(x.generate)}, ${x.tokS.toFixed(0)} tok/s\n       idle ${fmt(x.idle)}`);
  }
  const m = (f: (x: (typeof rows)[number]) => number) => median(rows.map(f)).toFixed(1);
  console.log(`\n| phase | max gap ms (median of ${runs}) | delay p99 ms | delay max ms |`);
  console.log('|---|---|---|---|');
  for (const phase of ['load', 'generate', 'idle'] as const)
    console.log(`| ${phase} | ${m((x) => x[phase].maxGapMs)} | ${m((x) => x[phase].p99Ms)} | ${m((x) => x[phase].maxMs)} |`);
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ date: new Date().toISOString(), model, backend, tokens: TOKENS, rows }, null, 2));
}

await main();
