// One-time weight conversions at load (native/cpu/weight_convert.h), so that no O(weights) loop
// runs in JS: repackQ4_0 and dequantizeBlocks.
#include <string>

#include "addon/args.h"
#include "common/errors.h"
#include "cpu/weight_convert.h"

namespace tessera::addon {

static const int64_t kMaxDim = int64_t(1) << 40;

// repackQ4_0(blocks: Uint8Array, N, K, qweight: Int32Array, meta: Uint16Array)
static Napi::Value RepackQ4_0(const Napi::CallbackInfo& info) {
  const int64_t N = arg_int(info, 1, "N", 1, kMaxDim), K = arg_int(info, 2, "K", 32, kMaxDim);
  if (K % 32) fail("K = " + std::to_string(K) + " is not a multiple of 32, as q4_0 weights need");
  const int64_t tiles = (N + 15) / 16;
  const auto* blocks = (const uint8_t*)arg_typed(info, 0, "blocks", DType::Q4_0, mul_checked(mul_checked(N, K / 32, "blocks"), 18, "blocks"));
  int32_t* qweight = arg_i32(info, 3, "qweight", mul_checked(mul_checked(tiles, K / 8, "qweight"), 16, "qweight"));
  auto* meta = (uint16_t*)arg_typed(info, 4, "meta", DType::F16, mul_checked(mul_checked(tiles, K / 32, "meta"), 16, "meta"));
  check_aliasing({"qweight", "meta"});
  cpu_repack_q4_0(blocks, N, K, qweight, meta);
  return info.Env().Undefined();
}

// dequantizeBlocks(blocks: Uint8Array, dtype: 6 (q8_0) | 7 (q4_0), out: Float32Array)
static Napi::Value DequantizeBlocks(const Napi::CallbackInfo& info) {
  const DType dt = arg_dtype(info, 1, "dtype");
  if (dt != DType::Q8_0 && dt != DType::Q4_0) fail(std::string("dtype ") + dtype_name(dt) + " is not a block type (expected q8_0 or q4_0)");
  int64_t n = 0;
  float* out = arg_f32(info, 2, "out", -1, &n);
  if (n % 32) fail("out has " + std::to_string(n) + " elements, not a multiple of 32");
  const auto* blocks = (const uint8_t*)arg_typed(info, 0, "blocks", dt, (n / 32) * quant_block_bytes(dt));
  check_aliasing({"out"});
  if (dt == DType::Q8_0) cpu_dequantize_q8_0(blocks, n, out);
  else cpu_dequantize_q4_0(blocks, n, out);
  return info.Env().Undefined();
}

void register_convert(Napi::Env env, Napi::Object exports) {
  register_op(env, exports, "repackQ4_0", RepackQ4_0);
  register_op(env, exports, "dequantizeBlocks", DequantizeBlocks);
}

}  // namespace tessera::addon
