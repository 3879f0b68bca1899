import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { forwardTokens, getBackend, PagedKvCache, runtimeInfo, setIsa, Tensor, type Backend, type Isa, type LlamaModel } from '../src/index.js';

/** Deterministic PRNG (mulberry32) so every failure reproduces. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box-Muller) scaled by `scale`. */
export function randn(n: number, r: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12), v = r();
    const m = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}

export function randTensor(shape: number[], r: () => number, scale = 1): Tensor<'f32'> {
  return new Tensor('f32', shape, randn(shape.reduce((a, b) => a * b, 1), r, scale));
}

/** ||a - ref|| / ||ref|| (or ||a - ref|| when ref is all zeros). */
export function relL2(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (a.length !== ref.length) throw new Error(`length mismatch ${a.length} vs ${ref.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - ref[i]!;
    num += d * d;
    den += ref[i]! * ref[i]!;
  }
  if (Number.isNaN(num)) return Infinity;
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}

export interface Path {
  label: string;
  backend: Backend;
  isa?: Isa;
}

const info = runtimeInfo();
// CI sets TESSERA_REQUIRE_NATIVE=1: a missing addon must fail the suite, not skip the native tests.
if (process.env.TESSERA_REQUIRE_NATIVE === '1' && !info.native) throw new Error(`TESSERA_REQUIRE_NATIVE=1 but ${info.nativeError}`);

/** js, then cpu on every ISA this machine supports. */
export function paths(): Path[] {
  const out: Path[] = [{ label: 'js', backend: getBackend('js') }];
  if (info.native) for (const isa of info.isas) out.push({ label: `cpu/${isa}`, backend: getBackend('cpu'), isa });
  return out;
}

/** Runs fn with the path's ISA selected, restoring the default afterwards. */
export function onPath<T>(p: Path, fn: (b: Backend) => T): T {
  if (!p.isa) return fn(p.backend);
  setIsa(p.isa);
  try {
    return fn(p.backend);
  } finally {
    setIsa(info.isa!);
  }
}

export const nativeAvailable = info.native;

/** Writes a safetensors file from raw entries (independent of the reader). */
export function writeSafetensors(file: string, entries: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[], headerOverride?: string) {
  let off = 0;
  const header: Record<string, unknown> = {};
  for (const e of entries) {
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + e.bytes.length] };
    off += e.bytes.length;
  }
  const h = Buffer.from(headerOverride ?? JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  writeFileSync(file, Buffer.concat([len, h, ...entries.map((e) => Buffer.from(e.bytes))]));
}

/**
 * Greedy decoding of one request alone, the plainest way: the prompt in one forward, then one
 * forward per token, argmax (ties to the lower id), stopping at an end-of-generation token or
 * maxTokens. The reference the batched runtime is checked against.
 */
export function greedyAlone(m: LlamaModel, prompt: number[], maxTokens: number, eog: ReadonlySet<number>): number[] {
  const cache = new PagedKvCache({ layers: m.config.layers, kvHeads: m.config.kvHeads, headDim: m.config.headDim, numBlocks: 256, prefixCaching: false });
  cache.add(0);
  let l = forwardTokens(m, cache, 0, prompt).data;
  const out: number[] = [];
  while (out.length < maxTokens) {
    let t = 0;
    for (let i = 1; i < l.length; i++) if (l[i]! > l[t]!) t = i;
    if (eog.has(t)) break;
    out.push(t);
    if (out.length === maxTokens) break;
    l = forwardTokens(m, cache, 0, [t]).data;
  }
  return out;
}

export interface SpawnResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  error?: Error;
}

/**
 * spawnSync's result shape without blocking the test worker: a child that runs for more than a
 * minute inside spawnSync starves vitest's worker RPC ("Timeout calling onTaskUpdate") on a busy host.
 */
export function spawnAsync(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string; timeout?: number } = {}): Promise<SpawnResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let error: Error | undefined;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => {}); // a child that exits without reading its input
    child.stdin.end(opts.input ?? '');
    const timer = opts.timeout ? setTimeout(() => { error = new Error(`timed out after ${opts.timeout} ms`); child.kill('SIGKILL'); }, opts.timeout) : null;
    child.on('error', (e) => (error = e));
    child.on('close', (status, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, ...(error ? { error } : {}) });
    });
  });
}
