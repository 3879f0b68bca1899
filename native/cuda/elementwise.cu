#include "cuda/elementwise.cuh"

namespace tessera::cuda {

// One block per row; 256 threads reduce the sum of squares.
__global__ void rms_norm_k(const float* x, const float* w, float* y, int64_t dim, float eps) {
  const float* xr = x + blockIdx.x * dim;
  float* yr = y + blockIdx.x * dim;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  __shared__ float part[32];
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.f;
    v = warp_sum(v);
    if (threadIdx.x == 0) part[0] = rsqrtf(v / (float)dim + eps);
  }
  __syncthreads();
  const float r = part[0];
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * r * w[i];
}

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps, cudaStream_t s) {
  if (rows <= 0) return;
  rms_norm_k<<<(unsigned)rows, 256, 0, s>>>(x, w, y, dim, eps);
  check_launch("rmsNorm");
}

// One thread per (row, pair). Angles in double, as the CPU kernel: at long positions (what YaRN
// and LongRoPE are for) a float angle loses ~1e-4 rad.
__global__ void rope_k(rope_params p) {
  const int64_t half = p.rot_dim / 2;
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;  // over T * H * half
  if (i >= p.T * p.H * half) return;
  const int64_t j = i % half, th = i / half, t = th / p.H;
  double extrap = pow(p.theta, -2.0 * (double)j / (double)p.rot_dim);
  if (p.freq_factors) extrap /= (double)p.freq_factors[j];
  double freq = p.freq_scale * extrap;
  if (p.ext_factor != 0) {
    const double y = ((double)j - p.corr_low) / fmax(0.001, p.corr_high - p.corr_low);
    const double mix = (1 - fmin(1.0, fmax(0.0, y))) * p.ext_factor;
    freq = freq * (1 - mix) + extrap * mix;
  }
  double sn, cs;
  sincos((double)p.pos[t] * freq, &sn, &cs);
  const float c = (float)(cs * p.attn_factor), sv = (float)(sn * p.attn_factor);
  float* row = p.x + th * p.D;
  const int64_t a = p.neox ? j : 2 * j, b = p.neox ? j + half : 2 * j + 1;
  const float x0 = row[a], x1 = row[b];
  row[a] = x0 * c - x1 * sv;
  row[b] = x0 * sv + x1 * c;
}

void rope(const rope_params& p, cudaStream_t s) {
  const int64_t n = p.T * p.H * (p.rot_dim / 2);
  if (n <= 0) return;
  rope_k<<<blocks_for(n, 256), 256, 0, s>>>(p);
  check_launch("rope");
}

__global__ void swiglu_k(const float* g, const float* u, float* y, int64_t n) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) {
    const float a = g[i];
    y[i] = a / (1.0f + __expf(-a)) * u[i];
  }
}
void swiglu(const float* gate, const float* up, float* y, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  swiglu_k<<<blocks_for(n, 256), 256, 0, s>>>(gate, up, y, n);
  check_launch("swiglu");
}

__global__ void add_k(const float* a, const float* b, float* y, int64_t n) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) y[i] = a[i] + b[i];
}
void add(const float* a, const float* b, float* y, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  add_k<<<blocks_for(n, 256), 256, 0, s>>>(a, b, y, n);
  check_launch("add");
}

template <typename T>
__global__ void embedding_k(const T* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n, float* out) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= n * dim) return;
  const int64_t t = i / dim, d = i % dim;
  const int32_t id = ids[t];
  out[i] = id >= 0 && id < vocab ? to_f32<T>(table[(int64_t)id * dim + d]) : 0.f;
}
void embedding(const void* table, DType dt, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n, float* out,
               cudaStream_t s) {
  if (n * dim <= 0) return;
  const unsigned g = blocks_for(n * dim, 256);
  if (dt == DType::F32) embedding_k<float><<<g, 256, 0, s>>>((const float*)table, vocab, dim, ids, n, out);
  else if (dt == DType::F16) embedding_k<__half><<<g, 256, 0, s>>>((const __half*)table, vocab, dim, ids, n, out);
  else embedding_k<__nv_bfloat16><<<g, 256, 0, s>>>((const __nv_bfloat16*)table, vocab, dim, ids, n, out);
  check_launch("embedding");
}

__global__ void kv_write_k(float* kc, float* vc, const float* k, const float* v, const int32_t* slots, int64_t T,
                           int64_t row, int64_t nslots) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= T * row) return;
  const int64_t t = i / row, c = i % row;
  if (slots[t] < 0 || slots[t] >= nslots) return;  // never write outside the cache
  const int64_t dst = (int64_t)slots[t] * row + c;
  kc[dst] = k[i];
  vc[dst] = v[i];
}
void paged_kv_write(float* kc, float* vc, const float* k, const float* v, const int32_t* slots, int64_t T, int64_t row,
                    int64_t nslots, cudaStream_t s) {
  if (T * row <= 0) return;
  kv_write_k<<<blocks_for(T * row, 256), 256, 0, s>>>(kc, vc, k, v, slots, T, row, nslots);
  check_launch("pagedKvWrite");
}

template <typename T>
__global__ void convert_k(const float* x, T* y, int64_t n) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) y[i] = from_f32<T>(x[i]);
}
void convert_f32(const float* x, void* y, DType to, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  if (to == DType::F16) convert_k<__half><<<blocks_for(n, 256), 256, 0, s>>>(x, (__half*)y, n);
  else convert_k<__nv_bfloat16><<<blocks_for(n, 256), 256, 0, s>>>(x, (__nv_bfloat16*)y, n);
  check_launch("convert");
}

}  // namespace tessera::cuda
