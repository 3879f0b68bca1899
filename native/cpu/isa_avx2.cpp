// Kernels compiled for the avx2 path (flags in binding.gyp). See isa_impl.h.
#define TESSERA_ISA_NS isa_avx2
#define TESSERA_KERNELS_FN kernels_avx2
#define TESSERA_ISA_NAME "avx2"
#include "cpu/simd_avx2.h"
#include "cpu/isa_impl.h"
