/**
 * The `cuda` backend: device tensors and the GPU ops of the CUDA addon (TESSERA_CUDA_ADDON's file,
 * else a local build build/cuda/Release/tessera_cuda.node, see CMakeLists.txt, else the package's
 * prebuilt binary: ../addon-files.ts). Tensors live on the device between ops; copies happen
 * only at the edges (`upload` of weights once, `download` of logits per step). Memory is explicit:
 * `DeviceTensor.dispose()` frees one buffer, `CudaDevice.dispose()` every buffer still live.
 *
 * Every op validates its arguments here (shapes, dtypes, GQA ratio, block tables) with the same
 * messages as the CPU Backend; the addon re-checks each buffer against its allocation registry.
 * Without a usable GPU, `cudaStatus()` says why and `CudaDevice.open()` throws
 * CudaUnavailableError: everything else keeps running on `cpu`.
 */
import { explainFailure, isSourceCheckout, loadAddon, type AddonOrigin } from '../addon-files.js';
import { DisposedError, Tensor } from '../../tensor/tensor.js';
import { gptqGroupIndex, validateGptq, zeroWords, type GptqLinear } from '../../tensor/gptq.js';

export type DeviceDType = 'f32' | 'f16' | 'bf16' | 'i32';
const DT_CODE: Record<DeviceDType, number> = { f32: 0, f16: 1, bf16: 2, i32: 3 };
const DT_BYTES: Record<DeviceDType, number> = { f32: 4, f16: 2, bf16: 2, i32: 4 };

/** The raw CUDA addon, typed in one place (device addresses are BigInts). */
/** The rope plan the CUDA addon reads by field name (RopePlan of ../kernels.ts with device addresses). */
export interface CudaRopePlan {
  x: bigint; // (T, H, D) f32, rotated in place
  positions: bigint; // (T) i32
  T: number;
  H: number;
  D: number;
  rotDim: number; // even, <= D
  theta: number;
  freqScale: number; // interpolated frequencies are multiplied by this
  neox: boolean;
  freqFactors: bigint | null; // (rotDim/2) f32: pair i's frequency is divided by it
  extFactor: number; // YaRN mix of the extrapolated frequency (0 = off)
  corrLow: number; // YaRN ramp, pair indices
  corrHigh: number;
  attnFactor: number; // cos and sin are multiplied by this
}

export interface CudaAddon {
  info(): { compiled: boolean; runtimeVersion: number; devices: number; error: string | null; name?: string; computeCapability?: string; memoryBytes?: number; multiprocessors?: number };
  alloc(bytes: number): bigint;
  free(ptr: bigint): void;
  upload(ptr: bigint, host: ArrayBufferView): void;
  download(ptr: bigint, host: ArrayBufferView): void;
  synchronize(): void;
  flashAttention(q: bigint, k: bigint, v: bigint, o: bigint, dtype: number, T: number, S: number, Hq: number, Hkv: number, D: number,
    scale: number, causal: boolean, qOffset: number, alibi: bigint | null, window: number, sinks: number, workspace: bigint | null): void;
  flashWorkspaceFloats(T: number, S: number, Hq: number, D: number): number;
  pagedAttention(q: bigint, kCache: bigint, vCache: bigint, blockTables: bigint, contextLens: bigint, queryStart: bigint, o: bigint,
    B: number, T: number, maxBlocks: number, numBlocks: number, blockSize: number, Hq: number, Hkv: number, D: number, scale: number,
    alibi: bigint | null, window: number, sinks: number): void;
  gptqLinear(x: bigint, qweight: bigint, scales: bigint, qzeros: bigint, gIdx: bigint, bias: bigint | null, y: bigint,
    M: number, N: number, K: number, G: number, bits: number, zeroOffset: number): void;
  moeRoute(logits: bigint, T: number, E: number, k: number, renormalize: boolean, weights: bigint, experts: bigint, offsets: bigint, order: bigint): void;
  rmsNorm(x: bigint, w: bigint, y: bigint, rows: number, dim: number, eps: number): void;
  /** Reads the plan by field name (ARCHITECTURE rule 11). */
  rope(plan: CudaRopePlan): void;
  swiglu(gate: bigint, up: bigint, y: bigint, n: number): void;
  add(a: bigint, b: bigint, y: bigint, n: number): void;
  embedding(table: bigint, dtype: number, vocab: number, dim: number, ids: bigint, n: number, out: bigint): void;
  pagedKvWrite(kCache: bigint, vCache: bigint, k: bigint, v: bigint, slots: bigint, T: number, row: number, nSlots: number): void;
  convert(x: bigint, y: bigint, dtype: number, n: number): void;
}

export class CudaUnavailableError extends Error {
  constructor(reason: string) {
    super(`the cuda backend is unavailable: ${reason}`);
    this.name = 'CudaUnavailableError';
  }
}

let loaded: CudaAddon | null | undefined;
let source: { file: string; origin: AddonOrigin } | null = null;
let loadError = '';

/** The CUDA addon, or null (with the reason in cudaStatus()). TESSERA_CUDA_ADDON names another file. */
export function loadCudaAddon(): CudaAddon | null {
  if (loaded !== undefined) return loaded;
  const r = loadAddon<CudaAddon>({ name: 'tessera_cuda', envVar: 'TESSERA_CUDA_ADDON', builds: ['build/cuda/Release/tessera_cuda.node'] });
  if (r.addon) {
    source = { file: r.file!, origin: r.origin! };
    return (loaded = r.addon);
  }
  // The build needs nvcc, cmake and cmake-js (a devDependency), so only a clone of the repository builds it.
  const hint = r.failed[0]?.origin === 'env'
    ? 'unset TESSERA_CUDA_ADDON to use the package\'s own addon'
    : isSourceCheckout()
      ? '`npm run build:cuda` builds it where nvcc and cmake exist'
      : 'a clone of the repository builds it (`npm run build:cuda`, with nvcc and cmake), and TESSERA_CUDA_ADDON can name that file';
  loadError = `no CUDA addon: ${explainFailure(r)}; ${hint}`;
  return (loaded = null);
}

/** The CUDA addon file in use and where it came from; null without one. */
export function cudaAddonSource(): { file: string; origin: AddonOrigin } | null {
  loadCudaAddon();
  return source;
}

export interface CudaStatus {
  available: boolean;
  /** Why not, when unavailable. */
  reason: string | null;
  device: { name: string; computeCapability: string; memoryBytes: number; multiprocessors: number } | null;
}

export function cudaStatus(addon: CudaAddon | null = loadCudaAddon()): CudaStatus {
  if (!addon) return { available: false, reason: loadError, device: null };
  const i = addon.info();
  if (i.devices < 1) return { available: false, reason: `the CUDA addon loaded but found no device: ${i.error ?? 'no CUDA device'}`, device: null };
  return { available: true, reason: null, device: { name: i.name!, computeCapability: i.computeCapability!, memoryBytes: i.memoryBytes!, multiprocessors: i.multiprocessors! } };
}

/** A tensor in device memory. */
export class DeviceTensor {
  readonly dtype: DeviceDType;
  readonly shape: readonly number[];
  #ptr: bigint | null;
  readonly #free: (p: bigint) => void;

  /** @internal use CudaDevice.upload / empty */
  constructor(dtype: DeviceDType, shape: readonly number[], ptr: bigint, free: (p: bigint) => void) {
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.#ptr = ptr;
    this.#free = free;
  }
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  get byteLength(): number {
    return this.size * DT_BYTES[this.dtype];
  }
  get disposed(): boolean {
    return this.#ptr === null;
  }
  /** The device address (throws DisposedError after dispose). */
  get ptr(): bigint {
    if (this.#ptr === null) throw new DisposedError('DeviceTensor');
    return this.#ptr;
  }
  /** Frees the device memory. Safe twice. */
  dispose(): void {
    if (this.#ptr === null) return;
    const p = this.#ptr;
    this.#ptr = null;
    this.#free(p);
  }
  toString(): string {
    return `DeviceTensor(${this.dtype}, [${this.shape.join(', ')}])`;
  }
}

/** A GPTQ layer on the device (checkpoint layout, g_idx materialised). */
export interface DeviceGptq {
  bits: 4 | 8;
  K: number;
  N: number;
  G: number;
  zeroOffset: 0 | 1;
  qweight: DeviceTensor;
  scales: DeviceTensor;
  qzeros: DeviceTensor;
  gIdx: DeviceTensor;
  bias: DeviceTensor | null;
}

function expectTensor(t: DeviceTensor, name: string, dtypes: readonly DeviceDType[], rank?: number): void {
  if (!(t instanceof DeviceTensor)) throw new TypeError(`Expected a DeviceTensor for ${name} but received ${String(t)}`);
  if (t.disposed) throw new DisposedError(`DeviceTensor ${name}`);
  if (!dtypes.includes(t.dtype)) throw new TypeError(`Expected dtype ${dtypes.join(' or ')} for ${name} but received ${t.dtype}`);
  if (rank !== undefined && t.shape.length !== rank) throw new RangeError(`Expected rank ${rank} for ${name} but received shape [${t.shape.join(', ')}]`);
}
function expectShape(t: DeviceTensor, name: string, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
    throw new RangeError(`Expected shape [${shape.join(', ')}] for ${name} but received [${t.shape.join(', ')}]`);
}
/**
 * As check.disjoint on the host: what an op writes is none of the buffers it reads (nor another
 * it writes), except the [output, input] pairs of an op documented to run in place. Device
 * tensors are whole allocations (no views), so sharing memory means the same address.
 */
function expectDisjoint(op: string, outputs: readonly (readonly [string, DeviceTensor])[], inputs: readonly (readonly [string, DeviceTensor | null | undefined])[],
  inPlace: readonly (readonly [string, string])[] = []): void {
  for (let i = 0; i < outputs.length; i++) {
    const [name, o] = outputs[i]!;
    for (let j = i + 1; j < outputs.length; j++)
      if (outputs[j]![1].ptr === o.ptr) throw new RangeError(`Expected ${name} not to overlap ${outputs[j]![0]} but they share memory and ${op} writes both`);
    for (const [iname, t] of inputs)
      if (t && t.ptr === o.ptr && !inPlace.some(([a, b]) => a === name && b === iname))
        throw new RangeError(`Expected ${name} not to overlap an input of this op but it shares memory with ${iname} in ${op}`);
  }
}

export class CudaDevice {
  readonly #a: CudaAddon;
  readonly #live = new Set<DeviceTensor>();
  readonly #scratchBufs = new Map<string, DeviceTensor>();
  readonly status: CudaStatus;
  #disposed = false;

  private constructor(addon: CudaAddon, status: CudaStatus) {
    this.#a = addon;
    this.status = status;
  }

  /** Opens the GPU; throws CudaUnavailableError saying why when there is none. */
  static open(addon: CudaAddon | null = loadCudaAddon()): CudaDevice {
    const st = cudaStatus(addon);
    if (!st.available || !addon) throw new CudaUnavailableError(st.reason ?? 'unknown');
    return new CudaDevice(addon, st);
  }

  get addon(): CudaAddon {
    if (this.#disposed) throw new DisposedError('CudaDevice');
    return this.#a;
  }

  /** Number of device buffers still allocated through this device. */
  get liveBuffers(): number {
    return this.#live.size;
  }

  empty(dtype: DeviceDType, shape: readonly number[]): DeviceTensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new RangeError(`Expected non-negative integers for shape but received [${shape.join(', ')}]`);
    const ptr = this.addon.alloc(Math.max(1, n * DT_BYTES[dtype]));
    const t: DeviceTensor = new DeviceTensor(dtype, shape, ptr, (p) => {
      this.#live.delete(t);
      this.#a.free(p);
    });
    this.#live.add(t);
    return t;
  }

  /** Host -> device (f32, f16, bf16, i32 tensors). */
  upload(t: Tensor): DeviceTensor {
    if (!(t instanceof Tensor)) throw new TypeError(`Expected a Tensor for upload but received ${String(t)}`);
    if (!['f32', 'f16', 'bf16', 'i32'].includes(t.dtype)) throw new TypeError(`Expected dtype f32, f16, bf16 or i32 for upload but received ${t.dtype}`);
    const d = this.empty(t.dtype as DeviceDType, t.shape);
    if (t.size > 0) this.addon.upload(d.ptr, t.data as ArrayBufferView);
    return d;
  }

  /** Device -> host. */
  download(d: DeviceTensor): Tensor {
    expectTensor(d, 'tensor', ['f32', 'f16', 'bf16', 'i32']);
    const t = new Tensor(d.dtype, d.shape);
    if (d.size > 0) this.addon.download(d.ptr, t.data as ArrayBufferView);
    return t;
  }

  /** A GPTQ layer (4 or 8 bits) on the device. */
  uploadGptq(l: GptqLinear): DeviceGptq {
    validateGptq(l);
    if (l.bits !== 4 && l.bits !== 8) throw new RangeError(`Expected 4 or 8 bits for a GPTQ layer on cuda but received ${l.bits}`);
    const G = l.scales.length / l.N;
    const gIdx = gptqGroupIndex(l);
    for (let k = 0; k < l.K; k++) if (gIdx[k]! >= G) throw new RangeError(`g_idx[${k}] = ${gIdx[k]} is past the ${G} groups of scales`);
    return {
      bits: l.bits, K: l.K, N: l.N, G, zeroOffset: l.zeroFormat === 'v1' ? 1 : 0,
      qweight: this.upload(new Tensor('i32', [(l.K * l.bits) / 32, l.N], l.qweight)),
      scales: this.upload(new Tensor('f16', [G, l.N], l.scales)),
      qzeros: this.upload(new Tensor('i32', [G, zeroWords(l.N, l.bits)], l.qzeros)),
      gIdx: this.upload(new Tensor('i32', [l.K], gIdx)),
      bias: l.bias ? this.upload(new Tensor('f32', [l.N], l.bias)) : null,
    };
  }

  /** y (M, N) = x (M, K) @ dequant(w)^T (+ bias). w comes from uploadGptq (which checks g_idx);
   *  the kernels also skip any group index outside the scales. */
  gptqLinear(x: DeviceTensor, w: DeviceGptq, out?: DeviceTensor): DeviceTensor {
    expectTensor(x, 'x', ['f32']);
    for (const [name, t, dt] of [['qweight', w.qweight, 'i32'], ['scales', w.scales, 'f16'], ['qzeros', w.qzeros, 'i32'], ['gIdx', w.gIdx, 'i32']] as const) expectTensor(t, `w.${name}`, [dt]);
    const K = x.shape[x.shape.length - 1]!;
    if (K !== w.K) throw new RangeError(`Expected x's last dimension to equal w's K = ${w.K} but received ${K}`);
    const M = x.size / K;
    const y = out ?? this.empty('f32', [...x.shape.slice(0, -1), w.N]);
    expectTensor(y, 'out', ['f32']);
    expectShape(y, 'out', [...x.shape.slice(0, -1), w.N]);
    expectDisjoint('gptqLinear', [['out', y]], [['x', x], ['w.qweight', w.qweight], ['w.scales', w.scales], ['w.qzeros', w.qzeros], ['w.gIdx', w.gIdx], ['w.bias', w.bias]]);
    this.addon.gptqLinear(x.ptr, w.qweight.ptr, w.scales.ptr, w.qzeros.ptr, w.gIdx.ptr, w.bias?.ptr ?? null, y.ptr, M, w.N, K, w.G, w.bits, w.zeroOffset);
    return y;
  }

  /**
   * FlashAttention-2 forward: q (T, Hq, D), k / v (S, Hkv, D) in f16 or bf16 (the same), output
   * (T, Hq, D) f32. Options as Backend.flashAttention (no additive mask on cuda).
   */
  flashAttention(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, o: { scale?: number; causal?: boolean; queryOffset?: number; alibiSlopes?: DeviceTensor | null; window?: number; sinks?: number; out?: DeviceTensor } = {}): DeviceTensor {
    expectTensor(q, 'q', ['f16', 'bf16'], 3);
    expectTensor(k, 'k', [q.dtype], 3);
    expectTensor(v, 'v', [q.dtype], 3);
    const [T, Hq, D] = q.shape as [number, number, number];
    const [S, Hkv] = k.shape as [number, number];
    expectShape(k, 'k', [S, Hkv, D]);
    expectShape(v, 'v', [S, Hkv, D]);
    if (Hq % Hkv) throw new RangeError(`Expected q's heads (${Hq}) to be a multiple of k's heads (${Hkv})`);
    if (T > 8 && D !== 64 && D !== 128) throw new RangeError(`Expected head dim 64 or 128 for flashAttention on cuda but received ${D}`);
    if (D > 256) throw new RangeError(`Expected head dim at most 256 on cuda but received ${D}`);
    if (o.alibiSlopes) {
      expectTensor(o.alibiSlopes, 'alibiSlopes', ['f32']);
      expectShape(o.alibiSlopes, 'alibiSlopes', [Hq]);
    }
    const causal = o.causal ?? false;
    const y = o.out ?? this.empty('f32', [T, Hq, D]);
    expectTensor(y, 'out', ['f32']);
    expectShape(y, 'out', [T, Hq, D]);
    expectDisjoint('flashAttention', [['out', y]], [['q', q], ['k', k], ['v', v], ['alibiSlopes', o.alibiSlopes]]);
    const wsFloats = this.addon.flashWorkspaceFloats(T, S, Hq, D);
    const ws = wsFloats > 0 ? this.empty('f32', [wsFloats]) : null;
    try {
      this.addon.flashAttention(q.ptr, k.ptr, v.ptr, y.ptr, DT_CODE[q.dtype], T, S, Hq, Hkv, D, o.scale ?? 1 / Math.sqrt(D), causal,
        o.queryOffset ?? (causal ? S - T : 0), o.alibiSlopes?.ptr ?? null, o.window ?? 0, o.sinks ?? 0, ws?.ptr ?? null);
      if (ws) this.addon.synchronize();
    } finally {
      ws?.dispose();
    }
    return y;
  }

  /**
   * Paged attention over a KV cache in device memory: q (T, Hq, D) f32, caches (blocks, blockSize,
   * Hkv, D) f32, and the batch (host i32 tensors, as in Backend.pagedAttention). The batch is
   * checked on the host (every used block id inside the cache, lengths, query ranges) and exactly
   * what was checked is uploaded for the op.
   */
  pagedAttention(q: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor, batch: { blockTables: Tensor; contextLens: Tensor; queryStart: Tensor },
    o: { scale?: number; alibiSlopes?: DeviceTensor | null; window?: number; sinks?: number; out?: DeviceTensor } = {}): DeviceTensor {
    expectTensor(q, 'q', ['f32'], 3);
    expectTensor(kCache, 'kCache', ['f32'], 4);
    expectTensor(vCache, 'vCache', ['f32'], 4);
    expectShape(vCache, 'vCache', kCache.shape);
    const [T, Hq, D] = q.shape as [number, number, number];
    const [numBlocks, blockSize, Hkv, Dk] = kCache.shape as [number, number, number, number];
    if (Dk !== D) throw new RangeError(`Expected the cache head dim ${Dk} to equal q's ${D}`);
    if (Hq % Hkv) throw new RangeError(`Expected q's heads (${Hq}) to be a multiple of the cache's heads (${Hkv})`);
    for (const [name, t] of [['blockTables', batch.blockTables], ['contextLens', batch.contextLens], ['queryStart', batch.queryStart]] as const)
      if (!(t instanceof Tensor) || t.dtype !== 'i32') throw new TypeError(`Expected an i32 Tensor for batch.${name} but received ${String(t)}`);
    const bt = batch.blockTables.data as Int32Array, cl = batch.contextLens.data as Int32Array, qs = batch.queryStart.data as Int32Array;
    const B = cl.length, maxBlocks = batch.blockTables.shape[1]!;
    if (B < 1 || batch.blockTables.shape.length !== 2 || batch.blockTables.shape[0] !== B)
      throw new RangeError(`Expected batch.blockTables of shape [${B}, maxBlocks] but received [${batch.blockTables.shape.join(', ')}]`);
    if (qs.length !== B + 1 || qs[0] !== 0 || qs[B] !== T) throw new RangeError(`Expected queryStart to run from 0 to T = ${T} over ${B} sequences`);
    for (let b = 0; b < B; b++) {
      const nq = qs[b + 1]! - qs[b]!;
      if (nq < 0 || nq > cl[b]!) throw new RangeError(`Expected sequence ${b} to have between 0 and contextLens[${b}] = ${cl[b]} queries but it has ${nq}`);
      if (cl[b]! > maxBlocks * blockSize) throw new RangeError(`contextLens[${b}] = ${cl[b]} exceeds the block table (${maxBlocks} blocks of ${blockSize})`);
      for (let i = 0; i < Math.ceil(cl[b]! / blockSize); i++) {
        const id = bt[b * maxBlocks + i]!;
        if (id < 0 || id >= numBlocks) throw new RangeError(`blockTables[${b}][${i}] = ${id} is outside the cache's ${numBlocks} blocks`);
      }
    }
    if (o.alibiSlopes) {
      expectTensor(o.alibiSlopes, 'alibiSlopes', ['f32']);
      expectShape(o.alibiSlopes, 'alibiSlopes', [Hq]);
    }
    const y = o.out ?? this.empty('f32', [T, Hq, D]);
    expectTensor(y, 'out', ['f32']);
    expectShape(y, 'out', [T, Hq, D]);
    expectDisjoint('pagedAttention', [['out', y]], [['q', q], ['kCache', kCache], ['vCache', vCache], ['alibiSlopes', o.alibiSlopes]]);
    // Exactly the checked values go to the device, into grow-only scratch buffers (a copy on the
    // default stream runs after any queued op still reading the previous batch).
    this.addon.pagedAttention(q.ptr, kCache.ptr, vCache.ptr, this.#scratch('blockTables', bt), this.#scratch('contextLens', cl), this.#scratch('queryStart', qs), y.ptr,
      B, T, maxBlocks, numBlocks, blockSize, Hq, Hkv, D, o.scale ?? 1 / Math.sqrt(D), o.alibiSlopes?.ptr ?? null, o.window ?? 0, o.sinks ?? 0);
    return y;
  }

  /** Softmax, top-k, renormalise and grouping by expert, as Backend.moeRoute (outputs on the device). */
  moeRoute(logits: DeviceTensor, k: number, o: { renormalize?: boolean } = {}): { weights: DeviceTensor; experts: DeviceTensor; expertOffsets: DeviceTensor; order: DeviceTensor; k: number } {
    expectTensor(logits, 'logits', ['f32'], 2);
    const [T, E] = logits.shape as [number, number];
    if (!Number.isInteger(k) || k < 1 || k > E) throw new RangeError(`Expected an integer in [1, ${E}] for k but received ${k}`);
    const weights = this.empty('f32', [T, k]), experts = this.empty('i32', [T, k]), expertOffsets = this.empty('i32', [E + 1]), order = this.empty('i32', [T * k]);
    this.addon.moeRoute(logits.ptr, T, E, k, o.renormalize ?? true, weights.ptr, experts.ptr, expertOffsets.ptr, order.ptr);
    return { weights, experts, expertOffsets, order, k };
  }

  rmsNorm(x: DeviceTensor, w: DeviceTensor, eps = 1e-5, out?: DeviceTensor): DeviceTensor {
    expectTensor(x, 'x', ['f32']);
    const dim = x.shape[x.shape.length - 1]!;
    expectTensor(w, 'weight', ['f32']);
    expectShape(w, 'weight', [dim]);
    const y = out ?? this.empty('f32', x.shape);
    expectTensor(y, 'out', ['f32']);
    expectShape(y, 'out', x.shape);
    expectDisjoint('rmsNorm', [['out', y]], [['x', x], ['weight', w]], [['out', 'x']]);
    this.addon.rmsNorm(x.ptr, w.ptr, y.ptr, x.size / dim, dim, eps);
    return y;
  }

  /**
   * RoPE in place on x (T, H, D), with the kernel plan's knobs as Backend.rope resolves them:
   * freqScale (1 / linear or YaRN factor), freqFactors (rotaryDim/2 f32 divisors of each pair's
   * frequency), YaRN's extFactor and corrDims (pair indices of the ramp), attnFactor on cos/sin.
   */
  rope(x: DeviceTensor, positions: DeviceTensor, o: {
    style?: 'neox' | 'interleaved'; theta?: number; rotaryDim?: number; freqScale?: number;
    freqFactors?: DeviceTensor | null; extFactor?: number; corrDims?: readonly [number, number]; attnFactor?: number;
  } = {}): DeviceTensor {
    expectTensor(x, 'x', ['f32'], 3);
    const [T, H, D] = x.shape as [number, number, number];
    expectTensor(positions, 'positions', ['i32']);
    expectShape(positions, 'positions', [T]);
    const rot = o.rotaryDim ?? D;
    if (rot % 2 || rot < 2 || rot > D) throw new RangeError(`Expected an even rotaryDim in [2, ${D}] but received ${rot}`);
    const finite = (v: number, name: string, min: number, strict: boolean) => {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (strict && v === min)) throw new RangeError(`Expected a finite ${name} ${strict ? '>' : '>='} ${min} but received ${v}`);
      return v;
    };
    if (o.freqFactors) {
      expectTensor(o.freqFactors, 'freqFactors', ['f32']);
      expectShape(o.freqFactors, 'freqFactors', [rot / 2]);
    }
    const [corrLow, corrHigh] = o.corrDims ?? [0, 0];
    this.addon.rope({
      x: x.ptr, positions: positions.ptr, T, H, D, rotDim: rot, theta: finite(o.theta ?? 10000, 'theta', 0, true),
      freqScale: finite(o.freqScale ?? 1, 'freqScale', 0, true), neox: (o.style ?? 'neox') === 'neox', freqFactors: o.freqFactors?.ptr ?? null,
      extFactor: finite(o.extFactor ?? 0, 'extFactor', 0, false), corrLow: finite(corrLow, 'corrDims[0]', 0, false), corrHigh: finite(corrHigh, 'corrDims[1]', 0, false),
      attnFactor: finite(o.attnFactor ?? 1, 'attnFactor', 0, true),
    });
    return x;
  }

  /** y = silu(gate) * up. */
  swiglu(gate: DeviceTensor, up: DeviceTensor, out?: DeviceTensor): DeviceTensor {
    return this.#elementwise('swiglu', ['gate', 'up'], gate, up, out);
  }

  add(a: DeviceTensor, b: DeviceTensor, out?: DeviceTensor): DeviceTensor {
    return this.#elementwise('add', ['a', 'b'], a, b, out);
  }

  /** Two same-shape f32 inputs, one output (may be either input). */
  #elementwise(op: 'swiglu' | 'add', names: [string, string], a: DeviceTensor, b: DeviceTensor, out?: DeviceTensor): DeviceTensor {
    expectTensor(a, names[0], ['f32']);
    expectTensor(b, names[1], ['f32']);
    expectShape(b, names[1], a.shape);
    const y = out ?? this.empty('f32', a.shape);
    expectTensor(y, 'out', ['f32']);
    expectShape(y, 'out', a.shape);
    expectDisjoint(op, [['out', y]], [[names[0], a], [names[1], b]], [['out', names[0]], ['out', names[1]]]);
    this.addon[op](a.ptr, b.ptr, y.ptr, a.size);
    return y;
  }

  /** Rows of table (vocab, dim) f32/f16/bf16 for ids (n) i32 -> (n, dim) f32. Q8_0/Q4_0 tables are
   *  not device dtypes (upload refuses them): dequantise one on the host first (Tensor.toFloat32). */
  embedding(table: DeviceTensor, ids: DeviceTensor, out?: DeviceTensor): DeviceTensor {
    expectTensor(table, 'table', ['f32', 'f16', 'bf16'], 2);
    expectTensor(ids, 'ids', ['i32'], 1);
    const [vocab, dim] = table.shape as [number, number];
    const y = out ?? this.empty('f32', [ids.size, dim]);
    expectTensor(y, 'out', ['f32']);
    expectShape(y, 'out', [ids.size, dim]);
    expectDisjoint('embedding', [['out', y]], [['table', table], ['ids', ids]]);
    this.addon.embedding(table.ptr, DT_CODE[table.dtype], vocab, dim, ids.ptr, ids.size, y.ptr);
    return y;
  }

  /** k, v (T, Hkv, D) into the caches at slots (T) (slot = block * blockSize + offset). */
  pagedKvWrite(kCache: DeviceTensor, vCache: DeviceTensor, k: DeviceTensor, v: DeviceTensor, slots: DeviceTensor): void {
    expectTensor(kCache, 'kCache', ['f32'], 4);
    expectTensor(vCache, 'vCache', ['f32'], 4);
    expectShape(vCache, 'vCache', kCache.shape);
    const [nb, bs, Hkv, D] = kCache.shape as [number, number, number, number];
    expectTensor(k, 'k', ['f32']);
    expectTensor(v, 'v', ['f32']);
    const T = k.size / (Hkv * D);
    expectShape(k, 'k', [T, Hkv, D]);
    expectShape(v, 'v', [T, Hkv, D]);
    expectTensor(slots, 'slots', ['i32']);
    expectShape(slots, 'slots', [T]);
    expectDisjoint('pagedKvWrite', [['kCache', kCache], ['vCache', vCache]], [['k', k], ['v', v], ['slots', slots]]);
    this.addon.pagedKvWrite(kCache.ptr, vCache.ptr, k.ptr, v.ptr, slots.ptr, T, Hkv * D, nb * bs);
  }

  /** f32 -> f16 / bf16 on the device (attention inputs). */
  toHalf(x: DeviceTensor, dtype: 'f16' | 'bf16', out?: DeviceTensor): DeviceTensor {
    expectTensor(x, 'x', ['f32']);
    const y = out ?? this.empty(dtype, x.shape);
    expectTensor(y, 'out', [dtype]);
    expectShape(y, 'out', x.shape);
    expectDisjoint('toHalf', [['out', y]], [['x', x]]);
    this.addon.convert(x.ptr, y.ptr, DT_CODE[dtype], x.size);
    return y;
  }

  /** Uploads host values into the named grow-only scratch buffer; returns its address. */
  #scratch(name: string, data: Int32Array): bigint {
    let t = this.#scratchBufs.get(name);
    if (!t || t.disposed || t.size < data.length) {
      t?.dispose();
      t = this.empty('i32', [Math.max(16, data.length * 2)]);
      this.#scratchBufs.set(name, t);
    }
    this.addon.upload(t.ptr, data);
    return t.ptr;
  }

  /** Waits for queued work; surfaces any asynchronous CUDA error. */
  synchronize(): void {
    this.addon.synchronize();
  }

  /** Frees every buffer this device still holds. Safe twice. */
  dispose(): void {
    if (this.#disposed) return;
    for (const t of [...this.#live]) t.dispose();
    this.#disposed = true;
  }
}
