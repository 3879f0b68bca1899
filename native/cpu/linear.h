// linear: y (M, N) = x (M, K) @ w (N, K)^T + bias, weights f32/f16/bf16, f32 accumulation.
// Reference-quality version: one dot product per output, parallel over N.
#pragma once
#include "common/errors.h"
#include "common/thread_pool.h"
#include "cpu/kernels.h"

namespace tessera::TESSERA_ISA_NS {

template <DType WT>
static inline Simd::V load_w(const void* w, int64_t i) {
  if constexpr (WT == DType::F32) return Simd::load((const float*)w + i);
  else if constexpr (WT == DType::F16) return Simd::load_f16((const uint16_t*)w + i);
  else return Simd::load_bf16((const uint16_t*)w + i);
}

template <DType WT>
static inline float scalar_w(const void* w, int64_t i) {
  if constexpr (WT == DType::F32) return ((const float*)w)[i];
  else if constexpr (WT == DType::F16) return fp16_to_fp32(((const uint16_t*)w)[i]);
  else return bf16_to_fp32(((const uint16_t*)w)[i]);
}

template <DType WT>
static void linear_simple(const LinearParams& p) {
  using S = Simd;
  const int64_t M = p.M, N = p.N, K = p.K;
  parallel_range(N, 8, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const int64_t wrow = n * K;
      for (int64_t m = 0; m < M; m++) {
        const float* xr = p.x + m * K;
        S::V acc = S::zero();
        int64_t k = 0;
        for (; k + S::W <= K; k += S::W) acc = S::fma(S::load(xr + k), load_w<WT>(p.w, wrow + k), acc);
        float s = S::hsum(acc);
        for (; k < K; k++) s += xr[k] * scalar_w<WT>(p.w, wrow + k);
        p.y[m * N + n] = s + (p.bias ? p.bias[n] : 0.0f);
      }
    }
  });
}

static void linear(const LinearParams& p) {
  switch (p.wtype) {
    case DType::F32: return linear_simple<DType::F32>(p);
    case DType::F16: return linear_simple<DType::F16>(p);
    case DType::BF16: return linear_simple<DType::BF16>(p);
    default: fail("linear: unsupported weight dtype");
  }
}

}  // namespace tessera::TESSERA_ISA_NS
