#include <mma.h>

#include "cuda/gptq.cuh"

namespace tessera::cuda {

__device__ __forceinline__ int gptq_q(const int32_t* qweight, int64_t N, int64_t k, int64_t n, int bits) {
  const int per = 32 / bits;
  return (int)(((uint32_t)qweight[(k / per) * N + n] >> ((k % per) * bits)) & ((1u << bits) - 1));
}
__device__ __forceinline__ float gptq_zero(const int32_t* qzeros, int64_t zw, int64_t g, int64_t n, int bits, int off) {
  const int64_t bit = n * bits;
  return (float)((((uint32_t)qzeros[g * zw + (bit >> 5)] >> (bit & 31)) & ((1u << bits) - 1)) + off);
}

constexpr int kGemvMaxM = 8;
constexpr int kGemvKChunk = 256;  // K values per block (a multiple of 8)

// blockIdx.x: 256 columns; blockIdx.y: a K chunk. x chunk staged in shared memory.
__global__ void gptq_gemv_k(GptqArgs a, int64_t zw) {
  __shared__ float xs[kGemvMaxM][kGemvKChunk];
  const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t k0 = blockIdx.y * (int64_t)kGemvKChunk;
  const int64_t k1 = min(k0 + (int64_t)kGemvKChunk, a.K);
  for (int64_t i = threadIdx.x; i < a.M * kGemvKChunk; i += blockDim.x) {
    const int64_t m = i / kGemvKChunk, kk = i % kGemvKChunk;
    xs[m][kk] = k0 + kk < a.K ? a.x[m * a.K + k0 + kk] : 0.f;
  }
  __syncthreads();
  if (n >= a.N) return;
  float acc[kGemvMaxM];
  for (int m = 0; m < kGemvMaxM; m++) acc[m] = 0.f;
  const int per = 32 / a.bits;
  int64_t gprev = -1;
  float s = 0.f, z = 0.f;
  for (int64_t kw = k0; kw < k1; kw += per) {
    const uint32_t word = (uint32_t)a.qweight[(kw / per) * a.N + n];
    for (int e = 0; e < per && kw + e < k1; e++) {
      const int64_t k = kw + e;
      const int64_t g = a.g_idx[k];
      if (g < 0 || g >= a.G) continue;  // never index past the scales (uploadGptq rejects such g_idx)
      if (g != gprev) {
        s = __half2float(a.scales[g * a.N + n]);
        z = gptq_zero(a.qzeros, zw, g, n, a.bits, a.zero_offset);
        gprev = g;
      }
      const float w = s * ((float)((word >> (e * a.bits)) & ((1u << a.bits) - 1)) - z);
      for (int m = 0; m < kGemvMaxM; m++)
        if (m < a.M) acc[m] += w * xs[m][k - k0];
    }
  }
  for (int m = 0; m < kGemvMaxM; m++)
    if (m < a.M) atomicAdd(&a.y[m * a.N + n], acc[m] + (blockIdx.y == 0 && a.bias ? a.bias[n] : 0.f));
}

namespace wmma = nvcuda::wmma;
constexpr int TM = 64, TN = 64, TK = 32;

// 4 warps, each a 32 x 32 quarter of the 64 x 64 tile (2 x 2 fragments).
__global__ void gptq_gemm_k(GptqArgs a, int64_t zw) {
  __shared__ __align__(32) __half xs[TM][TK + 8];
  __shared__ __align__(32) __half ws[TK][TN + 8];
  __shared__ __align__(32) float out[TM][TN + 4];
  const int64_t m0 = blockIdx.y * (int64_t)TM, n0 = blockIdx.x * (int64_t)TN;
  const int warp = threadIdx.x / 32, wm = (warp / 2) * 32, wn = (warp % 2) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.f);
  for (int64_t k0 = 0; k0 < a.K; k0 += TK) {
    for (int i = threadIdx.x; i < TM * TK; i += blockDim.x) {
      const int r = i / TK, c = i % TK;
      const int64_t m = m0 + r, k = k0 + c;
      xs[r][c] = __float2half_rn(m < a.M && k < a.K ? a.x[m * a.K + k] : 0.f);
    }
    for (int i = threadIdx.x; i < TK * TN; i += blockDim.x) {
      const int r = i / TN, c = i % TN;
      const int64_t k = k0 + r, n = n0 + c;
      float w = 0.f;
      const int64_t g = k < a.K ? a.g_idx[k] : -1;
      if (k < a.K && n < a.N && g >= 0 && g < a.G) {
        w = __half2float(a.scales[g * a.N + n]) * ((float)gptq_q(a.qweight, a.N, k, n, a.bits) - gptq_zero(a.qzeros, zw, g, n, a.bits, a.zero_offset));
      }
      ws[r][c] = __float2half_rn(w);
    }
    __syncthreads();
    for (int kk = 0; kk < TK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb[2];
      for (int i = 0; i < 2; i++) wmma::load_matrix_sync(fa[i], &xs[wm + 16 * i][kk], TK + 8);
      for (int j = 0; j < 2; j++) wmma::load_matrix_sync(fb[j], &ws[kk][wn + 16 * j], TN + 8);
      for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) wmma::store_matrix_sync(&out[wm + 16 * i][wn + 16 * j], acc[i][j], TN + 4, wmma::mem_row_major);
  __syncthreads();
  for (int i = threadIdx.x; i < TM * TN; i += blockDim.x) {
    const int r = i / TN, c = i % TN;
    const int64_t m = m0 + r, n = n0 + c;
    if (m < a.M && n < a.N) a.y[m * a.N + n] = out[r][c] + (a.bias ? a.bias[n] : 0.f);
  }
}

void gptq_linear(const GptqArgs& a, cudaStream_t s) {
  if (a.bits != 4 && a.bits != 8) throw CudaError("gptqLinear: bits must be 4 or 8");
  if (a.M <= 0 || a.N <= 0) return;
  const int64_t zw = (a.N * a.bits + 31) / 32;
  if (a.M <= kGemvMaxM) {
    check(cudaMemsetAsync(a.y, 0, (size_t)(a.M * a.N) * sizeof(float), s), "gptqLinear");
    const dim3 grid(blocks_for(a.N, 256), blocks_for(a.K, kGemvKChunk));
    gptq_gemv_k<<<grid, 256, 0, s>>>(a, zw);
  } else {
    const dim3 grid(blocks_for(a.N, TN), blocks_for(a.M, TM));
    gptq_gemm_k<<<grid, 128, 0, s>>>(a, zw);
  }
  check_launch("gptqLinear");
}

}  // namespace tessera::cuda
