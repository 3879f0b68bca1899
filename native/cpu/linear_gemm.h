// Prefill-sized linear: GotoBLAS/BLIS blocked GEMM (Goto & van de Geijn 2008): x packed into
// MR-row panels, w packed (converted to f32) per KC x NC block into NR-wide panels, and an
// MR x NR register-tiled microkernel that broadcasts x and accumulates in registers.
#pragma once
#include "common/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/linear_common.h"

namespace tessera::TESSERA_ISA_NS {

// Tile shapes: MR rows of x by NV vectors of w columns -> MR * NV accumulators, plus NV weight
// vectors and a broadcast, must fit the register file (32 zmm / 16 ymm).
#if defined(__AVX512F__)
static constexpr int kGemmMR = 8, kGemmNV = 3;  // 8 x 48, 24 zmm accumulators
#elif defined(__AVX2__)
static constexpr int kGemmMR = 6, kGemmNV = 2;  // 6 x 16, 12 ymm accumulators
#else
static constexpr int kGemmMR = 4, kGemmNV = 4;  // 4 x 4 scalars
#endif
static constexpr int kGemmNR = kGemmNV * Simd::W;
// KC: an x micro-panel (KC x MR) stays in L1 while it sweeps the task's packed w block
// (KC x NC, kept in L2: <= 384 x 240 floats = 360 KB on AVX-512).
static constexpr int64_t kGemmKC = 384;
static constexpr int64_t kGemmNCMax = (kGemmNR >= 48 ? 240 : kGemmNR >= 16 ? 256 : 128);
static constexpr int64_t kGemmXFloats = 1 << 21;  // packed-x budget per M super-block (8 MB)

// C (mr x nr valid of an MR x NR tile, row stride ldc) = or += A panel (kc x MR, k-major) times
// B panel (kc x NR, k-major). `first`: C = acc + bias (bias may be null), else C += acc.
template <int MR, int NV>
static inline void gemm_micro(int64_t kc, const float* __restrict A, const float* __restrict B,
                              float* C, int64_t ldc, const float* bias, bool first, int mr, int nr) {
  using S = Simd;
  constexpr int W = S::W, NR = NV * W;
  S::V c[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) c[i][j] = S::zero();
#if defined(__GNUC__)
  // The C tile is read at the end; start fetching it now so that read does not stall.
  for (int i = 0; i < mr; i++) {
    for (int j = 0; j < nr; j += 16) __builtin_prefetch(C + i * ldc + j, 1);
    __builtin_prefetch(C + i * ldc + nr - 1, 1);
  }
#endif
  for (int64_t k = 0; k < kc; k++) {
    S::V b[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) b[j] = S::load(B + k * NR + j * W);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
      const S::V a = S::set1(A[k * MR + i]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; j++) c[i][j] = S::fma(a, b[j], c[i][j]);
    }
  }
  if (mr == MR && nr == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
      for (int j = 0; j < NV; j++) {
        float* cp = C + i * ldc + j * W;
        S::V v = c[i][j];
        if (!first) v = S::add(v, S::load(cp));
        else if (bias) v = S::add(v, S::load(bias + j * W));
        S::store(cp, v);
      }
    return;
  }
  alignas(64) float tile[MR * NR];  // edge tile: full registers spilled, valid part copied
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NV; j++) S::store(tile + i * NR + j * W, c[i][j]);
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) {
      float base = first ? (bias ? bias[j] : 0.0f) : C[i * ldc + j];
      C[i * ldc + j] = base + tile[i * NR + j];
    }
}

#if defined(__AVX512F__)
// In-register transpose of a 16 x 16 float block (rows r[0..15] -> columns r[0..15]).
static inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + c]: lane L holds column 4L + c of rows 4g..4g+3
  for (int g = 0; g < 4; g++) {
    __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int c = 0; c < 4; c++) {
    __m512 v = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), w = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
    __m512 v2 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE), w2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_f32x4(v, w, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(v, w, 0xDD);
    r[8 + c] = _mm512_shuffle_f32x4(v2, w2, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(v2, w2, 0xDD);
  }
}
#endif
#if defined(__AVX2__)
// In-register transpose of an 8 x 8 float block.
static inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4h + c]: lane L holds column 4L + c of rows 4h..4h+3
  for (int h = 0; h < 2; h++) {
    u[4 * h + 0] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
    u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
    u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
  for (int c = 0; c < 4; c++) {
    r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}
#endif

// Packs w rows [n0, n0 + nv) x columns [k0, k0 + kc) as dst (kc, NR), k-major, converted to f32;
// rows nv..NR are zero so edge tiles need no special case in the inner loop.
template <DType WT, int NR>
static void pack_w_panel(const void* w, int64_t K, int64_t n0, int nv, int64_t k0, int64_t kc,
                         float* dst) {
  int r = 0;
#if defined(__AVX512F__) || defined(__AVX2__)
  constexpr int W = Simd::W;  // square W x W blocks transposed in registers
  for (; r + W <= nv; r += W) {
    const int64_t src = (n0 + r) * K + k0;
    int64_t k = 0;
    for (; k + W <= kc; k += W) {
      Simd::V v[W];
      for (int i = 0; i < W; i++) v[i] = load_w<WT>(w, src + i * K + k);
#if defined(__AVX512F__)
      transpose16(v);
#else
      transpose8(v);
#endif
      for (int i = 0; i < W; i++) Simd::store(dst + (k + i) * NR + r, v[i]);
    }
    for (; k < kc; k++)
      for (int i = 0; i < W; i++) dst[k * NR + r + i] = scalar_w<WT>(w, src + i * K + k);
  }
#endif
  for (; r < nv; r++) {
    const int64_t src = (n0 + r) * K + k0;
    for (int64_t k = 0; k < kc; k++) dst[k * NR + r] = scalar_w<WT>(w, src + k);
  }
  if (nv < NR)
    for (int64_t k = 0; k < kc; k++)
      for (int rr = nv; rr < NR; rr++) dst[k * NR + rr] = 0.0f;
}

// Packs x rows [m0, m0 + mv) (all K columns) as dst (K, MR), k-major; rows mv..MR are zero.
template <int MR>
static void pack_x_panel(const float* x, int64_t K, int64_t m0, int mv, float* dst) {
  int64_t k = 0;
#if defined(__AVX2__)
  if constexpr (MR == 8 || MR == 6) {
    // 8 x 8 blocks transposed in registers; missing rows read as zero.
    const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(MR), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (; k + 8 <= K; k += 8) {
      __m256 v[8];
      for (int i = 0; i < 8; i++)
        v[i] = i < mv ? _mm256_loadu_ps(x + (m0 + i) * K + k) : _mm256_setzero_ps();
      transpose8(v);
      for (int j = 0; j < 8; j++) {
        if constexpr (MR == 8) _mm256_storeu_ps(dst + (k + j) * MR, v[j]);
        else _mm256_maskstore_ps(dst + (k + j) * MR, keep, v[j]);
      }
    }
  }
#endif
  for (int i = 0; i < MR; i++) {
    const float* src = x + (m0 + i) * K;
    for (int64_t kk = k; kk < K; kk++) dst[kk * MR + i] = i < mv ? src[kk] : 0.0f;
  }
}

// Software prefetch of a rows x bytes window of w (row stride `stride` bytes), one cache line
// at a time, in `steps` roughly equal portions.
struct WPrefetch {
  const char* base = nullptr;
  int64_t stride = 0, rows = 0, lines_per_row = 0, per_step = 0, row = 0, line = 0;
  void init(const char* b, int64_t row_stride, int64_t nrows, int64_t bytes, int64_t steps) {
    base = b;
    stride = row_stride;
    rows = nrows;
    lines_per_row = (bytes + 63) / 64;
    const int64_t total = rows * lines_per_row;
    per_step = steps > 0 ? (total + steps - 1) / steps : total;
    row = line = 0;
  }
  void step() {
    for (int64_t i = 0; i < per_step && row < rows; i++) {
#if defined(__GNUC__)
      __builtin_prefetch(base + row * stride + line * 64, 0, 2);
#endif
      if (++line == lines_per_row) { line = 0; row++; }
    }
  }
};

// Per-thread packed operands, shared by the three weight types.
static float* gemm_scratch_x(size_t n) {
  static thread_local LinearScratch s;
  return s.get(n);
}
static float* gemm_scratch_w(size_t n) {
  static thread_local LinearScratch s;
  return s.get(n);
}

template <DType WT>
static void linear_gemm(const LinearParams& p) {
  constexpr int MR = kGemmMR, NV = kGemmNV, NR = kGemmNR;
  constexpr int64_t KC = kGemmKC, max_task_panels = kGemmNCMax / NR;
  const int64_t M = p.M, N = p.N, K = p.K;
  const int64_t threads = pool_threads();
  const int64_t wsize = WT == DType::F32 ? 4 : 2;

  // M super-blocks bound the packed-x buffer: xp (ms_panels, K, MR).
  const int64_t m_panels_total = (M + MR - 1) / MR;
  int64_t ms_panels = kGemmXFloats / (K * MR);
  if (ms_panels < 1) ms_panels = 1;
  if (ms_panels > m_panels_total) ms_panels = m_panels_total;
  float* xp = gemm_scratch_x((size_t)(ms_panels * K * MR));

  // N tasks: a multiple of the thread count, each <= max_task_panels NR-wide panels, with the
  // panels spread evenly so equal-sized tasks finish together.
  const int64_t n_panels = (N + NR - 1) / NR;
  int64_t n_jc = threads * ((n_panels + threads * max_task_panels - 1) / (threads * max_task_panels));
  if (n_jc > n_panels) n_jc = n_panels;

  for (int64_t mp0 = 0; mp0 < m_panels_total; mp0 += ms_panels) {
    const int64_t mps = mp0 + ms_panels < m_panels_total ? ms_panels : m_panels_total - mp0;
    parallel_for(mps, [&](int64_t i) {
      const int64_t m0 = (mp0 + i) * MR;
      const int mv = (int)(M - m0 < MR ? M - m0 : MR);
      pack_x_panel<MR>(p.x, K, m0, mv, xp + i * K * MR);
    });
    // Too few N tasks for the pool (narrow N): split M as well; each split re-packs its w block.
    int64_t m_split = n_jc >= threads ? 1 : (threads + n_jc - 1) / n_jc;
    if (m_split > mps) m_split = mps;
    parallel_for(n_jc * m_split, [&](int64_t t) {
      const int64_t jc = t / m_split, ic = t % m_split;
      const int64_t jp0 = jc * n_panels / n_jc, jp1 = (jc + 1) * n_panels / n_jc;
      const int64_t ip0 = ic * mps / m_split, ip1 = (ic + 1) * mps / m_split;
      float* wp = gemm_scratch_w((size_t)(KC * max_task_panels * NR));  // (panels, kc, NR)
      for (int64_t pc = 0; pc < K; pc += KC) {
        const int64_t kc = pc + KC < K ? KC : K - pc;
        for (int64_t jp = jp0; jp < jp1; jp++) {
          const int64_t n0 = jp * NR;
          const int nv = (int)(N - n0 < NR ? N - n0 : NR);
          pack_w_panel<WT, NR>(p.w, K, n0, nv, pc, kc, wp + (jp - jp0) * kc * NR);
        }
        // While this block computes, pull the next block's 16-bit weights (read by the next
        // pack) towards L2, spread over the microkernel calls: hides the memory stream that
        // would otherwise stall every pack when M is small. (Measured: no gain for f32, whose
        // twice-longer rows conflict more in L2 at power-of-two strides.)
        WPrefetch pf;
        if (WT != DType::F32 && pc + KC < K) {
          const int64_t r1 = jp1 * NR < N ? jp1 * NR : N;
          const int64_t k1 = pc + 2 * KC < K ? pc + 2 * KC : K;
          pf.init((const char*)p.w + (jp0 * NR * K + pc + KC) * wsize, K * wsize, r1 - jp0 * NR,
                  (k1 - pc - KC) * wsize, (ip1 - ip0) * (jp1 - jp0));
        }
        for (int64_t ip = ip0; ip < ip1; ip++) {
          const int64_t m0 = (mp0 + ip) * MR;
          const int mv = (int)(M - m0 < MR ? M - m0 : MR);
          const float* ap = xp + ip * K * MR + pc * MR;  // (kc, MR), reused from L1 below
          for (int64_t jp = jp0; jp < jp1; jp++) {
            const int64_t n0 = jp * NR;
            const int nv = (int)(N - n0 < NR ? N - n0 : NR);
            pf.step();
            gemm_micro<MR, NV>(kc, ap, wp + (jp - jp0) * kc * NR, p.y + m0 * N + n0, N,
                               p.bias ? p.bias + n0 : nullptr, pc == 0, mv, nv);
          }
        }
      }
    });
  }
}

}  // namespace tessera::TESSERA_ISA_NS
