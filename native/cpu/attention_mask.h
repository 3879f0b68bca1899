// Which keys a query may see, shared by every attention kernel (flash, paged, naive):
// causal (kpos <= qpos), a sliding window |qpos - kpos| < window (window > 0) from which the
// first `sinks` positions are exempt (StreamingLLM attention sinks, Xiao et al. 2023).
#pragma once
#include <cstdint>

namespace tessera {

static inline bool attn_visible(int64_t qpos, int64_t kpos, bool causal, int64_t window, int64_t sinks) {
  if (causal && kpos > qpos) return false;
  if (window > 0 && kpos >= sinks) {
    int64_t d = qpos - kpos;
    if (d < 0) d = -d;
    if (d >= window) return false;
  }
  return true;
}

}  // namespace tessera
