/**
 * The raw native module, typed in one place. It is TESSERA_ADDON's file when set, else a local
 * build (build/Release/tessera.node), else the package's prebuilt binary (see ../addon-files.ts).
 * Loading never throws: when no addon works, `loadNative()` returns null, `nativeLoadError()` says
 * why and what to run, and tessera runs on the `js` backend.
 */
import { explainFailure, isSourceCheckout, loadAddon, type AddonOrigin } from '../addon-files.js';
import type { RopePlan } from '../kernels.js';

type F32 = Float32Array;
type I32 = Int32Array;

export interface NativeInfo {
  isa: 'scalar' | 'avx2' | 'avx512' | 'avx512vnni';
  isas: ('scalar' | 'avx2' | 'avx512' | 'avx512vnni')[];
  threads: number;
  isaWarning: string;
  features: Record<string, boolean>;
}

export interface NativeAddon {
  info(): NativeInfo;
  setIsa(isa: string): void;
  setThreads(n: number): void;
  linear(x: F32, w: F32 | Uint16Array | Uint8Array, wtype: number, bias: F32 | null, y: F32, M: number, N: number, K: number): void;
  linearInt(x: F32, qweight: I32, bits: number, perm: I32 | null, groupBlocks: I32, meta: Uint16Array, colScale: F32 | null,
    bias: F32 | null, y: F32, M: number, N: number, K: number, G: number, fixedZero: number, roundDxF16: boolean): void;
  fmaPeak(iters: number): { seconds: number; flops: number };
  readStream(src: F32): number;
  flashAttention(q: F32, k: F32, v: F32, o: F32, T: number, S: number, Hq: number, Hkv: number, D: number, scale: number,
    causal: boolean, qOffset: number, alibi: F32 | null, window: number, sinks: number, mask: F32 | null): void;
  attentionNaive(q: F32, k: F32, v: F32, o: F32, T: number, S: number, Hq: number, Hkv: number, D: number, scale: number,
    causal: boolean, qOffset: number, alibi: F32 | null, window: number, sinks: number, mask: F32 | null): void;
  pagedAttention(q: F32, kCache: F32, vCache: F32, blockTables: I32, contextLens: I32, queryStart: I32, o: F32, B: number,
    maxBlocks: number, numBlocks: number, blockSize: number, Hq: number, Hkv: number, D: number, scale: number,
    alibi: F32 | null, window: number, sinks: number): void;
  pagedKvWrite(kCache: F32, vCache: F32, k: F32, v: F32, slots: I32, T: number, nSlots: number, row: number): void;
  rmsNorm(x: F32, w: F32, y: F32, rows: number, dim: number, eps: number): void;
  layerNorm(x: F32, w: F32 | null, b: F32 | null, y: F32, rows: number, dim: number, eps: number): void;
  softmax(x: F32, y: F32, rows: number, cols: number, scale: number, log: boolean): void;
  activation(x: F32, y: F32, act: number): void;
  swiglu(gate: F32, up: F32, y: F32): void;
  binary(a: F32, b: F32, y: F32, op: number): void;
  embedding(table: F32 | Uint16Array | Uint8Array, dtype: number, vocab: number, dim: number, ids: I32, out: F32): void;
  /** Reads the RopePlan by field name (ARCHITECTURE rule 11). */
  rope(plan: RopePlan): void;
  alibiSlopes(nHeads: number, maxBias: number, out: F32): void;
  moeRoute(logits: F32, T: number, E: number, k: number, renormalize: boolean, weights: F32, experts: I32, offsets: I32, order: I32): void;
  moeGather(x: F32, T: number, D: number, order: I32, k: number, out: F32): void;
  moeScatter(y: F32, order: I32, weights: F32, T: number, k: number, D: number, out: F32): void;
  topk(x: F32, rows: number, cols: number, k: number, values: F32, indices: I32): void;
  crossEntropy(logits: F32, rows: number, cols: number, targets: I32, ignoreIndex: number, nll: F32 | null): { sum: number; count: number };
  /** Bytes [offset, offset + length) of an open file, mapped copy-on-write as an external ArrayBuffer
   *  (unmapped when collected); throws where mapping is impossible (the caller reads instead). */
  mapFileRange(fd: number, offset: number, length: number): ArrayBuffer;
  /** Whether buffer came from mapFileRange. */
  isMapped(buffer: ArrayBuffer): boolean;
  /** Drops a consumed mapped buffer's resident pages (false, a no-op, for other buffers). */
  discardMapped(buffer: ArrayBuffer): boolean;
  /** GGUF Q4_0 blocks (N rows of K / 32) into IntWeight.fromQ4_0's column tiles (zeroed arrays in). */
  repackQ4_0(blocks: Uint8Array, N: number, K: number, qweight: I32, meta: Uint16Array): void;
  /** Q8_0 (dtype 6) or Q4_0 (dtype 7) blocks to f32, exactly as tensor/quant.ts's dequantize. */
  dequantizeBlocks(blocks: Uint8Array, dtype: 6 | 7, out: F32): void;
}

let loaded: NativeAddon | null | undefined;
let source: { file: string; origin: AddonOrigin } | null = null;
let loadError = '';
let warned = false;

/** The command that builds the addon here: the repository's script, or npm's rebuild of the dependency. */
function buildHint(): string {
  return isSourceCheckout()
    ? 'Run `npm run build:native` to build it.'
    : 'Run `npm rebuild tessera --foreground-scripts` to compile it (needs python3, make and a C++17 compiler; a few minutes).';
}

/** The native addon, or null (see nativeLoadError()). */
export function loadNative(): NativeAddon | null {
  if (loaded !== undefined) return loaded;
  if (process.env.TESSERA_DISABLE_NATIVE === '1') {
    loadError = 'disabled by TESSERA_DISABLE_NATIVE=1';
    return (loaded = null);
  }
  const r = loadAddon<NativeAddon>({
    name: 'tessera',
    envVar: 'TESSERA_ADDON',
    builds: ['build/Release/tessera.node', 'build/Debug/tessera.node'],
    check: (a) => void a.info(),
  });
  if (r.addon) {
    source = { file: r.file!, origin: r.origin! };
    const warning = r.addon.info().isaWarning;
    if (warning) process.emitWarning(`tessera: ${warning}`);
    return (loaded = r.addon);
  }
  loadError = `native addon unavailable: ${explainFailure(r)}. ${r.failed[0]?.origin === 'env' ? 'Unset TESSERA_ADDON to use the package\'s own addon.' : buildHint()}`;
  return (loaded = null);
}

/** The addon file in use and where it came from (TESSERA_ADDON, a local build or the prebuild); null without one. */
export function nativeAddonSource(): { file: string; origin: AddonOrigin } | null {
  loadNative();
  return source;
}

export function nativeLoadError(): string {
  loadNative();
  return loadError;
}

/** Warns once (process warning) that tessera fell back to the js backend. */
export function warnNativeUnavailable(): void {
  if (warned) return;
  warned = true;
  process.emitWarning(`tessera: using the pure-TypeScript 'js' backend: ${nativeLoadError()}`);
}
