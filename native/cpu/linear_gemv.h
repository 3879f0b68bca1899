// Decode-sized linear (M <= a few rows): memory-bound, so every weight row is streamed from
// memory exactly once, R rows at a time against up to 4 activation rows, converting f16/bf16 in
// registers. Parallel over N in small row blocks, scheduled dynamically for load balance.
#pragma once
#include "common/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/linear_common.h"

namespace tessera::TESSERA_ISA_NS {

// Weight rows per tile for MB activation rows: R * MB accumulators plus MB x vectors and one
// weight vector must fit the register file (32 zmm, 16 ymm); more rows = more memory streams.
template <int MB>
static constexpr int gemv_rows() {
#if defined(__AVX512F__)
  return MB == 1 ? 8 : 4;
#elif defined(__AVX2__)
  return MB == 1 ? 8 : MB == 2 ? 4 : 2;
#else
  return MB == 1 ? 4 : 2;
#endif
}

// y[m0.., n0..n0+R) for activation rows m0..m0+MB: full dot products over K.
template <DType WT, int R, int MB>
static inline void gemv_tile(const LinearParams& p, int64_t m0, int64_t n0) {
  using S = Simd;
  constexpr int64_t wsize = WT == DType::F32 ? 4 : 2;
  // One cache line of each weight row per iteration (vector builds), with a software prefetch
  // 1 KB ahead on each row: R parallel streams are more than the hardware prefetcher keeps
  // deep enough (measured +10..20% for M = 2..4).
  constexpr int U = S::W >= 8 ? int(64 / wsize) / S::W : 1;
  constexpr int64_t PF = 1024 / wsize;
  const int64_t K = p.K, N = p.N;
  const float* x = p.x + m0 * K;
  S::V acc[R][MB];
#pragma GCC unroll 16
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) acc[r][m] = S::zero();
  int64_t k = 0;
  for (; k + U * S::W <= K; k += U * S::W) {
#if defined(__GNUC__)
    if (S::W >= 8)
#pragma GCC unroll 16
      for (int r = 0; r < R; r++)
        __builtin_prefetch((const char*)p.w + ((n0 + r) * K + k + PF) * wsize, 0, 0);
#endif
#pragma GCC unroll 4
    for (int u = 0; u < U; u++) {
      S::V xv[MB];
#pragma GCC unroll 4
      for (int m = 0; m < MB; m++) xv[m] = S::load(x + m * K + k + u * S::W);
#pragma GCC unroll 16
      for (int r = 0; r < R; r++) {
        S::V wv = load_w<WT>(p.w, (n0 + r) * K + k + u * S::W);
#pragma GCC unroll 4
        for (int m = 0; m < MB; m++) acc[r][m] = S::fma(xv[m], wv, acc[r][m]);
      }
    }
  }
  for (; k + S::W <= K; k += S::W) {
    S::V xv[MB];
    for (int m = 0; m < MB; m++) xv[m] = S::load(x + m * K + k);
    for (int r = 0; r < R; r++) {
      S::V wv = load_w<WT>(p.w, (n0 + r) * K + k);
      for (int m = 0; m < MB; m++) acc[r][m] = S::fma(xv[m], wv, acc[r][m]);
    }
  }
  for (int r = 0; r < R; r++) {
    const float b = p.bias ? p.bias[n0 + r] : 0.0f;
    for (int m = 0; m < MB; m++) {
      float s = S::hsum(acc[r][m]);
      for (int64_t kk = k; kk < K; kk++) s += x[m * K + kk] * scalar_w<WT>(p.w, (n0 + r) * K + kk);
      p.y[(m0 + m) * N + n0 + r] = s + b;
    }
  }
}

// Rows [n0, n1) for activation rows [m0, m0 + MB).
template <DType WT, int MB>
static inline void gemv_rows_mb(const LinearParams& p, int64_t m0, int64_t n0, int64_t n1) {
  constexpr int R = gemv_rows<MB>();
  int64_t n = n0;
  for (; n + R <= n1; n += R) gemv_tile<WT, R, MB>(p, m0, n);
  for (; n < n1; n++) gemv_tile<WT, 1, MB>(p, m0, n);
}

template <DType WT>
static void linear_gemv(const LinearParams& p) {
  const int64_t N = p.N, M = p.M;
  // ~16 blocks per thread: fine enough for dynamic balancing, coarse enough that each block is a
  // long sequential read (>= 8 rows).
  const int64_t threads = pool_threads();
  int64_t rows = (N + threads * 16 - 1) / (threads * 16);
  rows = rows < 8 ? 8 : (rows + 7) / 8 * 8;
  const int64_t blocks = (N + rows - 1) / rows;
  parallel_for(blocks, [&](int64_t b) {
    const int64_t n0 = b * rows, n1 = n0 + rows < N ? n0 + rows : N;
    // Activation rows in chunks of 4, over 8 weight rows at a time: the later chunks re-read
    // those rows from L1/L2, never from memory.
    for (int64_t g0 = n0; g0 < n1; g0 += 8) {
      const int64_t g1 = g0 + 8 < n1 ? g0 + 8 : n1;
      for (int64_t m0 = 0; m0 < M; m0 += 4) {
        switch (M - m0 >= 4 ? 4 : M - m0) {
          case 1: gemv_rows_mb<WT, 1>(p, m0, g0, g1); break;
          case 2: gemv_rows_mb<WT, 2>(p, m0, g0, g1); break;
          case 3: gemv_rows_mb<WT, 3>(p, m0, g0, g1); break;
          default: gemv_rows_mb<WT, 4>(p, m0, g0, g1); break;
        }
      }
    }
  });
}

}  // namespace tessera::TESSERA_ISA_NS
