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
export { Engine, type EngineOptions, type EngineGenerateOptions, type EngineScoreOptions, type GenerateResult } from './engine/engine.js';
export { bundledModelPath } from './engine/bundled.js';
export { ChatSession, type ChatSessionOptions, type ChatTurnResult } from './engine/chat-session.js';
export type { ChatMessage, ModelInfo, Prompt, ScoreItem, ScoreResult, ScoredTokens } from './engine/protocol.js';
export { ScoreJob, type ScoreOptions, type ScoreEvents, type TokenScore } from './runtime/score.js';
export { readGGUF, writeGGUF, loadTensor, GGUF_VALUE, type GGUFFile, type GGUFTensorInfo, type GGUFMetadataEntry } from './formats/gguf.js';
export { ModelFileError } from './formats/errors.js';
export { Tokenizer, ChatTemplateError, DEFAULT_TEMPLATE_LIMITS, type ChatTemplateLimits, type ChatTemplateFailure } from './tokenizer/index.js';
export { LlamaModel, type LlamaWeights } from './model/llama.js';
export type { LlamaConfig } from './model/config.js';
export { loadModelFile, type LoadedModel } from './model/load.js';
export { PagedKvCache, KvCacheFullError, type KvCacheOptions, type BlockStats } from './runtime/kv/cache.js';
export { runBatch, forwardTokens, type RunEntry } from './runtime/runner.js';
export { Scheduler, type SchedulerOptions, type SchedulerStats, type Job, type JobContext, type SeqWork } from './runtime/scheduler.js';
export { SampleJob, createGenerateJob, type JobEvents, type GenerationJob } from './runtime/generate.js';
export { perplexity, type PerplexityOptions, type PerplexityResult } from './runtime/perplexity.js';
export { NonFiniteLogitsError } from './runtime/errors.js';
export type { Delta, FinishReason, GenerateOptions } from './runtime/generate.js';
export { Sampler, type SamplingOptions } from './sampling/sampler.js';
export { beamSearch, BeamSearch, BeamJob, type BeamSearchOptions, type BeamHypothesis } from './runtime/beam.js';
export { IntWeight, gptqKernelSupport } from './tensor/int-weight.js';
export {
  dequantizeGptq, packRows, unpackRows, packCols, unpackCols, validateGptq, GptqFormatError,
  type GptqLinear, type GptqBits, type GptqZeroFormat,
} from './tensor/gptq.js';
export { readGptqConfig, readGptqLinear, gptqTensors, type GptqCheckpointConfig } from './formats/gptq-checkpoint.js';
export { writeSafetensors } from './formats/safetensors.js';
export { quantizeGptq, quantizeRtn, type QuantOptions, type GptqOptions, type GptqResult } from './quant/gptq.js';
export { quantizeModel, type QuantizeModelOptions, type QuantizedModel, type LinearReport } from './quant/quantize-model.js';
export type { LinearWeight, LinearRole } from './model/llama.js';
export { CudaDevice, CudaUnavailableError, DeviceTensor, cudaStatus, type CudaStatus, type DeviceGptq, type DeviceDType } from './backend/cuda/device.js';
export { createServer, ApiError, type ServerOptions } from './server/server.js';
export { pullModel, parseHfUri, HubError, defaultCacheDir as hubCacheDir, type PullOptions, type PullProgress, type PullResult, type HfUri, type HubErrorKind } from './hub/index.js';
export {
  bleuTokens, corpusBleu, sentenceBleu, tokenize13a, corpusRougeL, rougeL, rougeLMulti, rougeTokenize,
  porterStem, type BleuOptions, type BleuScore, type BleuSmooth, type BleuTokenize, type RougeOptions, type RougeScore,
} from './eval/index.js';
