// linear with integer weights: GPTQ int4 / int8 (AutoGPTQ's packing and grouping) and int8
// per-channel weights, from one kernel layout built by src/tensor/int-weight.ts:
//
//   w[k][n] = col_scale[n] * scale[g][n] * (q[k][n] - zero[g][n]),  g = the group of k,
//
// q unsigned (0..15 or 0..255), K optionally permuted (act-order: input k of the kernel is
// x[perm[k]], so each group is a contiguous run of 32-blocks) and padded to a multiple of 32.
//
// Weight tiles: 16 output columns each, (ceil(N/16), Kp * bits / 32, 16) int32. Row j of a tile
// packs, per column, 8 (4-bit) or 4 (8-bit) consecutive k exactly as AutoGPTQ's qweight does
// (value i in bits [i*bits, (i+1)*bits)), so a 32-bit lane holds one column's consecutive k and
// the tile of a column range is one sequential stream. Meta: (ceil(N/16), G, 32) f16, the 16
// scales then the 16 zero points of each group.
//
// Numerics (the same as llama.cpp's for its integer formats): each activation row is quantised
// to int8 per block of 32 (d = max|x| / 127, q = round-half-even(x * 127 / max|x|), d kept in
// f32), then per block the integer dot sum(q_w * q_x) is exact and
//   y[n] = col_scale[n] * sum_g scale[g][n] * (sum_{b in g} d_b * dot_b[n] - zero[g][n] * sx_g)
//   with sx_g = sum_{b in g} d_b * sum(q_x in b),  plus bias[n].
//
// Integer dots: with AVX-512 VNNI one vpdpbusd per 4 (u8 weight, s8 activation) pairs. Without
// it, vpmaddubsw into int16 (weights split into 4-bit halves so no pair sum saturates: every
// product is at most 15 * 127, and at most 8 pairs of pairs are summed before vpmaddwd).
// 4-bit lanes hold k0..k7 as nibbles: the low nibbles of the 4 bytes are k0, k2, k4, k6 and the
// high ones k1, k3, k5, k7, so activations are stored in that order per 8 values (even, odd).
#pragma once
#include <cmath>
#include <string>

#include "common/errors.h"
#include "common/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/linear_common.h"

namespace tessera::TESSERA_ISA_NS {

static constexpr int64_t kIntTile = 16;   // output columns per weight tile
static constexpr int64_t kIntBlock = 32;  // activation quantisation block (values)
static constexpr int64_t kIntPrefetch = 512;  // int32 ahead (2 KB) in a tile's stream, decode only

struct IntCtx {
  const int32_t* qw;
  int64_t tile_stride;  // int32 per tile: rows * 16
  int64_t rpb;          // packed rows per 32-block: 4 (4-bit) or 8 (8-bit)
  const uint16_t* meta;
  int64_t meta_stride;  // u16 per tile: G * meta_w
  int64_t meta_w;       // u16 per (tile, group): 32 (scales, zeros) or 16 (scales; fixed zero)
  float fixed_zero;     // >= 0: the zero point of every group
  int32_t izero;        // > 0: fixed_zero as an integer, folded into the integer dots (AVX-512)
  const int32_t* qsum;  // (M, ds) sum of each activation block's int8 values

  const int32_t* gb;    // (G + 1) group offsets in blocks
  int64_t G;
  const int8_t* xq;
  int64_t xs;  // bytes per activation row (Kp)
  const float* xd;
  int64_t ds;  // floats per row of block scales
  const float* sx;
  int64_t ss;  // floats per row of group sums
  const float* col_scale;
  const float* bias;
  float* y;
  int64_t M, N;
};

static inline int32_t int_load_i32(const int8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

// One activation row: gather through perm, quantise per block, reorder 4-bit blocks, group sums.
static inline void int_quantize_row(const float* x, const int32_t* perm, int64_t K, int64_t Kp, int bits,
                                    const int32_t* gb, int64_t G, bool round_dx, int8_t* q, float* d, float* sx,
                                    int32_t* qsum) {
  const int64_t nb = Kp / kIntBlock;
  for (int64_t b = 0; b < nb; b++) {
    float v[kIntBlock];
    bool finite = true;
    float amax = 0.0f;
    for (int64_t j = 0; j < kIntBlock; j++) {
      const int64_t k = b * kIntBlock + j;
      v[j] = k < K ? x[perm ? perm[k] : k] : 0.0f;
      const float a = std::fabs(v[j]);
      finite = finite && a <= 3.4028234663852886e38f;
      amax = a > amax ? a : amax;
    }
    int8_t* qb = q + b * kIntBlock;
    if (!finite) {  // a NaN/inf input makes the block's scale NaN, so its outputs are NaN
      d[b] = NAN;
      for (int64_t j = 0; j < kIntBlock; j++) qb[j] = 0;
      continue;
    }
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    d[b] = round_dx ? fp16_to_fp32(fp32_to_fp16(amax / 127.0f)) : amax / 127.0f;
    for (int64_t j = 0; j < kIntBlock; j++) {
      const int8_t qv = (int8_t)(int)std::nearbyint(v[j] * id);
      // 4-bit: per 8 values, the even ones then the odd ones (the nibble order of a lane).
      const int64_t pos = bits == 4 ? (j & ~7) + ((j & 1) ? 4 + ((j & 7) >> 1) : ((j & 7) >> 1)) : j;
      qb[pos] = qv;
    }
  }
  for (int64_t b = 0; b < nb; b++) {
    int32_t t = 0;
    for (int64_t j = 0; j < kIntBlock; j++) t += q[b * kIntBlock + j];
    qsum[b] = t;
  }
  for (int64_t g = 0; g < G; g++) {
    float s = 0.0f;
    for (int64_t b = gb[g]; b < gb[g + 1]; b++) s += d[b] * (float)qsum[b];
    sx[g] = s;
  }
}

#if defined(__AVX512F__)
// R tiles x MB activation rows over all of K; writes y.
template <int BITS, int R, int MB>
static inline void itile(const IntCtx& c, int64_t t0, int64_t m0) {
  constexpr int64_t RPB = BITS == 4 ? 4 : 8;
  const __m512i lo4 = _mm512_set1_epi8(0x0f);
  [[maybe_unused]] const __m512i ones = _mm512_set1_epi16(1);
  __m512 acc[R][MB];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) acc[r][m] = _mm512_setzero_ps();
  const int32_t* qw[R];
  const uint16_t* mt[R];
  for (int r = 0; r < R; r++) {
    qw[r] = c.qw + (t0 + r) * c.tile_stride;
    mt[r] = c.meta + (t0 + r) * c.meta_stride;
  }
  for (int64_t g = 0; g < c.G; g++) {
    __m512 s[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) s[r] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(mt[r] + g * c.meta_w)));
    for (int64_t b = c.gb[g]; b < c.gb[g + 1]; b++) {
      __m512i ia[R][MB];
      // A fixed integer zero point folds into the dots: start from -zero * sum(q_x) of the block.
      __m512i z0[MB];
#pragma GCC unroll 4
      for (int m = 0; m < MB; m++) z0[m] = _mm512_set1_epi32(c.izero > 0 ? -c.izero * c.qsum[(m0 + m) * c.ds + b] : 0);
#if defined(__AVX512VNNI__)
#pragma GCC unroll 8
      for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int m = 0; m < MB; m++) ia[r][m] = z0[m];
#pragma GCC unroll 8
      for (int64_t j = 0; j < RPB; j++) {
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
          const int32_t* src = qw[r] + (b * RPB + j) * kIntTile;
          if (MB == 1) __builtin_prefetch(src + kIntPrefetch, 0, 0);  // decode: stream ahead of the tile
          const __m512i qv = _mm512_loadu_si512(src);
          if constexpr (BITS == 4) {
            const __m512i lo = _mm512_and_si512(qv, lo4), hi = _mm512_and_si512(_mm512_srli_epi16(qv, 4), lo4);
#pragma GCC unroll 4
            for (int m = 0; m < MB; m++) {
              const int8_t* xp = c.xq + (m0 + m) * c.xs + b * kIntBlock + j * 8;
              ia[r][m] = _mm512_dpbusd_epi32(ia[r][m], lo, _mm512_set1_epi32(int_load_i32(xp)));
              ia[r][m] = _mm512_dpbusd_epi32(ia[r][m], hi, _mm512_set1_epi32(int_load_i32(xp + 4)));
            }
          } else {
#pragma GCC unroll 4
            for (int m = 0; m < MB; m++) {
              const int8_t* xp = c.xq + (m0 + m) * c.xs + b * kIntBlock + j * 4;
              ia[r][m] = _mm512_dpbusd_epi32(ia[r][m], qv, _mm512_set1_epi32(int_load_i32(xp)));
            }
          }
        }
      }
#else
      // int16 pair sums: 4-bit, all 8 nibble products per block row in one accumulator; 8-bit,
      // the low and high nibbles of each byte apart (high scaled by 16 after vpmaddwd).
      __m512i p0[R][MB], p1[R][MB];
#pragma GCC unroll 8
      for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int m = 0; m < MB; m++) p0[r][m] = p1[r][m] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int64_t j = 0; j < RPB; j++) {
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
          const __m512i qv = _mm512_loadu_si512(qw[r] + (b * RPB + j) * kIntTile);
          const __m512i lo = _mm512_and_si512(qv, lo4), hi = _mm512_and_si512(_mm512_srli_epi16(qv, 4), lo4);
#pragma GCC unroll 4
          for (int m = 0; m < MB; m++) {
            if constexpr (BITS == 4) {
              const int8_t* xp = c.xq + (m0 + m) * c.xs + b * kIntBlock + j * 8;
              p0[r][m] = _mm512_add_epi16(p0[r][m], _mm512_maddubs_epi16(lo, _mm512_set1_epi32(int_load_i32(xp))));
              p0[r][m] = _mm512_add_epi16(p0[r][m], _mm512_maddubs_epi16(hi, _mm512_set1_epi32(int_load_i32(xp + 4))));
            } else {
              const __m512i xv = _mm512_set1_epi32(int_load_i32(c.xq + (m0 + m) * c.xs + b * kIntBlock + j * 4));
              p0[r][m] = _mm512_add_epi16(p0[r][m], _mm512_maddubs_epi16(lo, xv));
              p1[r][m] = _mm512_add_epi16(p1[r][m], _mm512_maddubs_epi16(hi, xv));
            }
          }
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int m = 0; m < MB; m++) {
          ia[r][m] = _mm512_add_epi32(_mm512_madd_epi16(p0[r][m], ones), z0[m]);
          if constexpr (BITS == 8) ia[r][m] = _mm512_add_epi32(ia[r][m], _mm512_slli_epi32(_mm512_madd_epi16(p1[r][m], ones), 4));
        }
#endif
#pragma GCC unroll 4
      for (int m = 0; m < MB; m++) {
        const __m512 dv = _mm512_set1_ps(c.xd[(m0 + m) * c.ds + b]);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[r][m]), _mm512_mul_ps(s[r], dv), acc[r][m]);
      }
    }
    // Zero points: - scale * zero * sx_g (unless folded into the dots above).
    if (c.izero > 0) continue;
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const __m512 zv = c.fixed_zero >= 0.0f ? _mm512_set1_ps(c.fixed_zero) : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(mt[r] + g * 32 + 16)));
      const __m512 sz = _mm512_mul_ps(s[r], zv);
#pragma GCC unroll 4
      for (int m = 0; m < MB; m++) acc[r][m] = _mm512_fnmadd_ps(sz, _mm512_set1_ps(c.sx[(m0 + m) * c.ss + g]), acc[r][m]);
    }
  }
  for (int r = 0; r < R; r++) {
    const int64_t n0 = (t0 + r) * kIntTile;
    if (n0 >= c.N) break;
    const int64_t cnt = c.N - n0 < kIntTile ? c.N - n0 : kIntTile;
    const __mmask16 k = (__mmask16)((1u << cnt) - 1);
    const __m512 cs = c.col_scale ? _mm512_maskz_loadu_ps(k, c.col_scale + n0) : _mm512_set1_ps(1.0f);
    const __m512 bs = c.bias ? _mm512_maskz_loadu_ps(k, c.bias + n0) : _mm512_setzero_ps();
    for (int m = 0; m < MB; m++) _mm512_mask_storeu_ps(c.y + (m0 + m) * c.N + n0, k, _mm512_fmadd_ps(acc[r][m], cs, bs));
  }
}
static constexpr int kIntRDecode = 4, kIntRPrefill = 2;
#elif defined(__AVX2__)
// As the AVX-512 tile, with each 16-column tile in two ymm halves (V = 2R vectors).
template <int BITS, int R, int MB>
static inline void itile(const IntCtx& c, int64_t t0, int64_t m0) {
  constexpr int V = 2 * R;
  constexpr int64_t RPB = BITS == 4 ? 4 : 8;
  const __m256i lo4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256 acc[V][MB];
#pragma GCC unroll 8
  for (int v = 0; v < V; v++)
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) acc[v][m] = _mm256_setzero_ps();
  const int32_t* qw[V];
  const uint16_t* mt[V];
  for (int v = 0; v < V; v++) {
    qw[v] = c.qw + (t0 + v / 2) * c.tile_stride + (v % 2) * 8;
    mt[v] = c.meta + (t0 + v / 2) * c.meta_stride + (v % 2) * 8;
  }
  for (int64_t g = 0; g < c.G; g++) {
    __m256 s[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; v++) s[v] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(mt[v] + g * c.meta_w)));
    for (int64_t b = c.gb[g]; b < c.gb[g + 1]; b++) {
      __m256i p0[V][MB], p1[V][MB];
#pragma GCC unroll 8
      for (int v = 0; v < V; v++)
#pragma GCC unroll 4
        for (int m = 0; m < MB; m++) p0[v][m] = p1[v][m] = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int64_t j = 0; j < RPB; j++) {
#pragma GCC unroll 8
        for (int v = 0; v < V; v++) {
          const __m256i qv = _mm256_loadu_si256((const __m256i*)(qw[v] + (b * RPB + j) * kIntTile));
          const __m256i lo = _mm256_and_si256(qv, lo4), hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), lo4);
#pragma GCC unroll 4
          for (int m = 0; m < MB; m++) {
            if constexpr (BITS == 4) {
              const int8_t* xp = c.xq + (m0 + m) * c.xs + b * kIntBlock + j * 8;
              p0[v][m] = _mm256_add_epi16(p0[v][m], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(int_load_i32(xp))));
              p0[v][m] = _mm256_add_epi16(p0[v][m], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(int_load_i32(xp + 4))));
            } else {
              const __m256i xv = _mm256_set1_epi32(int_load_i32(c.xq + (m0 + m) * c.xs + b * kIntBlock + j * 4));
              p0[v][m] = _mm256_add_epi16(p0[v][m], _mm256_maddubs_epi16(lo, xv));
              p1[v][m] = _mm256_add_epi16(p1[v][m], _mm256_maddubs_epi16(hi, xv));
            }
          }
        }
      }
#pragma GCC unroll 4
      for (int m = 0; m < MB; m++) {
        const __m256 dv = _mm256_set1_ps(c.xd[(m0 + m) * c.ds + b]);
#pragma GCC unroll 8
        for (int v = 0; v < V; v++) {
          __m256i ia = _mm256_madd_epi16(p0[v][m], ones);
          if constexpr (BITS == 8) ia = _mm256_add_epi32(ia, _mm256_slli_epi32(_mm256_madd_epi16(p1[v][m], ones), 4));
          acc[v][m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_mul_ps(s[v], dv), acc[v][m]);
        }
      }
    }
#pragma GCC unroll 8
    for (int v = 0; v < V; v++) {
      const __m256 zv = c.fixed_zero >= 0.0f ? _mm256_set1_ps(c.fixed_zero) : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(mt[v] + g * 32 + 16)));
      const __m256 sz = _mm256_mul_ps(s[v], zv);
#pragma GCC unroll 4
      for (int m = 0; m < MB; m++) acc[v][m] = _mm256_fnmadd_ps(sz, _mm256_set1_ps(c.sx[(m0 + m) * c.ss + g]), acc[v][m]);
    }
  }
  for (int v = 0; v < V; v++) {
    const int64_t n0 = (t0 + v / 2) * kIntTile + (v % 2) * 8;
    if (n0 >= c.N) break;
    const int64_t cnt = c.N - n0 < 8 ? c.N - n0 : 8;
    for (int m = 0; m < MB; m++) {
      alignas(32) float o[8];
      _mm256_store_ps(o, acc[v][m]);
      float* yp = c.y + (m0 + m) * c.N + n0;
      for (int64_t i = 0; i < cnt; i++)
        yp[i] = o[i] * (c.col_scale ? c.col_scale[n0 + i] : 1.0f) + (c.bias ? c.bias[n0 + i] : 0.0f);
    }
  }
}
static constexpr int kIntRDecode = 2, kIntRPrefill = 1;
#else
template <int BITS, int R, int MB>
static inline void itile(const IntCtx& c, int64_t t0, int64_t m0) {
  constexpr int64_t RPB = BITS == 4 ? 4 : 8, PER = 32 / BITS;
  for (int r = 0; r < R; r++) {
    const int32_t* qw = c.qw + (t0 + r) * c.tile_stride;
    const uint16_t* mt = c.meta + (t0 + r) * c.meta_stride;
    for (int m = 0; m < MB; m++) {
      const int8_t* xq = c.xq + (m0 + m) * c.xs;
      float acc[kIntTile] = {};
      for (int64_t g = 0; g < c.G; g++) {
        for (int64_t b = c.gb[g]; b < c.gb[g + 1]; b++) {
          const float dx = c.xd[(m0 + m) * c.ds + b];
          for (int64_t i = 0; i < kIntTile; i++) {
            int32_t dot = 0;
            for (int64_t j = 0; j < RPB; j++) {
              const uint32_t word = (uint32_t)qw[(b * RPB + j) * kIntTile + i];
              for (int64_t e = 0; e < PER; e++) {
                const int32_t qv = (int32_t)((word >> (e * BITS)) & ((1u << BITS) - 1));
                // 4-bit activations: even k first, then odd (see int_quantize_row).
                const int64_t pos = BITS == 4 ? j * 8 + ((e & 1) ? 4 + (e >> 1) : (e >> 1)) : j * 4 + e;
                dot += qv * xq[b * kIntBlock + pos];
              }
            }
            acc[i] += (float)dot * (fp16_to_fp32(mt[g * c.meta_w + i]) * dx);
          }
        }
        for (int64_t i = 0; i < kIntTile; i++)
          acc[i] -= fp16_to_fp32(mt[g * c.meta_w + i]) * (c.fixed_zero >= 0.0f ? c.fixed_zero : fp16_to_fp32(mt[g * 32 + 16 + i])) *
                    c.sx[(m0 + m) * c.ss + g];
      }
      const int64_t n0 = (t0 + r) * kIntTile;
      for (int64_t i = 0; i < kIntTile && n0 + i < c.N; i++)
        c.y[(m0 + m) * c.N + n0 + i] = acc[i] * (c.col_scale ? c.col_scale[n0 + i] : 1.0f) + (c.bias ? c.bias[n0 + i] : 0.0f);
    }
  }
}
static constexpr int kIntRDecode = 1, kIntRPrefill = 1;
#endif

template <int BITS, int R>
static inline void itile_rows(const IntCtx& c, int64_t t0, int64_t m0, int64_t m1) {
  for (int64_t m = m0; m < m1; m += 4) {
    switch (m1 - m >= 4 ? 4 : m1 - m) {
      case 1: itile<BITS, R, 1>(c, t0, m); break;
      case 2: itile<BITS, R, 2>(c, t0, m); break;
      case 3: itile<BITS, R, 3>(c, t0, m); break;
      default: itile<BITS, R, 4>(c, t0, m); break;
    }
  }
}

template <int BITS>
static void linear_int_bits(const IntLinearParams& p) {
  const int64_t M = p.M, N = p.N, K = p.K, G = p.G;
  const int64_t Kp = (K + kIntBlock - 1) / kIntBlock * kIntBlock, nb = Kp / kIntBlock;
  const int64_t tiles = (N + kIntTile - 1) / kIntTile;
  // Scratch: block scales, group sums (floats), block sums of q (int32), then the int8 activations.
  const int64_t ds = (nb + 15) / 16 * 16, ss = (G + 15) / 16 * 16;
  static thread_local LinearScratch scratch;
  float* buf = scratch.get((size_t)(M * (2 * ds + ss) + (M * Kp + 3) / 4 + 16));
  IntCtx c{};
  c.qw = p.qweight;
  c.rpb = BITS == 4 ? 4 : 8;
  c.tile_stride = Kp * BITS / 32 * kIntTile;
  c.meta = p.meta;
  c.meta_w = p.fixed_zero >= 0.0f ? 16 : 32;
  c.meta_stride = G * c.meta_w;
  c.fixed_zero = p.fixed_zero;
#if defined(__AVX512F__)
  // |zero * sum(q)| <= 255 * 32 * 127: exact in int32.
  c.izero = p.fixed_zero > 0.0f && p.fixed_zero <= 255.0f && p.fixed_zero == (float)(int32_t)p.fixed_zero ? (int32_t)p.fixed_zero : 0;
#else
  c.izero = 0;
#endif
  c.gb = p.group_blocks;
  c.G = G;
  c.xd = buf;
  c.ds = ds;
  c.sx = buf + M * ds;
  c.ss = ss;
  c.qsum = (const int32_t*)(buf + M * (ds + ss));
  c.xq = (const int8_t*)(buf + M * (2 * ds + ss));
  c.xs = Kp;
  c.col_scale = p.col_scale;
  c.bias = p.bias;
  c.y = p.y;
  c.M = M;
  c.N = N;
  parallel_range(M, 4, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; m++)
      int_quantize_row(p.x + m * K, p.perm, K, Kp, BITS, p.group_blocks, G, p.round_dx_f16, (int8_t*)c.xq + m * Kp, (float*)c.xd + m * ds,
                       (float*)c.sx + m * ss,
                       (int32_t*)c.qsum + m * ds);
  });
  // Decode: R tiles per step (R parallel sequential streams), every row at once. Prefill: tiles
  // in pairs against chunks of 64 rows, so a tile pair's weights stay in L1/L2 while the rows'
  // activations pass over them.
  const bool decode = M <= 8;
  const int64_t R = decode ? kIntRDecode : kIntRPrefill;
  const int64_t steps = (tiles + R - 1) / R;
  const int64_t threads = pool_threads();
  int64_t per = (steps + threads * 8 - 1) / (threads * 8);
  per = per < 1 ? 1 : per;
  const int64_t tasks = (steps + per - 1) / per;
  parallel_for(tasks, [&](int64_t t) {
    const int64_t s0 = t * per, s1 = s0 + per < steps ? s0 + per : steps;
    for (int64_t mc = 0; mc < M; mc += 64) {
      const int64_t mc1 = mc + 64 < M ? mc + 64 : M;
      for (int64_t s = s0; s < s1; s++) {
        const int64_t t0 = s * R;
        // A last step with fewer than R tiles takes them one at a time.
        if (t0 + R > tiles) {
          for (int64_t tt = t0; tt < tiles; tt++) itile_rows<BITS, 1>(c, tt, mc, mc1);
        } else if (decode) {
          itile_rows<BITS, kIntRDecode>(c, t0, mc, mc1);
        } else {
          itile_rows<BITS, kIntRPrefill>(c, t0, mc, mc1);
        }
      }
    }
  });
}

static void linear_int(const IntLinearParams& p) {
  if (p.M <= 0 || p.N <= 0) return;
  if (p.bits == 4) linear_int_bits<4>(p);
  else if (p.bits == 8) linear_int_bits<8>(p);
  else fail("linear: integer weights must have 4 or 8 bits, got " + std::to_string(p.bits));
}

}  // namespace tessera::TESSERA_ISA_NS
