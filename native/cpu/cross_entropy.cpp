#include <cmath>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/thread_pool.h"
#include "cpu/ops.h"

namespace tessera {

double cpu_cross_entropy(const float* logits, int64_t rows, int64_t cols, const int32_t* targets,
                         int32_t ignore_index, int64_t* count, float* nll_out) {
  for (int64_t r = 0; r < rows; r++)
    TESSERA_CHECK(targets[r] == ignore_index || (targets[r] >= 0 && targets[r] < cols),
                  "crossEntropy: target " + std::to_string(targets[r]) + " at row " + std::to_string(r) +
                      " is outside [0, " + std::to_string(cols) + ")");
  std::vector<double> nll(rows, 0.0);
  parallel_range(rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      if (targets[r] == ignore_index) continue;
      const float* l = logits + r * cols;
      double mx = -INFINITY;
      for (int64_t c = 0; c < cols; c++) mx = l[c] > mx ? l[c] : mx;
      double s = 0;
      for (int64_t c = 0; c < cols; c++) s += std::exp((double)l[c] - mx);
      nll[r] = mx + std::log(s) - (double)l[targets[r]];
    }
  });
  double total = 0;
  int64_t n = 0;
  for (int64_t r = 0; r < rows; r++) {
    if (nll_out) nll_out[r] = (float)nll[r];
    if (targets[r] != ignore_index) { total += nll[r]; n++; }
  }
  *count = n;
  return total;
}

}  // namespace tessera
