// linear and the benchmark peak probes.
#include <string>

#include "addon/args.h"
#include "cpu/dispatch.h"
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
    const int64_t block = quant_block_bytes(p.wtype);
    p.w = arg_typed(info, 1, "w", p.wtype, mul_checked(mul_checked(p.N, p.K / 32, "w"), block, "w"));
  } else {
    p.w = arg_typed(info, 1, "w", p.wtype, mul_checked(p.N, p.K, "w"));
  }
  p.bias = arg_f32_opt(info, 3, "bias", p.N);
  p.y = arg_f32(info, 4, "y", mul_checked(p.M, p.N, "y"));
  check_aliasing({"y"});
  kernels().linear(p);
  return info.Env().Undefined();
}

// linearInt(x, qweight, bits, perm|null, groupBlocks, meta, colScale|null, bias|null, y, M, N, K, G, fixedZero, roundDxF16)
// Integer weights in the kernel layout of native/cpu/linear_int.h; every length and every group
// offset is checked here, so a malformed layout cannot read out of bounds.
static Napi::Value LinearInt(const Napi::CallbackInfo& info) {
  IntLinearParams p{};
  p.M = arg_int(info, 9, "M", 0, kMaxDim);
  p.N = arg_int(info, 10, "N", 0, kMaxDim);
  p.K = arg_int(info, 11, "K", 0, kMaxDim);
  p.G = arg_int(info, 12, "G", 1, kMaxDim);
  p.bits = (int32_t)arg_int(info, 2, "bits", 4, 8);
  if (p.bits != 4 && p.bits != 8) fail("bits must be 4 or 8, got " + std::to_string(p.bits));
  const int64_t Kp = (p.K + 31) / 32 * 32, nb = Kp / 32, tiles = (p.N + 15) / 16;
  p.x = arg_f32(info, 0, "x", mul_checked(p.M, p.K, "x"));
  p.qweight = arg_i32(info, 1, "qweight", mul_checked(mul_checked(tiles, Kp * p.bits / 32, "qweight"), 16, "qweight"));
  if (arg_is_null(info, 3)) p.perm = nullptr;
  else {
    const int32_t* perm = arg_i32(info, 3, "perm", p.K);
    for (int64_t k = 0; k < p.K; k++)
      if (perm[k] < 0 || perm[k] >= p.K) fail("perm[" + std::to_string(k) + "] = " + std::to_string(perm[k]) + " is outside [0, K)");
    p.perm = perm;
  }
  const int32_t* gb = arg_i32(info, 4, "groupBlocks", p.G + 1);
  if (gb[0] != 0 || gb[p.G] != nb) fail("groupBlocks must start at 0 and end at the block count " + std::to_string(nb));
  for (int64_t g = 0; g < p.G; g++)
    if (gb[g + 1] < gb[g]) fail("groupBlocks must not decrease (at group " + std::to_string(g) + ")");
  p.group_blocks = gb;
  const double fz = arg_num(info, 13, "fixedZero");
  if (!(fz >= -1.0 && fz <= 65504.0)) fail("fixedZero must be -1 (zero points in meta) or a zero point >= 0");
  p.fixed_zero = fz >= 0 ? (float)fz : -1.0f;
  p.round_dx_f16 = arg_bool(info, 14, "roundDxF16");
  p.meta = (const uint16_t*)arg_typed(info, 5, "meta", DType::F16, mul_checked(mul_checked(tiles, p.G, "meta"), p.fixed_zero >= 0 ? 16 : 32, "meta"));
  p.col_scale = arg_f32_opt(info, 6, "colScale", p.N);
  p.bias = arg_f32_opt(info, 7, "bias", p.N);
  p.y = arg_f32(info, 8, "y", mul_checked(p.M, p.N, "y"));
  // Writes to y must not change perm or the group offsets that bound every read.
  check_aliasing({"y"});
  kernels().linear_int(p);
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
  register_op(env, exports, "linearInt", LinearInt);
  register_op(env, exports, "fmaPeak", FmaPeak);
  register_op(env, exports, "readStream", ReadStream);
}

}  // namespace tessera::addon
