// Rotary position embedding (Su et al. 2021, RoFormer). Angles in double: at long positions a
// float angle loses ~1e-4 rad, more than the kernels' test tolerance.
#include <cmath>
#include <vector>

#include "common/thread_pool.h"
#include "cpu/ops.h"

namespace tessera {

void cpu_rope(const RopeParams& p) {
  const int64_t half = p.rot_dim / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; i++) inv_freq[i] = std::pow(p.theta, -2.0 * (double)i / (double)p.rot_dim);
  parallel_range(p.T, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> cs(half), sn(half);
    for (int64_t t = t0; t < t1; t++) {
      double pos = (double)p.pos[t] * p.freq_scale;
      for (int64_t i = 0; i < half; i++) {
        double a = pos * inv_freq[i];
        cs[i] = (float)std::cos(a);
        sn[i] = (float)std::sin(a);
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
