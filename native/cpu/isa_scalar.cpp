// Kernels compiled for the scalar path (flags in binding.gyp). See isa_impl.h.
#define TESSERA_ISA_NS isa_scalar
#define TESSERA_KERNELS_FN kernels_scalar
#define TESSERA_ISA_NAME "scalar"
#include "cpu/simd_scalar.h"
#include "cpu/isa_impl.h"
