// GPU timings for bench/gpu/run.sh (plain Node over dist/ and build/):
//  - flashAttention bf16, T = S = 4096, 32 heads, D = 128, causal: TFLOP/s (causal FLOPs: 2 * 2 * T * S * D * H / 2)
//  - GPTQ int4 g128 linear at M = 1, 16, 128 with N = K = 8192
//  - decode tok/s of a TinyLlama-1.1B-shaped model (dim 2048, 22 layers, 32 / 4 heads, ffn 5632,
//    vocab 32000), every projection and the output head GPTQ int4 g128, random weights, f32
//    KV cache in blocks of 16: a whole decode step on the device, token id in, logits out.
// Times: warm-up, then the median of 7 repetitions of a synchronised loop.
import { writeFileSync } from 'node:fs';
import { CudaDevice } from '../../dist/backend/cuda/device.js';
import { packCols } from '../../dist/tensor/gptq.js';
import { f32ToF16 } from '../../dist/tensor/half.js';
import { Tensor } from '../../dist/tensor/tensor.js';

const d = CudaDevice.open();
const out = { device: d.status.device, date: new Date().toISOString() };
let seed = 12345;
const r = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const randn = (n, s = 1) => Float32Array.from({ length: n }, () => (r() + r() + r() + r() - 2) * 1.7 * s);
function time(fn, iters) {
  for (let i = 0; i < 3; i++) fn();
  d.synchronize();
  const reps = [];
  for (let rep = 0; rep < 7; rep++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) fn();
    d.synchronize();
    reps.push(Number(process.hrtime.bigint() - t0) / 1e9 / iters);
  }
  return reps.sort((a, b) => a - b)[3];
}

{
  const T = 4096, H = 32, D = 128;
  const up = (n) => d.upload(Tensor.from('bf16', [T, H, D], randn(n)));
  const q = up(T * H * D), k = up(T * H * D), v = up(T * H * D), o = d.empty('f32', [T, H, D]);
  const s = time(() => d.flashAttention(q, k, v, { causal: true, out: o }), 10);
  const flops = (4 * T * T * D * H) / 2;
  out.flash = { T, S: T, H, D, causal: true, seconds: s, tflops: flops / s / 1e12 };
  console.log(`flashAttention bf16 T=S=${T} H=${H} D=${D} causal: ${(s * 1e3).toFixed(3)} ms, ${(flops / s / 1e12).toFixed(1)} TFLOP/s`);
  [q, k, v, o].forEach((t) => t.dispose());
}

/** A random GPTQ int4 g128 layer (K inputs, N outputs) on the device, built directly as words. */
function randomGptq(K, N) {
  const G = K / 128;
  const qweight = new Int32Array((K / 8) * N);
  for (let i = 0; i < qweight.length; i++) qweight[i] = (r() * 2 ** 32) | 0;
  const z = Uint8Array.from({ length: G * N }, () => 7 + Math.floor(r() * 3));
  return d.uploadGptq({
    bits: 4, groupSize: 128, K, N, qweight, qzeros: packCols(z, G, N, 4),
    scales: Uint16Array.from({ length: G * N }, () => f32ToF16((0.5 + r()) / (8 * Math.sqrt(K)))), gIdx: null, zeroFormat: 'v1',
  });
}

out.gptq = [];
{
  const N = 8192, K = 8192;
  const w = randomGptq(K, N);
  for (const M of [1, 16, 128]) {
    const x = d.upload(new Tensor('f32', [M, K], randn(M * K))), y = d.empty('f32', [M, N]);
    const s = time(() => d.gptqLinear(x, w, y), 50);
    const bytes = (K * N) / 2 + (K / 128) * N * 2.5;
    out.gptq.push({ M, N, K, seconds: s, weightGBs: bytes / s / 1e9, tflops: (2 * M * N * K) / s / 1e12 });
    console.log(`gptq int4 g128 M=${M} N=K=${K}: ${(s * 1e6).toFixed(1)} us (${(bytes / s / 1e9).toFixed(0)} GB/s of weights, ${((2 * M * N * K) / s / 1e12).toFixed(2)} TFLOP/s)`);
    x.dispose();
    y.dispose();
  }
}

{
  const c = { dim: 2048, layers: 22, heads: 32, kvHeads: 4, ffn: 5632, vocab: 32000, hd: 64 };
  const kvd = c.kvHeads * c.hd, bs = 16, ctxMax = 512, nb = ctxMax / bs;
  const ones = d.upload(new Tensor('f32', [c.dim], new Float32Array(c.dim).fill(1)));
  const layers = Array.from({ length: c.layers }, () => ({
    wq: randomGptq(c.dim, c.dim), wk: randomGptq(c.dim, kvd), wv: randomGptq(c.dim, kvd), wo: randomGptq(c.dim, c.dim),
    wg: randomGptq(c.dim, c.ffn), wu: randomGptq(c.dim, c.ffn), wd: randomGptq(c.ffn, c.dim),
    kc: d.empty('f32', [nb, bs, c.kvHeads, c.hd]), vc: d.empty('f32', [nb, bs, c.kvHeads, c.hd]),
  }));
  const head = randomGptq(c.dim, c.vocab);
  const emb = d.upload(Tensor.from('f16', [c.vocab, c.dim], randn(c.vocab * c.dim, 0.02)));
  const ws = (shape) => d.empty('f32', shape);
  const x = ws([1, c.dim]), h = ws([1, c.dim]), q = ws([1, c.heads, c.hd]), k = ws([1, c.kvHeads, c.hd]), v = ws([1, c.kvHeads, c.hd]);
  const att = ws([1, c.heads, c.hd]), o = ws([1, c.dim]), g = ws([1, c.ffn]), u = ws([1, c.ffn]), logits = ws([1, c.vocab]);
  const blockTable = new Tensor('i32', [1, nb], Int32Array.from({ length: nb }, (_, i) => i));
  const qStart = new Tensor('i32', [2], Int32Array.of(0, 1));
  const hostLogits = new Float32Array(c.vocab);
  let token = 1;
  const step = (pos) => {
    const ids = d.upload(new Tensor('i32', [1], Int32Array.of(token)));
    const p = d.upload(new Tensor('i32', [1], Int32Array.of(pos)));
    const lens = new Tensor('i32', [1], Int32Array.of(pos + 1));
    d.embedding(emb, ids, x);
    for (const L of layers) {
      d.rmsNorm(x, ones, 1e-5, h);
      d.gptqLinear(h, L.wq, q);
      d.gptqLinear(h, L.wk, k);
      d.gptqLinear(h, L.wv, v);
      d.rope(q, p);
      d.rope(k, p);
      d.pagedKvWrite(L.kc, L.vc, k, v, p);
      d.pagedAttention(q, L.kc, L.vc, { blockTables: blockTable, contextLens: lens, queryStart: qStart }, { out: att });
      d.gptqLinear(att, L.wo, o);
      d.add(x, o, x);
      d.rmsNorm(x, ones, 1e-5, h);
      d.gptqLinear(h, L.wg, g);
      d.gptqLinear(h, L.wu, u);
      d.swiglu(g, u, g);
      d.gptqLinear(g, L.wd, o);
      d.add(x, o, x);
    }
    d.rmsNorm(x, ones, 1e-5, h);
    d.gptqLinear(h, head, logits);
    d.addon.download(logits.ptr, hostLogits); // synchronous: the step's only device -> host copy
    let best = 0;
    for (let i = 1; i < c.vocab; i++) if (hostLogits[i] > hostLogits[best]) best = i;
    token = best;
    ids.dispose();
    p.dispose();
  };
  for (let i = 0; i < 8; i++) step(i); // warm-up (positions 0..7)
  const n = 128, t0 = process.hrtime.bigint();
  for (let i = 8; i < 8 + n; i++) step(i);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const bytes = c.layers * ((c.dim * (2 * c.dim + 2 * kvd) + 3 * c.dim * c.ffn) * 0.5 * 1.04) + c.dim * c.vocab * 0.5 * 1.04;
  out.decode = { model: 'TinyLlama-1.1B-shaped, GPTQ int4 g128 projections and head, random weights', tokens: n, tokPerS: n / s, weightBytesPerToken: bytes };
  console.log(`llama 1.1B-shaped GPTQ int4 decode: ${(n / s).toFixed(1)} tok/s (${(bytes / 1e9).toFixed(2)} GB of weights per token, ${((bytes * n) / s / 1e9).toFixed(0)} GB/s)`);
}
d.dispose();
const i = process.argv.indexOf('--json');
if (i > 0) writeFileSync(process.argv[i + 1], JSON.stringify(out, null, 1));
