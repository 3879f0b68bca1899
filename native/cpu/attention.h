// flash_attention and paged_attention: softmax(scale q k^T + alibi + mask) v with an online
// softmax (Milakov & Gimelshein 2018; FlashAttention, Dao et al. 2022), never materialising the
// score matrix. Reference-quality version: one query row at a time.
#pragma once
#include <cmath>
#include <limits>

#include "common/thread_pool.h"
#include "cpu/attention_mask.h"
#include "cpu/kernels.h"

namespace tessera::TESSERA_ISA_NS {

static inline float dot_f32(const float* a, const float* b, int64_t n) {
  using S = Simd;
  S::V acc = S::zero();
  int64_t i = 0;
  for (; i + S::W <= n; i += S::W) acc = S::fma(S::load(a + i), S::load(b + i), acc);
  float s = S::hsum(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// One query row against keys [0, n_keys) whose K/V rows come from kv(j, &k, &v).
template <class KV>
static void attend_row(const float* q, float* o, int64_t D, int64_t n_keys, int64_t qpos, float scale,
                       float slope, bool causal, int64_t window, int64_t sinks, const float* mask_row,
                       float* acc, KV&& kv) {
  using S = Simd;
  float m = -std::numeric_limits<float>::infinity(), l = 0.f;
  for (int64_t d = 0; d < D; d++) acc[d] = 0.f;
  int64_t jend = causal ? (qpos + 1 < n_keys ? qpos + 1 : n_keys) : n_keys;
  for (int64_t j = 0; j < jend; j++) {
    if (!attn_visible(qpos, j, causal, window, sinks)) continue;
    const float *kr, *vr;
    kv(j, &kr, &vr);
    float s = scale * dot_f32(q, kr, D) + slope * (float)(j - qpos);
    if (mask_row) s += mask_row[j];
    if (!(s > -std::numeric_limits<float>::infinity())) continue;
    float mn = s > m ? s : m;
    float c = std::exp(m - mn), pexp = std::exp(s - mn);
    l = l * c + pexp;
    m = mn;
    S::V vc = S::set1(c), vp = S::set1(pexp);
    int64_t d = 0;
    for (; d + S::W <= D; d += S::W) S::store(acc + d, S::fma(S::load(vr + d), vp, S::mul(S::load(acc + d), vc)));
    for (; d < D; d++) acc[d] = acc[d] * c + pexp * vr[d];
  }
  float inv = l > 0 ? 1.0f / l : 0.0f;
  for (int64_t d = 0; d < D; d++) o[d] = acc[d] * inv;
}

static void flash_attention(const AttentionParams& p) {
  const int64_t group = p.Hq / p.Hkv;
  parallel_for(p.T * p.Hq, [&](int64_t task) {
    int64_t t = task / p.Hq, h = task % p.Hq, kvh = h / group;
    float acc[512];
    const int64_t kstride = p.Hkv * p.D;
    attend_row(p.q + (t * p.Hq + h) * p.D, p.o + (t * p.Hq + h) * p.D, p.D, p.S, p.q_offset + t, p.scale,
               p.alibi ? p.alibi[h] : 0.f, p.causal, p.window, p.sinks, p.mask ? p.mask + t * p.S : nullptr, acc,
               [&](int64_t j, const float** kr, const float** vr) {
                 *kr = p.k + j * kstride + kvh * p.D;
                 *vr = p.v + j * kstride + kvh * p.D;
               });
  });
}

static void paged_attention(const PagedAttentionParams& p) {
  const int64_t group = p.Hq / p.Hkv;
  const int64_t T = p.query_start[p.B];
  parallel_for(T * p.Hq, [&](int64_t task) {
    int64_t t = task / p.Hq, h = task % p.Hq, kvh = h / group;
    int64_t b = 0;
    while (b + 1 < p.B && p.query_start[b + 1] <= t) b++;
    int64_t nq = p.query_start[b + 1] - p.query_start[b];
    int64_t ctx = p.context_lens[b];
    int64_t qpos = ctx - nq + (t - p.query_start[b]);
    const int32_t* table = p.block_tables + b * p.max_blocks;
    const int64_t row = p.Hkv * p.D, blk = p.block_size * row;
    float acc[512];
    attend_row(p.q + (t * p.Hq + h) * p.D, p.o + (t * p.Hq + h) * p.D, p.D, ctx, qpos, p.scale,
               p.alibi ? p.alibi[h] : 0.f, true, p.window, p.sinks, nullptr, acc,
               [&](int64_t j, const float** kr, const float** vr) {
                 int64_t off = (int64_t)table[j / p.block_size] * blk + (j % p.block_size) * row + kvh * p.D;
                 *kr = p.k_cache + off;
                 *vr = p.v_cache + off;
               });
  });
}

}  // namespace tessera::TESSERA_ISA_NS
