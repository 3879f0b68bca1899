// The small ops a Llama decode step needs on the device (CPU references: native/cpu/norm.h,
// rope.cpp, activation.h, embedding.cpp, paged_kv_write.cpp). All f32 unless stated.
#pragma once
#include "cuda/common.cuh"

namespace tessera::cuda {

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps, cudaStream_t s);
// RoPE with ggml's extensions (freq_factors, YaRN ramp; CPU reference native/cpu/rope.cpp).
struct rope_params {
  float* x;                   // (T, H, D), rotated in place over the leading rot_dim dims
  const int32_t* pos;         // (T)
  int64_t T, H, D;
  int64_t rot_dim;            // even, <= D
  double theta;               // base: pair i's frequency theta^(-2i / rot_dim)
  double freq_scale;          // interpolated frequencies are multiplied by this (1 / linear or YaRN factor)
  bool neox;                  // pairs (i, i + rot_dim/2), else (2i, 2i+1)
  const float* freq_factors;  // (rot_dim/2) device, or null: pair i's frequency is divided by it
  double ext_factor;          // YaRN: 0 = off; the extrapolated frequency mixed in by ramp(i) * ext_factor
  double corr_low, corr_high; // YaRN ramp over pair indices [corr_low, corr_high]
  double attn_factor;         // cos and sin are multiplied by this
};
void rope(const rope_params& p, cudaStream_t s);
void swiglu(const float* gate, const float* up, float* y, int64_t n, cudaStream_t s);
void add(const float* a, const float* b, float* y, int64_t n, cudaStream_t s);
// table (vocab, dim) in f32/f16/bf16 -> out (n, dim) f32; ids outside [0, vocab) give zeros.
void embedding(const void* table, DType dt, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n, float* out,
               cudaStream_t s);
// Writes k, v (T, row) into caches (nslots, row) at slots[t]; a slot outside [0, nslots) is skipped.
void paged_kv_write(float* kc, float* vc, const float* k, const float* v, const int32_t* slots, int64_t T, int64_t row,
                    int64_t nslots, cudaStream_t s);
// f32 -> f16/bf16 (for attention inputs).
void convert_f32(const float* x, void* y, DType to, int64_t n, cudaStream_t s);

}  // namespace tessera::cuda
