#include <cmath>
#include <vector>

#include "common/thread_pool.h"
#include "cpu/attention_mask.h"
#include "cpu/ops.h"

namespace tessera {

void cpu_attention_naive(const AttentionParams& p) {
  const int64_t group = p.Hq / p.Hkv, D = p.D, kstride = p.Hkv * D;
  parallel_for(p.T * p.Hq, [&](int64_t task) {
    int64_t t = task / p.Hq, h = task % p.Hq, kvh = h / group;
    int64_t qpos = p.q_offset + t;
    const float* q = p.q + (t * p.Hq + h) * D;
    std::vector<double> s(p.S);
    double mx = -INFINITY;
    for (int64_t j = 0; j < p.S; j++) {
      if (!attn_visible(qpos, j, p.causal, p.window, p.sinks)) { s[j] = -INFINITY; continue; }
      const float* kr = p.k + j * kstride + kvh * D;
      double d = 0;
      for (int64_t i = 0; i < D; i++) d += (double)q[i] * kr[i];
      s[j] = d * p.scale + (p.alibi ? (double)p.alibi[h] * (double)(j - qpos) : 0.0) + (p.mask ? p.mask[t * p.S + j] : 0.0);
      if (s[j] > mx) mx = s[j];
    }
    std::vector<double> acc(D, 0.0);
    double l = 0;
    if (mx > -INFINITY) {
      for (int64_t j = 0; j < p.S; j++) {
        if (!(s[j] > -INFINITY)) continue;
        double e = std::exp(s[j] - mx);
        l += e;
        const float* vr = p.v + j * kstride + kvh * D;
        for (int64_t i = 0; i < D; i++) acc[i] += e * vr[i];
      }
    }
    float* o = p.o + (t * p.Hq + h) * D;
    for (int64_t i = 0; i < D; i++) o[i] = l > 0 ? (float)(acc[i] / l) : 0.f;
  });
}

}  // namespace tessera
