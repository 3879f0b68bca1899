#include "cpu/dispatch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/cpu_features.h"
#include "common/errors.h"

namespace tessera {

#ifndef TESSERA_HAVE_X86_ISAS
const KernelTable* kernels_avx2() { return nullptr; }
const KernelTable* kernels_avx512() { return nullptr; }
const KernelTable* kernels_avx512vnni() { return nullptr; }
#endif

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Vnni: return "avx512vnni";
  }
  return "?";
}

bool parse_isa(const char* s, Isa* out) {
  if (!std::strcmp(s, "scalar")) { *out = Isa::Scalar; return true; }
  if (!std::strcmp(s, "avx2")) { *out = Isa::Avx2; return true; }
  if (!std::strcmp(s, "avx512")) { *out = Isa::Avx512; return true; }
  if (!std::strcmp(s, "avx512vnni")) { *out = Isa::Avx512Vnni; return true; }
  return false;
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return kernels_avx2() && f.avx2 && f.fma && f.f16c;
    case Isa::Avx512:
      return kernels_avx512() && f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw &&
             f.avx512vl && f.avx512dq;
    case Isa::Avx512Vnni: return kernels_avx512vnni() && isa_supported(Isa::Avx512) && f.avx512_vnni;
  }
  return false;
}

static const KernelTable* table_for(Isa isa) {
  switch (isa) {
    case Isa::Avx512Vnni: return kernels_avx512vnni();
    case Isa::Avx512: return kernels_avx512();
    case Isa::Avx2: return kernels_avx2();
    default: return kernels_scalar();
  }
}

static std::string g_env_warning;

static Isa initial_isa() {
  Isa best = isa_supported(Isa::Avx512Vnni) ? Isa::Avx512Vnni
             : isa_supported(Isa::Avx512) ? Isa::Avx512
             : isa_supported(Isa::Avx2) ? Isa::Avx2
                                        : Isa::Scalar;
  if (const char* env = std::getenv("TESSERA_ISA")) {
    Isa want;
    if (!*env) return best;
    if (!parse_isa(env, &want)) {
      g_env_warning = std::string("TESSERA_ISA=") + env + " is not one of scalar|avx2|avx512|avx512vnni; using " + isa_name(best);
    } else if (!isa_supported(want)) {
      g_env_warning = std::string("TESSERA_ISA=") + env + " is not supported by this CPU/build; using " + isa_name(best);
    } else {
      return want;
    }
  }
  return best;
}

static std::atomic<int> g_isa{-1};

static Isa load_isa() {
  int v = g_isa.load(std::memory_order_acquire);
  if (v < 0) {
    static const Isa init = initial_isa();  // thread-safe one-time init
    int expected = -1;
    g_isa.compare_exchange_strong(expected, (int)init);
    v = g_isa.load(std::memory_order_acquire);
  }
  return (Isa)v;
}

const KernelTable& kernels() { return *table_for(load_isa()); }
Isa current_isa() { return load_isa(); }

void set_isa(Isa isa) {
  if (!isa_supported(isa)) fail(std::string("ISA '") + isa_name(isa) + "' is not supported on this CPU/build");
  load_isa();
  g_isa.store((int)isa, std::memory_order_release);
}

const char* isa_env_warning() {
  load_isa();
  return g_env_warning.c_str();
}

}  // namespace tessera
