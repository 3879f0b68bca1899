// See weight_convert.h. Plain C++: these are memory-bound shuffles, run once per weight.
#include "cpu/weight_convert.h"

#include <cstring>

#include "common/dtype.h"
#include "common/thread_pool.h"

namespace tessera {

static constexpr int64_t kTile = 16;

// The low (shift 0) or high (shift 4) nibbles of 8 bytes as one word, byte i's nibble in bits
// 4i..4i+3 (little-endian loads).
static inline uint32_t nibbles8(const uint8_t* p, int shift) {
  uint64_t x;
  std::memcpy(&x, p, 8);
  x = (x >> shift) & 0x0F0F0F0F0F0F0F0Full;
  x = (x | (x >> 4)) & 0x00FF00FF00FF00FFull;
  x = (x | (x >> 8)) & 0x0000FFFF0000FFFFull;
  x = (x | (x >> 16)) & 0x00000000FFFFFFFFull;
  return (uint32_t)x;
}

void cpu_repack_q4_0(const uint8_t* blocks, int64_t N, int64_t K, int32_t* qweight, uint16_t* meta) {
  const int64_t nb = K / 32, rows = K / 8, tiles = (N + kTile - 1) / kTile;
  parallel_for(tiles, [&](int64_t t) {
    const int64_t n1 = (t + 1) * kTile < N ? (t + 1) * kTile : N;
    for (int64_t n = t * kTile; n < n1; n++) {
      const int64_t lane = n % kTile;
      const uint8_t* row = blocks + n * nb * 18;
      for (int64_t b = 0; b < nb; b++) {
        const uint8_t* o = row + b * 18;
        meta[(t * nb + b) * kTile + lane] = (uint16_t)(o[0] | (o[1] << 8));
        // Words of values 0-7, 8-15 (low nibbles of bytes 0-7, 8-15), 16-23, 24-31 (high nibbles).
        int32_t* q = qweight + (t * rows + b * 4) * kTile + lane;
        q[0 * kTile] = (int32_t)nibbles8(o + 2, 0);
        q[1 * kTile] = (int32_t)nibbles8(o + 10, 0);
        q[2 * kTile] = (int32_t)nibbles8(o + 2, 4);
        q[3 * kTile] = (int32_t)nibbles8(o + 10, 4);
      }
    }
  });
}

void cpu_dequantize_q8_0(const uint8_t* blocks, int64_t n, float* out) {
  parallel_range(n / 32, 1024, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) dequantize_block_q8_0(blocks + b * 34, out + b * 32);
  });
}

void cpu_dequantize_q4_0(const uint8_t* blocks, int64_t n, float* out) {
  parallel_range(n / 32, 1024, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) dequantize_block_q4_0(blocks + b * 18, out + b * 32);
  });
}

}  // namespace tessera
