// Weight conversions done once at load: GGUF Q4_0 blocks to the integer kernels' column tiles
// (IntWeight.fromQ4_0's layout, src/tensor/int-weight.ts), and Q8_0 / Q4_0 blocks to f32 (ggml's
// reference dequantize_row_*). Both run on the thread pool and give exactly the TS results.
#pragma once
#include <cstdint>

namespace tessera {

// blocks: N rows of K / 32 Q4_0 blocks (18 bytes: f16 d, 16 bytes of nibbles).
// qweight: (ceil(N / 16), K / 8, 16) int32, each word 8 consecutive 4-bit values of one column.
// meta: (ceil(N / 16), K / 32, 16) f16, the block scales d. Lanes past N are left as they are.
void cpu_repack_q4_0(const uint8_t* blocks, int64_t N, int64_t K, int32_t* qweight, uint16_t* meta);

// n values (a multiple of 32) from Q8_0 (34-byte) or Q4_0 (18-byte) blocks into out (f32).
void cpu_dequantize_q8_0(const uint8_t* blocks, int64_t n, float* out);
void cpu_dequantize_q4_0(const uint8_t* blocks, int64_t n, float* out);

}  // namespace tessera
