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
      // The max of the scaled row (a negative scale flips which x is largest).
      S::V vs = S::set1(scale);
      float smax = -std::numeric_limits<float>::infinity();
      int64_t i = 0;
      if (cols >= S::W) {
        S::V vm = S::mul(S::load(xr), vs);
        for (i = S::W; i + S::W <= cols; i += S::W) vm = S::max(vm, S::mul(S::load(xr + i), vs));
        smax = S::hmax(vm);
      }
      for (; i < cols; i++) smax = xr[i] * scale > smax ? xr[i] * scale : smax;
      if (std::isinf(smax) && smax < 0) smax = 0;  // all -inf row: avoid inf - inf (softmax 0, log-softmax NaN)
      // A row holding a NaN or a scaled +inf is NaN throughout, as PyTorch and ggml give it. Tested
      // on the scalar values: neither the vector max nor the vector exp is relied on to carry NaN
      // (a sum of the exponents did, and an -O1 sanitizer build of one ISA lost it).
      bool bad = false;
      for (i = 0; i < cols; i++) {
        float v = xr[i] * scale;
        bad |= (v != v) | (v == std::numeric_limits<float>::infinity());
      }
      if (bad) {
        for (i = 0; i < cols; i++) yr[i] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      S::V vmax = S::set1(smax), acc = S::zero();
      for (i = 0; i + S::W <= cols; i += S::W) {
        S::V d = S::sub(S::mul(S::load(xr + i), vs), vmax);
        S::V e = S::exp(d);
        if (!log) S::store(yr + i, e);
        acc = S::add(acc, e);
      }
      float sum = S::hsum(acc);
      for (; i < cols; i++) {
        float d = xr[i] * scale - smax;
        float e = std::exp(d);
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
