// SIMD mapping, scalar build: a "vector" is one float. Op headers written against `Simd`
// compile to plain loops here (and the compiler may still auto-vectorise at the baseline ISA).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/dtype.h"

namespace tessera::TESSERA_ISA_NS {

struct Simd {
  static constexpr int W = 1;
  using V = float;
  static V zero() { return 0.f; }
  static V set1(float a) { return a; }
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V load_f16(const uint16_t* p) { return fp16_to_fp32(*p); }
  static V load_bf16(const uint16_t* p) { return bf16_to_fp32(*p); }
  // Round to the nearest f16 / bf16 value (ties to even), staying in f32.
  static V round_f16(V a) { return fp16_to_fp32(fp32_to_fp16(a)); }
  static V round_bf16(V a) { return bf16_to_fp32(fp32_to_bf16(a)); }
  static V load_partial(const float* p, int n) { return n > 0 ? *p : 0.f; }
  static void store_partial(float* p, V v, int n) { if (n > 0) *p = v; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V div(V a, V b) { return a / b; }
  static V max(V a, V b) { return a > b ? a : b; }
  static V min(V a, V b) { return a < b ? a : b; }
  static float hsum(V a) { return a; }
  static float hmax(V a) { return a; }
  static V exp(V a) { return std::exp(a); }
};

}  // namespace tessera::TESSERA_ISA_NS
