// Vector exp shared by the AVX2 and AVX-512 mappings: Cephes-style range reduction
// x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r (rel. error ~1e-7), scaled by 2^n.
// Inputs below -87.3 (including -inf) give exactly 0.
#pragma once

#define TESSERA_DEFINE_VEXP(V, set1, add, mul, fma, max, min, round, pow2n, lt, blendzero) \
  static V exp(V x) {                                                                        \
    V xc = min(max(x, set1(-87.3f)), set1(88.7f));                                         \
    V n = round(mul(xc, set1(1.44269504088896341f)));                                      \
    V r = fma(n, set1(-0.693359375f), xc);                                                 \
    r = fma(n, set1(2.12194440e-4f), r);                                                   \
    V p = set1(1.9875691500e-4f);                                                          \
    p = fma(p, r, set1(1.3981999507e-3f));                                                 \
    p = fma(p, r, set1(8.3334519073e-3f));                                                 \
    p = fma(p, r, set1(4.1665795894e-2f));                                                 \
    p = fma(p, r, set1(1.6666665459e-1f));                                                 \
    p = fma(p, r, set1(5.0000001201e-1f));                                                 \
    p = fma(p, mul(r, r), add(r, set1(1.0f)));                                             \
    V y = mul(p, pow2n(n));                                                                \
    return blendzero(y, lt(x, set1(-87.3f)));                                              \
  }
