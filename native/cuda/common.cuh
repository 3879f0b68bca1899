// Shared pieces of the CUDA kernels: error checks that name the op, element conversions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace tessera::cuda {

// Element types of device tensors (the values the JS side passes).
enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3 };

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws CudaError("op: message") when a CUDA call failed.
inline void check(cudaError_t e, const char* op) {
  if (e != cudaSuccess) throw CudaError(std::string(op) + ": " + cudaGetErrorString(e));
}
// After a launch: launch-configuration errors now, execution errors at the next sync.
inline void check_launch(const char* op) { check(cudaGetLastError(), op); }

inline unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

#if defined(__CUDACC__)  // device helpers: the host-only addon code includes this header too
template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Attention masking shared by the attention kernels (the CPU's native/cpu/attention_mask.h rules):
// causal (kpos <= qpos), sliding window (|qpos - kpos| < window unless kpos < sinks), ALiBi bias.
struct MaskRule {
  bool causal;
  int64_t window, sinks;
  __device__ __forceinline__ bool visible(int64_t qpos, int64_t kpos) const {
    if (causal && kpos > qpos) return false;
    if (window > 0 && kpos >= sinks) {
      const int64_t d = qpos > kpos ? qpos - kpos : kpos - qpos;
      if (d >= window) return false;
    }
    return true;
  }
};
#endif  // __CUDACC__

}  // namespace tessera::cuda
