#include <cstring>
#include <string>

#include "common/errors.h"
#include "cpu/ops.h"

namespace tessera {

void cpu_paged_kv_write(float* k_cache, float* v_cache, const float* k, const float* v, const int32_t* slots,
                        int64_t T, int64_t n_slots, int64_t row) {
  for (int64_t t = 0; t < T; t++)
    TESSERA_CHECK(slots[t] >= 0 && slots[t] < n_slots, "pagedKvWrite: slot " + std::to_string(slots[t]) +
                                                           " for row " + std::to_string(t) + " is outside the pool [0, " +
                                                           std::to_string(n_slots) + ")");
  for (int64_t t = 0; t < T; t++) {
    std::memcpy(k_cache + (int64_t)slots[t] * row, k + t * row, sizeof(float) * row);
    std::memcpy(v_cache + (int64_t)slots[t] * row, v + t * row, sizeof(float) * row);
  }
}

}  // namespace tessera
