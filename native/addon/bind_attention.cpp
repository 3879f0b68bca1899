// flashAttention / attentionNaive / pagedAttention / pagedKvWrite.
#include <string>

#include "addon/args.h"
#include "cpu/dispatch.h"
#include "common/errors.h"
#include "cpu/ops.h"

namespace tessera::addon {

static const int64_t kMaxDim = int64_t(1) << 40;
static const int64_t kMaxHeadDim = 512;

// (q, k, v, o, T, S, Hq, Hkv, D, scale, causal, qOffset, alibi|null, window, sinks, mask|null)
static AttentionParams read_attention(const Napi::CallbackInfo& info) {
  AttentionParams p{};
  p.T = arg_int(info, 4, "T", 0, kMaxDim);
  p.S = arg_int(info, 5, "S", 0, kMaxDim);
  p.Hq = arg_int(info, 6, "Hq", 1, 1 << 16);
  p.Hkv = arg_int(info, 7, "Hkv", 1, 1 << 16);
  p.D = arg_int(info, 8, "D", 1, kMaxHeadDim);
  if (p.Hq % p.Hkv) fail("Hq (" + std::to_string(p.Hq) + ") must be a multiple of Hkv (" + std::to_string(p.Hkv) + ")");
  p.scale = (float)arg_num(info, 9, "scale");
  p.causal = arg_bool(info, 10, "causal");
  p.q_offset = arg_int(info, 11, "qOffset", 0, kMaxDim);
  p.alibi = arg_f32_opt(info, 12, "alibi", p.Hq);
  p.window = arg_int(info, 13, "window", 0, kMaxDim);
  p.sinks = arg_int(info, 14, "sinks", 0, kMaxDim);
  p.mask = arg_f32_opt(info, 15, "mask", mul_checked(p.T, p.S, "mask"));
  int64_t qn = mul_checked(mul_checked(p.T, p.Hq, "q"), p.D, "q");
  int64_t kn = mul_checked(mul_checked(p.S, p.Hkv, "k"), p.D, "k");
  p.q = arg_f32(info, 0, "q", qn);
  p.k = arg_f32(info, 1, "k", kn);
  p.v = arg_f32(info, 2, "v", kn);
  p.o = arg_f32(info, 3, "o", qn);
  return p;
}

static Napi::Value FlashAttention(const Napi::CallbackInfo& info) {
  AttentionParams p = read_attention(info);
  check_aliasing({"o"});
  kernels().flash_attention(p);
  return info.Env().Undefined();
}

static Napi::Value AttentionNaive(const Napi::CallbackInfo& info) {
  AttentionParams p = read_attention(info);
  check_aliasing({"o"});
  cpu_attention_naive(p);
  return info.Env().Undefined();
}

// (q, kCache, vCache, blockTables, contextLens, queryStart, o, B, maxBlocks, numBlocks, blockSize,
//  Hq, Hkv, D, scale, alibi|null, window, sinks)
static Napi::Value PagedAttention(const Napi::CallbackInfo& info) {
  PagedAttentionParams p{};
  p.B = arg_int(info, 7, "B", 1, kMaxDim);
  p.max_blocks = arg_int(info, 8, "maxBlocks", 1, kMaxDim);
  p.num_blocks = arg_int(info, 9, "numBlocks", 1, kMaxDim);
  p.block_size = arg_int(info, 10, "blockSize", 1, 1 << 20);
  p.Hq = arg_int(info, 11, "Hq", 1, 1 << 16);
  p.Hkv = arg_int(info, 12, "Hkv", 1, 1 << 16);
  p.D = arg_int(info, 13, "D", 1, kMaxHeadDim);
  if (p.Hq % p.Hkv) fail("Hq (" + std::to_string(p.Hq) + ") must be a multiple of Hkv (" + std::to_string(p.Hkv) + ")");
  p.scale = (float)arg_num(info, 14, "scale");
  p.alibi = arg_f32_opt(info, 15, "alibi", p.Hq);
  p.window = arg_int(info, 16, "window", 0, kMaxDim);
  p.sinks = arg_int(info, 17, "sinks", 0, kMaxDim);
  p.block_tables = arg_i32(info, 3, "blockTables", mul_checked(p.B, p.max_blocks, "blockTables"));
  p.context_lens = arg_i32(info, 4, "contextLens", p.B);
  p.query_start = arg_i32(info, 5, "queryStart", p.B + 1);
  // Guard every index the kernel will follow.
  if (p.query_start[0] != 0) fail("queryStart[0] must be 0");
  for (int64_t b = 0; b < p.B; b++) {
    int64_t nq = (int64_t)p.query_start[b + 1] - p.query_start[b];
    int64_t ctx = p.context_lens[b];
    if (nq < 0) fail("queryStart must be non-decreasing (at sequence " + std::to_string(b) + ")");
    if (ctx < nq) fail("contextLens[" + std::to_string(b) + "] = " + std::to_string(ctx) + " is less than its query count " + std::to_string(nq));
    if (ctx > p.max_blocks * p.block_size)
      fail("contextLens[" + std::to_string(b) + "] = " + std::to_string(ctx) + " exceeds maxBlocks * blockSize");
    int64_t used = (ctx + p.block_size - 1) / p.block_size;
    for (int64_t i = 0; i < used; i++) {
      int32_t blk = p.block_tables[b * p.max_blocks + i];
      if (blk < 0 || blk >= p.num_blocks)
        fail("blockTables[" + std::to_string(b) + "][" + std::to_string(i) + "] = " + std::to_string(blk) +
             " points outside the pool [0, " + std::to_string(p.num_blocks) + ")");
    }
  }
  int64_t T = p.query_start[p.B];
  int64_t qn = mul_checked(mul_checked(T, p.Hq, "q"), p.D, "q");
  int64_t cn = mul_checked(mul_checked(mul_checked(p.num_blocks, p.block_size, "cache"), p.Hkv, "cache"), p.D, "cache");
  p.q = arg_f32(info, 0, "q", qn);
  p.k_cache = arg_f32(info, 1, "kCache", cn);
  p.v_cache = arg_f32(info, 2, "vCache", cn);
  p.o = arg_f32(info, 6, "o", qn);
  check_aliasing({"o"});
  kernels().paged_attention(p);
  return info.Env().Undefined();
}

// (kCache, vCache, k, v, slots, T, nSlots, row)
static Napi::Value PagedKvWrite(const Napi::CallbackInfo& info) {
  int64_t T = arg_int(info, 5, "T", 0, kMaxDim);
  int64_t n_slots = arg_int(info, 6, "nSlots", 0, kMaxDim);
  int64_t row = arg_int(info, 7, "row", 1, kMaxDim);
  int64_t cn = mul_checked(n_slots, row, "cache");
  float* kc = arg_f32(info, 0, "kCache", cn);
  float* vc = arg_f32(info, 1, "vCache", cn);
  const float* k = arg_f32(info, 2, "k", mul_checked(T, row, "k"));
  const float* v = arg_f32(info, 3, "v", mul_checked(T, row, "v"));
  const int32_t* slots = arg_i32(info, 4, "slots", T);
  check_aliasing({"kCache", "vCache"});
  cpu_paged_kv_write(kc, vc, k, v, slots, T, n_slots, row);
  return info.Env().Undefined();
}

void register_attention(Napi::Env env, Napi::Object exports) {
  register_op(env, exports, "flashAttention", FlashAttention);
  register_op(env, exports, "attentionNaive", AttentionNaive);
  register_op(env, exports, "pagedAttention", PagedAttention);
  register_op(env, exports, "pagedKvWrite", PagedKvWrite);
}

}  // namespace tessera::addon
