// Weight loads shared by the linear GEMV and GEMM: f16 through F16C/vcvtph2ps, bf16 by a 16-bit
// shift (both exact), and per-thread scratch buffers for the GEMM's packed operands.
#pragma once
#include <cstddef>
#include <new>

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

// A grow-only, 64-byte aligned float buffer owned by one thread. Kept between calls so repeated
// GEMMs do not page-fault fresh allocations in; freed when the thread exits. The type lives in
// the per-ISA namespace, so its inline members are never merged across ISA translation units.
struct LinearScratch {
  float* p = nullptr;
  size_t cap = 0;  // floats
  LinearScratch() = default;
  LinearScratch(const LinearScratch&) = delete;
  LinearScratch& operator=(const LinearScratch&) = delete;
  ~LinearScratch() { release(); }
  void release() {
    if (p) ::operator delete(p, std::align_val_t(64));
    p = nullptr;
    cap = 0;
  }
  float* get(size_t n) {
    if (n > cap) {
      release();
      p = static_cast<float*>(::operator new(n * sizeof(float), std::align_val_t(64)));
      cap = n;
    }
    return p;
  }
};

}  // namespace tessera::TESSERA_ISA_NS
