// Rotary position embedding (Su et al. 2021, RoFormer). Angles in double: at long positions a
// float angle loses ~1e-4 rad, more than the kernels' test tolerance.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/thread_pool.h"
#include "cpu/ops.h"

namespace tessera {

void cpu_rope(const RopeParams& p) {
  const int64_t half = p.rot_dim / 2;
  // Frequency of each pair: ggml's rope_yarn with freq_factors; its mscale is p.attn_factor.
  std::vector<double> freq(half);
  for (int64_t i = 0; i < half; i++) {
    double extrap = std::pow(p.theta, -2.0 * (double)i / (double)p.rot_dim);
    if (p.freq_factors) extrap /= (double)p.freq_factors[i];
    double interp = p.freq_scale * extrap;
    if (p.ext_factor == 0) {
      freq[i] = interp;
    } else {
      double y = ((double)i - p.corr_low) / std::max(0.001, p.corr_high - p.corr_low);
      double mix = (1 - std::min(1.0, std::max(0.0, y))) * p.ext_factor;
      freq[i] = interp * (1 - mix) + extrap * mix;
    }
  }
  parallel_range(p.T, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(half), sn(half);
    for (int64_t t = t0; t < t1; t++) {
      double pos = (double)p.pos[t];
      for (int64_t i = 0; i < half; i++) {
        double a = pos * freq[i];
        cs[i] = (float)(std::cos(a) * p.attn_factor);
        sn[i] = (float)(std::sin(a) * p.attn_factor);
      }
      for (int64_t h = 0; h < p.H; h++) {
        const float* x = p.x + (t * p.H + h) * p.D;
        float* y = p.y + (t * p.H + h) * p.D;
        for (int64_t i = 0; i < half; i++) {
          int64_t i0 = p.neox ? i : 2 * i, i1 = p.neox ? i + half : 2 * i + 1;
          float a = x[i0], b = x[i1];
          y[i0] = a * cs[i] - b * sn[i];
          y[i1] = a * sn[i] + b * cs[i];
        }
        if (y != x)
          for (int64_t d = p.rot_dim; d < p.D; d++) y[d] = x[d];
      }
    }
  });
}

}  // namespace tessera
