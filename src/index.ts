/** tessera: transformer inference kernels and runtime for Node.js. */
export { Tensor, DisposedError } from './tensor/tensor.js';
export type { DType, Storage } from './tensor/dtype.js';
export { DTYPES, DTYPE_BYTES } from './tensor/dtype.js';
export { f16ToF32, f32ToF16, bf16ToF32, f32ToBf16, encodeHalf, decodeHalf } from './tensor/half.js';
export {
  Backend,
  BackendUnavailableError,
  availableBackends,
  getBackend,
  runtimeInfo,
  setIsa,
  setThreads,
  type BackendName,
  type Isa,
  type RuntimeInfo,
} from './backend/index.js';
export type {
  AttentionOptions,
  MoeRouting,
  PagedAttentionOptions,
  PagedBatch,
  RopeOptions,
} from './backend/backend.js';
export { VERSION } from './version.js';
