// linear: y (M, N) = x (M, K) @ w (N, K)^T + bias, weights f32/f16/bf16, f32 accumulation, or
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

template <DType WT>
static void linear_typed(const LinearParams& p) {
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
