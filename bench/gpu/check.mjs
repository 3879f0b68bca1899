// GPU correctness checks: each CUDA op against the CPU op on fresh random inputs (relative L2;
// bf16 operands <= 1e-2, f32 <= 1e-4). Plain Node, importing only dist/ and build/ (no
// node_modules), for bench/gpu/run.sh. Outputs are poisoned (NaN) first, so an unwritten element
// fails. Exits 1 if any check fails.
import { CudaDevice } from '../../dist/backend/cuda/device.js';
import { getBackend } from '../../dist/backend/index.js';
import { dequantizeGptq, packCols, packRows } from '../../dist/tensor/gptq.js';
import { f32ToF16 } from '../../dist/tensor/half.js';
import { Tensor } from '../../dist/tensor/tensor.js';

const cpu = getBackend('cpu');
const d = CudaDevice.open();
console.log(`device: ${d.status.device.name} (sm ${d.status.device.computeCapability}, ${(d.status.device.memoryBytes / 2 ** 30).toFixed(0)} GiB)`);
let seed = Math.floor(Math.random() * 2 ** 31); // fresh inputs every run
const r = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const randn = (n, s = 1) => Float32Array.from({ length: n }, () => (r() + r() + r() + r() - 2) * 1.7 * s);
const relL2 = (a, b) => {
  let n = 0, m = 0;
  for (let i = 0; i < b.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    n += (a[i] - b[i]) ** 2;
    m += b[i] ** 2;
  }
  return Math.sqrt(n / (m || 1));
};
const bf16 = (x) => Tensor.from('bf16', [x.length], x).toFloat32();
const poisoned = (shape) => d.upload(new Tensor('f32', shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(NaN)));
const rows = [];
const report = (name, err, tol) => {
  rows.push({ name, err, tol, ok: err <= tol });
  console.log(`${err <= tol ? 'PASS' : 'FAIL'}  ${name.padEnd(70)} rel L2 ${err.toExponential(2)} (tol ${tol})`);
};

for (const [T, S, Hq, Hkv, D, causal, window, sinks] of [
  [77, 77, 4, 2, 64, true, 0, 0], [130, 200, 8, 8, 128, true, 50, 4], [257, 1000, 16, 4, 128, true, 0, 0], [64, 64, 2, 1, 64, false, 0, 0],
  [3, 301, 8, 2, 128, true, 0, 0], [1, 4096, 32, 8, 128, true, 0, 0], [5, 700, 4, 4, 64, true, 128, 2],
]) {
  for (const dt of ['bf16', 'f16']) {
    const q = bf16(randn(T * Hq * D)), k = bf16(randn(S * Hkv * D)), v = bf16(randn(S * Hkv * D));
    const up = (x, shape) => d.upload(Tensor.from(dt, shape, x));
    const alibi = T === 64 ? cpu.alibiSlopes(Hq) : null;
    const o = d.flashAttention(up(q, [T, Hq, D]), up(k, [S, Hkv, D]), up(v, [S, Hkv, D]), { causal, window, sinks, alibiSlopes: alibi ? d.upload(alibi) : null, out: poisoned([T, Hq, D]) });
    const ref = cpu.flashAttention(new Tensor('f32', [T, Hq, D], q), new Tensor('f32', [S, Hkv, D], k), new Tensor('f32', [S, Hkv, D], v), { causal, window, sinks, alibiSlopes: alibi });
    report(`flashAttention ${dt} T=${T} S=${S} Hq=${Hq} Hkv=${Hkv} D=${D}${causal ? ' causal' : ''}${window ? ` window=${window} sinks=${sinks}` : ''}${alibi ? ' alibi' : ''}`, relL2(d.download(o).data, ref.data), 1e-2);
  }
}

function gptqLayer(K, N, bits, gs, act) {
  const G = Math.ceil(K / gs), maxq = (1 << bits) - 1;
  const q = Uint8Array.from({ length: K * N }, () => Math.floor(r() * (maxq + 1)));
  const z = Uint8Array.from({ length: G * N }, () => 1 + Math.floor(r() * maxq));
  const gIdx = Int32Array.from({ length: K }, (_, k) => (act ? (k * 7) % G : Math.floor(k / gs)));
  return { bits, groupSize: gs, K, N, qweight: packRows(q, K, N, bits), qzeros: packCols(Uint8Array.from(z, (v) => v - 1), G, N, bits),
    scales: Uint16Array.from({ length: G * N }, () => f32ToF16(0.01 + 0.01 * r())), gIdx, zeroFormat: 'v1' };
}
for (const [M, K, N, bits, gs, act] of [[1, 512, 200, 4, 128, false], [3, 1024, 96, 8, 32, true], [8, 4096, 4096, 4, 128, false], [16, 512, 200, 4, 64, true], [130, 1024, 520, 4, 128, false], [128, 4096, 4096, 4, 128, true]]) {
  const l = gptqLayer(K, N, bits, gs, act);
  const x = randn(M * K);
  const y = d.gptqLinear(d.upload(new Tensor('f32', [M, K], x)), d.uploadGptq(l), poisoned([M, N]));
  const ref = cpu.linear(new Tensor('f32', [M, K], x), new Tensor('f32', [N, K], dequantizeGptq(l)));
  report(`gptqLinear M=${M} K=${K} N=${N} int${bits} g${gs}${act ? ' act-order' : ''} (f16 tiles at M > 8)`, relL2(d.download(y).data, ref.data), 1e-2);
}

{
  const Hq = 8, Hkv = 2, D = 64, bs = 16, nb = 12;
  const kc = randn(nb * bs * Hkv * D), vc = randn(nb * bs * Hkv * D);
  const batch = { blockTables: new Tensor('i32', [2, 4], Int32Array.of(3, 1, 7, 0, 2, 5, 9, 11)), contextLens: new Tensor('i32', [2], Int32Array.of(50, 37)), queryStart: new Tensor('i32', [3], Int32Array.of(0, 1, 6)) };
  const q = randn(6 * Hq * D);
  const sc = [nb, bs, Hkv, D];
  const o = d.pagedAttention(d.upload(new Tensor('f32', [6, Hq, D], q)), d.upload(new Tensor('f32', sc, kc)), d.upload(new Tensor('f32', sc, vc)), batch, { out: poisoned([6, Hq, D]) });
  const ref = cpu.pagedAttention(new Tensor('f32', [6, Hq, D], q), new Tensor('f32', sc, kc), new Tensor('f32', sc, vc), batch);
  report('pagedAttention decode + prefill-with-prefix (f32)', relL2(d.download(o).data, ref.data), 1e-4);
}
{
  const logits = randn(333 * 8);
  const rt = d.moeRoute(d.upload(new Tensor('f32', [333, 8], logits)), 2);
  const rc = cpu.moeRoute(new Tensor('f32', [333, 8], logits), 2);
  const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
  const ok = same(d.download(rt.experts).data, rc.experts.data) && same(d.download(rt.order).data, rc.order.data) && same(d.download(rt.expertOffsets).data, rc.expertOffsets.data);
  report('moeRoute T=333 E=8 k=2 (experts, order, offsets exact; weights)', ok ? relL2(d.download(rt.weights).data, rc.weights.data) : Infinity, 1e-5);
}
{
  const x = randn(7 * 2048), w = randn(2048), u = randn(7 * 2048);
  const X = new Tensor('f32', [7, 2048], x), W = new Tensor('f32', [2048], w), U = new Tensor('f32', [7, 2048], u);
  report('rmsNorm 7x2048', relL2(d.download(d.rmsNorm(d.upload(X), d.upload(W))).data, cpu.rmsNorm(X, W).data), 1e-5);
  report('swiglu 7x2048', relL2(d.download(d.swiglu(d.upload(X), d.upload(U))).data, cpu.swiglu(X, U).data), 1e-5);
  report('add 7x2048', relL2(d.download(d.add(d.upload(X), d.upload(U))).data, cpu.add(X, U).data), 1e-6);
  const pos = new Tensor('i32', [7], Int32Array.from([0, 1, 2, 3, 100, 500, 2047]));
  const xr = new Tensor('f32', [7, 16, 128], x.slice(0, 7 * 2048));
  report('rope neox 7x16x128', relL2(d.download(d.rope(d.upload(xr), d.upload(pos), { style: 'neox' })).data, cpu.rope(xr, pos, { style: 'neox' }).data), 1e-4);
  report('rope interleaved 7x16x128', relL2(d.download(d.rope(d.upload(xr), d.upload(pos), { style: 'interleaved' })).data, cpu.rope(xr, pos, { style: 'interleaved' }).data), 1e-4);
  const table = Tensor.from('f16', [500, 64], randn(500 * 64));
  const ids = new Tensor('i32', [5], Int32Array.of(0, 499, 7, 7, 250));
  report('embedding f16', relL2(d.download(d.embedding(d.upload(table), d.upload(ids))).data, cpu.embedding(table, ids).data), 1e-6);
}
d.synchronize();
d.dispose();
const failed = rows.filter((x) => !x.ok);
console.log(`\n${rows.length - failed.length}/${rows.length} checks passed`);
process.exit(failed.length ? 1 : 0);
