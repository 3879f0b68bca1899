#include "common/errors.h"
#include "common/thread_pool.h"
#include "cpu/ops.h"
#include "cpu/weight_convert.h"

namespace tessera {

void cpu_embedding(const void* table, DType type, int64_t vocab, int64_t dim, const int32_t* ids,
                   int64_t n, float* out) {
  for (int64_t i = 0; i < n; i++)
    TESSERA_CHECK(ids[i] >= 0 && ids[i] < vocab, "embedding: id " + std::to_string(ids[i]) + " at index " +
                                                     std::to_string(i) + " is outside [0, " + std::to_string(vocab) + ")");
  parallel_range(n, 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float* o = out + i * dim;
      int64_t row = (int64_t)ids[i] * dim;
      switch (type) {
        case DType::F32: for (int64_t d = 0; d < dim; d++) o[d] = ((const float*)table)[row + d]; break;
        case DType::F16: for (int64_t d = 0; d < dim; d++) o[d] = fp16_to_fp32(((const uint16_t*)table)[row + d]); break;
        case DType::BF16: for (int64_t d = 0; d < dim; d++) o[d] = bf16_to_fp32(((const uint16_t*)table)[row + d]); break;
        // Only this row's dim / 32 blocks, dequantised as the whole table would be.
        case DType::Q8_0:
          for (int64_t b = 0; b < dim / 32; b++) dequantize_block_q8_0((const uint8_t*)table + (row / 32 + b) * 34, o + b * 32);
          break;
        case DType::Q4_0:
          for (int64_t b = 0; b < dim / 32; b++) dequantize_block_q4_0((const uint8_t*)table + (row / 32 + b) * 18, o + b * 32);
          break;
        default: break;
      }
    }
  });
}

}  // namespace tessera
