// Elementwise activations: SiLU x*sigmoid(x); GELU tanh form 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))
// (Hendrycks & Gimpel 2016) and exact erf form 0.5x(1+erf(x/sqrt2)); SwiGLU silu(g)*u
// (Shazeer 2020); add/mul with a repeating second operand.
#pragma once
#include <cmath>

#include "common/thread_pool.h"
#include "cpu/kernels.h"

namespace tessera::TESSERA_ISA_NS {

static inline Simd::V v_silu(Simd::V x) {
  using S = Simd;
  // x / (1 + e^-x); e^-x is 0 for large x and +inf -> x/inf = -0 for very negative x.
  S::V e = S::exp(S::sub(S::zero(), x));
  return S::mul(x, S::div(S::set1(1.0f), S::add(S::set1(1.0f), e)));
}

static inline Simd::V v_gelu_tanh(Simd::V x) {
  using S = Simd;
  // 0.5x(1+tanh(u)) = x * sigmoid(2u) = x / (1 + e^{-2u})
  S::V u = S::mul(S::set1(0.7978845608028654f), S::fma(S::mul(S::set1(0.044715f), x), S::mul(x, x), x));
  S::V e = S::exp(S::mul(S::set1(-2.0f), u));
  return S::mul(x, S::div(S::set1(1.0f), S::add(S::set1(1.0f), e)));
}

// The last n < W elements go through the same vector code on a padded copy: an element's result
// then never depends on where it falls in the array (how many rows share the call, how the range
// is split across threads), which the runtime's batch invariance relies on.
template <class F>
static inline void vec_tail(const float* x, const float* u, float* y, int64_t n, F f) {
  using S = Simd;
  alignas(64) float a[S::W > 1 ? S::W : 1] = {}, b[S::W > 1 ? S::W : 1] = {};
  for (int64_t i = 0; i < n; i++) a[i] = x[i], b[i] = u ? u[i] : 0.0f;
  S::store(a, f(S::load(a), S::load(b)));
  for (int64_t i = 0; i < n; i++) y[i] = a[i];
}

static void activation(const float* x, float* y, int64_t n, Activation act) {
  using S = Simd;
  parallel_range(n, 16384, [&](int64_t b, int64_t e) {
    int64_t i = b;
    switch (act) {
      case Activation::Silu:
        for (; i + S::W <= e; i += S::W) S::store(y + i, v_silu(S::load(x + i)));
        if (i < e) vec_tail(x + i, nullptr, y + i, e - i, [](S::V v, S::V) { return v_silu(v); });
        break;
      case Activation::GeluTanh:
        for (; i + S::W <= e; i += S::W) S::store(y + i, v_gelu_tanh(S::load(x + i)));
        if (i < e) vec_tail(x + i, nullptr, y + i, e - i, [](S::V v, S::V) { return v_gelu_tanh(v); });
        break;
      case Activation::GeluErf:
        for (; i < e; i++) y[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.7071067811865476f));
        break;
    }
  });
}

static void swiglu(const float* g, const float* u, float* y, int64_t n) {
  using S = Simd;
  parallel_range(n, 16384, [&](int64_t b, int64_t e) {
    int64_t i = b;
    for (; i + S::W <= e; i += S::W) S::store(y + i, S::mul(v_silu(S::load(g + i)), S::load(u + i)));
    if (i < e) vec_tail(g + i, u + i, y + i, e - i, [](S::V a, S::V b) { return S::mul(v_silu(a), b); });
  });
}

static void binary(const float* a, const float* b, float* y, int64_t n, int64_t b_len, int op) {
  using S = Simd;
  int64_t rows = n / b_len;
  parallel_range(rows, 1 + 16384 / (b_len + 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* ar = a + r * b_len;
      float* yr = y + r * b_len;
      int64_t i = 0;
      if (op == 0) {
        for (; i + S::W <= b_len; i += S::W) S::store(yr + i, S::add(S::load(ar + i), S::load(b + i)));
        for (; i < b_len; i++) yr[i] = ar[i] + b[i];
      } else {
        for (; i + S::W <= b_len; i += S::W) S::store(yr + i, S::mul(S::load(ar + i), S::load(b + i)));
        for (; i < b_len; i++) yr[i] = ar[i] * b[i];
      }
    }
  });
}

}  // namespace tessera::TESSERA_ISA_NS
