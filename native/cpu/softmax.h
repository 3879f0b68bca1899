// Row softmax / log-softmax of scale * x: max-subtracted, one pass for max, one for exp-sum.
#pragma once
#include <cmath>
#include <limits>

#include "common/thread_pool.h"
#include "cpu/kernels.h"

namespace tessera::TESSERA_ISA_NS {

static void softmax(const float* x, float* y, int64_t rows, int64_t cols, float scale, bool log) {
  using S = Simd;
  parallel_range(rows, 1 + 8192 / (cols + 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      float mx = -std::numeric_limits<float>::infinity();
      int64_t i = 0;
      if (cols >= S::W) {
        S::V vm = S::load(xr);
        for (i = S::W; i + S::W <= cols; i += S::W) vm = S::max(vm, S::load(xr + i));
        mx = S::hmax(vm);
      }
      for (; i < cols; i++) mx = xr[i] > mx ? xr[i] : mx;
      float smax = mx * scale;
      if (std::isinf(smax) && smax < 0) smax = 0;  // all -inf row: avoid inf - inf
      S::V vs = S::set1(scale), vmax = S::set1(smax), acc = S::zero();
      for (i = 0; i + S::W <= cols; i += S::W) {
        S::V e = S::exp(S::sub(S::mul(S::load(xr + i), vs), vmax));
        if (!log) S::store(yr + i, e);
        acc = S::add(acc, e);
      }
      float sum = S::hsum(acc);
      for (; i < cols; i++) {
        float e = std::exp(xr[i] * scale - smax);
        if (!log) yr[i] = e;
        sum += e;
      }
      if (log) {
        float lse = smax + std::log(sum);
        for (i = 0; i < cols; i++) yr[i] = xr[i] * scale - lse;
      } else {
        float inv = sum > 0 ? 1.0f / sum : 0.0f;
        S::V vi = S::set1(inv);
        for (i = 0; i + S::W <= cols; i += S::W) S::store(yr + i, S::mul(S::load(yr + i), vi));
        for (; i < cols; i++) yr[i] *= inv;
      }
    }
  });
}

}  // namespace tessera::TESSERA_ISA_NS
