// The small ops a Llama decode step needs on the device (CPU references: native/cpu/norm.h,
// rope.cpp, activation.h, embedding.cpp, paged_kv_write.cpp). All f32 unless stated.
#pragma once
#include "cuda/common.cuh"

namespace tessera::cuda {

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps, cudaStream_t s);
// RoPE in place on x (T, H, D) over the leading rot_dim dims; neox pairs (i, i + rot/2), else (2i, 2i+1).
void rope(float* x, const int32_t* pos, int64_t T, int64_t H, int64_t D, int64_t rot_dim, float theta,
          float freq_scale, bool neox, cudaStream_t s);
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
