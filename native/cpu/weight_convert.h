// Weight conversions done once at load: GGUF Q4_0 blocks to the integer kernels' column tiles
// (IntWeight.fromQ4_0's layout, src/tensor/int-weight.ts), and Q8_0 / Q4_0 blocks to f32 (ggml's
// reference dequantize_row_*). Both run on the thread pool and give exactly the TS results.
#pragma once
#include <cstdint>

#include "common/dtype.h"

namespace tessera {

// One block's 32 values, ggml's dequantize_row_q*_0 arithmetic. Each product is exact in f32 (an
// 11-bit scale times an 8- or 4-bit integer), so the values equal src/tensor/quant.ts's bit for bit.
inline void dequantize_block_q8_0(const uint8_t* blk, float* out) {
  const float d = fp16_to_fp32((uint16_t)(blk[0] | (blk[1] << 8)));
  for (int j = 0; j < 32; j++) out[j] = d * (float)(int8_t)blk[2 + j];
}
inline void dequantize_block_q4_0(const uint8_t* blk, float* out) {
  const float d = fp16_to_fp32((uint16_t)(blk[0] | (blk[1] << 8)));
  for (int j = 0; j < 16; j++) {
    out[j] = (float)((blk[2 + j] & 0x0F) - 8) * d;
    out[j + 16] = (float)((blk[2 + j] >> 4) - 8) * d;
  }
}

// blocks: N rows of K / 32 Q4_0 blocks (18 bytes: f16 d, 16 bytes of nibbles).
// qweight: (ceil(N / 16), K / 8, 16) int32, each word 8 consecutive 4-bit values of one column.
// meta: (ceil(N / 16), K / 32, 16) f16, the block scales d. Lanes past N are left as they are.
void cpu_repack_q4_0(const uint8_t* blocks, int64_t N, int64_t K, int32_t* qweight, uint16_t* meta);

// n values (a multiple of 32) from Q8_0 (34-byte) or Q4_0 (18-byte) blocks into out (f32).
void cpu_dequantize_q8_0(const uint8_t* blocks, int64_t n, float* out);
void cpu_dequantize_q4_0(const uint8_t* blocks, int64_t n, float* out);

}  // namespace tessera
