// Machine peaks for benchmark ratios: an FMA loop with 12 independent accumulators per thread
// (enough to cover FMA latency x throughput on current cores) and a streaming read.
#pragma once
#include <chrono>

#include "common/thread_pool.h"
#include "cpu/kernels.h"

namespace tessera::TESSERA_ISA_NS {

static double fma_peak(int64_t iters, double* flops_out) {
  using S = Simd;
  int threads = pool_threads();
  float sink[256] = {0};
  auto t0 = std::chrono::steady_clock::now();
  parallel_for(threads, [&](int64_t t) {
    // Distinct starting values: with equal ones the compiler proves the chains identical and
    // merges them, leaving 2 FMAs per iteration while 12 are counted.
    const float s0 = 1.0f + t * 1e-7f;
    S::V a0 = S::set1(s0), a1 = S::set1(s0 + 0.001f), a2 = S::set1(s0 + 0.002f),
         a3 = S::set1(s0 + 0.003f), a4 = S::set1(s0 + 0.004f), a5 = S::set1(s0 + 0.005f),
         a6 = S::set1(s0 + 0.006f), a7 = S::set1(s0 + 0.007f), a8 = S::set1(s0 + 0.008f),
         a9 = S::set1(s0 + 0.009f), a10 = S::set1(s0 + 0.010f), a11 = S::set1(s0 + 0.011f);
    S::V m = S::set1(0.999999f), c = S::set1(1e-7f);
    for (int64_t i = 0; i < iters; i++) {
      a0 = S::fma(a0, m, c); a1 = S::fma(a1, m, c); a2 = S::fma(a2, m, c); a3 = S::fma(a3, m, c);
      a4 = S::fma(a4, m, c); a5 = S::fma(a5, m, c); a6 = S::fma(a6, m, c); a7 = S::fma(a7, m, c);
      a8 = S::fma(a8, m, c); a9 = S::fma(a9, m, c); a10 = S::fma(a10, m, c); a11 = S::fma(a11, m, c);
    }
    S::V s = S::add(S::add(S::add(a0, a1), S::add(a2, a3)), S::add(S::add(a4, a5), S::add(a6, a7)));
    s = S::add(s, S::add(S::add(a8, a9), S::add(a10, a11)));
    sink[t & 255] = S::hsum(s);
  });
  auto t1 = std::chrono::steady_clock::now();
  double secs = std::chrono::duration<double>(t1 - t0).count();
  if (flops_out) *flops_out = 2.0 * 12.0 * S::W * (double)iters * threads;
  volatile float keep = sink[0];
  (void)keep;
  return secs;
}

static float read_stream(const float* src, int64_t n) {
  using S = Simd;
  const int64_t chunks = 64;  // partial sums per chunk: no shared atomics in ISA code
  float partial[chunks] = {0};
  int64_t chunk = (n + chunks - 1) / chunks;
  parallel_for(chunks, [&](int64_t c) {
    int64_t b = c * chunk, e = b + chunk < n ? b + chunk : n;
    S::V a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
    int64_t i = b;
    for (; i + 4 * S::W <= e; i += 4 * S::W) {
      a0 = S::add(a0, S::load(src + i));
      a1 = S::add(a1, S::load(src + i + S::W));
      a2 = S::add(a2, S::load(src + i + 2 * S::W));
      a3 = S::add(a3, S::load(src + i + 3 * S::W));
    }
    float s = S::hsum(S::add(S::add(a0, a1), S::add(a2, a3)));
    for (; i < e; i++) s += src[i];
    partial[c] = s;
  });
  float total = 0;
  for (int64_t c = 0; c < chunks; c++) total += partial[c];
  return total;
}

}  // namespace tessera::TESSERA_ISA_NS
