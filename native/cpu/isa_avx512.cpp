// Kernels compiled for the avx512 path (flags in binding.gyp). See isa_impl.h.
#define TESSERA_ISA_NS isa_avx512
#define TESSERA_KERNELS_FN kernels_avx512
#define TESSERA_ISA_NAME "avx512"
#include "cpu/simd_avx512.h"
#include "cpu/isa_impl.h"
