#include "cuda/moe_route.cuh"

namespace tessera::cuda {

// One warp per token.
__global__ void moe_topk_k(const float* logits, int64_t T, int64_t E, int64_t k, bool renorm, float* weights,
                           int32_t* experts) {
  const int64_t t = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (t >= T) return;
  const float* row = logits + t * E;
  float mx = -INFINITY;
  for (int64_t e = lane; e < E; e += 32) mx = fmaxf(mx, row[e]);
  mx = warp_max(mx);
  float sum = 0.f;
  for (int64_t e = lane; e < E; e += 32) sum += __expf(row[e] - mx);
  sum = warp_sum(sum);
  float picked_sum = 0.f;
  for (int64_t j = 0; j < k; j++) {
    // Best not-yet-picked expert: highest logit, lower id on ties.
    float bv = -INFINITY;
    int be = 0x7fffffff;
    for (int64_t e = lane; e < E; e += 32) {
      bool taken = false;
      for (int64_t i = 0; i < j; i++) taken |= experts[t * k + i] == (int32_t)e;
      const float v = row[e];
      if (!taken && (v > bv || (v == bv && (int)e < be))) {
        bv = v;
        be = (int)e;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oe = __shfl_xor_sync(0xffffffffu, be, o);
      if (ov > bv || (ov == bv && oe < be)) {
        bv = ov;
        be = oe;
      }
    }
    const float p = __expf(bv - mx) / sum;
    if (lane == 0) {
      experts[t * k + j] = be;
      weights[t * k + j] = p;
    }
    picked_sum += p;
    __syncwarp();
  }
  if (renorm && lane == 0)
    for (int64_t j = 0; j < k; j++) weights[t * k + j] /= picked_sum;
}

// One block: thread e owns expert e (looping for E > blockDim), counts, scan, then ordered fill.
__global__ void moe_group_k(const int32_t* experts, int64_t n, int64_t E, int32_t* offsets, int32_t* order) {
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int32_t c = 0;
    for (int64_t a = 0; a < n; a++) c += experts[a] == (int32_t)e;
    offsets[e + 1] = c;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    offsets[0] = 0;
    for (int64_t e = 0; e < E; e++) offsets[e + 1] += offsets[e];
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    int32_t w = offsets[e];
    for (int64_t a = 0; a < n; a++)
      if (experts[a] == (int32_t)e) order[w++] = (int32_t)a;
  }
}

void moe_route(const float* logits, int64_t T, int64_t E, int64_t k, bool renormalize, float* weights, int32_t* experts,
               int32_t* offsets, int32_t* order, cudaStream_t s) {
  if (T > 0) {
    moe_topk_k<<<blocks_for(T, 4), 128, 0, s>>>(logits, T, E, k, renormalize, weights, experts);
    check_launch("moeRoute");
  }
  moe_group_k<<<1, 256, 0, s>>>(experts, T * k, E, offsets, order);
  check_launch("moeRoute");
}

}  // namespace tessera::cuda
