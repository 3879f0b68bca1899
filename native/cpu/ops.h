// Ops with a single (baseline-ISA) implementation: not bandwidth- or FLOP-critical, or reference
// kernels. Compiled with the default flags, one op per .cpp file.
#pragma once
#include <cstdint>

#include "common/dtype.h"
#include "cpu/kernels.h"

namespace tessera {

// out (n, dim) = table (vocab, dim)[ids]; table f32/f16/bf16, or Q8_0/Q4_0 blocks (dim a multiple
// of 32; each row is dim / 32 blocks, dequantised exactly as cpu_dequantize_q*_0). ids must be in
// [0, vocab).
void cpu_embedding(const void* table, DType type, int64_t vocab, int64_t dim, const int32_t* ids,
                   int64_t n, float* out);

struct RopeParams {
  const float* x;      // (T, H, D)
  float* y;            // (T, H, D), may alias x
  const int32_t* pos;  // (T) position of each row
  int64_t T, H, D;
  int64_t rot_dim;     // even, <= D: dims [0, rot_dim) rotate, the rest pass through
  double theta;        // base: frequency i = theta^(-2i / rot_dim)
  double freq_scale;   // interpolated frequencies are multiplied by this (1 / linear or YaRN factor)
  bool neox;           // true: pairs (i, i + rot_dim/2) (NeoX / HF); false: (2i, 2i+1) (GPT-J / llama.cpp)
  const float* freq_factors;  // (rot_dim/2) or null: pair i's frequency is divided by freq_factors[i] (ggml)
  double ext_factor;   // YaRN: 0 = off; else the extrapolated frequency is mixed in by ramp(i) * ext_factor
  double corr_low;     // YaRN ramp: pair indices [corr_low, corr_high], ramp(i) = 1 - clamp((i - low) / max(0.001, high - low))
  double corr_high;
  double attn_factor;  // cos and sin are multiplied by this (YaRN mscale, LongRoPE attention factor)
};
void cpu_rope(const RopeParams& p);

// ALiBi slopes (Press et al. 2022); non-power-of-two head counts interleave a second geometric
// series as BLOOM / llama.cpp do. out (n_heads).
void cpu_alibi_slopes(int64_t n_heads, float max_bias, float* out);

struct MoeRouteParams {
  const float* logits;      // (T, E) router logits
  int64_t T, E, k;
  bool renormalize;         // divide the k selected softmax weights by their sum
  float* weights;           // (T, k) routing weights, experts in descending weight order
  int32_t* experts;         // (T, k) expert ids; ties go to the lower id
  int32_t* expert_offsets;  // (E + 1) assignments of expert e are order[offsets[e], offsets[e+1])
  int32_t* order;           // (T * k) assignment ids a = t * k + j grouped by expert, tokens ascending
};
void cpu_moe_route(const MoeRouteParams& p);
// out (n, D): out[i] = x[order[i] / k] (rows grouped by expert, ready for per-expert GEMMs)
void cpu_moe_gather(const float* x, int64_t T, int64_t D, const int32_t* order, int64_t n, int64_t k, float* out);
// out (T, D) = sum_j weights[t, j] * y[row of assignment t*k+j]; y (T*k, D) grouped rows
void cpu_moe_scatter(const float* y, const int32_t* order, const float* weights, int64_t T, int64_t k,
                     int64_t D, float* out);

// Per row: the k largest values in descending order, ties to the lower index.
void cpu_topk(const float* x, int64_t rows, int64_t cols, int64_t k, float* values, int32_t* indices);

// Sum over rows with target != ignore_index of -log softmax(logits)[target]; *count gets their
// number. nll_out (rows) receives each row's loss (0 for ignored rows) when not null.
double cpu_cross_entropy(const float* logits, int64_t rows, int64_t cols, const int32_t* targets,
                         int32_t ignore_index, int64_t* count, float* nll_out);

// Writes k/v rows (T, Hkv, D) into the caches at slots[t] = block * block_size + offset.
void cpu_paged_kv_write(float* k_cache, float* v_cache, const float* k, const float* v, const int32_t* slots,
                        int64_t T, int64_t n_slots, int64_t row);

// Plain attention: materialises each query row's scores, accumulates in double. The reference
// the flash and paged kernels are tested against.
void cpu_attention_naive(const AttentionParams& p);

}  // namespace tessera
