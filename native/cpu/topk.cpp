#include <algorithm>
#include <vector>

#include "common/thread_pool.h"
#include "cpu/ops.h"

namespace tessera {

void cpu_topk(const float* x, int64_t rows, int64_t cols, int64_t k, float* values, int32_t* indices) {
  parallel_range(rows, 1, [&](int64_t r0, int64_t r1) {
    std::vector<int32_t> idx(cols);
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * cols;
      for (int64_t i = 0; i < cols; i++) idx[i] = (int32_t)i;
      // NaN sorts last; equal values keep the lower index first.
      auto before = [xr](int32_t a, int32_t b) {
        float va = xr[a], vb = xr[b];
        bool na = va != va, nb = vb != vb;
        if (na || nb) return !na && nb ? true : (na && nb ? a < b : false);
        return va > vb || (va == vb && a < b);
      };
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), before);
      for (int64_t j = 0; j < k; j++) {
        values[r * k + j] = xr[idx[j]];
        indices[r * k + j] = idx[j];
      }
    }
  });
}

}  // namespace tessera
