// Parameter structs and the per-ISA kernel table. Every ISA-specialised kernel is compiled once
// per ISA (isa_scalar.cpp, isa_avx2.cpp, isa_avx512.cpp) from the op headers in this folder;
// native/cpu/dispatch picks a table at load time. Shapes are row-major and contiguous.
#pragma once
#include <cstdint>

#include "common/dtype.h"

namespace tessera {

struct LinearParams {
  const float* x;     // (M, K) activations
  const void* w;      // (N, K) weights, element type `wtype` (F32, F16, BF16, or Q8_0/Q4_0 blocks of 32 along K)
  DType wtype;
  const float* bias;  // (N) or nullptr
  float* y;           // (M, N) output, y = x @ w^T + bias
  int64_t M, N, K;
};

// linear with integer weights in the kernel layout of native/cpu/linear_int.h (GPTQ int4/int8,
// int8 per channel). Built and checked by src/tensor/int-weight.ts.
struct IntLinearParams {
  const float* x;               // (M, K)
  const int32_t* qweight;       // (ceil(N/16), Kp * bits / 32, 16), Kp = K rounded up to 32
  int32_t bits;                 // 4 or 8
  const int32_t* perm;          // (K) or nullptr: kernel input k is x[perm[k]]
  const int32_t* group_blocks;  // (G + 1): group g covers 32-blocks [gb[g], gb[g+1]); gb[G] = Kp / 32
  const uint16_t* meta;         // (ceil(N/16), G, 32) f16: 16 scales, then 16 zero points;
                                // with fixed_zero >= 0: (ceil(N/16), G, 16), scales only
  float fixed_zero;             // >= 0: every zero point is this (GGUF Q4_0: 8), else -1
  bool round_dx_f16;            // activation block scales rounded to f16 (llama.cpp's Q8_0 numerics)
  const float* col_scale;       // (N) or nullptr: a final per-column factor
  const float* bias;            // (N) or nullptr
  float* y;                     // (M, N)
  int64_t M, N, K, G;
};

// Flash attention: softmax(scale * q k^T + bias) v, tiled with an online softmax.
// Query i sits at absolute position q_offset + i, key j at position j.
struct AttentionParams {
  const float* q;      // (T, Hq, D)
  const float* k;      // (S, Hkv, D)
  const float* v;      // (S, Hkv, D)
  float* o;            // (T, Hq, D)
  int64_t T, S, Hq, Hkv, D;  // Hq % Hkv == 0; query head h reads kv head h / (Hq / Hkv)
  float scale;         // softmax scale (usually 1/sqrt(D))
  bool causal;         // key visible only if kpos <= qpos
  int64_t q_offset;    // absolute position of query 0
  const float* alibi;  // (Hq) slopes or nullptr: adds slope * (kpos - qpos)
  int64_t window;      // > 0: key visible only if |qpos - kpos| < window
  int64_t sinks;       // keys with kpos < sinks are exempt from the window
  const float* mask;   // (T, S) additive mask or nullptr
};
// A query row whose every key is masked out produces zeros (never NaN).

// Paged attention: queries of B sequences, concatenated; K/V through block tables.
// Sequence b owns queries [query_start[b], query_start[b+1]) which are its last tokens: query j of
// b sits at position context_lens[b] - n_q(b) + j; attention is causal within the sequence.
struct PagedAttentionParams {
  const float* q;              // (T, Hq, D), T = query_start[B]
  const float* k_cache;        // (num_blocks, block_size, Hkv, D)
  const float* v_cache;        // (num_blocks, block_size, Hkv, D)
  const int32_t* block_tables; // (B, max_blocks): token p of b is in block block_tables[b][p / block_size]
  const int32_t* context_lens; // (B) number of K/V tokens of each sequence (incl. the new ones)
  const int32_t* query_start;  // (B + 1) cumulative query counts
  float* o;                    // (T, Hq, D)
  int64_t B, max_blocks, num_blocks, block_size, Hq, Hkv, D;
  float scale;
  const float* alibi;          // (Hq) or nullptr
  int64_t window, sinks;       // as in AttentionParams
};

enum class Activation : int32_t { Silu = 0, GeluTanh = 1, GeluErf = 2 };

struct KernelTable {
  const char* name;
  void (*linear)(const LinearParams&);
  void (*linear_int)(const IntLinearParams&);
  void (*flash_attention)(const AttentionParams&);
  void (*paged_attention)(const PagedAttentionParams&);
  // y = x * rsqrt(mean(x^2) + eps) * w; x, y (rows, dim), w (dim)
  void (*rms_norm)(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps);
  // y = (x - mean) * rsqrt(var + eps) * w + b; w, b may be nullptr
  void (*layer_norm)(const float* x, const float* w, const float* b, float* y, int64_t rows,
                     int64_t dim, float eps);
  // y = softmax(scale * x) per row; log = true gives log-softmax
  void (*softmax)(const float* x, float* y, int64_t rows, int64_t cols, float scale, bool log);
  void (*activation)(const float* x, float* y, int64_t n, Activation act);
  // y = silu(gate) * up
  void (*swiglu)(const float* gate, const float* up, float* y, int64_t n);
  // y = a (op) b where b repeats every b_len elements (b_len divides n); op 0 add, 1 mul
  void (*binary)(const float* a, const float* b, float* y, int64_t n, int64_t b_len, int op);
  // Peak measurement for benchmarks: seconds spent on `iters` FMA-loop iterations per thread
  double (*fma_peak)(int64_t iters, double* flops_out);
  // Streams `bytes` of src (read only: returns a checksum to defeat elimination)
  float (*read_stream)(const float* src, int64_t n);
};

const KernelTable* kernels_scalar();
const KernelTable* kernels_avx2();
const KernelTable* kernels_avx512();
const KernelTable* kernels_avx512vnni();

}  // namespace tessera
