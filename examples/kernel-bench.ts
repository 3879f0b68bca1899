/**
 * Calling tessera's kernels directly: a few of the ops a transformer layer is made of (linear over
 * f32 / f16 / q4_0 weights, RMSNorm, RoPE, causal FlashAttention, SwiGLU, softmax), each run on the
 * native `cpu` backend and on the pure-TypeScript `js` backend with the same inputs. Each row first
 * checks that the two agree (relative L2 error of cpu against js, the reference), then times both
 * and prints the speedup. (`npm run bench` is the full benchmark, with rates against the machine's
 * peak; this is the short version to read.)
 *
 *   npx tsx examples/kernel-bench.ts [--size tiny|small|full] [--time MS] [--json FILE]
 *
 * --size scales the shapes (full: a 7B-layer-like width of 4096; default small); --time is the
 * time spent per measurement (default 200 ms). Needs the native addon (`npm run build:native`).
 */
import { writeFileSync } from 'node:fs';
import { getBackend, runtimeInfo, Tensor, type Backend } from 'tessera';

const SIZES = {
  tiny: { dim: 128, tokens: 8, heads: 4, headDim: 32, seq: 32 },
  small: { dim: 1024, tokens: 32, heads: 8, headDim: 64, seq: 256 },
  full: { dim: 4096, tokens: 64, heads: 32, headDim: 128, seq: 1024 },
} as const;

function arg(name: string): string | undefined {
  const a = process.argv.slice(2);
  const i = a.indexOf(name);
  return i >= 0 ? a[i + 1] : undefined;
}

const sizeName = arg('--size') ?? 'small';
if (!(sizeName in SIZES)) throw new RangeError(`Expected tiny, small or full for --size but received ${sizeName}`);
const size = SIZES[sizeName as keyof typeof SIZES];
const timeMs = Number(arg('--time') ?? 200);
if (!(timeMs > 0)) throw new RangeError(`Expected a positive number of milliseconds for --time but received ${arg('--time')}`);

const info = runtimeInfo();
if (!info.native) {
  console.error(`kernel-bench: the native addon is not available (${info.nativeError}); build it with npm run build:native`);
  process.exit(1);
}
const cpu = getBackend('cpu');
const js = getBackend('js');

// Deterministic inputs (an LCG), so every run compares the same numbers.
let seed = 1;
function random(shape: number[], scale = 1): Tensor<'f32'> {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    d[i] = (seed / 2 ** 32 - 0.5) * scale;
  }
  return new Tensor('f32', shape, d);
}

/** ||a - ref|| / ||ref||. */
function relL2(a: Float32Array, ref: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - ref[i]!) ** 2;
    den += ref[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/** Median milliseconds per call: batches of calls long enough to time, five batches after a warm-up. */
function time(fn: () => unknown): number {
  fn();
  let reps = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    const ms = performance.now() - t0;
    if (ms >= timeMs / 5 || reps >= 1 << 20) break;
    reps *= ms > 0 ? Math.min(16, Math.ceil(timeMs / 5 / ms)) : 16;
  }
  const samples: number[] = [];
  for (let s = 0; s < 5; s++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    samples.push((performance.now() - t0) / reps);
  }
  return samples.sort((a, b) => a - b)[2]!;
}

interface Row {
  kernel: string;
  shape: string;
  jsMs: number;
  cpuMs: number;
  speedup: number;
  relErr: number;
}

const { dim, tokens, heads, headDim, seq } = size;
const x1 = random([1, dim]), xm = random([tokens, dim]);
const wf32 = random([dim, dim], 0.1);
const wf16 = Tensor.from('f16', [dim, dim], wf32.data);
const wq4 = Tensor.from('q4_0', [dim, dim], wf32.data);
const norm = random([dim]);
const qa = random([seq, heads, headDim]), ka = random([seq, heads / 2, headDim]), va = random([seq, heads / 2, headDim]);
const positions = Tensor.from('i32', [seq], Array.from({ length: seq }, (_, i) => i));
const gate = random([tokens, 4 * dim]), up = random([tokens, 4 * dim]);
const logits = random([tokens, 8 * dim], 8);

// Each op writes into an output allocated once per backend (the ops' `out` argument), so the rows
// time the kernels rather than allocating and zeroing fresh memory on every call.
const cases: { kernel: string; shape: string; run: (be: Backend, out: Tensor | null) => Tensor }[] = [
  { kernel: 'linear f32 (GEMV)', shape: `[1, ${dim}] x [${dim}, ${dim}]^T`, run: (be, out) => be.linear(x1, wf32, null, out) },
  { kernel: 'linear f16 (GEMV)', shape: `[1, ${dim}] x [${dim}, ${dim}]^T`, run: (be, out) => be.linear(x1, wf16, null, out) },
  { kernel: 'linear q4_0 (GEMV)', shape: `[1, ${dim}] x [${dim}, ${dim}]^T`, run: (be, out) => be.linear(x1, wq4, null, out) },
  { kernel: 'linear f32 (GEMM)', shape: `[${tokens}, ${dim}] x [${dim}, ${dim}]^T`, run: (be, out) => be.linear(xm, wf32, null, out) },
  { kernel: 'rmsNorm', shape: `[${tokens}, ${dim}]`, run: (be, out) => be.rmsNorm(xm, norm, 1e-5, out) },
  { kernel: 'rope (neox)', shape: `[${seq}, ${heads}, ${headDim}]`, run: (be, out) => be.rope(qa, positions, { out }) },
  { kernel: 'flashAttention causal GQA', shape: `q [${seq}, ${heads}, ${headDim}], kv ${heads / 2} heads`, run: (be, out) => be.flashAttention(qa, ka, va, { causal: true, out }) },
  { kernel: 'swiglu', shape: `[${tokens}, ${4 * dim}]`, run: (be, out) => be.swiglu(gate, up, out) },
  { kernel: 'softmax', shape: `[${tokens}, ${8 * dim}]`, run: (be, out) => be.softmax(logits, 1, out) },
];

const rows: Row[] = [];
for (const c of cases) {
  // Validate before timing: the native result against the js reference.
  const cpuOut = c.run(cpu, null), jsOut = c.run(js, null);
  const relErr = relL2(cpuOut.data as Float32Array, jsOut.data as Float32Array);
  const jsMs = time(() => c.run(js, jsOut));
  const cpuMs = time(() => c.run(cpu, cpuOut));
  rows.push({ kernel: c.kernel, shape: c.shape, jsMs, cpuMs, speedup: jsMs / cpuMs, relErr });
}

const fmt = (ms: number) => (ms >= 1 ? `${ms.toFixed(2)} ms` : `${(ms * 1e3).toFixed(1)} us`);
const table = [
  ['kernel', 'shape', 'js', `cpu (${info.isa}, ${info.threads} threads)`, 'speedup', 'cpu vs js rel. error'],
  ...rows.map((r) => [r.kernel, r.shape, fmt(r.jsMs), fmt(r.cpuMs), `${r.speedup.toFixed(1)}x`, r.relErr.toExponential(1)]),
];
const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
const line = (r: string[]) => `| ${r.map((c, i) => (i >= 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
console.log(`kernel-bench --size ${sizeName}: js (TypeScript reference) vs cpu (native), median of 5\n`);
console.log(line(table[0]!));
console.log(`|${widths.map((w, i) => (i >= 2 ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`);
for (const r of table.slice(1)) console.log(line(r));

const json = arg('--json');
if (json) writeFileSync(json, JSON.stringify({ size: sizeName, isa: info.isa, threads: info.threads, rows }, null, 1));
