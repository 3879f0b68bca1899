// The CUDA addon (tessera_cuda.node, built by CMakeLists.txt with cmake-js when nvcc is found).
// Device memory is explicit: alloc() returns a BigInt device address that lives until free();
// every op argument is looked up in the allocation registry and its extent (overflow-checked
// products of the dimensions) checked, so a stale or undersized buffer is an error naming the op
// and argument. Index tensors whose values the kernels follow (block tables, slots, g_idx, ids)
// are bounds-checked on the host (src/backend/cuda/device.ts) or in the kernels.
// Each launch is checked; CUDA errors become JS errors "op: message".
#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>

#include "cuda/common.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/flash_attention.cuh"
#include "cuda/gptq.cuh"
#include "cuda/moe_route.cuh"
#include "cuda/paged_attention.cuh"

namespace tc = tessera::cuda;

namespace {

std::mutex g_mu;
std::map<uint64_t, uint64_t> g_allocs;  // device address -> bytes

struct OpError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

uint64_t addr_value(const Napi::Value& v, const char* name) {
  if (!v.IsBigInt()) throw OpError(std::string(name) + " must be a device buffer address (BigInt)");
  bool lossless = false;
  const uint64_t a = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw OpError(std::string(name) + " is not a valid device address");
  return a;
}

uint64_t addr_of(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length()) throw OpError(std::string(name) + " must be a device buffer address (BigInt)");
  return addr_value(info[i], name);
}

// A registered device buffer at address a of at least `bytes` bytes.
void* registered(uint64_t a, const char* name, int64_t bytes) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_allocs.find(a);
  if (it == g_allocs.end()) throw OpError(std::string(name) + " is not a live device buffer (freed or never allocated)");
  if (bytes < 0 || (uint64_t)bytes > it->second)
    throw OpError(std::string(name) + " holds " + std::to_string(it->second) + " bytes but the op needs " + std::to_string(bytes));
  return reinterpret_cast<void*>(a);
}

// A registered device buffer of at least `bytes` bytes (or null when optional and JS null).
void* dev(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t bytes, bool optional = false) {
  if (optional && (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined())) return nullptr;
  return registered(addr_of(info, i, name), name, bytes);
}

// Named plan fields (ARCHITECTURE rule 11): the op's one argument is the plan object.
Napi::Value field(const Napi::Object& plan, const char* name) {
  if (!plan.Has(name)) throw OpError(std::string("missing plan field '") + name + "'");
  return plan.Get(name);
}
void* pdev(const Napi::Object& plan, const char* name, int64_t bytes, bool optional = false) {
  const Napi::Value v = field(plan, name);
  if (optional && (v.IsNull() || v.IsUndefined())) return nullptr;
  return registered(addr_value(v, name), name, bytes);
}
int64_t pnum(const Napi::Object& plan, const char* name, int64_t lo, int64_t hi) {
  const Napi::Value v = field(plan, name);
  if (!v.IsNumber()) throw OpError(std::string(name) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= (double)lo && d <= (double)hi) || d != (double)(int64_t)d)
    throw OpError(std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return (int64_t)d;
}
double pfnum(const Napi::Object& plan, const char* name) {
  const Napi::Value v = field(plan, name);
  if (!v.IsNumber()) throw OpError(std::string(name) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

int64_t num(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t lo, int64_t hi) {
  if (i >= info.Length() || !info[i].IsNumber()) throw OpError(std::string(name) + " must be a number");
  const double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= (double)lo && d <= (double)hi) || d != (double)(int64_t)d)
    throw OpError(std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return (int64_t)d;
}
double fnum(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) throw OpError(std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}
bool flag(const Napi::CallbackInfo& info, size_t i) { return i < info.Length() && info[i].ToBoolean().Value(); }

constexpr int64_t kMax = int64_t(1) << 40;

// a * b * ... for buffer sizes; throws instead of wrapping around.
int64_t mul(std::initializer_list<int64_t> xs) {
  int64_t r = 1;
  for (int64_t x : xs) {
    if (x < 0 || (x != 0 && r > INT64_MAX / x)) throw OpError("buffer size overflows");
    r *= x;
  }
  return r;
}

using Fn = Napi::Value (*)(const Napi::CallbackInfo&);
template <Fn F>
Napi::Value wrap(const Napi::CallbackInfo& info, const char* op) {
  try {
    return F(info);
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    throw Napi::Error::New(info.Env(), msg.rfind(op, 0) == 0 ? msg : std::string(op) + ": " + msg);
  }
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  o.Set("compiled", true);
  int rt = 0;
  cudaRuntimeGetVersion(&rt);
  o.Set("runtimeVersion", rt);
  if (e != cudaSuccess || n == 0) {
    o.Set("devices", 0);
    o.Set("error", e != cudaSuccess ? std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e) : std::string("no CUDA device"));
    return o;
  }
  cudaDeviceProp p{};
  tc::check(cudaGetDeviceProperties(&p, 0), "info");
  o.Set("devices", n);
  o.Set("error", env.Null());
  o.Set("name", p.name);
  o.Set("computeCapability", std::to_string(p.major) + "." + std::to_string(p.minor));
  o.Set("memoryBytes", (double)p.totalGlobalMem);
  o.Set("multiprocessors", p.multiProcessorCount);
  return o;
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  const int64_t bytes = num(info, 0, "bytes", 1, kMax);
  void* p = nullptr;
  tc::check(cudaMalloc(&p, (size_t)bytes), "alloc");
  std::lock_guard<std::mutex> lock(g_mu);
  g_allocs[reinterpret_cast<uint64_t>(p)] = (uint64_t)bytes;
  return Napi::BigInt::New(info.Env(), (uint64_t)reinterpret_cast<uintptr_t>(p));
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  const uint64_t a = addr_of(info, 0, "buffer");
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_allocs.find(a);
    if (it == g_allocs.end()) return info.Env().Undefined();  // freeing twice is a no-op
    g_allocs.erase(it);
  }
  tc::check(cudaFree(reinterpret_cast<void*>(a)), "free");
  return info.Env().Undefined();
}

Napi::TypedArray typed(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsTypedArray()) throw OpError(std::string(name) + " must be a typed array");
  return info[i].As<Napi::TypedArray>();
}

// upload(buffer, typedArray): host -> device, the whole array at offset 0.
Napi::Value Upload(const Napi::CallbackInfo& info) {
  Napi::TypedArray t = typed(info, 1, "host");
  void* d = dev(info, 0, "buffer", (int64_t)t.ByteLength());
  const uint8_t* src = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  tc::check(cudaMemcpy(d, src, t.ByteLength(), cudaMemcpyHostToDevice), "upload");
  return info.Env().Undefined();
}

// download(buffer, typedArray): device -> host, filling the whole array.
Napi::Value Download(const Napi::CallbackInfo& info) {
  Napi::TypedArray t = typed(info, 1, "host");
  void* d = dev(info, 0, "buffer", (int64_t)t.ByteLength());
  uint8_t* dst = static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  tc::check(cudaMemcpy(dst, d, t.ByteLength(), cudaMemcpyDeviceToHost), "download");
  return info.Env().Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  tc::check(cudaDeviceSynchronize(), "synchronize");
  return info.Env().Undefined();
}

int64_t esize(tc::DType d) { return d == tc::DType::F32 || d == tc::DType::I32 ? 4 : 2; }

// flashAttention(q, k, v, o, dtype, T, S, Hq, Hkv, D, scale, causal, qOffset, alibi|null, window, sinks, workspace|null)
Napi::Value FlashAttention(const Napi::CallbackInfo& info) {
  tc::FlashArgs a{};
  a.dtype = (tc::DType)num(info, 4, "dtype", 1, 2);
  a.T = num(info, 5, "T", 0, kMax);
  a.S = num(info, 6, "S", 0, kMax);
  a.Hq = num(info, 7, "Hq", 1, 1 << 16);
  a.Hkv = num(info, 8, "Hkv", 1, 1 << 16);
  a.D = num(info, 9, "D", 1, 1024);
  if (a.Hq % a.Hkv) throw OpError("Hq must be a multiple of Hkv");
  const int64_t es = esize(a.dtype);
  a.q = dev(info, 0, "q", mul({a.T, a.Hq, a.D, es}));
  a.k = dev(info, 1, "k", mul({a.S, a.Hkv, a.D, es}));
  a.v = dev(info, 2, "v", mul({a.S, a.Hkv, a.D, es}));
  a.o = (float*)dev(info, 3, "o", mul({a.T, a.Hq, a.D, 4}));
  a.scale = (float)fnum(info, 10, "scale");
  a.causal = flag(info, 11);
  a.q_offset = num(info, 12, "qOffset", -kMax, kMax);
  a.alibi = (const float*)dev(info, 13, "alibi", mul({a.Hq, 4}), true);
  a.window = num(info, 14, "window", 0, kMax);
  a.sinks = num(info, 15, "sinks", 0, kMax);
  const int64_t ws = tc::flash_workspace_floats(a.T, a.S, a.Hq, a.D);
  a.workspace = ws > 0 ? (float*)dev(info, 16, "workspace", mul({ws, 4}), true) : nullptr;
  tc::flash_attention(a, 0);
  return info.Env().Undefined();
}

Napi::Value FlashWorkspace(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)tc::flash_workspace_floats(num(info, 0, "T", 0, kMax), num(info, 1, "S", 0, kMax),
                                                                          num(info, 2, "Hq", 1, 1 << 16), num(info, 3, "D", 1, 1024)));
}

// pagedAttention(q, kCache, vCache, blockTables, contextLens, queryStart, o, B, T, maxBlocks, numBlocks, blockSize, Hq, Hkv, D, scale, alibi|null, window, sinks)
Napi::Value PagedAttention(const Napi::CallbackInfo& info) {
  tc::PagedArgs a{};
  a.B = num(info, 7, "B", 1, kMax);
  a.T = num(info, 8, "T", 0, kMax);
  a.max_blocks = num(info, 9, "maxBlocks", 1, kMax);
  const int64_t nblocks = num(info, 10, "numBlocks", 1, kMax);
  a.block_size = num(info, 11, "blockSize", 1, 1 << 20);
  a.Hq = num(info, 12, "Hq", 1, 1 << 16);
  a.Hkv = num(info, 13, "Hkv", 1, 1 << 16);
  a.D = num(info, 14, "D", 1, 256);
  if (a.Hq % a.Hkv) throw OpError("Hq must be a multiple of Hkv");
  a.q = (const float*)dev(info, 0, "q", mul({a.T, a.Hq, a.D, 4}));
  a.k_cache = (const float*)dev(info, 1, "kCache", mul({nblocks, a.block_size, a.Hkv, a.D, 4}));
  a.v_cache = (const float*)dev(info, 2, "vCache", mul({nblocks, a.block_size, a.Hkv, a.D, 4}));
  a.block_tables = (const int32_t*)dev(info, 3, "blockTables", mul({a.B, a.max_blocks, 4}));
  a.context_lens = (const int32_t*)dev(info, 4, "contextLens", mul({a.B, 4}));
  a.query_start = (const int32_t*)dev(info, 5, "queryStart", mul({a.B + 1, 4}));
  a.o = (float*)dev(info, 6, "o", mul({a.T, a.Hq, a.D, 4}));
  a.scale = (float)fnum(info, 15, "scale");
  a.alibi = (const float*)dev(info, 16, "alibi", mul({a.Hq, 4}), true);
  a.window = num(info, 17, "window", 0, kMax);
  a.sinks = num(info, 18, "sinks", 0, kMax);
  // Block tables and lengths are validated on the host (TS) before upload: the device trusts them.
  tc::paged_attention(a, 0);
  return info.Env().Undefined();
}

// gptqLinear(x, qweight, scales, qzeros, gIdx, bias|null, y, M, N, K, G, bits, zeroOffset)
Napi::Value GptqLinear(const Napi::CallbackInfo& info) {
  tc::GptqArgs a{};
  a.M = num(info, 7, "M", 0, kMax);
  a.N = num(info, 8, "N", 1, kMax);
  a.K = num(info, 9, "K", 1, kMax);
  a.G = num(info, 10, "G", 1, kMax);
  a.bits = (int32_t)num(info, 11, "bits", 4, 8);
  if (a.bits != 4 && a.bits != 8) throw OpError("bits must be 4 or 8");
  if ((a.K * a.bits) % 32) throw OpError("K * bits must be a multiple of 32");
  a.zero_offset = (int32_t)num(info, 12, "zeroOffset", 0, 1);
  a.x = (const float*)dev(info, 0, "x", mul({a.M, a.K, 4}));
  a.qweight = (const int32_t*)dev(info, 1, "qweight", mul({a.K, a.bits / 32, a.N, 4}));
  a.scales = (const __half*)dev(info, 2, "scales", mul({a.G, a.N, 2}));
  a.qzeros = (const int32_t*)dev(info, 3, "qzeros", mul({a.G, (mul({a.N, a.bits}) + 31) / 32, 4}));
  a.g_idx = (const int32_t*)dev(info, 4, "gIdx", mul({a.K, 4}));
  a.bias = (const float*)dev(info, 5, "bias", mul({a.N, 4}), true);
  a.y = (float*)dev(info, 6, "y", mul({a.M, a.N, 4}));
  tc::gptq_linear(a, 0);
  return info.Env().Undefined();
}

// moeRoute(logits, T, E, k, renormalize, weights, experts, offsets, order)
Napi::Value MoeRoute(const Napi::CallbackInfo& info) {
  const int64_t T = num(info, 1, "T", 0, kMax), E = num(info, 2, "E", 1, 1 << 16), k = num(info, 3, "k", 1, 1 << 16);
  if (k > E) throw OpError("k must be at most E");
  tc::moe_route((const float*)dev(info, 0, "logits", mul({T, E, 4})), T, E, k, flag(info, 4), (float*)dev(info, 5, "weights", mul({T, k, 4})),
                (int32_t*)dev(info, 6, "experts", mul({T, k, 4})), (int32_t*)dev(info, 7, "offsets", (E + 1) * 4),
                (int32_t*)dev(info, 8, "order", mul({T, k, 4})), 0);
  return info.Env().Undefined();
}

// rmsNorm(x, w, y, rows, dim, eps)
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  const int64_t rows = num(info, 3, "rows", 0, kMax), dim = num(info, 4, "dim", 1, kMax);
  tc::rms_norm((const float*)dev(info, 0, "x", mul({rows, dim, 4})), (const float*)dev(info, 1, "w", mul({dim, 4})),
               (float*)dev(info, 2, "y", mul({rows, dim, 4})), rows, dim, (float)fnum(info, 5, "eps"), 0);
  return info.Env().Undefined();
}

// rope(plan): CudaRopePlan of src/backend/cuda/device.ts, read by field name.
Napi::Value Rope(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) throw OpError("expected a plan object");
  const Napi::Object plan = info[0].As<Napi::Object>();
  tc::rope_params p{};
  p.T = pnum(plan, "T", 0, kMax);
  p.H = pnum(plan, "H", 1, kMax);
  p.D = pnum(plan, "D", 2, 1 << 16);
  p.rot_dim = pnum(plan, "rotDim", 2, p.D);
  if (p.rot_dim % 2) throw OpError("rotDim must be even");
  p.x = (float*)pdev(plan, "x", mul({p.T, p.H, p.D, 4}));
  p.pos = (const int32_t*)pdev(plan, "positions", mul({p.T, 4}));
  p.theta = pfnum(plan, "theta");
  p.freq_scale = pfnum(plan, "freqScale");
  const Napi::Value neox = field(plan, "neox");
  if (!neox.IsBoolean()) throw OpError("neox must be a boolean");
  p.neox = neox.As<Napi::Boolean>().Value();
  p.freq_factors = (const float*)pdev(plan, "freqFactors", mul({p.rot_dim / 2, 4}), true);
  p.ext_factor = pfnum(plan, "extFactor");
  p.corr_low = pfnum(plan, "corrLow");
  p.corr_high = pfnum(plan, "corrHigh");
  p.attn_factor = pfnum(plan, "attnFactor");
  tc::rope(p, 0);
  return info.Env().Undefined();
}

// swiglu(gate, up, y, n) / add(a, b, y, n)
Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  const int64_t n = num(info, 3, "n", 0, kMax);
  tc::swiglu((const float*)dev(info, 0, "gate", mul({n, 4})), (const float*)dev(info, 1, "up", mul({n, 4})), (float*)dev(info, 2, "y", mul({n, 4})), n, 0);
  return info.Env().Undefined();
}
Napi::Value Add(const Napi::CallbackInfo& info) {
  const int64_t n = num(info, 3, "n", 0, kMax);
  tc::add((const float*)dev(info, 0, "a", mul({n, 4})), (const float*)dev(info, 1, "b", mul({n, 4})), (float*)dev(info, 2, "y", mul({n, 4})), n, 0);
  return info.Env().Undefined();
}

// embedding(table, dtype, vocab, dim, ids, n, out)
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  const tc::DType dt = (tc::DType)num(info, 1, "dtype", 0, 2);
  const int64_t vocab = num(info, 2, "vocab", 1, kMax), dim = num(info, 3, "dim", 1, kMax), n = num(info, 5, "n", 0, kMax);
  tc::embedding(dev(info, 0, "table", vocab * dim * esize(dt)), dt, vocab, dim, (const int32_t*)dev(info, 4, "ids", mul({n, 4})), n,
                (float*)dev(info, 6, "out", mul({n, dim, 4})), 0);
  return info.Env().Undefined();
}

// pagedKvWrite(kCache, vCache, k, v, slots, T, row, nSlots)
Napi::Value PagedKvWrite(const Napi::CallbackInfo& info) {
  const int64_t T = num(info, 5, "T", 0, kMax), row = num(info, 6, "row", 1, kMax), slots = num(info, 7, "nSlots", 1, kMax);
  tc::paged_kv_write((float*)dev(info, 0, "kCache", mul({slots, row, 4})), (float*)dev(info, 1, "vCache", mul({slots, row, 4})),
                     (const float*)dev(info, 2, "k", mul({T, row, 4})), (const float*)dev(info, 3, "v", mul({T, row, 4})),
                     (const int32_t*)dev(info, 4, "slots", mul({T, 4})), T, row, slots, 0);
  return info.Env().Undefined();
}

// convert(x f32, y, dtype, n): f32 -> f16 (1) / bf16 (2)
Napi::Value Convert(const Napi::CallbackInfo& info) {
  const tc::DType dt = (tc::DType)num(info, 2, "dtype", 1, 2);
  const int64_t n = num(info, 3, "n", 0, kMax);
  tc::convert_f32((const float*)dev(info, 0, "x", mul({n, 4})), dev(info, 1, "y", mul({n, 2})), dt, n, 0);
  return info.Env().Undefined();
}

#define OP(name, fn)                                                                                      \
  exports.Set(name, Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return wrap<fn>(i, name); }, name))

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  OP("info", Info);
  OP("alloc", Alloc);
  OP("free", Free);
  OP("upload", Upload);
  OP("download", Download);
  OP("synchronize", Synchronize);
  OP("flashAttention", FlashAttention);
  OP("flashWorkspaceFloats", FlashWorkspace);
  OP("pagedAttention", PagedAttention);
  OP("gptqLinear", GptqLinear);
  OP("moeRoute", MoeRoute);
  OP("rmsNorm", RmsNorm);
  OP("rope", Rope);
  OP("swiglu", Swiglu);
  OP("add", Add);
  OP("embedding", Embedding);
  OP("pagedKvWrite", PagedKvWrite);
  OP("convert", Convert);
  return exports;
}

}  // namespace

NODE_API_MODULE(tessera_cuda, Init)
