// Chooses the CPU kernel table for this CPU: AVX-512 VNNI > AVX-512 > AVX2+FMA+F16C > scalar (features from common/cpu_features).
// TESSERA_ISA forces one (scalar|avx2|avx512|avx512vnni); set_isa() switches at run time (tests run every supported path).
#pragma once
#include "cpu/kernels.h"

namespace tessera {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Avx512Vnni = 3 };
inline constexpr Isa kAllIsas[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni};

const KernelTable& kernels();
bool isa_supported(Isa isa);
void set_isa(Isa isa);  // throws if unsupported
Isa current_isa();
const char* isa_name(Isa isa);
bool parse_isa(const char* s, Isa* out);
// Why the TESSERA_ISA request (if any) was not honoured; empty if it was or none was made.
const char* isa_env_warning();

}  // namespace tessera
