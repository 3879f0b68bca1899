#include "cuda/paged_attention.cuh"

namespace tessera::cuda {

// Each lane holds D / 32 (rounded up, at most 8) output values: D <= 256.
__global__ void paged_attention_k(PagedArgs a) {
  const int64_t w = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;  // (query, head)
  const int lane = threadIdx.x & 31;
  if (w >= a.T * a.Hq) return;
  const int64_t t = w / a.Hq, h = w % a.Hq;
  // The sequence owning query t.
  int64_t b = 0;
  while (b + 1 < a.B && a.query_start[b + 1] <= t) b++;
  const int64_t nq = a.query_start[b + 1] - a.query_start[b];
  const int64_t ctx = a.context_lens[b];
  const int64_t qpos = ctx - nq + (t - a.query_start[b]);
  const int64_t kvh = h / (a.Hq / a.Hkv);
  const float* q = a.q + (t * a.Hq + h) * a.D;
  constexpr int PER = 8;
  float qv[PER], acc[PER];
  for (int i = 0; i < PER; i++) {
    const int64_t d = lane + 32 * i;
    qv[i] = d < a.D ? q[d] * a.scale : 0.f;
    acc[i] = 0.f;
  }
  const MaskRule rule{true, a.window, a.sinks};
  const float slope = a.alibi ? a.alibi[h] : 0.f;
  float m = -INFINITY, l = 0.f;
  for (int64_t kp = 0; kp < ctx && kp <= qpos; kp++) {
    if (!rule.visible(qpos, kp)) continue;
    const int64_t blk = a.block_tables[b * a.max_blocks + kp / a.block_size];
    const int64_t base = ((blk * a.block_size + kp % a.block_size) * a.Hkv + kvh) * a.D;
    float sdot = 0.f;
    for (int i = 0; i < PER; i++) {
      const int64_t d = lane + 32 * i;
      if (d < a.D) sdot += qv[i] * a.k_cache[base + d];
    }
    float sc = warp_sum(sdot) + slope * (float)(kp - qpos);
    const float mn = fmaxf(m, sc);
    const float corr = __expf(m - mn), p = __expf(sc - mn);
    l = l * corr + p;
    for (int i = 0; i < PER; i++) {
      const int64_t d = lane + 32 * i;
      acc[i] = acc[i] * corr + (d < a.D ? p * a.v_cache[base + d] : 0.f);
    }
    m = mn;
  }
  float* o = a.o + (t * a.Hq + h) * a.D;
  for (int i = 0; i < PER; i++) {
    const int64_t d = lane + 32 * i;
    if (d < a.D) o[d] = l > 0.f ? acc[i] / l : 0.f;
  }
}

void paged_attention(const PagedArgs& a, cudaStream_t s) {
  if (a.D > 256) throw CudaError("pagedAttention: head dim above 256 is not supported on cuda");
  if (a.T * a.Hq <= 0) return;
  paged_attention_k<<<blocks_for(a.T * a.Hq, 4), 128, 0, s>>>(a);
  check_launch("pagedAttention");
}

}  // namespace tessera::cuda
