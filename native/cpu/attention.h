// flash_attention and paged_attention: softmax(scale q k^T + alibi + mask) v, FlashAttention-2
// style (Dao 2023): blocks of query rows x tiles of keys with an online softmax, S never stored.
// Prefill blocks hold queries transposed (one SIMD lane per row): the softmax is lane-wise and both
// products broadcast K/V elements straight from memory, so paged K/V needs no packing. Decode-sized
// blocks (one token's GQA group) vectorise along D instead.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/thread_pool.h"
#include "cpu/attention_mask.h"
#include "cpu/kernels.h"

namespace tessera::TESSERA_ISA_NS {
namespace attn {

using S = Simd;
constexpr int W = S::W;
// Register tiles per ISA (measured on Zen 5): scores kNK keys x kNV query vectors and P V
// kND head dims x kNV query vectors of accumulators, within 32 zmm / 16 ymm registers. A block
// holds kBr = kNV * W query rows; each K/V element fetched serves kBr rows.
constexpr int kNV = W == 16 ? 4 : W == 8 ? 3 : 4;
constexpr int kBr = kNV * W;
constexpr int kNK = 4;
constexpr int kND = W == 16 ? 6 : 4;
constexpr int kBc = 64;  // keys per tile (a multiple of W)
// Blocks of at most this many rows (decode: one token, a GQA group) vectorise along D instead:
// a transposed block would leave most lanes empty.
constexpr int kDotRows = W / 2;
constexpr int kMaxD = 512;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Running max starts at -FLT_MAX, not -inf: exp(s - m) is then never exp(-inf + inf), and a row
// whose scores are all -inf keeps l = 0 (zeros out) while finite huge negatives still normalise.
constexpr float kMinMax = -FLT_MAX;

// One block: up to kBr query rows of the same kv head (several query heads under GQA).
struct Rows {
  int n;
  const float* q[kBr];
  float* o[kBr];
  int64_t pos[kBr];        // absolute query positions
  float slope[kBr];        // ALiBi slopes (0 without ALiBi)
  const float* mask[kBr];  // this row of the (T, S) additive mask, or nullptr
  int64_t qmin, qmax;
};

struct Cfg {
  int64_t D;
  float scale;
  bool causal, alibi, mask;
  int64_t window, sinks;
};

// K/V rows of one kv head sit Hkv * D floats apart, usually in different 4 KiB pages, where the
// hardware prefetchers stop: rows are requested ahead by hand.
template <int Loc = 3>
static inline void prefetch_row(const float* p, int64_t D) {
  for (int64_t d = 0; d < D; d += 64 / sizeof(float)) __builtin_prefetch(p + d, 0, Loc);
  __builtin_prefetch(p + D - 1, 0, Loc);
}

// dst[0, n) = src * a with whole-vector accesses: rows of q and o miss the cache, and a few wide
// accesses overlap those misses far better than scalar ones.
static inline void scaled_copy(float* dst, const float* src, int64_t n, float a) {
  const S::V av = S::set1(a);
  int64_t d = 0;
  for (; d + W <= n; d += W) S::store(dst + d, S::mul(S::load(src + d), av));
  if (d < n) S::store_partial(dst + d, S::mul(S::load_partial(src + d, (int)(n - d)), av), (int)(n - d));
}


// 0: no (query, key) pair of the tile is visible, 1: all are, 2: mixed.
static inline int tile_class(const Rows& r, int64_t j0, int64_t j1, const Cfg& c) {
  const int64_t jl = j1 - 1;
  if (c.causal && j0 > r.qmax) return 0;
  bool all = !c.causal || jl <= r.qmin;
  if (c.window > 0) {
    int64_t a = j0 > c.sinks ? j0 : c.sinks;  // first key the window applies to
    if (a <= jl) {
      int64_t d1 = r.qmax - a, d2 = jl - r.qmin;
      if (d1 < 0) d1 = -d1;
      if (d2 < 0) d2 = -d2;
      int64_t d3 = r.qmin - a, d4 = jl - r.qmax;
      if (d3 < 0) d3 = -d3;
      if (d4 < 0) d4 = -d4;
      int64_t far = d1 > d2 ? d1 : d2;
      if (d3 > far) far = d3;
      if (d4 > far) far = d4;
      if (far >= c.window) all = false;
      int64_t near = a > r.qmax ? a - r.qmax : (jl < r.qmin ? r.qmin - jl : 0);
      if (near >= c.window && a == j0) return 0;
    }
  }
  return all ? 1 : 2;
}

// Calls tile(j0, j1, class) over the keys any row of the block can see: [0, n_keys) cut by
// causality and the window, plus the sink keys below the window.
template <class F>
static inline void for_each_tile(const Rows& r, int64_t n_keys, const Cfg& c, F&& tile) {
  int64_t kend = n_keys;
  if (c.causal && r.qmax + 1 < kend) kend = r.qmax + 1;
  int64_t lo = 0;
  if (c.window > 0) {
    int64_t hi = r.qmax + c.window;
    if (hi < c.sinks) hi = c.sinks;
    if (hi < kend) kend = hi;
    lo = r.qmin - c.window + 1;
    if (lo < 0) lo = 0;
  }
  int64_t s_end = c.window > 0 ? c.sinks : 0;
  if (s_end > lo) s_end = lo;
  if (s_end > kend) s_end = kend;
  auto range = [&](int64_t a, int64_t b) {
    for (int64_t j0 = a; j0 < b; j0 += kBc) {
      int64_t j1 = j0 + kBc < b ? j0 + kBc : b;
      int cls = tile_class(r, j0, j1, c);
      if (cls) tile(j0, j1, cls);
    }
  };
  range(0, s_end);
  range(lo > s_end ? lo : s_end, kend);
}

// ---- transposed blocks (prefill): one SIMD lane per query row ----

// st (NK, kBr) = K rows kp[0..NK) . qt (D, kBr): each K element is broadcast against kNV vectors.
template <int NK>
static inline void scores_t(const float* qt, const float* const* kp, int64_t D, float* st) {
  S::V acc[NK][kNV];
  const float* kr[NK];
#pragma GCC unroll 16
  for (int k = 0; k < NK; k++) {
    kr[k] = kp[k];
#pragma GCC unroll 4
    for (int v = 0; v < kNV; v++) acc[k][v] = S::zero();
  }
  for (int64_t d = 0; d < D; d++) {
    S::V qv[kNV];
#pragma GCC unroll 4
    for (int v = 0; v < kNV; v++) qv[v] = S::load(qt + d * kBr + v * W);
#pragma GCC unroll 16
    for (int k = 0; k < NK; k++) {
      S::V b = S::set1(kr[k][d]);
#pragma GCC unroll 4
      for (int v = 0; v < kNV; v++) acc[k][v] = S::fma(b, qv[v], acc[k][v]);
    }
  }
#pragma GCC unroll 16
  for (int k = 0; k < NK; k++)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; v++) S::store(st + k * kBr + v * W, acc[k][v]);
}

// ot[d0 .. d0+ND) (ND, kBr) = ot * alpha + sum_j pt[j] * V[j][d]: P broadcast against V elements.
template <int ND>
static inline void pv_t(float* ot, const float* pt, const float* const* vp, int nk, int64_t d0,
                        const S::V* alpha) {
  S::V acc[ND][kNV];
#pragma GCC unroll 16
  for (int e = 0; e < ND; e++)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; v++) {
      acc[e][v] = S::load(ot + (d0 + e) * kBr + v * W);
      if (alpha) acc[e][v] = S::mul(acc[e][v], alpha[v]);
    }
  for (int j = 0; j < nk; j++) {
    S::V pv[kNV];
#pragma GCC unroll 4
    for (int v = 0; v < kNV; v++) pv[v] = S::load(pt + j * kBr + v * W);
    const float* vr = vp[j] + d0;
#pragma GCC unroll 16
    for (int e = 0; e < ND; e++) {
      S::V b = S::set1(vr[e]);
#pragma GCC unroll 4
      for (int v = 0; v < kNV; v++) acc[e][v] = S::fma(b, pv[v], acc[e][v]);
    }
  }
#pragma GCC unroll 16
  for (int e = 0; e < ND; e++)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; v++) S::store(ot + (d0 + e) * kBr + v * W, acc[e][v]);
}

template <class KV>
static void block_transposed(const Rows& r, int64_t n_keys, const Cfg& c, const KV& kv) {
  const int64_t D = c.D;
  alignas(64) float qt[kMaxD * kBr];  // (D, kBr) scale * q, transposed; empty rows are zero
  alignas(64) float ot[kMaxD * kBr];  // (D, kBr) unnormalised output, transposed
  alignas(64) float st[kBc * kBr];    // (kBc, kBr) scores, then probabilities, of one tile
  alignas(64) float m[kBr], l[kBr], posf[kBr], slope[kBr];
  for (int i = 0; i < r.n; i++) prefetch_row(r.q[i], D);  // one row per page: overlap the misses
  alignas(64) float row[kMaxD];
  for (int i = 0; i < kBr; i++) {
    bool live = i < r.n;
    if (live) scaled_copy(row, r.q[i], D, c.scale);
    for (int64_t d = 0; d < D; d++) qt[d * kBr + i] = live ? row[d] : 0.f;
    m[i] = kMinMax;
    l[i] = 0.f;
    posf[i] = (float)(live ? r.pos[i] : r.pos[0]);
    slope[i] = live ? r.slope[i] : 0.f;
  }
  for (int64_t x = 0; x < D * kBr; x++) ot[x] = 0.f;

  for_each_tile(r, n_keys, c, [&](int64_t j0, int64_t j1, int cls) {
    const float* kp[kBc];
    const float* vp[kBc];
    const int nk = (int)(j1 - j0);
    kv.rows(j0, nk, kp, vp);
    int j = 0;
    for (; j + kNK <= nk; j += kNK) {
      for (int x = j + kNK; x < j + 2 * kNK && x < nk; x++) prefetch_row(kp[x], D);
      for (int x = j; x < j + kNK; x++) prefetch_row<2>(vp[x], D);  // needed after the scores: L2
      scores_t<kNK>(qt, kp + j, D, st + j * kBr);
    }
    for (; j < nk; j++) {
      prefetch_row(vp[j], D);
      scores_t<1>(qt, kp + j, D, st + j * kBr);
    }
    if (j1 < n_keys) {  // the next tile usually starts at j1: its first keys arrive during P V
      const float* nkp[kNK];
      const float* nvp[kNK];
      int n = n_keys - j1 < kNK ? (int)(n_keys - j1) : kNK;
      kv.rows(j1, n, nkp, nvp);
      for (int x = 0; x < n; x++) prefetch_row(nkp[x], D);
    }

    if (c.alibi) {
      S::V sl[kNV], pf[kNV];
      for (int v = 0; v < kNV; v++) sl[v] = S::load(slope + v * W), pf[v] = S::load(posf + v * W);
      for (int jj = 0; jj < nk; jj++) {
        S::V jf = S::set1((float)(j0 + jj));
        for (int v = 0; v < kNV; v++) {
          float* sp = st + jj * kBr + v * W;
          S::store(sp, S::fma(sl[v], S::sub(jf, pf[v]), S::load(sp)));
        }
      }
    }
    if (c.mask)
      for (int i = 0; i < r.n; i++)
        if (r.mask[i])
          for (int jj = 0; jj < nk; jj++) st[jj * kBr + i] += r.mask[i][j0 + jj];
    if (cls == 2) {
      for (int i = 0; i < r.n; i++) {
        if (c.window > 0) {
          for (int jj = 0; jj < nk; jj++)
            if (!attn_visible(r.pos[i], j0 + jj, c.causal, c.window, c.sinks)) st[jj * kBr + i] = kNegInf;
        } else {
          // causal only: the hidden keys of a row are a suffix of the tile
          for (int64_t jj = r.pos[i] + 1 - j0 < 0 ? 0 : r.pos[i] + 1 - j0; jj < nk; jj++) st[jj * kBr + i] = kNegInf;
        }
      }
    }

    // Online softmax, lane-wise: new running max, rescale factor, probabilities, row sums.
    S::V mo[kNV], mn[kNV], alpha[kNV], ls[kNV];
    for (int v = 0; v < kNV; v++) mo[v] = S::load(m + v * W), mn[v] = mo[v], ls[v] = S::zero();
    for (int jj = 0; jj < nk; jj++)
      for (int v = 0; v < kNV; v++) mn[v] = S::max(mn[v], S::load(st + jj * kBr + v * W));
    bool grew = false;
    for (int v = 0; v < kNV; v++) {
      grew |= S::hmax(S::sub(mn[v], mo[v])) > 0.f;
      alpha[v] = S::exp(S::sub(mo[v], mn[v]));
      S::store(m + v * W, mn[v]);
    }
    for (int jj = 0; jj < nk; jj++)
      for (int v = 0; v < kNV; v++) {
        float* sp = st + jj * kBr + v * W;
        S::V pe = S::exp(S::sub(S::load(sp), mn[v]));
        S::store(sp, pe);
        ls[v] = S::add(ls[v], pe);
      }
    for (int v = 0; v < kNV; v++) S::store(l + v * W, S::fma(S::load(l + v * W), alpha[v], ls[v]));

    const S::V* al = grew ? alpha : nullptr;  // O is only rescaled when some row's max moved
    int64_t d = 0;
    for (; d + kND <= D; d += kND) pv_t<kND>(ot, st, vp, nk, d, al);
    for (; d + 2 <= D; d += 2) pv_t<2>(ot, st, vp, nk, d, al);
    for (; d < D; d++) pv_t<1>(ot, st, vp, nk, d, al);
  });

  for (int i = 0; i < r.n; i++)  // output rows are a page apart too
    for (int64_t d = 0; d < D; d += 16) __builtin_prefetch(r.o[i] + d, 1, 3);
  for (int i = 0; i < r.n; i++) {
    for (int64_t d = 0; d < D; d++) row[d] = ot[d * kBr + i];
    scaled_copy(r.o[i], row, D, l[i] > 0.f ? 1.0f / l[i] : 0.0f);
  }
}

// ---- row blocks (decode): R rows, vectors along D ----

template <int R, class KV>
static void block_rows(const Rows& r, int64_t n_keys, const Cfg& c, const KV& kv) {
  const int64_t D = c.D;
  const int64_t Dv = D / W * W;
  const int tail = (int)(D - Dv);
  alignas(64) float qs[R][kMaxD];  // (R, D) scale * q
  alignas(64) float oa[R][kMaxD];  // (R, D) unnormalised output
  alignas(64) float sc[R][kBc];    // (R, kBc) scores, then probabilities, of one tile
  float m[R], l[R];
  for (int i = 0; i < R; i++) {
    for (int64_t d = 0; d < D; d++) qs[i][d] = r.q[i][d] * c.scale, oa[i][d] = 0.f;
    m[i] = kMinMax;
    l[i] = 0.f;
  }
  // Independent partial sums per row hide FMA latency; fewer rows need more of them.
  constexpr int NA = R == 1 ? 4 : R == 2 ? 2 : 1;
  constexpr int NDV = R == 1 ? 8 : R <= 4 ? 4 : 2;  // D vectors per PV step: R * NDV accumulators

  for_each_tile(r, n_keys, c, [&](int64_t j0, int64_t j1, int cls) {
    const float* kp[kBc];
    const float* vp[kBc];
    const int nk = (int)(j1 - j0);
    kv.rows(j0, nk, kp, vp);
    constexpr int kAhead = 4;  // keys of K requested ahead
    for (int jj = 0; jj < kAhead && jj < nk; jj++) prefetch_row(kp[jj], D);
    for (int jj = 0; jj < nk; jj++) {
      const float* kr = kp[jj];
      if (jj + kAhead < nk) prefetch_row(kp[jj + kAhead], D);
      prefetch_row(vp[jj], D);
      S::V acc[R][NA];
      for (int i = 0; i < R; i++)
        for (int a = 0; a < NA; a++) acc[i][a] = S::zero();
      int64_t d = 0;
      for (; d + NA * W <= Dv; d += NA * W)
        for (int a = 0; a < NA; a++) {
          S::V kx = S::load(kr + d + a * W);
          for (int i = 0; i < R; i++) acc[i][a] = S::fma(S::load(qs[i] + d + a * W), kx, acc[i][a]);
        }
      for (; d < Dv; d += W) {
        S::V kx = S::load(kr + d);
        for (int i = 0; i < R; i++) acc[i][0] = S::fma(S::load(qs[i] + d), kx, acc[i][0]);
      }
      if (tail) {
        S::V kx = S::load_partial(kr + d, tail);
        for (int i = 0; i < R; i++) acc[i][0] = S::fma(S::load_partial(qs[i] + d, tail), kx, acc[i][0]);
      }
      for (int i = 0; i < R; i++) {
        S::V s = acc[i][0];
        for (int a = 1; a < NA; a++) s = S::add(s, acc[i][a]);
        sc[i][jj] = S::hsum(s);
      }
    }
    const int nkv = (nk + W - 1) / W * W;  // pad the tile to whole vectors with -inf
    for (int i = 0; i < R; i++) {
      float* s = sc[i];
      if (c.alibi)
        for (int jj = 0; jj < nk; jj++) s[jj] += r.slope[i] * (float)(j0 + jj - r.pos[i]);
      if (r.mask[i])
        for (int jj = 0; jj < nk; jj++) s[jj] += r.mask[i][j0 + jj];
      if (cls == 2)
        for (int jj = 0; jj < nk; jj++)
          if (!attn_visible(r.pos[i], j0 + jj, c.causal, c.window, c.sinks)) s[jj] = kNegInf;
      for (int jj = nk; jj < nkv; jj++) s[jj] = kNegInf;
      S::V mx = S::set1(m[i]);
      for (int jj = 0; jj < nkv; jj += W) mx = S::max(mx, S::load(s + jj));
      float mn = S::hmax(mx);
      S::V mv = S::set1(mn), ls = S::zero();
      for (int jj = 0; jj < nkv; jj += W) {
        S::V pe = S::exp(S::sub(S::load(s + jj), mv));
        S::store(s + jj, pe);
        ls = S::add(ls, pe);
      }
      if (mn > m[i]) {
        float alpha = std::exp(m[i] - mn);
        l[i] *= alpha;
        S::V av = S::set1(alpha);
        int64_t d = 0;
        for (; d < Dv; d += W) S::store(oa[i] + d, S::mul(S::load(oa[i] + d), av));
        for (; d < D; d++) oa[i][d] *= alpha;
        m[i] = mn;
      }
      l[i] += S::hsum(ls);
    }
    // O += P V, P broadcast per (row, key), V rows contiguous along D.
    int64_t d = 0;
    for (; d + NDV * W <= Dv; d += NDV * W) {
      S::V acc[R][NDV];
      for (int i = 0; i < R; i++)
        for (int e = 0; e < NDV; e++) acc[i][e] = S::load(oa[i] + d + e * W);
      for (int jj = 0; jj < nk; jj++) {
        const float* vr = vp[jj] + d;
        S::V vx[NDV];
        for (int e = 0; e < NDV; e++) vx[e] = S::load(vr + e * W);
        for (int i = 0; i < R; i++) {
          S::V p = S::set1(sc[i][jj]);
          for (int e = 0; e < NDV; e++) acc[i][e] = S::fma(p, vx[e], acc[i][e]);
        }
      }
      for (int i = 0; i < R; i++)
        for (int e = 0; e < NDV; e++) S::store(oa[i] + d + e * W, acc[i][e]);
    }
    for (; d < D; d += W) {
      const int n = D - d < W ? (int)(D - d) : W;
      S::V acc[R];
      for (int i = 0; i < R; i++) acc[i] = S::load_partial(oa[i] + d, n);
      for (int jj = 0; jj < nk; jj++) {
        S::V vx = S::load_partial(vp[jj] + d, n);
        for (int i = 0; i < R; i++) acc[i] = S::fma(S::set1(sc[i][jj]), vx, acc[i]);
      }
      for (int i = 0; i < R; i++) S::store_partial(oa[i] + d, acc[i], n);
    }
  });

  for (int i = 0; i < R; i++) {
    float inv = l[i] > 0.f ? 1.0f / l[i] : 0.0f;
    for (int64_t d = 0; d < D; d++) r.o[i][d] = oa[i][d] * inv;
  }
}

// `decode`: the whole segment is decode-sized (<= kDotRows rows). Only then the D-vectorised path:
// the last block of a longer segment may also hold few rows, but taking that path there would
// compute its rows in another order than the same rows in a full block, and a token's output
// would depend on where its prompt was cut into chunks (the scheduler relies on it not doing so).
template <class KV>
static void run_block(Rows& r, int64_t n_keys, const Cfg& c, const KV& kv, bool decode) {
  if (r.n <= 0) return;
  r.qmin = r.qmax = r.pos[0];
  for (int i = 1; i < r.n; i++) {
    if (r.pos[i] < r.qmin) r.qmin = r.pos[i];
    if (r.pos[i] > r.qmax) r.qmax = r.pos[i];
  }
  if constexpr (kDotRows >= 1) {
    if (decode && r.n <= kDotRows) {
      switch (r.n) {
        case 1: return block_rows<1>(r, n_keys, c, kv);
        case 2: return block_rows<2>(r, n_keys, c, kv);
        case 3: return block_rows<3>(r, n_keys, c, kv);
        case 4: return block_rows<4>(r, n_keys, c, kv);
      }
      if constexpr (kDotRows >= 8) {
        switch (r.n) {
          case 5: return block_rows<5>(r, n_keys, c, kv);
          case 6: return block_rows<6>(r, n_keys, c, kv);
          case 7: return block_rows<7>(r, n_keys, c, kv);
          case 8: return block_rows<8>(r, n_keys, c, kv);
        }
      }
    }
  }
  block_transposed(r, n_keys, c, kv);
}

// Number of row blocks for `rows` rows of one kv head: a single one when decode-sized.
static inline int64_t n_row_blocks(int64_t rows) {
  if (rows <= 0) return 0;
  if (rows <= kDotRows) return 1;
  return (rows + kBr - 1) / kBr;
}

// Contiguous K/V: key j of kv head `kvh` at k + j * stride.
struct DenseKV {
  const float *k, *v;
  int64_t stride;
  void rows(int64_t j0, int n, const float** kp, const float** vp) const {
    for (int i = 0; i < n; i++) kp[i] = k + (j0 + i) * stride, vp[i] = v + (j0 + i) * stride;
  }
};

// Paged K/V: key j in block table[j / bs] at slot j % bs.
struct PagedKV {
  const float *k, *v;  // cache + kvh * D
  const int32_t* table;
  int64_t bs, row, blk;
  void rows(int64_t j0, int n, const float** kp, const float** vp) const {
    int64_t b = j0 / bs, s = j0 % bs;
    int64_t base = (int64_t)table[b] * blk + s * row;
    for (int i = 0; i < n; i++) {
      kp[i] = k + base, vp[i] = v + base;
      if (++s < bs) base += row;
      else if (i + 1 < n) s = 0, base = (int64_t)table[++b] * blk;  // never reads past the last block
    }
  }
};

}  // namespace attn

static void flash_attention(const AttentionParams& p) {
  using namespace attn;
  const int64_t G = p.Hq / p.Hkv, rows = p.T * G, nrb = n_row_blocks(rows);
  const Cfg c{p.D, p.scale, p.causal, p.alibi != nullptr, p.mask != nullptr, p.window, p.sinks};
  // Tasks go kv head by kv head, so the threads share that head's K/V in cache; within a head
  // row blocks are taken last first: under causality later queries see more keys, so the
  // dynamic schedule ends on short tasks.
  parallel_for(nrb * p.Hkv, [&](int64_t task) {
    const int64_t kvh = task / nrb, rb = nrb - 1 - task % nrb;
    const int64_t r0 = rb * (rows <= kDotRows ? rows : kBr);
    Rows r;
    r.n = (int)(rows - r0 < kBr ? rows - r0 : kBr);
    for (int i = 0; i < r.n; i++) {
      const int64_t rr = r0 + i, t = rr / G, h = kvh * G + rr % G;
      r.q[i] = p.q + (t * p.Hq + h) * p.D;
      r.o[i] = p.o + (t * p.Hq + h) * p.D;
      r.pos[i] = p.q_offset + t;
      r.slope[i] = p.alibi ? p.alibi[h] : 0.f;
      r.mask[i] = p.mask ? p.mask + t * p.S : nullptr;
    }
    DenseKV kv{p.k + kvh * p.D, p.v + kvh * p.D, p.Hkv * p.D};
    run_block(r, p.S, c, kv, rows <= kDotRows);
  });
}

static void paged_attention(const PagedAttentionParams& p) {
  using namespace attn;
  const int64_t G = p.Hq / p.Hkv, row = p.Hkv * p.D;
  const Cfg c{p.D, p.scale, true, p.alibi != nullptr, false, p.window, p.sinks};
  int64_t* first = new int64_t[p.B + 1];  // first row block of each sequence
  first[0] = 0;
  for (int64_t b = 0; b < p.B; b++)
    first[b + 1] = first[b] + n_row_blocks((int64_t)(p.query_start[b + 1] - p.query_start[b]) * G);
  const int64_t nblk = first[p.B];
  // Same order as flash_attention: kv head by kv head, last row blocks (most keys) first.
  parallel_for(nblk * p.Hkv, [&](int64_t task) {
    const int64_t kvh = task / nblk, blk = nblk - 1 - task % nblk;
    int64_t lo = 0, hi = p.B - 1;  // sequence b with first[b] <= blk < first[b + 1]
    while (lo < hi) {
      int64_t mid = (lo + hi + 1) / 2;
      if (first[mid] <= blk) lo = mid;
      else hi = mid - 1;
    }
    const int64_t b = lo, qs = p.query_start[b], nq = p.query_start[b + 1] - qs, ctx = p.context_lens[b];
    const int64_t rows = nq * G, r0 = (blk - first[b]) * (rows <= kDotRows ? rows : kBr);
    Rows r;
    r.n = (int)(rows - r0 < kBr ? rows - r0 : kBr);
    for (int i = 0; i < r.n; i++) {
      const int64_t rr = r0 + i, t = rr / G, h = kvh * G + rr % G;
      r.q[i] = p.q + ((qs + t) * p.Hq + h) * p.D;
      r.o[i] = p.o + ((qs + t) * p.Hq + h) * p.D;
      r.pos[i] = ctx - nq + t;
      r.slope[i] = p.alibi ? p.alibi[h] : 0.f;
      r.mask[i] = nullptr;
    }
    PagedKV kv{p.k_cache + kvh * p.D, p.v_cache + kvh * p.D, p.block_tables + b * p.max_blocks, p.block_size, row,
               p.block_size * row};
    run_block(r, ctx, c, kv, rows <= kDotRows);
  });
  delete[] first;
}

}  // namespace tessera::TESSERA_ISA_NS
