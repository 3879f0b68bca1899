// linear with GGUF Q8_0 / Q4_0 weights, llama.cpp's numerics (ggml_vec_dot_q8_0_q8_0 and
// ggml_vec_dot_q4_0_q8_0): every activation row is first quantised to Q8_0 blocks exactly as
// llama.cpp's x86 quantize_row_q8_0 does (d = max|x| / 127 stored as f16; q = x * (127 / max|x|)
// rounded to nearest, halves to even; src/tensor/quant.ts quantizeActivationsQ8_0), then
// y[m][n] = sum over blocks of (float)(exact int32 sum of q_w * q_x) * (d_w * d_x) + bias[n].
//
// Weights: N rows of K / 32 blocks. Q8_0 block = 34 bytes (f16 d, 32 int8); Q4_0 block = 18
// bytes (f16 d, 16 bytes: byte j holds value j in its low nibble and j + 16 in its high one,
// value = d * (nibble - 8)).
//
// With AVX-512 VNNI (the avx512vnni table) each 4-value integer dot is one vpdpbusd (u8 x s8):
//   Q8_0: (w + 128) as u8 times x, the accumulator starting at -128 * sum(x);
//   Q4_0: nibble times x, starting at -8 * sum(x).
// Integer dots without VNNI (avx2, avx512), as llama.cpp does:
//   Q8_0 x Q8_0: the sign trick, maddubs(|w| as u8, x * sign(w)) then madd with ones. |w| of
//     -128 is 0x80 = 128 as u8, so any byte is exact; pairs stay within int16 (2*128*127).
//   Q4_0 x Q8_0: maddubs(nibble as u8, x) - maddubs(8, x) = sum (nibble - 8) * x in int16 pairs.
// Then the int32 lanes of a block are scaled by (d_w * d_x) and accumulated with FMA in float:
// the block sums are exact, only the float summation order differs from the reference.
//
// One tile = R weight rows x MB activation rows over a range of blocks, accumulators in
// registers. Parallel over N (each task owns its output columns); activation rows in chunks of
// 4 re-read the tile's weight rows from L1. Prefill (many rows) also blocks K and M so the
// quantised activations of a chunk stay in L2 while the task's weights stream past them.
#pragma once
#include <cmath>

#include "common/errors.h"
#include "common/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/linear_common.h"

namespace tessera::TESSERA_ISA_NS {

static constexpr int64_t kQK = 32;  // values per block

template <DType WT>
static constexpr int64_t q_block_bytes() {
  return quant_block_bytes(WT);
}

// Layout of the quantised activations, per weight type and ISA. Rows are padded to whole groups
// of q_x_group blocks (zero values, zero scales). Scales are stored q_dx_rep times per block so
// that one vector load gives the scales of the lanes it multiplies.
//  - scalar: each block's 32 int8 in order, one scale per block.
//  - AVX-512 (AVX2): groups of 4 (2) blocks: values 0..15 of each block of the group, then
//    values 16..31 of each, so that a vector of either half puts block i in 128-bit lane i
//    (Q4_0: its low / high nibbles; Q8_0: its first / last 16 values) and the integer dot of a
//    block ends in its own lane: 4 int32 lanes per block, scaled by [d0 x 4, d1 x 4, ...].
template <DType WT>
static constexpr int64_t q_x_group() {
#if defined(__AVX512F__)
  return 4;
#elif defined(__AVX2__)
  return 2;
#else
  return 1;
#endif
}
template <DType WT>
static constexpr int64_t q_dx_rep() {
#if defined(__AVX512F__) || defined(__AVX2__)
  return 4;
#else
  return 1;
#endif
}

// Rows (M) up to which the whole K is one pass (decode); beyond, K and M are blocked.
static constexpr int64_t kQuantGemvMaxM = 8;
static constexpr int64_t kQuantKcBlocks = 128;  // K chunk for prefill: 4096 values
static constexpr int64_t kQuantMc = 64;         // M chunk for prefill

struct QuantCtx {
  const uint8_t* w;  // (N, nb) blocks
  const int8_t* xq;  // (M, xs) quantised activations (layout above)
  const float* xd;   // (M, ds) activation scales (f16-rounded, as f32), q_dx_rep per block
  const float* bias;
  float* y;
  int64_t M, N, K, nb;
  int64_t xs, ds;  // row strides of xq (bytes) and xd (floats)
};

static inline uint16_t q_load_u16(const uint8_t* p) {
  uint16_t v;
  __builtin_memcpy(&v, p, 2);
  return v;
}

// ---- activation quantisation (quantize_row_q8_0, bit-exact) ------------------------------------

// Round to nearest, halves to even, whatever the MXCSR mode (llama.cpp's _mm256_round_ps with
// _MM_ROUND_NEAREST). |v| <= 127 here, or NaN.
static inline float q_rint(float v) {
  const float t = std::trunc(v), f = v - t;  // exact
  const float s = v < 0 ? -1.0f : 1.0f;
  if (std::fabs(f) > 0.5f || (std::fabs(f) == 0.5f && std::fmod(t, 2.0f) != 0.0f)) return t + s;
  return t;
}

// One row of K values -> its Q8_0 values and scales in WT's layout, padding included.
template <DType WT>
static inline void quantize_row_q8(const float* x, int64_t K, int8_t* q, float* d) {
  constexpr int64_t G = q_x_group<WT>(), REP = q_dx_rep<WT>();
  const int64_t nb = K / kQK, nbp = (nb + G - 1) / G * G;
  for (int64_t b = 0; b < nb; b++) {
    const float* xb = x + b * kQK;
    // Values 0..15 go to qb, 16..31 to qb + hi.
    int8_t* qb = G == 1 ? q + b * kQK : q + (b / G) * G * kQK + (b % G) * 16;
    constexpr int64_t hi = G == 1 ? 16 : G * 16;
    // max |x| as the unsigned maximum of the bit patterns without sign: a NaN (above +inf)
    // wins, so it reaches the scale and the row's outputs, as with the reference's Math.max.
    uint32_t amax_bits;
#if defined(__AVX512F__)
    const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
    const __m512i nosign = _mm512_set1_epi32(0x7fffffff);
    amax_bits = _mm512_reduce_max_epu32(_mm512_max_epu32(_mm512_and_si512(_mm512_castps_si512(v0), nosign),
                                                         _mm512_and_si512(_mm512_castps_si512(v1), nosign)));
#elif defined(__AVX2__)
    const __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
    const __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
    const __m256i nosign = _mm256_set1_epi32(0x7fffffff);
    const __m256i a = _mm256_max_epu32(
        _mm256_max_epu32(_mm256_and_si256(_mm256_castps_si256(v0), nosign), _mm256_and_si256(_mm256_castps_si256(v1), nosign)),
        _mm256_max_epu32(_mm256_and_si256(_mm256_castps_si256(v2), nosign), _mm256_and_si256(_mm256_castps_si256(v3), nosign)));
    __m128i h = _mm_max_epu32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
    amax_bits = (uint32_t)_mm_cvtsi128_si32(h);
#else
    amax_bits = 0;
    for (int j = 0; j < kQK; j++) {
      uint32_t u;
      __builtin_memcpy(&u, xb + j, 4);
      u &= 0x7fffffffu;
      amax_bits = u > amax_bits ? u : amax_bits;
    }
#endif
    float amax;
    __builtin_memcpy(&amax, &amax_bits, 4);
    const float dd = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
#if defined(__AVX512F__)
    const __m512 vid = _mm512_set1_ps(id);
    const __m512i i0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i i1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128((__m128i*)qb, _mm512_cvtepi32_epi8(i0));
    _mm_storeu_si128((__m128i*)(qb + hi), _mm512_cvtepi32_epi8(i1));
#elif defined(__AVX2__)
    const __m256 vid = _mm256_set1_ps(id);
    constexpr int kRint = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256i i0 = _mm256_cvttps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, vid), kRint));
    __m256i i1 = _mm256_cvttps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, vid), kRint));
    __m256i i2 = _mm256_cvttps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, vid), kRint));
    __m256i i3 = _mm256_cvttps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, vid), kRint));
    i0 = _mm256_packs_epi32(i0, i1);  // values (0-3, 8-11, 4-7, 12-15) per 128-bit half
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);
    i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm_storeu_si128((__m128i*)qb, _mm256_castsi256_si128(i0));
    _mm_storeu_si128((__m128i*)(qb + hi), _mm256_extracti128_si256(i0, 1));
#else
    for (int j = 0; j < kQK; j++) {
      const float v = q_rint(xb[j] * id);  // NaN (from a NaN/inf row) stores 0; its scale is NaN
      qb[j < 16 ? j : hi + j - 16] = (int8_t)(v == v ? (int)v : 0);
    }
#endif
    const float ds = fp16_to_fp32(fp32_to_fp16(dd));
    for (int64_t i = 0; i < REP; i++) d[b * REP + i] = ds;
  }
  for (int64_t b = nb; b < nbp; b++) {  // padding blocks: zero values and scales
    for (int64_t i = 0; i < REP; i++) d[b * REP + i] = 0.0f;
    for (int64_t j = 0; j < 16; j++) q[(b / G) * G * kQK + (b % G) * 16 + j] = q[(b / G) * G * kQK + (b % G) * 16 + G * 16 + j] = 0;
  }
}

// ---- tiles --------------------------------------------------------------------------------------

// Weight rows per tile for MB activation rows (R * MB float accumulators in registers).
template <int MB>
static constexpr int qtile_rows() {
#if defined(__AVX512F__)
  return MB == 1 ? 8 : 4;
#elif defined(__AVX2__)
  return MB == 1 ? 4 : 2;
#else
  return MB == 1 ? 4 : 2;
#endif
}

#if defined(__AVX512F__)
// Mask of the first n (clamped to [0, 64]) bytes.
static inline __mmask64 q_bytes_mask(int64_t n) {
  return n >= 64 ? ~(__mmask64)0 : n <= 0 ? (__mmask64)0 : (__mmask64)((1ull << n) - 1);
}

// Q8_0 step of qtile: CNT (1..4) blocks from b (a multiple of 4), for R weight rows x MB
// activation rows. The 4 blocks are 136 contiguous bytes, all fields at even offsets. A whole
// group inserts values 0..15 of each block into 128-bit lane i of one vector and values 16..31
// into another (vinserti32x4 with the loads folded in), matching the activation layout
// (q_x_group); a word permute spreads the f16 scales to [d0 x 4, d1 x 4, d2 x 4, d3 x 4]. A
// partial group gathers with word permutes of masked loads of only its own bytes, so the
// missing blocks read as zero values with zero scales.
template <int R, int MB, bool PF, int CNT>
__attribute__((always_inline)) static inline void qstep512_q8(__m512 (&acc)[R][MB], const uint8_t* w, int64_t ws,
                                                              const int8_t* xq, int64_t xs, const float* xd,
                                                              int64_t ds, int64_t b) {
  constexpr int64_t BB = 34, NBYTES = CNT * BB;
  // Sources: A = bytes 0..63, B = 64..127 (values 0..15, scales); C = 8..71, D = 72..135 (16..31).
  alignas(64) static const int16_t kLoIdx[32] = {1,  2,  3,  4,  5,  6,  7,  8,  18, 19, 20, 21, 22, 23, 24, 25,
                                                 35, 36, 37, 38, 39, 40, 41, 42, 52, 53, 54, 55, 56, 57, 58, 59};
  alignas(64) static const int16_t kHiIdx[32] = {5,  6,  7,  8,  9,  10, 11, 12, 22, 23, 24, 25, 26, 27, 28, 29,
                                                 39, 40, 41, 42, 43, 44, 45, 46, 56, 57, 58, 59, 60, 61, 62, 63};
  alignas(64) static const int16_t kDIdx[32] = {0, 0, 0, 0, 17, 17, 17, 17, 34, 34, 34, 34, 51, 51, 51, 51};
  const __m512i loidx = _mm512_load_si512(kLoIdx), hiidx = _mm512_load_si512(kHiIdx), didx = _mm512_load_si512(kDIdx);
  [[maybe_unused]] const __m512i ones = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
#if defined(__AVX512VNNI__)
  const __m512i k80 = _mm512_set1_epi8((char)0x80);
  __m512i negc[MB];
#pragma GCC unroll 4
  for (int m = 0; m < MB; m++) {
    const int8_t* xg = xq + m * xs + b * kQK;
    negc[m] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, k80, _mm512_loadu_si512(xg)), k80, _mm512_loadu_si512(xg + 64)));
  }
#endif
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    const uint8_t* wb = w + r * ws + b * BB;
    if constexpr (PF) {
      __builtin_prefetch(wb + 1024, 0, 0);
      __builtin_prefetch(wb + 1024 + 64, 0, 0);
    }
    __m512i va, vb, wl, wh;
    if constexpr (CNT == 4) {
      // Whole group: each block's two 16-value halves straight into its 128-bit lane (loads
      // folded into vinserti32x4), cheaper than two-source word permutes.
      va = _mm512_loadu_si512(wb);
      vb = _mm512_loadu_si512(wb + 64);
      const auto half = [&](int64_t off) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i*)(wb + off)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i*)(wb + off + BB)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i*)(wb + off + 2 * BB)), 2);
        return _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i*)(wb + off + 3 * BB)), 3);
      };
      wl = half(2);
      wh = half(18);
      (void)loidx;
      (void)hiidx;
    } else {
      va = _mm512_maskz_loadu_epi8(q_bytes_mask(NBYTES), wb);
      vb = _mm512_maskz_loadu_epi8(q_bytes_mask(NBYTES - 64), wb + 64);
      const __m512i vc = _mm512_maskz_loadu_epi8(q_bytes_mask(NBYTES - 8), wb + 8);
      const __m512i vd = _mm512_maskz_loadu_epi8(q_bytes_mask(NBYTES - 72), wb + 72);
      wl = _mm512_permutex2var_epi16(va, loidx, vb);
      wh = _mm512_permutex2var_epi16(vc, hiidx, vd);
    }
    const __m512 dwv = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(va, didx, vb)));
#if defined(__AVX512VNNI__)
    // vpdpbusd multiplies u8 by s8: w + 128 as u8 (a sign-bit flip), minus 128 * sum(x) per lane
    // (negc, computed once per step for all rows), accumulated from -128 * sum(x).
    const __m512i ul = _mm512_xor_si512(wl, k80), uh = _mm512_xor_si512(wh, k80);
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) {
      const int8_t* xg = xq + m * xs + b * kQK;
      const __m512i p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(negc[m], ul, _mm512_loadu_si512(xg)), uh, _mm512_loadu_si512(xg + 64));
      const __m512 s = _mm512_mul_ps(dwv, _mm512_loadu_ps(xd + m * ds + b * 4));
      acc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[r][m]);
    }
    continue;
#endif
    const __m512i al = _mm512_abs_epi8(wl), ah = _mm512_abs_epi8(wh);
    const __mmask64 nl = _mm512_movepi8_mask(wl), nh = _mm512_movepi8_mask(wh);
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) {
      const int8_t* xg = xq + m * xs + b * kQK;
      const __m512i xl = _mm512_loadu_si512(xg), xh = _mm512_loadu_si512(xg + 64);
      // |w| * (x with w's sign): int16 pairs, then int32 per 4 values; values 0..15 and 16..31
      // of a block share its 128-bit lane.
      const __m512i pl = _mm512_madd_epi16(_mm512_maddubs_epi16(al, _mm512_mask_sub_epi8(xl, nl, zero, xl)), ones);
      const __m512i ph = _mm512_madd_epi16(_mm512_maddubs_epi16(ah, _mm512_mask_sub_epi8(xh, nh, zero, xh)), ones);
      const __m512 s = _mm512_mul_ps(dwv, _mm512_loadu_ps(xd + m * ds + b * 4));
      acc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(pl, ph)), s, acc[r][m]);
    }
  }
}

// Q4_0 step of qtile: CNT (1..4) blocks from b (a multiple of 4). The nibble bytes of the
// blocks fill one zmm (one 128-bit lane per block); activations are stored to match (see
// q_x_group), padding blocks zero.
template <int R, int MB, bool PF, int CNT>
__attribute__((always_inline)) static inline void qstep512_q4(__m512 (&acc)[R][MB], const uint8_t* w, int64_t ws,
                                                              const int8_t* xq, int64_t xs, const float* xd,
                                                              int64_t ds, int64_t b) {
  constexpr int64_t BB = 18;
  const __m512i ones = _mm512_set1_epi16(1), lo4 = _mm512_set1_epi8(0x0f), eight = _mm512_set1_epi8(8);
  __m512i c8[MB];
#if defined(__AVX512VNNI__)
  // -8 * sum(x) per int32 lane: the nibbles' offset, the starting value of each row's vpdpbusd.
  (void)ones;
  const __m512i zero = _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int m = 0; m < MB; m++) {
    const int8_t* xg = xq + m * xs + b * kQK;
    c8[m] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, eight, _mm512_loadu_si512(xg)), eight, _mm512_loadu_si512(xg + 64)));
  }
#else
  // maddubs(8, x) over both halves: the -8 offset of the nibbles, subtracted in int16.
#pragma GCC unroll 4
  for (int m = 0; m < MB; m++) {
    const int8_t* xg = xq + m * xs + b * kQK;
    c8[m] = _mm512_add_epi16(_mm512_maddubs_epi16(eight, _mm512_loadu_si512(xg)),
                             _mm512_maddubs_epi16(eight, _mm512_loadu_si512(xg + 64)));
  }
#endif
  // The 4 blocks are 72 contiguous bytes, everything at even offsets. A whole group inserts each
  // block's 16 nibble bytes into its 128-bit lane (block i -> lane i); a partial one gathers them
  // with a word permute of two masked loads (bytes 0..63, 8..71). A word permute spreads the 4
  // f16 scales to [d0 x 4, d1 x 4, d2 x 4, d3 x 4].
  alignas(64) static const int16_t kQIdx[32] = {1,  2,  3,  4,  5,  6,  7,  8,  10, 11, 12, 13, 14, 15, 16, 17,
                                                19, 20, 21, 22, 23, 24, 25, 26, 28, 29, 30, 31, 60, 61, 62, 63};
  alignas(64) static const int16_t kDIdx[32] = {0, 0, 0, 0, 9, 9, 9, 9, 18, 18, 18, 18, 27, 27, 27, 27};
  const __m512i qidx = _mm512_load_si512(kQIdx), didx = _mm512_load_si512(kDIdx);
  // Bytes of the group that exist: only a row's last group may be partial.
  const __mmask64 ka = CNT == 4 ? ~(__mmask64)0 : (__mmask64)((1ull << (CNT * BB)) - 1);
  const __mmask64 kb = CNT == 4 ? ~(__mmask64)0 : (__mmask64)((1ull << (CNT * BB > 8 ? CNT * BB - 8 : 0)) - 1);
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    const uint8_t* wb = w + r * ws + b * BB;
    if constexpr (PF) __builtin_prefetch(wb + 1024, 0, 0);
    __m512i va, z;
    if constexpr (CNT == 4) {
      // Whole group: each block's 16 nibble bytes straight into its 128-bit lane (loads folded
      // into vinserti32x4), cheaper than the two-source word permute of the partial path.
      va = _mm512_loadu_si512(wb);
      z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i*)(wb + 2)));
      z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i*)(wb + 2 + BB)), 1);
      z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i*)(wb + 2 + 2 * BB)), 2);
      z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i*)(wb + 2 + 3 * BB)), 3);
      (void)qidx;
      (void)kb;
    } else {
      va = _mm512_maskz_loadu_epi8(ka, wb);
      z = _mm512_permutex2var_epi16(va, qidx, _mm512_maskz_loadu_epi8(kb, wb + 8));
    }
    const __m512i wl = _mm512_and_si512(z, lo4), wh = _mm512_and_si512(_mm512_srli_epi16(z, 4), lo4);
    const __m512 dwv = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(didx, va)));
#if defined(__AVX512VNNI__)
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) {
      const int8_t* xg = xq + m * xs + b * kQK;
      const __m512i p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(c8[m], wl, _mm512_loadu_si512(xg)), wh, _mm512_loadu_si512(xg + 64));
      const __m512 s = _mm512_mul_ps(dwv, _mm512_loadu_ps(xd + m * ds + b * 4));
      acc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[r][m]);
    }
    continue;
#endif
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) {
      const int8_t* xg = xq + m * xs + b * kQK;
      __m512i p16 = _mm512_add_epi16(_mm512_maddubs_epi16(wl, _mm512_loadu_si512(xg)),
                                     _mm512_maddubs_epi16(wh, _mm512_loadu_si512(xg + 64)));
      p16 = _mm512_sub_epi16(p16, c8[m]);
      const __m512 s = _mm512_mul_ps(dwv, _mm512_loadu_ps(xd + m * ds + b * 4));
      acc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(p16, ones)), s, acc[r][m]);
    }
  }
}
#endif

#if defined(__AVX512F__)
template <DType WT, int R, int MB, bool PF, int CNT>
__attribute__((always_inline)) static inline void qstep512(__m512 (&acc)[R][MB], const uint8_t* w, int64_t ws,
                                                           const int8_t* xq, int64_t xs, const float* xd, int64_t ds,
                                                           int64_t b) {
  if constexpr (WT == DType::Q8_0) qstep512_q8<R, MB, PF, CNT>(acc, w, ws, xq, xs, xd, ds, b);
  else qstep512_q4<R, MB, PF, CNT>(acc, w, ws, xq, xs, xd, ds, b);
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
// qtile step on AVX2: CNT (1..2) blocks from b (even). As on AVX-512 but with 2 blocks per ymm
// (block i in 128-bit lane i): values 0..15 / low nibbles in one vector, 16..31 / high nibbles
// in the other, scales [d0 x 4, d1 x 4]. A lone block leaves lane 1 zero.
template <DType WT, int R, int MB, bool PF, int CNT>
__attribute__((always_inline)) static inline void qstep256(__m256 (&acc)[R][MB], const uint8_t* w, int64_t ws,
                                                           const int8_t* xq, int64_t xs, const float* xd, int64_t ds,
                                                           int64_t b) {
  constexpr bool Q8 = WT == DType::Q8_0;
  constexpr int64_t BB = q_block_bytes<WT>();
  const __m256i ones = _mm256_set1_epi16(1), lo4 = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
  const __m256i didx = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  // Q4_0: maddubs(8, x) over both halves, the nibbles' -8 offset subtracted in int16.
  __m256i c8[MB];
  if constexpr (!Q8) {
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) {
      const int8_t* xg = xq + m * xs + b * kQK;
      c8[m] = _mm256_add_epi16(_mm256_maddubs_epi16(eight, _mm256_loadu_si256((const __m256i*)xg)),
                               _mm256_maddubs_epi16(eight, _mm256_loadu_si256((const __m256i*)(xg + 32))));
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    const uint8_t* wb = w + r * ws + b * BB;
    if constexpr (PF) __builtin_prefetch(wb + 1024, 0, 0);
    uint32_t dbits = q_load_u16(wb);
    if constexpr (CNT == 2) dbits |= (uint32_t)q_load_u16(wb + BB) << 16;
    const __m256 dwv = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128((int)dbits))), didx);
    // Two 16-byte halves of the group (one per block) -> lanes 0 and 1.
    auto pair = [&](int64_t off) {
      const __m128i l0 = _mm_loadu_si128((const __m128i*)(wb + off));
      if constexpr (CNT == 2) return _mm256_inserti128_si256(_mm256_castsi128_si256(l0), _mm_loadu_si128((const __m128i*)(wb + BB + off)), 1);
      else return _mm256_zextsi128_si256(l0);
    };
    __m256i wl, wh;
    if constexpr (Q8) {
      wl = pair(2);
      wh = pair(18);
    } else {
      const __m256i z = pair(2);
      wl = _mm256_and_si256(z, lo4);
      wh = _mm256_and_si256(_mm256_srli_epi16(z, 4), lo4);
    }
    [[maybe_unused]] __m256i al, ah;
    if constexpr (Q8) {
      al = _mm256_abs_epi8(wl);
      ah = _mm256_abs_epi8(wh);
    }
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) {
      const int8_t* xg = xq + m * xs + b * kQK;
      const __m256i xl = _mm256_loadu_si256((const __m256i*)xg), xh = _mm256_loadu_si256((const __m256i*)(xg + 32));
      __m256i p32;
      if constexpr (Q8) {
        p32 = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(al, _mm256_sign_epi8(xl, wl)), ones),
                               _mm256_madd_epi16(_mm256_maddubs_epi16(ah, _mm256_sign_epi8(xh, wh)), ones));
      } else {
        const __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(wl, xl), _mm256_maddubs_epi16(wh, xh));
        p32 = _mm256_madd_epi16(_mm256_sub_epi16(p16, c8[m]), ones);
      }
      const __m256 s = _mm256_mul_ps(dwv, _mm256_loadu_ps(xd + m * ds + b * 4));
      acc[r][m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), s, acc[r][m]);
    }
  }
}
#endif

// y[m0 + m][n0 + r] (+)= sum over blocks [b0, b1) for r < R, m < MB. `first`: y = acc + bias,
// else y += acc. PF: software-prefetch the weight rows (decode: R parallel streams).
template <DType WT, int R, int MB, bool PF>
static inline void qtile(const QuantCtx& c, int64_t m0, int64_t n0, int64_t b0, int64_t b1, bool first) {
  constexpr int64_t BB = q_block_bytes<WT>();
  [[maybe_unused]] constexpr bool Q8 = WT == DType::Q8_0;
  const int64_t nb = c.nb, ws = nb * BB, xs = c.xs, ds = c.ds;
  const uint8_t* w = c.w + n0 * ws;
  const int8_t* xq = c.xq + m0 * xs;
  const float* xd = c.xd + m0 * ds;
  float out[R][MB];
#if defined(__AVX512F__)
  __m512 acc[R][MB];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) acc[r][m] = _mm512_setzero_ps();
  // 4 blocks (128 values) per step, then a partial group.
  int64_t b = b0;
  for (; b + 4 <= b1; b += 4) qstep512<WT, R, MB, PF, 4>(acc, w, ws, xq, xs, xd, ds, b);
  switch (b1 - b) {
    case 3: qstep512<WT, R, MB, PF, 3>(acc, w, ws, xq, xs, xd, ds, b); break;
    case 2: qstep512<WT, R, MB, PF, 2>(acc, w, ws, xq, xs, xd, ds, b); break;
    case 1: qstep512<WT, R, MB, PF, 1>(acc, w, ws, xq, xs, xd, ds, b); break;
    default: break;
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) out[r][m] = _mm512_reduce_add_ps(acc[r][m]);
#elif defined(__AVX2__)
  __m256 acc[R][MB];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) acc[r][m] = _mm256_setzero_ps();
  // 2 blocks (64 values) per step, then a lone block.
  int64_t b = b0;
  for (; b + 2 <= b1; b += 2) qstep256<WT, R, MB, PF, 2>(acc, w, ws, xq, xs, xd, ds, b);
  if (b < b1) qstep256<WT, R, MB, PF, 1>(acc, w, ws, xq, xs, xd, ds, b);
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) out[r][m] = Simd::hsum(acc[r][m]);
#else
  (void)PF;
  for (int r = 0; r < R; r++)
    for (int m = 0; m < MB; m++) out[r][m] = 0.0f;
  for (int64_t b = b0; b < b1; b++) {
    for (int r = 0; r < R; r++) {
      const uint8_t* wb = w + r * ws + b * BB;
      const float dw = fp16_to_fp32(q_load_u16(wb));
      for (int m = 0; m < MB; m++) {
        const int8_t* xb = xq + m * xs + b * kQK;
        int32_t s = 0;
        if constexpr (Q8) {
          for (int j = 0; j < 32; j++) s += (int32_t)(int8_t)wb[2 + j] * xb[j];
        } else {
          for (int j = 0; j < 16; j++)
            s += ((wb[2 + j] & 15) - 8) * (int32_t)xb[j] + ((wb[2 + j] >> 4) - 8) * (int32_t)xb[j + 16];
        }
        out[r][m] += (float)s * (dw * xd[m * ds + b]);
      }
    }
  }
#endif
  for (int r = 0; r < R; r++)
    for (int m = 0; m < MB; m++) {
      float* yp = c.y + (m0 + m) * c.N + n0 + r;
      if (first) *yp = out[r][m] + (c.bias ? c.bias[n0 + r] : 0.0f);
      else *yp += out[r][m];
    }
}

// Weight rows [n0, n1) x activation rows [m0, m0 + MB), blocks [b0, b1).
template <DType WT, int MB, bool PF>
static inline void qtile_rows_mb(const QuantCtx& c, int64_t m0, int64_t n0, int64_t n1, int64_t b0, int64_t b1,
                                 bool first) {
  constexpr int R = qtile_rows<MB>();
  int64_t n = n0;
  for (; n + R <= n1; n += R) qtile<WT, R, MB, PF>(c, m0, n, b0, b1, first);
  for (; n < n1; n++) qtile<WT, 1, MB, PF>(c, m0, n, b0, b1, first);
}

template <DType WT, bool PF>
static inline void qtile_rows(const QuantCtx& c, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t b0,
                              int64_t b1, bool first) {
  for (int64_t m = m0; m < m1; m += 4) {
    switch (m1 - m >= 4 ? 4 : m1 - m) {
      case 1: qtile_rows_mb<WT, 1, PF>(c, m, n0, n1, b0, b1, first); break;
      case 2: qtile_rows_mb<WT, 2, PF>(c, m, n0, n1, b0, b1, first); break;
      case 3: qtile_rows_mb<WT, 3, PF>(c, m, n0, n1, b0, b1, first); break;
      default: qtile_rows_mb<WT, 4, PF>(c, m, n0, n1, b0, b1, first); break;
    }
  }
}

// Per-thread buffer for the quantised activations (grow-only, kept between calls).
static float* quant_scratch(size_t floats) {
  static thread_local LinearScratch s;
  return s.get(floats);
}

template <DType WT>
static void linear_quant(const LinearParams& p) {
  const int64_t M = p.M, N = p.N, K = p.K;
  if (K % kQK) fail("linear: K = " + std::to_string(K) + " is not a multiple of 32 (needed by q8_0/q4_0 weights)");
  const int64_t nb = K / kQK;

  // Activations -> Q8_0 in WT's layout: scales first (64-byte aligned), then the int8 values.
  constexpr int64_t G = q_x_group<WT>(), REP = q_dx_rep<WT>();
  const int64_t nbp = (nb + G - 1) / G * G, xs = nbp * kQK, ds = nbp * REP;
  const int64_t dfloats = (M * ds + 15) / 16 * 16;
  float* buf = quant_scratch((size_t)(dfloats + (M * xs + 3) / 4 + 16));
  const QuantCtx c{(const uint8_t*)p.w, (const int8_t*)(buf + dfloats), buf, p.bias, p.y, M, N, K, nb, xs, ds};
  parallel_range(M, 4, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; m++)
      quantize_row_q8<WT>(p.x + m * K, K, (int8_t*)c.xq + m * xs, (float*)c.xd + m * ds);
  });

  // ~16 tasks per thread over N, each a multiple of 8 rows (long sequential weight reads).
  const int64_t threads = pool_threads();
  int64_t rows = (N + threads * 16 - 1) / (threads * 16);
  rows = rows < 8 ? 8 : (rows + 7) / 8 * 8;
  const int64_t tasks = (N + rows - 1) / rows;
  if (M <= kQuantGemvMaxM) {
    // Decode: each weight row is read from memory once, 8 rows at a time against all of x.
    parallel_for(tasks, [&](int64_t t) {
      const int64_t n0 = t * rows, n1 = n0 + rows < N ? n0 + rows : N;
      for (int64_t g0 = n0; g0 < n1; g0 += 8) {
        const int64_t g1 = g0 + 8 < n1 ? g0 + 8 : n1;
        qtile_rows<WT, true>(c, 0, M, g0, g1, 0, nb, true);
      }
    });
    return;
  }
  // Prefill: K chunks x M chunks, so a chunk of quantised x (kQuantMc x kQuantKcBlocks blocks)
  // stays in L2 while the task's weight rows (tiles of 4 in L1) pass over it.
  parallel_for(tasks, [&](int64_t t) {
    const int64_t n0 = t * rows, n1 = n0 + rows < N ? n0 + rows : N;
    for (int64_t b0 = 0; b0 < nb; b0 += kQuantKcBlocks) {
      const int64_t b1 = b0 + kQuantKcBlocks < nb ? b0 + kQuantKcBlocks : nb;
      for (int64_t m0 = 0; m0 < M; m0 += kQuantMc) {
        const int64_t m1 = m0 + kQuantMc < M ? m0 + kQuantMc : M;
        constexpr int64_t G = qtile_rows<4>();
        for (int64_t g0 = n0; g0 < n1; g0 += G) {
          const int64_t g1 = g0 + G < n1 ? g0 + G : n1;
          qtile_rows<WT, false>(c, m0, m1, g0, g1, b0, b1, b0 == 0);
        }
      }
    }
  });
}

}  // namespace tessera::TESSERA_ISA_NS
