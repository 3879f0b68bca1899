// Kernels compiled for the avx512vnni path: the avx512 flags plus -mavx512vnni, so the integer
// dot products (GPTQ, Q8_0, Q4_0) use vpdpbusd. See isa_impl.h.
#define TESSERA_ISA_NS isa_avx512vnni
#define TESSERA_KERNELS_FN kernels_avx512vnni
#define TESSERA_ISA_NAME "avx512vnni"
#include "cpu/simd_avx512.h"
#include "cpu/isa_impl.h"
