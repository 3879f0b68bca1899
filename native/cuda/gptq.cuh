// GPTQ int4 / int8 linear on the device, reading AutoGPTQ's checkpoint layout directly
// (src/tensor/gptq.ts): qweight (K * bits / 32, N) int32 packed along K, scales (G, N) f16,
// qzeros (G, ceil(N * bits / 32)) int32 packed along N, g_idx (K). w[k][n] = s * (q - z), z the
// stored zero point + zero_offset (1 for v1 checkpoints). CPU reference: dequantise then multiply.
//  - M <= 8 (decode): a GEMV, one thread per output column (coalesced qweight rows), split over K
//    across blocks, weights dequantised in registers, f32 accumulation (atomicAdd of the K splits).
//  - M > 8: tensor-core tiles (WMMA 16x16x16 f16, f32 accumulate): a 64 x 64 output tile per block,
//    K in steps of 32; each step dequantises its 32 x 64 weight tile to f16 in shared memory and
//    converts the 64 x 32 activation tile to f16.
#pragma once
#include "cuda/common.cuh"

namespace tessera::cuda {

struct GptqArgs {
  const float* x;          // (M, K)
  const int32_t* qweight;  // (K * bits / 32, N)
  const __half* scales;    // (G, N)
  const int32_t* qzeros;   // (G, zero_words)
  const int32_t* g_idx;    // (K)
  const float* bias;       // (N) or nullptr
  float* y;                // (M, N)
  int64_t M, N, K, G;
  int32_t bits;            // 4 or 8
  int32_t zero_offset;     // 1 for v1 checkpoints, 0 for v2
};

void gptq_linear(const GptqArgs& a, cudaStream_t s);

}  // namespace tessera::cuda
