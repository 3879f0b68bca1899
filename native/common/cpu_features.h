// Run-time CPU feature detection (CPUID + XGETBV: the OS must also save the wide registers).
#pragma once

namespace tessera {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx_vnni = false;
};

const CpuFeatures& cpu_features();

}  // namespace tessera
