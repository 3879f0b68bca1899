// FlashAttention-2 forward on the device (Dao 2023; CPU reference: native/cpu/attention.h).
// q (T, Hq, D), k / v (S, Hkv, D) in f16 or bf16, f32 accumulation, o (T, Hq, D) f32.
// Query i sits at q_offset + i, key j at j; causal, GQA (head h reads kv head h / (Hq / Hkv)),
// ALiBi (+ slope * (kpos - qpos)), sliding window with sinks. A row with no visible key is 0.
//  - Prefill: a block of 64 query rows per CTA (4 warps x 16 rows); K/V tiles of 64 keys pass
//    through shared memory; S = Q K^T and O += P V on tensor cores (WMMA 16x16x16, f32
//    accumulate); the online softmax (running max and sum per row) between them; key tiles
//    entirely hidden by the causal mask or the window are skipped. D = 64 or 128.
//  - Decode (flash-decoding, split-K): for T <= 8, the keys are split into chunks of 256 across
//    CTAs, each chunk's partial (max, sum, output) is written out and a second kernel merges them.
#pragma once
#include "cuda/common.cuh"

namespace tessera::cuda {

struct FlashArgs {
  const void* q;
  const void* k;
  const void* v;
  float* o;
  DType dtype;  // F16 or BF16
  int64_t T, S, Hq, Hkv, D;
  float scale;
  bool causal;
  int64_t q_offset;
  const float* alibi;  // (Hq) or nullptr
  int64_t window, sinks;
  float* workspace;    // split-K partials (decode), flash_workspace_floats() floats, or nullptr
};

// Floats of workspace the decode path needs (0 when T is above the decode limit).
int64_t flash_workspace_floats(int64_t T, int64_t S, int64_t Hq, int64_t D);
void flash_attention(const FlashArgs& a, cudaStream_t s);

}  // namespace tessera::cuda
