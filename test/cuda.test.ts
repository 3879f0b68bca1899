// The cuda backend.
//  - Always: the unavailable path (this machine has nvcc but no GPU), the addon's own buffer
//    registry checks (no GPU needed: they fail before any device call), and the host-side logic of
//    CudaDevice (validation, argument marshalling, memory ownership) against a recording fake addon
//    whose ops compute on the host from exactly what they were handed.
//  - With a GPU: each CUDA op against the CPU op on random inputs (skipped with a message otherwise;
//    bench/gpu/run.sh runs the same checks on a GPU machine without Node tooling).
import { describe, expect, it } from 'vitest';
import { CudaDevice, CudaUnavailableError, DeviceTensor, cudaStatus, loadCudaAddon, type CudaAddon } from '../src/backend/cuda/device.js';
import { getBackend } from '../src/backend/index.js';
import { dequantizeGptq, packCols, packRows, type GptqLinear } from '../src/tensor/gptq.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/half.js';
import { Tensor } from '../src/tensor/tensor.js';
import { randn, relL2, rng } from './helpers.js';

const status = cudaStatus();

describe('cuda availability', () => {
  it('reports why it is unavailable and open() says so', () => {
    if (status.available) {
      expect(status.device!.name.length).toBeGreaterThan(0);
      return;
    }
    expect(status.reason).toMatch(/not built|driver|no CUDA device|failed to load|CUDA/);
    expect(() => CudaDevice.open()).toThrow(CudaUnavailableError);
    expect(() => CudaDevice.open()).toThrow(status.reason!);
  });

  const addon = loadCudaAddon();
  it.skipIf(!addon)('the compiled addon checks every buffer against its allocation registry', () => {
    const a = addon!;
    expect(a.info().compiled).toBe(true);
    const bogus = 0x1234000n;
    expect(() => a.rmsNorm(bogus, bogus, bogus, 2, 8, 1e-5)).toThrow(/^rmsNorm: (x|w|y) is not a live device buffer/);
    expect(() => a.gptqLinear(bogus, bogus, bogus, bogus, bogus, null, bogus, 1, 8, 12, 1, 4, 1)).toThrow(/gptqLinear: K \* bits must be a multiple of 32/);
    expect(() => a.gptqLinear(bogus, bogus, bogus, bogus, bogus, null, bogus, 1, 8, 32, 1, 5, 1)).toThrow(/bits must be 4 or 8/);
    expect(() => a.flashAttention(bogus, bogus, bogus, bogus, 2, 4, 4, 6, 4, 64, 0.1, true, 0, null, 0, 0, null)).toThrow(/Hq must be a multiple of Hkv/);
    const ropePlan = { x: bogus, positions: bogus, T: 1, H: 1, D: 8, rotDim: 3, theta: 1e4, freqScale: 1, neox: true, freqFactors: null, extFactor: 0, corrLow: 0, corrHigh: 0, attnFactor: 1 };
    expect(() => a.rope(ropePlan)).toThrow(/rotDim must be even/);
    expect(() => a.rope({ ...ropePlan, rotDim: 4, freqFactors: bogus })).toThrow(/^rope: (x|positions|freqFactors) is not a live device buffer/);
    expect(() => (a.add as unknown as (...x: unknown[]) => void)(1, 2, 3, 4)).toThrow(/^add: (a|b|y) must be a device buffer address \(BigInt\)/);
    expect(() => a.free(bogus)).not.toThrow(); // unknown / double free is a no-op
  });
});

/** A fake addon: host memory for device buffers; ops compute on the host from their arguments. */
function fakeAddon(): CudaAddon & { calls: { op: string; args: unknown[] }[]; mem: Map<bigint, Uint8Array> } {
  const mem = new Map<bigint, Uint8Array>();
  let next = 0x10000n;
  const calls: { op: string; args: unknown[] }[] = [];
  const f32 = (p: bigint) => new Float32Array(mem.get(p)!.buffer);
  const i32 = (p: bigint) => new Int32Array(mem.get(p)!.buffer);
  const u16 = (p: bigint) => new Uint16Array(mem.get(p)!.buffer);
  const rec = (op: string) => (...args: unknown[]) => void calls.push({ op, args });
  return {
    calls, mem,
    info: () => ({ compiled: true, runtimeVersion: 13000, devices: 1, error: null, name: 'Fake GPU', computeCapability: '9.0', memoryBytes: 1e9, multiprocessors: 1 }),
    alloc: (bytes) => {
      const p = next;
      next += BigInt(Math.ceil(bytes / 256) * 256 + 256);
      mem.set(p, new Uint8Array(Math.ceil(bytes / 4) * 4));
      return p;
    },
    free: (p) => void mem.delete(p),
    upload: (p, h) => mem.get(p)!.set(new Uint8Array(h.buffer, h.byteOffset, h.byteLength)),
    download: (p, h) => new Uint8Array(h.buffer, h.byteOffset, h.byteLength).set(mem.get(p)!.subarray(0, h.byteLength)),
    synchronize: () => {},
    flashAttention: rec('flashAttention'),
    flashWorkspaceFloats: (T, S, Hq, D) => (T <= 8 ? T * Hq * Math.max(1, Math.ceil(S / 256)) * (D + 2) : 0),
    pagedAttention: rec('pagedAttention'),
    // Dequantise from the device-side arrays exactly as the kernel reads them, then multiply.
    gptqLinear: (x, qw, sc, qz, gi, bias, y, M, N, K, G, bits, zeroOffset) => {
      calls.push({ op: 'gptqLinear', args: [M, N, K, G, bits, zeroOffset] });
      const X = f32(x), Q = i32(qw), S = u16(sc), Z = i32(qz), GI = i32(gi), Y = f32(y), B = bias ? f32(bias) : null;
      const per = 32 / bits, zw = Math.ceil((N * bits) / 32), mask = (1 << bits) - 1;
      for (let m = 0; m < M; m++)
        for (let n = 0; n < N; n++) {
          let s = 0;
          for (let k = 0; k < K; k++) {
            const g = GI[k]!, q = (Q[Math.floor(k / per) * N + n]! >>> ((k % per) * bits)) & mask;
            const zb = n * bits, z = ((Z[g * zw + (zb >> 5)]! >>> (zb & 31)) & mask) + zeroOffset;
            s += f16ToF32(S[g * N + n]!) * (q - z) * X[m * K + k]!;
          }
          Y[m * N + n] = s + (B ? B[n]! : 0);
        }
    },
    moeRoute: rec('moeRoute'),
    rmsNorm: rec('rmsNorm'),
    rope: rec('rope'),
    swiglu: rec('swiglu'),
    add: rec('add'),
    embedding: rec('embedding'),
    pagedKvWrite: rec('pagedKvWrite'),
    convert: rec('convert'),
  };
}

function gptqLayer(K: number, N: number, bits: 4 | 8, gs: number, v1: boolean, r: () => number, act = false): GptqLinear {
  const G = Math.ceil(K / gs), maxq = (1 << bits) - 1;
  const q = Uint8Array.from({ length: K * N }, () => Math.floor(r() * (maxq + 1)));
  const z = Uint8Array.from({ length: G * N }, () => 1 + Math.floor(r() * maxq));
  const gIdx = Int32Array.from({ length: K }, (_, k) => (act ? (k * 7) % G : Math.floor(k / gs)));
  return {
    bits, groupSize: gs, K, N, qweight: packRows(q, K, N, bits), qzeros: packCols(Uint8Array.from(z, (v) => v - (v1 ? 1 : 0)), G, N, bits),
    scales: Uint16Array.from({ length: G * N }, () => f32ToF16(0.01 + 0.01 * r())), gIdx, zeroFormat: v1 ? 'v1' : 'v2',
  };
}

describe('CudaDevice host logic (fake addon)', () => {
  it('uploads a GPTQ layer in the layout the kernel reads (v1 / v2 zero points, act-order g_idx)', () => {
    const fake = fakeAddon();
    const d = CudaDevice.open(fake);
    const r = rng(1);
    for (const [bits, v1, act] of [[4, true, false], [4, false, true], [8, true, true]] as const) {
      const l = gptqLayer(128, 40, bits, 32, v1, r, act);
      const w = d.uploadGptq(l);
      expect(w).toMatchObject({ bits, K: 128, N: 40, G: 4, zeroOffset: v1 ? 1 : 0 });
      const x = randn(3 * 128, r);
      const y = d.download(d.gptqLinear(d.upload(new Tensor('f32', [3, 128], x)), w)).data as Float32Array;
      const ref = getBackend('js').linear(new Tensor('f32', [3, 128], x), new Tensor('f32', [40, 128], dequantizeGptq(l))).data;
      expect(relL2(y, ref)).toBeLessThan(1e-5);
    }
    d.dispose();
    expect(fake.mem.size).toBe(0);
  });

  it('validates shapes, dtypes and block tables before queueing anything', () => {
    const fake = fakeAddon();
    const d = CudaDevice.open(fake);
    const q = d.empty('bf16', [5, 6, 64]), k = d.empty('bf16', [9, 4, 64]), kf = d.empty('f16', [9, 2, 64]);
    expect(() => d.flashAttention(q, k, k)).toThrow("Expected q's heads (6) to be a multiple of k's heads (4)");
    expect(() => d.flashAttention(q, kf, kf)).toThrow('Expected dtype bf16 for k but received f16');
    const k2 = d.empty('bf16', [9, 2, 64]), v2 = d.empty('bf16', [9, 2, 32]);
    expect(() => d.flashAttention(q, k2, v2)).toThrow('Expected shape [9, 2, 64] for v but received [9, 2, 32]');
    const qw = d.empty('bf16', [20, 6, 96]), kw = d.empty('bf16', [20, 2, 96]);
    expect(() => d.flashAttention(qw, kw, kw)).toThrow('Expected head dim 64 or 128 for flashAttention on cuda but received 96');
    expect(fake.calls.length).toBe(0);
    // causal defaults: queryOffset = S - T, scale = 1/sqrt(D); decode (T <= 8) gets a split-K workspace
    d.flashAttention(d.empty('bf16', [5, 6, 64]), k2, k2, { causal: true });
    const call = fake.calls.pop()!;
    expect(call.args.slice(4, 13)).toEqual([2, 5, 9, 6, 2, 64, 1 / 8, true, 4]);
    expect(typeof call.args[16]).toBe('bigint');
    // paged attention: block ids are checked on the host copy
    const kc = d.empty('f32', [4, 16, 2, 64]);
    const batch = { blockTables: new Tensor('i32', [1, 2], Int32Array.of(1, 7)), contextLens: new Tensor('i32', [1], Int32Array.of(20)), queryStart: new Tensor('i32', [2], Int32Array.of(0, 1)) };
    expect(() => d.pagedAttention(d.empty('f32', [1, 6, 64]), kc, kc, batch)).toThrow("blockTables[0][1] = 7 is outside the cache's 4 blocks");
    const twoSeqs = { ...batch, contextLens: new Tensor('i32', [2], Int32Array.of(20, 3)), queryStart: new Tensor('i32', [3], Int32Array.of(0, 1, 2)) };
    expect(() => d.pagedAttention(d.empty('f32', [2, 6, 64]), kc, kc, twoSeqs)).toThrow('Expected batch.blockTables of shape [2, maxBlocks] but received [1, 2]');
    expect(() => d.moeRoute(d.empty('f32', [3, 4]), 5)).toThrow('Expected an integer in [1, 4] for k but received 5');
    expect(() => d.rmsNorm(d.empty('f32', [2, 8]), d.empty('f32', [7]))).toThrow('Expected shape [8] for weight but received [7]');
    expect(() => d.gptqLinear(d.empty('f32', [2, 64]), d.uploadGptq(gptqLayer(128, 8, 4, 128, true, rng(2))))).toThrow("Expected x's last dimension to equal w's K = 128 but received 64");
    d.dispose();
  });

  it('owns its memory: dispose frees, use after dispose is an error, double dispose is safe', () => {
    const fake = fakeAddon();
    const d = CudaDevice.open(fake);
    const a = d.upload(Tensor.from('f32', [4], [1, 2, 3, 4]));
    const b = d.empty('f32', [4]);
    expect(d.liveBuffers).toBe(2);
    expect(Array.from(d.download(a).data as Float32Array)).toEqual([1, 2, 3, 4]);
    a.dispose();
    a.dispose();
    expect(d.liveBuffers).toBe(1);
    expect(() => d.add(a, b)).toThrow(/disposed/);
    expect(() => a.ptr).toThrow(/disposed/);
    d.dispose();
    expect(b.disposed).toBe(true);
    expect(fake.mem.size).toBe(0);
    expect(() => d.empty('f32', [1])).toThrow(/CudaDevice has been disposed/);
    expect(() => d.upload(Tensor.from('q8_0', [1, 32], new Float32Array(32)))).toThrow(/disposed|Expected dtype/);
    expect(new DeviceTensor('f32', [2], 1n, () => {}).byteLength).toBe(8);
  });
});

// ---- on a GPU ---------------------------------------------------------------------------------

const gpu = status.available;
if (!gpu) console.log(`cuda tests skipped: ${status.reason}`);

describe.skipIf(!gpu)('CUDA ops vs the CPU ops (GPU present)', () => {
  const cpu = getBackend('auto');
  const bf16 = (x: Float32Array) => Tensor.from('bf16', [x.length], x).toFloat32();

  for (const [T, S, Hq, Hkv, D, causal, window] of [[77, 77, 4, 2, 64, true, 0], [130, 200, 8, 8, 128, true, 50], [3, 301, 8, 2, 128, true, 0], [1, 1000, 4, 1, 64, false, 0]] as const)
    it(`flashAttention T=${T} S=${S} Hq=${Hq} Hkv=${Hkv} D=${D} causal=${causal} window=${window} (bf16, rel L2 <= 1e-2)`, () => {
      const d = CudaDevice.open();
      const r = rng(T + S);
      const q = bf16(randn(T * Hq * D, r)), k = bf16(randn(S * Hkv * D, r)), v = bf16(randn(S * Hkv * D, r));
      const up = (x: Float32Array, shape: number[]) => d.upload(Tensor.from('bf16', shape, x));
      const o = d.flashAttention(up(q, [T, Hq, D]), up(k, [S, Hkv, D]), up(v, [S, Hkv, D]), { causal, window });
      const ref = cpu.flashAttention(new Tensor('f32', [T, Hq, D], q), new Tensor('f32', [S, Hkv, D], k), new Tensor('f32', [S, Hkv, D], v), { causal, window });
      expect(relL2(d.download(o).data as Float32Array, ref.data)).toBeLessThan(1e-2);
      d.dispose();
    });

  for (const [M, bits, gs, act] of [[1, 4, 128, false], [5, 8, 32, true], [40, 4, 64, true], [130, 4, 128, false]] as const)
    it(`gptqLinear M=${M} int${bits} g${gs}${act ? ' act-order' : ''} (rel L2 <= 1e-2)`, () => {
      const d = CudaDevice.open();
      const r = rng(M * 7 + bits);
      const K = 512, N = 200;
      const l = gptqLayer(K, N, bits, gs, true, r, act);
      const x = randn(M * K, r);
      const y = d.download(d.gptqLinear(d.upload(new Tensor('f32', [M, K], x)), d.uploadGptq(l))).data as Float32Array;
      const ref = cpu.linear(new Tensor('f32', [M, K], x), new Tensor('f32', [N, K], dequantizeGptq(l))).data;
      expect(relL2(y, ref)).toBeLessThan(1e-2);
      d.dispose();
    });

  it('pagedAttention (decode and prefill with a prefix), moeRoute, rmsNorm, rope, swiglu, add vs cpu', () => {
    const d = CudaDevice.open();
    const r = rng(3);
    const Hq = 8, Hkv = 2, D = 64, bs = 16, nb = 12;
    const kc = randn(nb * bs * Hkv * D, r), vc = randn(nb * bs * Hkv * D, r);
    const batch = { blockTables: new Tensor('i32', [2, 4], Int32Array.of(3, 1, 7, 0, 2, 5, 9, 11)), contextLens: new Tensor('i32', [2], Int32Array.of(50, 37)), queryStart: new Tensor('i32', [3], Int32Array.of(0, 1, 6)) };
    const q = randn(6 * Hq * D, r);
    const shapeC = [nb, bs, Hkv, D];
    const o = d.pagedAttention(d.upload(new Tensor('f32', [6, Hq, D], q)), d.upload(new Tensor('f32', shapeC, kc)), d.upload(new Tensor('f32', shapeC, vc)), batch);
    const ref = cpu.pagedAttention(new Tensor('f32', [6, Hq, D], q), new Tensor('f32', shapeC, kc), new Tensor('f32', shapeC, vc), batch);
    expect(relL2(d.download(o).data as Float32Array, ref.data)).toBeLessThan(1e-5);

    const logits = randn(33 * 8, r);
    const rt = d.moeRoute(d.upload(new Tensor('f32', [33, 8], logits)), 2);
    const rc = cpu.moeRoute(new Tensor('f32', [33, 8], logits), 2);
    expect(Array.from(d.download(rt.experts).data as Int32Array)).toEqual(Array.from(rc.experts.data));
    expect(Array.from(d.download(rt.order).data as Int32Array)).toEqual(Array.from(rc.order.data));
    expect(Array.from(d.download(rt.expertOffsets).data as Int32Array)).toEqual(Array.from(rc.expertOffsets.data));
    expect(relL2(d.download(rt.weights).data as Float32Array, rc.weights.data)).toBeLessThan(1e-5);

    const x = randn(7 * 96, r), w = randn(96, r), u = randn(7 * 96, r);
    const X = new Tensor('f32', [7, 96], x);
    expect(relL2(d.download(d.rmsNorm(d.upload(X), d.upload(new Tensor('f32', [96], w)))).data as Float32Array, cpu.rmsNorm(X, new Tensor('f32', [96], w)).data)).toBeLessThan(1e-5);
    expect(relL2(d.download(d.swiglu(d.upload(X), d.upload(new Tensor('f32', [7, 96], u)))).data as Float32Array, cpu.swiglu(X, new Tensor('f32', [7, 96], u)).data)).toBeLessThan(1e-5);
    expect(relL2(d.download(d.add(d.upload(X), d.upload(new Tensor('f32', [7, 96], u)))).data as Float32Array, cpu.add(X, new Tensor('f32', [7, 96], u)).data)).toBeLessThan(1e-6);
    const pos = new Tensor('i32', [7], Int32Array.from([0, 1, 2, 3, 100, 500, 2047]));
    const xr = new Tensor('f32', [7, 3, 32], x.slice(0, 7 * 96));
    const dr = d.rope(d.upload(xr), d.upload(pos), { style: 'neox', theta: 10000 });
    expect(relL2(d.download(dr).data as Float32Array, cpu.rope(xr, pos, { style: 'neox', theta: 10000 }).data)).toBeLessThan(1e-4);
    // Frequency factors, YaRN and an attention factor (test/rope-scaling.test.ts checks cpu against float64).
    const ff = new Tensor('f32', [12], Float32Array.from({ length: 12 }, (_, i) => 1 + 0.7 * i));
    const xy = new Tensor('f32', [7, 3, 32], x.slice(0, 7 * 96));
    const dy = d.rope(d.upload(xy), d.upload(pos), { style: 'interleaved', theta: 5000, rotaryDim: 24, freqScale: 1 / 8, freqFactors: d.upload(ff), extFactor: 1, corrDims: [1, 7], attnFactor: 1.2 });
    const cy = cpu.rope(xy, pos, { style: 'interleaved', theta: 5000, rotaryDim: 24, freqFactors: ff, yarn: { factor: 8, corrDims: [1, 7] }, attnFactor: 1.2 });
    expect(relL2(d.download(dy).data as Float32Array, cy.data)).toBeLessThan(1e-5);
    d.dispose();
  });
});
