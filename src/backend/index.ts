/**
 * Backend registry. `getBackend('cpu')` is the native addon, `getBackend('js')` the pure
 * TypeScript reference; `getBackend()` picks cpu when the addon loaded, else js (and warns once).
 */
import { Backend, type BackendName } from './backend.js';
import { cpuKernels } from './cpu/index.js';
import { loadNative, nativeLoadError, warnNativeUnavailable, type NativeInfo } from './cpu/native.js';
import { jsKernels } from './js/index.js';

export type Isa = 'scalar' | 'avx2' | 'avx512' | 'avx512vnni';

const cache = new Map<BackendName, Backend>();

export class BackendUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackendUnavailableError';
  }
}

/** The named backend, or the best available one. */
export function getBackend(name?: BackendName | 'auto'): Backend {
  if (name === undefined || name === 'auto') {
    if (loadNative()) return getBackend('cpu');
    warnNativeUnavailable();
    return getBackend('js');
  }
  let b = cache.get(name);
  if (b) return b;
  if (name === 'js') b = new Backend('js', jsKernels);
  else if (name === 'cpu') {
    const n = loadNative();
    if (!n) throw new BackendUnavailableError(`The 'cpu' backend is unavailable: ${nativeLoadError()}`);
    b = new Backend('cpu', cpuKernels(n));
  } else {
    throw new TypeError(`Expected a backend name ('cpu', 'js' or 'auto') but received ${JSON.stringify(name)}`);
  }
  cache.set(name, b);
  return b;
}

/** Backends that work in this process. */
export function availableBackends(): BackendName[] {
  return loadNative() ? ['cpu', 'js'] : ['js'];
}

export interface RuntimeInfo {
  native: boolean;
  /** Why the native addon is unavailable (empty when it loaded). */
  nativeError: string;
  /** The kernel path in use and every path this CPU supports. */
  isa: Isa | null;
  isas: Isa[];
  threads: number;
  features: Record<string, boolean>;
}

export function runtimeInfo(): RuntimeInfo {
  const n = loadNative();
  if (!n) return { native: false, nativeError: nativeLoadError(), isa: null, isas: [], threads: 1, features: {} };
  const i: NativeInfo = n.info();
  return { native: true, nativeError: '', isa: i.isa, isas: i.isas, threads: i.threads, features: i.features };
}

function requireNative(what: string) {
  const n = loadNative();
  if (!n) throw new BackendUnavailableError(`${what} needs the native addon: ${nativeLoadError()}`);
  return n;
}

/** Switches the native kernel path (the environment variable TESSERA_ISA sets the initial one). */
export function setIsa(isa: Isa): void {
  if (!['scalar', 'avx2', 'avx512', 'avx512vnni'].includes(isa as string))
    throw new TypeError(`Expected 'scalar', 'avx2', 'avx512' or 'avx512vnni' for isa but received ${JSON.stringify(isa)}`);
  const n = requireNative('setIsa');
  if (!n.info().isas.includes(isa)) throw new RangeError(`ISA '${isa}' is not supported on this CPU (supported: ${n.info().isas.join(', ')})`);
  n.setIsa(isa);
}

/** Sets the native thread pool size (TESSERA_THREADS sets the initial one). */
export function setThreads(threads: number): void {
  if (!Number.isInteger(threads) || threads < 1 || threads > 1024)
    throw new RangeError(`Expected an integer in [1, 1024] for threads but received ${threads}`);
  requireNative('setThreads').setThreads(threads);
}

export { Backend };
export type { BackendName };
