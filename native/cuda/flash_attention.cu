#include <mma.h>

#include "cuda/flash_attention.cuh"

namespace tessera::cuda {

namespace wmma = nvcuda::wmma;
constexpr int BR = 64, BC = 64, WARPS = 4;
constexpr int kDecodeMaxT = 8, kSplit = 256;

template <typename T, int D>
struct FlashSmem {
  T q[BR][D + 8];
  T k[BC][D + 8];
  T v[BC][D + 8];
  float s[WARPS][16][BC + 4];
  T p[WARPS][16][BC + 8];
  float o[WARPS][16][D + 4];
  float m[WARPS][16], l[WARPS][16], corr[WARPS][16];
};

template <typename T, int D>
__global__ void flash_fwd_k(FlashArgs a) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  FlashSmem<T, D>& sm = *reinterpret_cast<FlashSmem<T, D>*>(smem_raw);
  const int64_t h = blockIdx.y, q0 = blockIdx.x * (int64_t)BR;
  const int64_t kvh = h / (a.Hq / a.Hkv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const T* q = (const T*)a.q;
  const T* k = (const T*)a.k;
  const T* v = (const T*)a.v;
  const MaskRule rule{a.causal, a.window, a.sinks};
  const float slope = a.alibi ? a.alibi[h] : 0.f;
  // Q tile, zero-padded past T.
  for (int i = threadIdx.x; i < BR * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    sm.q[r][d] = q0 + r < a.T ? q[((q0 + r) * a.Hq + h) * D + d] : from_f32<T>(0.f);
  }
  for (int i = lane; i < 16 * D; i += 32) sm.o[warp][i / D][i % D] = 0.f;
  if (lane < 16) {
    sm.m[warp][lane] = -INFINITY;
    sm.l[warp][lane] = 0.f;
  }
  // Key range that can be visible to this query block.
  const int64_t qlo = a.q_offset + q0, qhi = a.q_offset + min(q0 + BR, a.T) - 1;
  int64_t kend = a.S;
  if (a.causal) kend = min(kend, qhi + 1);
  for (int64_t k0 = 0; k0 < kend; k0 += BC) {
    // Skip a tile the window hides entirely (no sinks in it).
    if (a.window > 0 && k0 + BC <= qlo - a.window + 1 && k0 >= a.sinks) continue;
    __syncthreads();
    for (int i = threadIdx.x; i < BC * D; i += blockDim.x) {
      const int r = i / D, d = i % D;
      const bool in = k0 + r < a.S;
      sm.k[r][d] = in ? k[((k0 + r) * a.Hkv + kvh) * D + d] : from_f32<T>(0.f);
      sm.v[r][d] = in ? v[((k0 + r) * a.Hkv + kvh) * D + d] : from_f32<T>(0.f);
    }
    __syncthreads();
    // S (16 x 64) = Q_w K^T.
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc[BC / 16];
    for (int j = 0; j < BC / 16; j++) wmma::fill_fragment(sacc[j], 0.f);
    for (int d0 = 0; d0 < D; d0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fq;
      wmma::load_matrix_sync(fq, &sm.q[warp * 16][d0], D + 8);
      for (int j = 0; j < BC / 16; j++) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fk;
        wmma::load_matrix_sync(fk, &sm.k[j * 16][d0], D + 8);
        wmma::mma_sync(sacc[j], fq, fk, sacc[j]);
      }
    }
    for (int j = 0; j < BC / 16; j++) wmma::store_matrix_sync(&sm.s[warp][0][j * 16], sacc[j], BC + 4, wmma::mem_row_major);
    __syncwarp();
    // Online softmax: two lanes per row, 32 columns each.
    {
      const int r = lane / 2, half = lane % 2;
      const int64_t qi = q0 + warp * 16 + r, qpos = a.q_offset + qi;
      float mx = -INFINITY;
      for (int c = half * 32; c < half * 32 + 32; c++) {
        const int64_t kpos = k0 + c;
        float sc = -INFINITY;
        if (qi < a.T && kpos < a.S && rule.visible(qpos, kpos)) sc = sm.s[warp][r][c] * a.scale + slope * (float)(kpos - qpos);
        sm.s[warp][r][c] = sc;
        mx = fmaxf(mx, sc);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float mold = sm.m[warp][r];
      const float mnew = fmaxf(mold, mx);
      float sum = 0.f;
      for (int c = half * 32; c < half * 32 + 32; c++) {
        const float p = mnew == -INFINITY ? 0.f : __expf(sm.s[warp][r][c] - mnew);
        sm.p[warp][r][c] = from_f32<T>(p);
        sum += p;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      if (half == 0) {
        const float c = mold == -INFINITY ? 0.f : __expf(mold - mnew);
        sm.corr[warp][r] = c;
        sm.l[warp][r] = sm.l[warp][r] * c + sum;
        sm.m[warp][r] = mnew;
      }
    }
    __syncwarp();
    // O_w = O_w * corr + P V.
    for (int i = lane; i < 16 * D; i += 32) sm.o[warp][i / D][i % D] *= sm.corr[warp][i / D];
    __syncwarp();
    for (int d0 = 0; d0 < D; d0 += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> oacc;
      wmma::load_matrix_sync(oacc, &sm.o[warp][0][d0], D + 4, wmma::mem_row_major);
      for (int c0 = 0; c0 < BC; c0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fp;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fv;
        wmma::load_matrix_sync(fp, &sm.p[warp][0][c0], BC + 8);
        wmma::load_matrix_sync(fv, &sm.v[c0][d0], D + 8);
        wmma::mma_sync(oacc, fp, fv, oacc);
      }
      wmma::store_matrix_sync(&sm.o[warp][0][d0], oacc, D + 4, wmma::mem_row_major);
    }
    __syncwarp();
  }
  __syncwarp();
  for (int i = lane; i < 16 * D; i += 32) {
    const int r = i / D, d = i % D;
    const int64_t qi = q0 + warp * 16 + r;
    if (qi < a.T) {
      const float l = sm.l[warp][r];
      a.o[(qi * a.Hq + h) * D + d] = l > 0.f ? sm.o[warp][r][d] / l : 0.f;
    }
  }
}

// Decode: one warp per (query, head, key chunk); partial max, sum and output to the workspace.
template <typename T>
__global__ void flash_decode_partial_k(FlashArgs a, int64_t chunks) {
  const int64_t w = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (w >= a.T * a.Hq * chunks) return;
  const int64_t c = w % chunks, th = w / chunks, t = th / a.Hq, h = th % a.Hq;
  const int64_t kvh = h / (a.Hq / a.Hkv), qpos = a.q_offset + t;
  const T* q = (const T*)a.q + (t * a.Hq + h) * a.D;
  const T* k = (const T*)a.k;
  const T* v = (const T*)a.v;
  constexpr int PER = 8;  // D <= 256
  float qv[PER], acc[PER];
  for (int i = 0; i < PER; i++) {
    const int64_t d = lane + 32 * i;
    qv[i] = d < a.D ? to_f32<T>(q[d]) * a.scale : 0.f;
    acc[i] = 0.f;
  }
  const MaskRule rule{a.causal, a.window, a.sinks};
  const float slope = a.alibi ? a.alibi[h] : 0.f;
  float m = -INFINITY, l = 0.f;
  const int64_t kend = min((c + 1) * (int64_t)kSplit, a.S);
  for (int64_t kp = c * kSplit; kp < kend; kp++) {
    if (!rule.visible(qpos, kp)) continue;
    const T* kr = k + (kp * a.Hkv + kvh) * a.D;
    float sdot = 0.f;
    for (int i = 0; i < PER; i++) {
      const int64_t d = lane + 32 * i;
      if (d < a.D) sdot += qv[i] * to_f32<T>(kr[d]);
    }
    const float sc = warp_sum(sdot) + slope * (float)(kp - qpos);
    const float mn = fmaxf(m, sc), corr = __expf(m - mn), p = __expf(sc - mn);
    l = l * corr + p;
    const T* vr = v + (kp * a.Hkv + kvh) * a.D;
    for (int i = 0; i < PER; i++) {
      const int64_t d = lane + 32 * i;
      acc[i] = acc[i] * corr + (d < a.D ? p * to_f32<T>(vr[d]) : 0.f);
    }
    m = mn;
  }
  float* part = a.workspace + w * (a.D + 2);
  for (int i = 0; i < PER; i++) {
    const int64_t d = lane + 32 * i;
    if (d < a.D) part[2 + d] = acc[i];
  }
  if (lane == 0) {
    part[0] = m;
    part[1] = l;
  }
}

__global__ void flash_decode_merge_k(FlashArgs a, int64_t chunks) {
  const int64_t th = blockIdx.x;  // (t, h)
  const float* parts = a.workspace + th * chunks * (a.D + 2);
  float M = -INFINITY;
  for (int64_t c = 0; c < chunks; c++) M = fmaxf(M, parts[c * (a.D + 2)]);
  for (int64_t d = threadIdx.x; d < a.D; d += blockDim.x) {
    float num = 0.f, den = 0.f;
    for (int64_t c = 0; c < chunks; c++) {
      const float* p = parts + c * (a.D + 2);
      if (p[0] == -INFINITY) continue;
      const float f = __expf(p[0] - M);
      num += f * p[2 + d];
      den += f * p[1];
    }
    a.o[th * a.D + d] = den > 0.f ? num / den : 0.f;
  }
}

int64_t flash_workspace_floats(int64_t T, int64_t S, int64_t Hq, int64_t D) {
  if (T > kDecodeMaxT) return 0;
  const int64_t chunks = (S + kSplit - 1) / kSplit;
  return T * Hq * (chunks > 0 ? chunks : 1) * (D + 2);
}

template <typename T, int D>
static void launch_prefill(const FlashArgs& a, cudaStream_t s) {
  const size_t bytes = sizeof(FlashSmem<T, D>);
  check(cudaFuncSetAttribute(flash_fwd_k<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), "flashAttention");
  const dim3 grid(blocks_for(a.T, BR), (unsigned)a.Hq);
  flash_fwd_k<T, D><<<grid, WARPS * 32, bytes, s>>>(a);
}

template <typename T>
static void launch(const FlashArgs& a, cudaStream_t s) {
  if (a.T <= kDecodeMaxT && a.workspace) {
    const int64_t chunks = a.S > 0 ? (a.S + kSplit - 1) / kSplit : 1;
    flash_decode_partial_k<T><<<blocks_for(a.T * a.Hq * chunks, 4), 128, 0, s>>>(a, chunks);
    check_launch("flashAttention");
    flash_decode_merge_k<<<(unsigned)(a.T * a.Hq), 128, 0, s>>>(a, chunks);
    return;
  }
  if (a.D == 64) launch_prefill<T, 64>(a, s);
  else launch_prefill<T, 128>(a, s);
}

void flash_attention(const FlashArgs& a, cudaStream_t s) {
  if (a.T <= 0) return;
  const bool decode = a.T <= kDecodeMaxT && a.workspace;
  if (!decode && a.D != 64 && a.D != 128) throw CudaError("flashAttention: the tensor-core path supports head dim 64 or 128");
  if (decode && a.D > 256) throw CudaError("flashAttention: head dim above 256 is not supported on cuda");
  if (a.dtype == DType::F16) launch<__half>(a, s);
  else if (a.dtype == DType::BF16) launch<__nv_bfloat16>(a, s);
  else throw CudaError("flashAttention: q, k, v must be f16 or bf16 on cuda");
  check_launch("flashAttention");
}

}  // namespace tessera::cuda
