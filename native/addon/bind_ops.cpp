// Norms, activations, elementwise, softmax, embedding, rope, alibi, MoE, top-k, cross-entropy.
#include <string>

#include "addon/args.h"
#include "cpu/dispatch.h"
#include "common/errors.h"
#include "cpu/ops.h"

namespace tessera::addon {

static const int64_t kMax = int64_t(1) << 40;

// rmsNorm(x, w, y, rows, dim, eps)
static Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  int64_t rows = arg_int(info, 3, "rows", 0, kMax), dim = arg_int(info, 4, "dim", 1, kMax);
  int64_t n = mul_checked(rows, dim, "x");
  const float* x = arg_f32(info, 0, "x", n);
  const float* w = arg_f32(info, 1, "weight", dim);
  float* y = arg_f32(info, 2, "y", n);
  float eps = (float)arg_num(info, 5, "eps");
  check_aliasing({"y"}, {{"y", "x"}});
  kernels().rms_norm(x, w, y, rows, dim, eps);
  return info.Env().Undefined();
}

// layerNorm(x, w|null, b|null, y, rows, dim, eps)
static Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  int64_t rows = arg_int(info, 4, "rows", 0, kMax), dim = arg_int(info, 5, "dim", 1, kMax);
  int64_t n = mul_checked(rows, dim, "x");
  const float* x = arg_f32(info, 0, "x", n);
  const float* w = arg_f32_opt(info, 1, "weight", dim);
  const float* b = arg_f32_opt(info, 2, "bias", dim);
  float* y = arg_f32(info, 3, "y", n);
  float eps = (float)arg_num(info, 6, "eps");
  check_aliasing({"y"});
  kernels().layer_norm(x, w, b, y, rows, dim, eps);
  return info.Env().Undefined();
}

// softmax(x, y, rows, cols, scale, log)
static Napi::Value Softmax(const Napi::CallbackInfo& info) {
  int64_t rows = arg_int(info, 2, "rows", 0, kMax), cols = arg_int(info, 3, "cols", 1, kMax);
  int64_t n = mul_checked(rows, cols, "x");
  const float* x = arg_f32(info, 0, "x", n);
  float* y = arg_f32(info, 1, "y", n);
  float scale = (float)arg_num(info, 4, "scale");
  bool log = arg_bool(info, 5, "log");
  check_aliasing({"y"});
  kernels().softmax(x, y, rows, cols, scale, log);
  return info.Env().Undefined();
}

// activation(x, y, act)
static Napi::Value ActivationOp(const Napi::CallbackInfo& info) {
  int64_t n = 0;
  float* x = arg_f32(info, 0, "x", -1, &n);
  float* y = arg_f32(info, 1, "y", n);
  Activation act = (Activation)arg_int(info, 2, "act", 0, 2);
  check_aliasing({"y"}, {{"y", "x"}});
  kernels().activation(x, y, n, act);
  return info.Env().Undefined();
}

// swiglu(gate, up, y)
static Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  int64_t n = 0;
  float* g = arg_f32(info, 0, "gate", -1, &n);
  float* u = arg_f32(info, 1, "up", n);
  float* y = arg_f32(info, 2, "y", n);
  check_aliasing({"y"}, {{"y", "gate"}, {"y", "up"}});
  kernels().swiglu(g, u, y, n);
  return info.Env().Undefined();
}

// binary(a, b, y, op): b's length divides a's
static Napi::Value Binary(const Napi::CallbackInfo& info) {
  int64_t n = 0, bl = 0;
  float* a = arg_f32(info, 0, "a", -1, &n);
  float* b = arg_f32(info, 1, "b", -1, &bl);
  if (bl == 0 ? n != 0 : n % bl != 0) fail("length of 'b' (" + std::to_string(bl) + ") must divide length of 'a' (" + std::to_string(n) + ")");
  if (n == 0) return info.Env().Undefined();
  float* y = arg_f32(info, 2, "y", n);
  int op = (int)arg_int(info, 3, "op", 0, 1);
  check_aliasing({"y"}, {{"y", "a"}, {"y", "b"}});
  kernels().binary(a, b, y, n, bl, op);
  return info.Env().Undefined();
}

// embedding(table, dtype, vocab, dim, ids, out); table f32/f16/bf16 or Q8_0/Q4_0 blocks (Uint8Array)
static Napi::Value Embedding(const Napi::CallbackInfo& info) {
  DType dt = arg_dtype(info, 1, "dtype");
  const bool blocks = dt == DType::Q8_0 || dt == DType::Q4_0;
  if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16 && !blocks) fail("table dtype must be f32, f16, bf16, q8_0 or q4_0");
  int64_t vocab = arg_int(info, 2, "vocab", 1, kMax), dim = arg_int(info, 3, "dim", 1, kMax);
  if (blocks && dim % 32)
    fail(std::string("dim (") + std::to_string(dim) + ") of a " + dtype_name(dt) + " table must be a multiple of 32");
  // Block tables: vocab * dim / 32 blocks of 34 (Q8_0) or 18 (Q4_0) bytes.
  const int64_t len = blocks ? mul_checked(mul_checked(vocab, dim / 32, "table"), quant_block_bytes(dt), "table")
                             : mul_checked(vocab, dim, "table");
  const void* table = arg_typed(info, 0, "table", dt, len);
  int64_t n = 0;
  const int32_t* ids = arg_i32(info, 4, "ids", -1, &n);
  float* out = arg_f32(info, 5, "out", mul_checked(n, dim, "out"));
  check_aliasing({"out"});
  cpu_embedding(table, dt, vocab, dim, ids, n, out);
  return info.Env().Undefined();
}

// rope(plan): the RopePlan of src/backend/kernels.ts, read by field name.
static Napi::Value Rope(const Napi::CallbackInfo& info) {
  Napi::Object plan = arg_plan(info, 0);
  RopeParams p{};
  p.T = plan_int(plan, "T", 0, kMax);
  p.H = plan_int(plan, "H", 1, kMax);
  p.D = plan_int(plan, "D", 2, kMax);
  p.rot_dim = plan_int(plan, "rotDim", 2, p.D);
  if (p.rot_dim % 2) fail("rotDim must be even");
  int64_t n = mul_checked(mul_checked(p.T, p.H, "x"), p.D, "x");
  p.x = plan_f32(plan, "x", n);
  p.y = plan_f32(plan, "y", n);
  p.pos = plan_i32(plan, "positions", p.T);
  p.theta = plan_num(plan, "theta");
  p.freq_scale = plan_num(plan, "freqScale");
  p.neox = plan_bool(plan, "neox");
  p.freq_factors = plan_f32_opt(plan, "freqFactors", p.rot_dim / 2);
  p.ext_factor = plan_num(plan, "extFactor");
  p.corr_low = plan_num(plan, "corrLow");
  p.corr_high = plan_num(plan, "corrHigh");
  p.attn_factor = plan_num(plan, "attnFactor");
  check_aliasing({"y"}, {{"y", "x"}});
  cpu_rope(p);
  return info.Env().Undefined();
}

// alibiSlopes(nHeads, maxBias, out)
static Napi::Value AlibiSlopes(const Napi::CallbackInfo& info) {
  int64_t h = arg_int(info, 0, "nHeads", 1, 1 << 20);
  float max_bias = (float)arg_num(info, 1, "maxBias");
  float* out = arg_f32(info, 2, "out", h);
  cpu_alibi_slopes(h, max_bias, out);
  return info.Env().Undefined();
}

// moeRoute(logits, T, E, k, renormalize, weights, experts, offsets, order)
static Napi::Value MoeRoute(const Napi::CallbackInfo& info) {
  MoeRouteParams p{};
  p.T = arg_int(info, 1, "T", 0, kMax);
  p.E = arg_int(info, 2, "E", 1, 1 << 20);
  p.k = arg_int(info, 3, "k", 1, p.E);
  p.renormalize = arg_bool(info, 4, "renormalize");
  int64_t tk = mul_checked(p.T, p.k, "weights");
  p.logits = arg_f32(info, 0, "logits", mul_checked(p.T, p.E, "logits"));
  p.weights = arg_f32(info, 5, "weights", tk);
  p.experts = arg_i32(info, 6, "experts", tk);
  p.expert_offsets = arg_i32(info, 7, "expertOffsets", p.E + 1);
  p.order = arg_i32(info, 8, "order", tk);
  check_aliasing({"weights", "experts", "expertOffsets", "order"});
  cpu_moe_route(p);
  return info.Env().Undefined();
}

// moeGather(x, T, D, order, k, out)
static Napi::Value MoeGather(const Napi::CallbackInfo& info) {
  int64_t T = arg_int(info, 1, "T", 0, kMax), D = arg_int(info, 2, "D", 1, kMax), k = arg_int(info, 4, "k", 1, 1 << 20);
  int64_t n = 0;
  const int32_t* order = arg_i32(info, 3, "order", -1, &n);
  const float* x = arg_f32(info, 0, "x", mul_checked(T, D, "x"));
  float* out = arg_f32(info, 5, "out", mul_checked(n, D, "out"));
  check_aliasing({"out"});
  cpu_moe_gather(x, T, D, order, n, k, out);
  return info.Env().Undefined();
}

// moeScatter(y, order, weights, T, k, D, out)
static Napi::Value MoeScatter(const Napi::CallbackInfo& info) {
  int64_t T = arg_int(info, 3, "T", 0, kMax), k = arg_int(info, 4, "k", 1, 1 << 20), D = arg_int(info, 5, "D", 1, kMax);
  int64_t tk = mul_checked(T, k, "order");
  const float* y = arg_f32(info, 0, "y", mul_checked(tk, D, "y"));
  const int32_t* order = arg_i32(info, 1, "order", tk);
  const float* w = arg_f32(info, 2, "weights", tk);
  float* out = arg_f32(info, 6, "out", mul_checked(T, D, "out"));
  check_aliasing({"out"});
  cpu_moe_scatter(y, order, w, T, k, D, out);
  return info.Env().Undefined();
}

// topk(x, rows, cols, k, values, indices)
static Napi::Value TopK(const Napi::CallbackInfo& info) {
  int64_t rows = arg_int(info, 1, "rows", 0, kMax), cols = arg_int(info, 2, "cols", 1, kMax);
  int64_t k = arg_int(info, 3, "k", 1, cols);
  const float* x = arg_f32(info, 0, "x", mul_checked(rows, cols, "x"));
  float* values = arg_f32(info, 4, "values", mul_checked(rows, k, "values"));
  int32_t* indices = arg_i32(info, 5, "indices", rows * k);
  check_aliasing({"values", "indices"});
  cpu_topk(x, rows, cols, k, values, indices);
  return info.Env().Undefined();
}

// crossEntropy(logits, rows, cols, targets, ignoreIndex, nll|null) -> { sum, count }
static Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  int64_t rows = arg_int(info, 1, "rows", 0, kMax), cols = arg_int(info, 2, "cols", 1, kMax);
  int64_t count = 0;
  const float* logits = arg_f32(info, 0, "logits", mul_checked(rows, cols, "logits"));
  const int32_t* targets = arg_i32(info, 3, "targets", rows);
  int32_t ignore = (int32_t)arg_int(info, 4, "ignoreIndex", INT32_MIN, INT32_MAX);
  float* nll = arg_f32_opt(info, 5, "nll", rows);
  check_aliasing({"nll"});
  double sum = cpu_cross_entropy(logits, rows, cols, targets, ignore, &count, nll);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("sum", sum);
  o.Set("count", (double)count);
  return o;
}

void register_ops(Napi::Env env, Napi::Object exports) {
  register_op(env, exports, "rmsNorm", RmsNorm);
  register_op(env, exports, "layerNorm", LayerNorm);
  register_op(env, exports, "softmax", Softmax);
  register_op(env, exports, "activation", ActivationOp);
  register_op(env, exports, "swiglu", Swiglu);
  register_op(env, exports, "binary", Binary);
  register_op(env, exports, "embedding", Embedding);
  register_op(env, exports, "rope", Rope);
  register_op(env, exports, "alibiSlopes", AlibiSlopes);
  register_op(env, exports, "moeRoute", MoeRoute);
  register_op(env, exports, "moeGather", MoeGather);
  register_op(env, exports, "moeScatter", MoeScatter);
  register_op(env, exports, "topk", TopK);
  register_op(env, exports, "crossEntropy", CrossEntropy);
}

}  // namespace tessera::addon
