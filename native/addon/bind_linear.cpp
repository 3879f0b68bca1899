// linear and the benchmark peak probes.
#include <string>

#include "addon/args.h"
#include "common/dispatch.h"
#include "common/errors.h"

namespace tessera::addon {

static const int64_t kMaxDim = int64_t(1) << 40;

// linear(x, w, wtype, bias|null, y, M, N, K)
static Napi::Value Linear(const Napi::CallbackInfo& info) {
  LinearParams p{};
  p.M = arg_int(info, 5, "M", 0, kMaxDim);
  p.N = arg_int(info, 6, "N", 0, kMaxDim);
  p.K = arg_int(info, 7, "K", 0, kMaxDim);
  p.wtype = arg_dtype(info, 2, "wtype");
  const bool quant = p.wtype == DType::Q8_0 || p.wtype == DType::Q4_0;
  if (p.wtype != DType::F32 && p.wtype != DType::F16 && p.wtype != DType::BF16 && !quant)
    fail(std::string("weight dtype ") + dtype_name(p.wtype) + " is not supported (expected f32, f16, bf16, q8_0 or q4_0)");
  p.x = arg_f32(info, 0, "x", mul_checked(p.M, p.K, "x"));
  if (quant) {
    // N rows of K / 32 blocks of 34 (q8_0) or 18 (q4_0) bytes, in a Uint8Array.
    if (p.K % 32)
      fail(std::string("K = ") + std::to_string(p.K) + " is not a multiple of 32, as " + dtype_name(p.wtype) + " weights need");
    const int64_t block = p.wtype == DType::Q8_0 ? 34 : 18;
    p.w = arg_typed(info, 1, "w", p.wtype, mul_checked(mul_checked(p.N, p.K / 32, "w"), block, "w"));
  } else {
    p.w = arg_typed(info, 1, "w", p.wtype, mul_checked(p.N, p.K, "w"));
  }
  p.bias = arg_f32_opt(info, 3, "bias", p.N);
  p.y = arg_f32(info, 4, "y", mul_checked(p.M, p.N, "y"));
  kernels().linear(p);
  return info.Env().Undefined();
}

// fmaPeak(iters) -> { seconds, flops }
static Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  int64_t iters = arg_int(info, 0, "iters", 1, int64_t(1) << 40);
  double flops = 0;
  double secs = kernels().fma_peak(iters, &flops);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("seconds", secs);
  o.Set("flops", flops);
  return o;
}

// readStream(src: Float32Array) -> checksum
static Napi::Value ReadStream(const Napi::CallbackInfo& info) {
  int64_t n = 0;
  float* src = arg_f32(info, 0, "src", -1, &n);
  return Napi::Number::New(info.Env(), kernels().read_stream(src, n));
}

void register_linear(Napi::Env env, Napi::Object exports) {
  register_op(env, exports, "linear", Linear);
  register_op(env, exports, "fmaPeak", FmaPeak);
  register_op(env, exports, "readStream", ReadStream);
}

}  // namespace tessera::addon
