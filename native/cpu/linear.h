// linear: y (M, N) = x (M, K) @ w (N, K)^T + bias, weights f32/f16/bf16 (activations rounded to
// the weight type first, as llama.cpp does), f32 accumulation, or
// GGUF q8_0/q4_0 blocks with llama.cpp's integer-dot numerics (linear_quant.h).
// Few rows (decode) take the weight-streaming GEMV in linear_gemv.h; more rows take the packed,
// register-tiled GEMM in linear_gemm.h (GotoBLAS/BLIS layering, Goto & van de Geijn 2008).
#pragma once
#include "common/errors.h"
#include "common/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/linear_common.h"
#include "cpu/linear_gemm.h"
#include "cpu/linear_gemv.h"
#include "cpu/linear_quant.h"

namespace tessera::TESSERA_ISA_NS {

// Up to this many rows, reading each weight once straight from memory beats packing it: the
// GEMV is bandwidth-bound while the GEMM pays a converting pack pass over all of w (measured
// on 4096 x 4096: the GEMV is faster through M = 12, about even at 16).
static constexpr int64_t kLinearGemvMaxM = 12;

// llama.cpp multiplies f16 (bf16) weights with activations converted to f16 (bf16) first; doing the
// same keeps tessera's logits on F16 models within float noise of llama.cpp's (the peer users
// compare against) instead of ~1e-3 apart. The rounded copy lives in a per-thread buffer.
static thread_local LinearScratch t_linear_xround;

template <DType WT>
static const float* round_activations(const LinearParams& p) {
  using S = Simd;
  const int64_t n = p.M * p.K;
  float* out = t_linear_xround.get((size_t)n);
  parallel_range(n, 1 << 14, [&](int64_t b, int64_t e) {
    int64_t i = b;
    for (; i + S::W <= e; i += S::W) {
      S::V v = S::load(p.x + i);
      S::store(out + i, WT == DType::F16 ? S::round_f16(v) : S::round_bf16(v));
    }
    for (; i < e; i++) out[i] = WT == DType::F16 ? fp16_to_fp32(fp32_to_fp16(p.x[i])) : bf16_to_fp32(fp32_to_bf16(p.x[i]));
  });
  return out;
}

template <DType WT>
static void linear_typed(const LinearParams& p0) {
  LinearParams p = p0;
  if constexpr (WT == DType::F16 || WT == DType::BF16) p.x = round_activations<WT>(p0);
  if (p.M <= kLinearGemvMaxM) linear_gemv<WT>(p);
  else linear_gemm<WT>(p);
}

static void linear(const LinearParams& p) {
  if (p.M <= 0 || p.N <= 0) return;
  if (p.K <= 0) {  // empty sum: y is the bias (or zero)
    for (int64_t m = 0; m < p.M; m++)
      for (int64_t n = 0; n < p.N; n++) p.y[m * p.N + n] = p.bias ? p.bias[n] : 0.0f;
    return;
  }
  switch (p.wtype) {
    case DType::F32: return linear_typed<DType::F32>(p);
    case DType::F16: return linear_typed<DType::F16>(p);
    case DType::BF16: return linear_typed<DType::BF16>(p);
    case DType::Q8_0: return linear_quant<DType::Q8_0>(p);
    case DType::Q4_0: return linear_quant<DType::Q4_0>(p);
    default: fail("linear: unsupported weight dtype");
  }
}

}  // namespace tessera::TESSERA_ISA_NS
