// RMSNorm (Zhang & Sennrich 2019) and LayerNorm (Ba et al. 2016), one row per task chunk.
// Statistics accumulate in double-width pairs of float vectors summed at the end; fine for dim
// up to ~1e6.
#pragma once
#include <cmath>

#include "common/thread_pool.h"
#include "cpu/kernels.h"

namespace tessera::TESSERA_ISA_NS {

static float row_sum_sq(const float* x, int64_t n) {
  using S = Simd;
  S::V acc0 = S::zero(), acc1 = S::zero();
  int64_t i = 0;
  for (; i + 2 * S::W <= n; i += 2 * S::W) {
    S::V a = S::load(x + i), b = S::load(x + i + S::W);
    acc0 = S::fma(a, a, acc0);
    acc1 = S::fma(b, b, acc1);
  }
  float s = S::hsum(S::add(acc0, acc1));
  for (; i < n; i++) s += x[i] * x[i];
  return s;
}

static void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) {
  using S = Simd;
  parallel_range(rows, 1 + 4096 / (dim + 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      float inv = 1.0f / std::sqrt(row_sum_sq(xr, dim) / (float)dim + eps);
      S::V vinv = S::set1(inv);
      int64_t i = 0;
      for (; i + S::W <= dim; i += S::W)
        S::store(yr + i, S::mul(S::mul(S::load(xr + i), vinv), S::load(w + i)));
      for (; i < dim; i++) yr[i] = xr[i] * inv * w[i];
    }
  });
}

static void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows,
                       int64_t dim, float eps) {
  using S = Simd;
  parallel_range(rows, 1 + 4096 / (dim + 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      S::V acc = S::zero();
      int64_t i = 0;
      for (; i + S::W <= dim; i += S::W) acc = S::add(acc, S::load(xr + i));
      float sum = S::hsum(acc);
      for (; i < dim; i++) sum += xr[i];
      float mean = sum / (float)dim;
      // Two-pass variance: stable for rows with a large mean.
      S::V vm = S::set1(mean), acc2 = S::zero();
      for (i = 0; i + S::W <= dim; i += S::W) {
        S::V d = S::sub(S::load(xr + i), vm);
        acc2 = S::fma(d, d, acc2);
      }
      float ss = S::hsum(acc2);
      for (; i < dim; i++) ss += (xr[i] - mean) * (xr[i] - mean);
      float inv = 1.0f / std::sqrt(ss / (float)dim + eps);
      for (i = 0; i < dim; i++) {
        float v = (xr[i] - mean) * inv;
        if (w) v *= w[i];
        if (b) v += b[i];
        yr[i] = v;
      }
    }
  });
}

}  // namespace tessera::TESSERA_ISA_NS
