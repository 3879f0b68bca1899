// Paged attention over block tables (CPU reference: native/cpu/attention.h paged_attention, same
// PagedAttentionParams semantics): decode (one query per sequence) and prefill with a cached
// prefix (the last n_q tokens of a sequence are its queries, causal within the sequence).
// f32 queries and caches; one warp per (query, head) with an online softmax over the keys.
#pragma once
#include "cuda/common.cuh"

namespace tessera::cuda {

struct PagedArgs {
  const float* q;              // (T, Hq, D)
  const float* k_cache;        // (num_blocks, block_size, Hkv, D)
  const float* v_cache;
  const int32_t* block_tables; // (B, max_blocks)
  const int32_t* context_lens; // (B)
  const int32_t* query_start;  // (B + 1)
  float* o;                    // (T, Hq, D)
  int64_t B, T, max_blocks, block_size, Hq, Hkv, D;
  float scale;
  const float* alibi;          // (Hq) or nullptr
  int64_t window, sinks;
};

void paged_attention(const PagedArgs& a, cudaStream_t s);

}  // namespace tessera::cuda
