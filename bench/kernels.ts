/**
 * Kernel benchmark: one row per kernel and shape with the JS baseline and the native time side by
 * side, the speedup, the native rate (GFLOP/s or GB/s) and that rate as a fraction of this
 * machine's peak measured in the same run (an FMA loop for FLOP/s; the faster of a streaming
 * read and a large copy for bandwidth). JS rows may use smaller shapes: compare rates. Outputs are
 * preallocated (the ops' `out` argument) so rows time the kernels, not fresh-memory page faults;
 * GEMV rows cycle through enough weight copies (>= 256 MB) that weights come from DRAM, not cache.
 *
 *   npm run bench [-- --json FILE] [-- --filter SUBSTRING] [-- --time MS]
 *
 * --filter keeps the rows whose "kernel shape" contains SUBSTRING, ignoring case; when none does,
 * it says so, lists the kernels and exits 1. Inputs are only built for selected rows.
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { Bench } from 'tinybench';
import { encodeHalf, getBackend, runtimeInfo, Tensor, type Backend } from '../src/index.js';
import { loadNative } from '../src/backend/cpu/native.js';
import { packCols, packRows, type GptqLinear } from '../src/tensor/gptq.js';
import { IntWeight } from '../src/tensor/int-weight.js';

const args = process.argv.slice(2);
const argValue = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const jsonOut = argValue('--json');
const filterArg = argValue('--filter');
if (args.includes('--filter') && (filterArg === undefined || filterArg.startsWith('--'))) {
  console.error('bench: --filter needs a substring of a kernel name, e.g. --filter gemv');
  process.exit(2);
}
const filter = filterArg?.toLowerCase();
/** Every row name met so far (to list when the filter matched none). */
const names: string[] = [];
/** Whether any of these row names ("kernel shape") passes --filter (case-insensitive). */
function selected(...rowNames: string[]): boolean {
  names.push(...rowNames);
  return !filter || rowNames.some((n) => n.toLowerCase().includes(filter));
}
const timeMs = Number(argValue('--time') ?? 400);

const native = loadNative();
if (!native) {
  console.error('bench: the native addon is not built (npm run build:native)');
  process.exit(1);
}
const cpu = getBackend('cpu');
const js = getBackend('js');
const info = runtimeInfo();

let seed = 42;
function rand(): number {
  seed = (seed * 1664525 + 1013904223) >>> 0;
  return seed / 4294967296 - 0.5;
}
function f32(shape: number[], scale = 1): Tensor<'f32'> {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = rand() * scale;
  return new Tensor('f32', shape, d);
}
function half(dt: 'f16' | 'bf16', shape: number[]): Tensor {
  const t = f32(shape, 0.5);
  return new Tensor(dt, shape, encodeHalf(t.data, dt));
}

/** Median seconds per call of fn (tinybench samples, after warm-up). */
async function time(fn: () => unknown, ms = timeMs): Promise<number> {
  const b = new Bench({ time: ms, warmupTime: Math.min(200, ms), iterations: 3 });
  b.add('x', fn);
  await b.run();
  const s = [...b.tasks[0]!.result!.samples].sort((a, c) => a - c);
  return s[Math.floor(s.length / 2)]! / 1e3;
}

/** A random GPTQ layer (K inputs, N outputs) in the kernel layout. */
function gptqWeight(N: number, K: number, bits: 4 | 8, gs: number, actOrder: boolean): IntWeight {
  const G = K / gs, maxq = (1 << bits) - 1;
  const q = Uint8Array.from({ length: K * N }, () => Math.floor((rand() + 0.5) * maxq));
  const z = Uint8Array.from({ length: G * N }, () => Math.floor((rand() + 0.5) * maxq));
  const gIdx = Int32Array.from({ length: K }, (_, k) => (actOrder ? (k * 7919) % G : Math.floor(k / gs)));
  const layer: GptqLinear = {
    bits, groupSize: gs, K, N, qweight: packRows(q, K, N, bits), qzeros: packCols(z, G, N, bits),
    scales: encodeHalf(Array.from({ length: G * N }, () => 0.01 + 0.01 * rand()), 'f16'), gIdx, zeroFormat: 'v2',
  };
  return IntWeight.fromGptq(layer);
}
function int8Weight(N: number, K: number): IntWeight {
  const q = Int8Array.from({ length: N * K }, () => Math.round(rand() * 254));
  return IntWeight.fromInt8(q, Float32Array.from({ length: N }, () => 0.01 + 0.01 * rand()), N, K);
}

// ---- machine peaks ---------------------------------------------------------------------------
async function peaks() {
  native!.fmaPeak(2e6); // warm up clocks
  let flops = 0;
  for (let i = 0; i < 5; i++) {
    const r = native!.fmaPeak(2e7);
    flops = Math.max(flops, r.flops / r.seconds);
  }
  const big = new Float32Array(64 << 20); // 256 MiB
  big.fill(1);
  const dst = new Float32Array(big.length);
  dst.fill(1);
  // A peak is the best observed rate: min time over repeated passes.
  let readS = Infinity, copyS = Infinity;
  for (let i = 0; i < 12; i++) {
    let t0 = performance.now();
    native!.readStream(big);
    readS = Math.min(readS, (performance.now() - t0) / 1e3);
    t0 = performance.now();
    dst.set(big);
    copyS = Math.min(copyS, (performance.now() - t0) / 1e3);
  }
  const read = big.byteLength / readS;
  const copy = (2 * big.byteLength) / copyS; // bytes read + written
  return { flops, read, copy, bw: Math.max(read, copy) };
}

interface Row {
  kernel: string;
  shape: string;
  jsShape: string;
  jsMs: number | null;
  nativeMs: number;
  speedup: number | null; // JS time per unit of work / native time per unit of work
  rate: number;
  unit: 'GFLOP/s' | 'GB/s';
  ofPeak: number;
  jsRate: number | null;
}

const rows: Row[] = [];

interface Case {
  kernel: string;
  shape: string;
  unit: 'GFLOP/s' | 'GB/s';
  /** Work (flops or bytes) of one native call. */
  work: number;
  run: (be: Backend) => unknown;
  /** A smaller JS variant, with its own work; default: the same call. */
  jsShape?: string;
  jsWork?: number;
  jsRun?: (be: Backend) => unknown;
  skipJs?: boolean;
}

type Peaks = Awaited<ReturnType<typeof peaks>>;
let peaksOnce: Promise<Peaks> | null = null;
/** The machine peaks, measured (and printed) before the first selected row only. */
function machinePeaks(): Promise<Peaks> {
  return (peaksOnce ??= peaks().then((pk) => {
    console.log(`peaks: FMA ${(pk.flops / 1e9).toFixed(1)} GFLOP/s; read ${(pk.read / 1e9).toFixed(1)} GB/s; copy ${(pk.copy / 1e9).toFixed(1)} GB/s (bandwidth peak used: ${(pk.bw / 1e9).toFixed(1)} GB/s)\n`);
    return pk;
  }));
}

async function measure(c: Case) {
  if (!selected(`${c.kernel} ${c.shape}`)) return;
  const pk = await machinePeaks();
  const nativeS = await time(() => c.run(cpu));
  let jsS: number | null = null;
  let jsWork = c.jsWork ?? c.work;
  if (!c.skipJs) {
    const run = c.jsRun ?? c.run;
    jsS = await time(() => run(js), Math.max(timeMs, 300));
  }
  const rate = c.work / nativeS / 1e9;
  const jsRate = jsS === null ? null : jsWork / jsS / 1e9;
  const peak = c.unit === 'GFLOP/s' ? pk.flops / 1e9 : pk.bw / 1e9;
  const row: Row = {
    kernel: c.kernel,
    shape: c.shape,
    jsShape: c.skipJs ? '-' : (c.jsShape ?? c.shape),
    jsMs: jsS === null ? null : jsS * 1e3,
    nativeMs: nativeS * 1e3,
    speedup: jsRate === null ? null : rate / jsRate,
    rate,
    unit: c.unit,
    ofPeak: rate / peak,
    jsRate,
  };
  rows.push(row);
  const f = (x: number | null, d = 2) => (x === null ? '-' : x.toFixed(d));
  console.log(
    `${(c.kernel + ' ' + c.shape).padEnd(52)} js ${f(row.jsMs, 2).padStart(9)} ms (${row.jsShape})  native ${f(row.nativeMs, 3).padStart(9)} ms  ` +
      `${f(row.speedup, 1).padStart(6)}x  ${f(rate, 1).padStart(7)} ${c.unit}  ${(100 * row.ofPeak).toFixed(0).padStart(3)}% of peak`,
  );
}

async function main() {
  console.log(`tessera kernel bench — ${new Date().toISOString().slice(0, 10)} — ${os.cpus()[0]?.model ?? 'cpu'} — ` +
    `node ${process.version} — native path ${info.isa}, ${info.threads} threads`);

  // GEMM (prefill): native at full size, JS at a smaller one; compare rates.
  for (const dt of ['f32', 'f16', 'bf16'] as const) {
    const M = 1024, N = 1024, K = 1024;
    if (!selected(`linear ${dt} GEMM ${M}x${N}x${K}`)) continue;
    const x = f32([M, K]), w = dt === 'f32' ? f32([N, K]) : half(dt, [N, K]);
    const xs = f32([128, 256]), ws = dt === 'f32' ? f32([256, 256]) : half(dt, [256, 256]);
    const y = f32([M, N]), ys = f32([128, 256]);
    await measure({
      kernel: `linear ${dt} GEMM`, shape: `${M}x${N}x${K}`, unit: 'GFLOP/s', work: 2 * M * N * K, run: (be) => be.linear(x, w, null, y),
      jsShape: '128x256x256', jsWork: 2 * 128 * 256 * 256, jsRun: (be) => be.linear(xs, ws, null, ys),
    });
  }
  if (selected('linear f16 prefill 64x4096x4096')) {
    const M = 64, N = 4096, K = 4096;
    const x = f32([M, K]), w = half('f16', [N, K]);
    const xs = f32([16, 1024]), ws = half('f16', [512, 1024]);
    const y = f32([M, N]), ys = f32([16, 512]);
    await measure({
      kernel: 'linear f16 prefill', shape: `${M}x${N}x${K}`, unit: 'GFLOP/s', work: 2 * M * N * K, run: (be) => be.linear(x, w, null, y),
      jsShape: '16x512x1024', jsWork: 2 * 16 * 512 * 1024, jsRun: (be) => be.linear(xs, ws, null, ys),
    });
  }
  // GEMV (decode): memory-bound; rate = weight bytes read per second.
  for (const dt of ['f32', 'f16', 'bf16'] as const) {
    const N = 4096, K = 4096;
    if (!selected(`linear ${dt} GEMV 1x${N}x${K}`)) continue;
    const x = f32([1, K]), y = f32([1, N]);
    const copies = Array.from({ length: Math.ceil(256e6 / (N * K * (dt === 'f32' ? 4 : 2))) }, () => (dt === 'f32' ? f32([N, K]) : half(dt, [N, K])));
    let i = 0;
    await measure({ kernel: `linear ${dt} GEMV`, shape: `1x${N}x${K}`, unit: 'GB/s', work: copies[0]!.byteLength, run: (be) => be.linear(x, copies[i++ % copies.length]!, null, y) });
  }
  // Quantised weights (llama.cpp's q8_0 / q4_0 integer dots): GEMV rate = weight bytes read per
  // second, prefill = 2*M*N*K per second. Quantising 16M values in JS takes seconds: skip unless selected.
  for (const dt of ['q8_0', 'q4_0'] as const) {
    const M = 64, N = 4096, K = 4096;
    if (!selected(`linear ${dt} GEMV 1x${N}x${K}`, `linear ${dt} prefill ${M}x${N}x${K}`, ...(dt === 'q4_0' ? [`linear q4_0 repacked GEMV 1x${N}x${K}`, `linear q4_0 repacked prefill ${M}x${N}x${K}`] : []))) continue;
    const w = Tensor.from(dt, [N, K], f32([N, K], 0.5).data);
    const x = f32([1, K]), xm = f32([M, K]), y = f32([1, N]), ym = f32([M, N]);
    const xs = f32([16, 1024]), ws = Tensor.from(dt, [512, 1024], f32([512, 1024], 0.5).data), ys = f32([16, 512]);
    // byte copies of the one quantised matrix, enough to spill the caches
    const copies = [w, ...Array.from({ length: Math.ceil(256e6 / w.byteLength) - 1 }, () => new Tensor(dt, [N, K], (w.data as Uint8Array).slice()))];
    let i = 0;
    await measure({ kernel: `linear ${dt} GEMV`, shape: `1x${N}x${K}`, unit: 'GB/s', work: w.byteLength, run: (be) => be.linear(x, copies[i++ % copies.length]!, null, y) });
    await measure({
      kernel: `linear ${dt} prefill`, shape: `${M}x${N}x${K}`, unit: 'GFLOP/s', work: 2 * M * N * K, run: (be) => be.linear(xm, w, null, ym),
      jsShape: '16x512x1024', jsWork: 2 * 16 * 512 * 1024, jsRun: (be) => be.linear(xs, ws, null, ys),
    });
    if (dt === 'q4_0') {
      // The same blocks repacked into column tiles (what the GGUF loader runs Q4_0 projections on).
      const rp = IntWeight.fromQ4_0(w.data as Uint8Array, N, K);
      const rcopies = [rp, ...Array.from({ length: Math.ceil(256e6 / rp.byteLength) - 1 }, () => rp.clone())];
      const rs = IntWeight.fromQ4_0(ws.data as Uint8Array, 512, 1024);
      let j = 0;
      await measure({ kernel: 'linear q4_0 repacked GEMV', shape: `1x${N}x${K}`, unit: 'GB/s', work: rp.byteLength, run: (be) => be.linear(x, rcopies[j++ % rcopies.length]!, null, y) });
      await measure({
        kernel: 'linear q4_0 repacked prefill', shape: `${M}x${N}x${K}`, unit: 'GFLOP/s', work: 2 * M * N * K, run: (be) => be.linear(xm, rp, null, ym),
        jsShape: '16x512x1024', jsWork: 2 * 16 * 512 * 1024, jsRun: (be) => be.linear(xs, rs, null, ys),
      });
    }
  }
  // Integer weights: GPTQ int4 / int8 (g128; act-order) and int8 per channel. GEMV rate = bytes of
  // the kernel layout read per second (weights + scales/zeros), prefill = 2*M*N*K per second.
  for (const [name, bits, act] of [['gptq int4 g128', 4, false], ['gptq int4 g128 act-order', 4, true], ['gptq int8 g128', 8, false], ['int8 per-channel', 8, false]] as const) {
    const M = 64, N = 4096, K = 4096;
    if (!selected(`linear ${name} GEMV 1x${N}x${K}`, `linear ${name} prefill ${M}x${N}x${K}`)) continue;
    const w = name.startsWith('int8 per') ? int8Weight(N, K) : gptqWeight(N, K, bits, 128, act);
    const x = f32([1, K]), xm = f32([M, K]), y = f32([1, N]), ym = f32([M, N]);
    const ws = name.startsWith('int8 per') ? int8Weight(512, 1024) : gptqWeight(512, 1024, bits, 128, act);
    const xs = f32([16, 1024]), ys = f32([16, 512]);
    const copies = [w, ...Array.from({ length: Math.ceil(256e6 / w.byteLength) - 1 }, () => w.clone())];
    let i = 0;
    await measure({ kernel: `linear ${name} GEMV`, shape: `1x${N}x${K}`, unit: 'GB/s', work: w.byteLength, run: (be) => be.linear(x, copies[i++ % copies.length]!, null, y) });
    await measure({
      kernel: `linear ${name} prefill`, shape: `${M}x${N}x${K}`, unit: 'GFLOP/s', work: 2 * M * N * K, run: (be) => be.linear(xm, w, null, ym),
      jsShape: '16x512x1024', jsWork: 2 * 16 * 512 * 1024, jsRun: (be) => be.linear(xs, ws, null, ys),
    });
  }
  // Decode speed of each weight format relative to f16 (same 4096 x 4096 GEMV, this run).
  const f16Gemv = rows.find((r) => r.kernel === 'linear f16 GEMV');
  if (f16Gemv) {
    console.log('\nGEMV 1x4096x4096 time vs f16 (higher = faster):');
    for (const r of rows.filter((r) => r.kernel.endsWith(' GEMV') && r.kernel !== 'linear f16 GEMV'))
      console.log(`  ${r.kernel.padEnd(40)} ${r.nativeMs.toFixed(3).padStart(8)} ms  ${(f16Gemv.nativeMs / r.nativeMs).toFixed(2)}x f16 (${f16Gemv.nativeMs.toFixed(3)} ms)`);
    console.log('');
  }
  // Attention
  if (selected('flashAttention causal T=S=2048 H=32 D=128')) {
    const T = 2048, H = 32, D = 128;
    const q = f32([T, H, D]), k = f32([T, H, D]), v = f32([T, H, D]);
    const Ts = 256, Hs = 4;
    const qs = f32([Ts, Hs, D]), ks = f32([Ts, Hs, D]), vs = f32([Ts, Hs, D]);
    const o = f32([T, H, D]);
    const flops = (4 * T * T * D * H) / 2;
    await measure({
      kernel: 'flashAttention causal', shape: `T=S=${T} H=${H} D=${D}`, unit: 'GFLOP/s', work: flops,
      run: (be) => be.flashAttention(q, k, v, { causal: true, out: o }),
      jsShape: `T=S=${Ts} H=${Hs}`, jsWork: (4 * Ts * Ts * D * Hs) / 2, jsRun: (be) => be.flashAttention(qs, ks, vs, { causal: true }),
    });
  }
  if (selected('pagedAttention decode B=8 ctx=1024 Hq=32 Hkv=8 D=128')) {
    const B = 8, ctx = 1024, Hq = 32, Hkv = 8, D = 128, bs = 16;
    const maxBlocks = ctx / bs, numBlocks = B * maxBlocks;
    const kc = f32([numBlocks, bs, Hkv, D]), vc = f32([numBlocks, bs, Hkv, D]);
    const tables = new Tensor('i32', [B, maxBlocks], Int32Array.from({ length: B * maxBlocks }, (_, i) => (i * 7919) % numBlocks));
    const batch = {
      blockTables: tables,
      contextLens: new Tensor('i32', [B], new Int32Array(B).fill(ctx)),
      queryStart: new Tensor('i32', [B + 1], Int32Array.from({ length: B + 1 }, (_, i) => i)),
    };
    const q = f32([B, Hq, D]), o = f32([B, Hq, D]);
    await measure({
      kernel: 'pagedAttention decode', shape: `B=${B} ctx=${ctx} Hq=${Hq} Hkv=${Hkv} D=${D}`, unit: 'GB/s',
      work: 2 * B * ctx * Hkv * D * 4, run: (be) => be.pagedAttention(q, kc, vc, batch, { out: o }),
    });
  }
  // Memory-bound elementwise / row ops: bytes = inputs read + outputs written.
  if (selected(...['rmsNorm', 'layerNorm', 'softmax', 'silu', 'gelu tanh', 'swiglu', 'add'].map((k) => `${k} 512x4096`))) {
    const R = 512, Dm = 4096;
    const x = f32([R, Dm]), w = f32([Dm]), u = f32([R, Dm]), y = f32([R, Dm]);
    await measure({ kernel: 'rmsNorm', shape: `${R}x${Dm}`, unit: 'GB/s', work: 2 * x.byteLength, run: (be) => be.rmsNorm(x, w, 1e-5, y) });
    await measure({ kernel: 'layerNorm', shape: `${R}x${Dm}`, unit: 'GB/s', work: 2 * x.byteLength, run: (be) => be.layerNorm(x, w, w, 1e-5, y) });
    await measure({ kernel: 'softmax', shape: `${R}x${Dm}`, unit: 'GB/s', work: 2 * x.byteLength, run: (be) => be.softmax(x, 1, y) });
    await measure({ kernel: 'silu', shape: `${R}x${Dm}`, unit: 'GB/s', work: 2 * x.byteLength, run: (be) => be.silu(x, y) });
    await measure({ kernel: 'gelu tanh', shape: `${R}x${Dm}`, unit: 'GB/s', work: 2 * x.byteLength, run: (be) => be.gelu(x, 'tanh', y) });
    await measure({ kernel: 'swiglu', shape: `${R}x${Dm}`, unit: 'GB/s', work: 3 * x.byteLength, run: (be) => be.swiglu(x, u, y) });
    await measure({ kernel: 'add', shape: `${R}x${Dm}`, unit: 'GB/s', work: 3 * x.byteLength, run: (be) => be.add(x, u, y) });
  }
  if (selected('rope neox T=512 H=32 D=128')) {
    const T = 512, H = 32, D = 128;
    const x = f32([T, H, D]);
    const pos = new Tensor('i32', [T], Int32Array.from({ length: T }, (_, i) => i));
    const y = f32([T, H, D]);
    await measure({ kernel: 'rope neox', shape: `T=${T} H=${H} D=${D}`, unit: 'GB/s', work: 2 * x.byteLength, run: (be) => be.rope(x, pos, { out: y }) });
  }
  if (selected('embedding f16 512 ids, 32000x2048')) {
    const V = 32000, D = 2048, n = 512;
    const table = half('f16', [V, D]);
    const ids = new Tensor('i32', [n], Int32Array.from({ length: n }, (_, i) => (i * 7919) % V));
    const y = f32([n, D]);
    await measure({ kernel: 'embedding f16', shape: `${n} ids, ${V}x${D}`, unit: 'GB/s', work: n * D * 6, run: (be) => be.embedding(table, ids, y) });
  }
  if (selected('crossEntropy 128x32000', 'logSoftmax 128x32000', 'topK k=40 8x32000')) {
    const R = 128, V = 32000;
    const logits = f32([R, V], 8);
    const targets = new Tensor('i32', [R], Int32Array.from({ length: R }, (_, i) => (i * 31) % V));
    await measure({ kernel: 'crossEntropy', shape: `${R}x${V}`, unit: 'GB/s', work: logits.byteLength, run: (be) => be.crossEntropy(logits, targets) });
    const ls = f32([R, V]);
    await measure({ kernel: 'logSoftmax', shape: `${R}x${V}`, unit: 'GB/s', work: 2 * logits.byteLength, run: (be) => be.logSoftmax(logits, 1, ls) });
    const one = f32([8, V], 8);
    await measure({ kernel: 'topK k=40', shape: `8x${V}`, unit: 'GB/s', work: one.byteLength, run: (be) => be.topK(one, 40) });
  }
  if (selected('moeRoute top-2 T=512 E=8', 'moeGather T=512 k=2 D=1024')) {
    const T = 512, E = 8, D = 1024;
    const logits = f32([T, E]), x = f32([T, D]);
    await measure({ kernel: 'moeRoute top-2', shape: `T=${T} E=${E}`, unit: 'GB/s', work: logits.byteLength, run: (be) => be.moeRoute(logits, 2) });
    const route = cpu.moeRoute(logits, 2);
    await measure({ kernel: 'moeGather', shape: `T=${T} k=2 D=${D}`, unit: 'GB/s', work: 3 * x.byteLength * 2, run: (be) => be.moeGather(x, route) });
  }

  if (filter && rows.length === 0) {
    console.error(`bench: no kernel matched --filter '${filterArg}' (case-insensitive substring of "kernel shape"). Kernels:\n  ${[...new Set(names)].join('\n  ')}`);
    process.exitCode = 1;
    return;
  }
  const pk = await machinePeaks();
  if (jsonOut) {
    writeFileSync(jsonOut, JSON.stringify({
      date: new Date().toISOString(), cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version,
      isa: info.isa, threads: info.threads,
      peaks: { fmaGflops: pk.flops / 1e9, readGBs: pk.read / 1e9, copyGBs: pk.copy / 1e9, bandwidthGBs: pk.bw / 1e9 },
      rows,
    }, null, 2));
    console.log(`\nwrote ${rows.length} rows to ${jsonOut}`);
  }
}

await main();
