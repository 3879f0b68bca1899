// MoE routing (Shazeer et al. 2017; Mixtral, Jiang et al. 2024): softmax over experts, top-k,
// optional renormalisation; then a counting sort of the T*k assignments by expert so each expert
// sees its tokens contiguously (and in token order: deterministic).
#include <cmath>
#include <vector>

#include "common/errors.h"
#include "common/thread_pool.h"
#include "cpu/ops.h"

namespace tessera {

void cpu_moe_route(const MoeRouteParams& p) {
  const int64_t T = p.T, E = p.E, k = p.k;
  parallel_range(T, 16, [&](int64_t t0, int64_t t1) {
    std::vector<double> prob(E);
    std::vector<char> taken(E);
    for (int64_t t = t0; t < t1; t++) {
      const float* l = p.logits + t * E;
      double mx = -INFINITY;
      for (int64_t e = 0; e < E; e++) mx = l[e] > mx ? l[e] : mx;
      double sum = 0;
      for (int64_t e = 0; e < E; e++) sum += (prob[e] = std::exp((double)l[e] - mx));
      for (int64_t e = 0; e < E; e++) { prob[e] /= sum; taken[e] = 0; }
      double sel = 0;
      for (int64_t j = 0; j < k; j++) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; e++)
          if (!taken[e] && (best < 0 || prob[e] > prob[best])) best = e;  // strict >: ties keep lower id
        taken[best] = 1;
        p.experts[t * k + j] = (int32_t)best;
        p.weights[t * k + j] = (float)prob[best];
        sel += prob[best];
      }
      if (p.renormalize)
        for (int64_t j = 0; j < k; j++) p.weights[t * k + j] = (float)((double)p.weights[t * k + j] / sel);
    }
  });
  for (int64_t e = 0; e <= E; e++) p.expert_offsets[e] = 0;
  for (int64_t a = 0; a < T * k; a++) p.expert_offsets[p.experts[a] + 1]++;
  for (int64_t e = 0; e < E; e++) p.expert_offsets[e + 1] += p.expert_offsets[e];
  std::vector<int32_t> fill(p.expert_offsets, p.expert_offsets + E);
  for (int64_t a = 0; a < T * k; a++) p.order[fill[p.experts[a]]++] = (int32_t)a;
}

void cpu_moe_gather(const float* x, int64_t T, int64_t D, const int32_t* order, int64_t n, int64_t k, float* out) {
  for (int64_t i = 0; i < n; i++)
    TESSERA_CHECK(order[i] >= 0 && order[i] < T * k, "moeGather: order[" + std::to_string(i) + "] out of range");
  parallel_range(n, 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      const float* src = x + (int64_t)(order[i] / k) * D;
      float* dst = out + i * D;
      for (int64_t d = 0; d < D; d++) dst[d] = src[d];
    }
  });
}

void cpu_moe_scatter(const float* y, const int32_t* order, const float* weights, int64_t T, int64_t k,
                     int64_t D, float* out) {
  const int64_t n = T * k;
  std::vector<int32_t> row_of(n, -1);
  for (int64_t i = 0; i < n; i++) {
    TESSERA_CHECK(order[i] >= 0 && order[i] < n, "moeScatter: order[" + std::to_string(i) + "] out of range");
    TESSERA_CHECK(row_of[order[i]] < 0, "moeScatter: order is not a permutation");
    row_of[order[i]] = (int32_t)i;
  }
  parallel_range(T, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      float* o = out + t * D;
      for (int64_t d = 0; d < D; d++) o[d] = 0.f;
      for (int64_t j = 0; j < k; j++) {  // fixed order: j ascending
        float w = weights[t * k + j];
        const float* src = y + (int64_t)row_of[t * k + j] * D;
        for (int64_t d = 0; d < D; d++) o[d] += w * src[d];
      }
    }
  });
}

}  // namespace tessera
