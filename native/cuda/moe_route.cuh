// MoE routing on the device (CPU reference: native/cpu/moe.cpp): per token the softmax of the
// router logits, the top-k experts (ties to the lower id, weights descending), optional
// renormalisation over the k; then the assignments a = t * k + j grouped by expert, tokens
// ascending within an expert, with per-expert offsets.
#pragma once
#include "cuda/common.cuh"

namespace tessera::cuda {

void moe_route(const float* logits, int64_t T, int64_t E, int64_t k, bool renormalize, float* weights, int32_t* experts,
               int32_t* offsets, int32_t* order, cudaStream_t s);

}  // namespace tessera::cuda
