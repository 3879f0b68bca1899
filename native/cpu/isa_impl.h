// Builds one ISA's kernel table. Included once by each isa_*.cpp after it has defined
// TESSERA_ISA_NS (the namespace that keeps this ISA's code apart), TESSERA_KERNELS_FN and
// TESSERA_ISA_NAME, and included its simd_*.h mapping.
#include "cpu/activation.h"
#include "cpu/attention.h"
#include "cpu/linear.h"
#include "cpu/linear_int.h"
#include "cpu/norm.h"
#include "cpu/peak.h"
#include "cpu/softmax.h"

namespace tessera {
namespace TESSERA_ISA_NS {
static const KernelTable table = {
    TESSERA_ISA_NAME, &linear, &linear_int, &flash_attention, &paged_attention, &rms_norm, &layer_norm,
    &softmax,         &activation, &swiglu,          &binary,          &fma_peak, &read_stream,
};
}  // namespace TESSERA_ISA_NS
const KernelTable* TESSERA_KERNELS_FN() { return &TESSERA_ISA_NS::table; }
}  // namespace tessera
