// ALiBi slopes: for n heads, with m = 2^floor(log2 n), heads h < m get 2^(-max_bias (h+1) / m) and
// the remaining heads take the odd terms 2^(-max_bias/2 (2j+1) / m) (Press et al. 2022, BLOOM).
#include <cmath>

#include "cpu/ops.h"

namespace tessera {

void cpu_alibi_slopes(int64_t n_heads, float max_bias, float* out) {
  int64_t m = 1;
  while (m * 2 <= n_heads) m *= 2;
  double m0 = std::pow(2.0, -(double)max_bias / (double)m);
  double m1 = std::pow(2.0, -(double)max_bias / 2.0 / (double)m);
  for (int64_t h = 0; h < n_heads; h++)
    out[h] = h < m ? (float)std::pow(m0, (double)(h + 1)) : (float)std::pow(m1, (double)(2 * (h - m) + 1));
}

}  // namespace tessera
