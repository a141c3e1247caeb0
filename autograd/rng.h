// rng.h: counter-based Philox4x32-10 RNG. A draw is a pure function of (seed, stream, index), so the
// CPU and CUDA kernels produce the same numbers for the same key, whatever the thread layout.
// Usage: philox_uniform(seed, stream, i) for the i-th U[0,1) number of a stream.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MO_HD __host__ __device__ __forceinline__
#else
#define MO_HD inline
#endif

namespace mo {

struct Philox4 {
  uint32_t v[4];
};

MO_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// counter = (c0, c1, c2, c3), key = (k0, k1)
MO_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Four 32-bit words for block `index` of stream `stream` under `seed`.
MO_HD Philox4 philox_block(uint64_t seed, uint64_t stream, uint64_t index) {
  return philox4x32_10(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), static_cast<uint32_t>(stream),
                       static_cast<uint32_t>(stream >> 32), static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

MO_HD float philox_u32_to_unit(uint32_t x) { return (x >> 8) * (1.0f / 16777216.0f); }  // [0, 1)

// The i-th uniform of a stream (word i%4 of block i/4).
MO_HD float philox_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
  Philox4 b = philox_block(seed, stream, i >> 2);
  return philox_u32_to_unit(b.v[i & 3]);
}

// Single-precision multiply and add that no compiler fuses into an FMA: the _rn intrinsics on the
// device; on the host the callers' files build without FMA contraction (-ffp-contract=off, and the
// AVX2 twins without FMA), so the normal below has the same bits on every CPU and on the GPU.
#if defined(__CUDA_ARCH__)
MO_HD float philox_mul(float a, float b) { return __fmul_rn(a, b); }
MO_HD float philox_add(float a, float b) { return __fadd_rn(a, b); }
MO_HD float philox_bits_float(uint32_t u) { return __uint_as_float(u); }
MO_HD uint32_t philox_float_bits(float f) { return __float_as_uint(f); }
#else
MO_HD float philox_mul(float a, float b) { return a * b; }
MO_HD float philox_add(float a, float b) { return a + b; }
MO_HD float philox_bits_float(uint32_t u) { return __builtin_bit_cast(float, u); }
MO_HD uint32_t philox_float_bits(float f) { return __builtin_bit_cast(uint32_t, f); }
#endif

// A standard normal from two Philox words, by Box-Muller: sqrt(-2 ln u1) cos(2 pi u2) with
// u1 = n 2^-24, n = (a >> 8) + 1 in [1, 2^24], and u2 = (b >> 8) 2^-24 in [0, 1). The logarithm and
// the cosine are Cephes' single-precision polynomials (logf; sinf/cosf on [-pi/4, pi/4], the quadrant
// taken from the integer u2), written as plain multiplies and adds in one order so that the scalar
// code, its AVX2 twin (data/normalize.cpp) and CUDA give the same bits; libm's logf/cosf differ
// between glibc's FMA and non-FMA builds and CUDA. Within 3e-7 of the exact value (relative; absolute below 1)
// (Rng.PhiloxNormalIsAccurate).
MO_HD float philox_box_muller(uint32_t a, uint32_t b) {
  // ln(n 2^-24) = ln(m) + e ln 2, n = m 2^e with m in [sqrt(1/2), sqrt(2))
  const uint32_t nb = philox_float_bits(static_cast<float>((a >> 8) + 1));
  int e = static_cast<int>(nb >> 23) - 127 - 24;
  float m = philox_bits_float((nb & 0x007FFFFFu) | 0x3F800000u);  // [1, 2)
  if (m > 1.41421356f) m = philox_mul(m, 0.5f), e += 1;
  const float x = philox_add(m, -1.0f), z = philox_mul(x, x), fe = static_cast<float>(e);
  float p = 7.0376836292e-2f;
  p = philox_add(philox_mul(p, x), -1.1514610310e-1f);
  p = philox_add(philox_mul(p, x), 1.1676998740e-1f);
  p = philox_add(philox_mul(p, x), -1.2420140846e-1f);
  p = philox_add(philox_mul(p, x), 1.4249322787e-1f);
  p = philox_add(philox_mul(p, x), -1.6668057665e-1f);
  p = philox_add(philox_mul(p, x), 2.0000714765e-1f);
  p = philox_add(philox_mul(p, x), -2.4999993993e-1f);
  p = philox_add(philox_mul(p, x), 3.3333331174e-1f);
  float y = philox_mul(philox_mul(p, x), z);
  y = philox_add(y, philox_mul(fe, -2.12194440e-4f));
  y = philox_add(y, philox_mul(z, -0.5f));
  const float ln = philox_add(philox_add(x, y), philox_mul(fe, 0.693359375f));  // <= 0
  // cos(2 pi k 2^-24): quadrant j = round(k / 2^22), t = k - j 2^22 in [-2^21, 2^21]
  const int32_t k = static_cast<int32_t>(b >> 8), j = (k + (1 << 21)) >> 22;
  const float t = philox_mul(static_cast<float>(k - (j << 22)), 6.28318530717958647692f / 16777216.0f);
  const float t2 = philox_mul(t, t);
  float sn = -1.9515295891e-4f, cs = 2.443315711809948e-5f;
  sn = philox_add(philox_mul(sn, t2), 8.3321608736e-3f);
  sn = philox_add(philox_mul(sn, t2), -1.6666654611e-1f);
  sn = philox_add(philox_mul(philox_mul(sn, t2), t), t);
  cs = philox_add(philox_mul(cs, t2), -1.388731625493765e-3f);
  cs = philox_add(philox_mul(cs, t2), 4.166664568298827e-2f);
  cs = philox_add(philox_add(philox_mul(philox_mul(cs, t2), t2), philox_mul(t2, -0.5f)), 1.0f);
  const float c = (j & 1) ? ((j & 2) ? sn : -sn) : ((j & 2) ? -cs : cs);  // cos, -sin, -cos, sin, cos
#if defined(__CUDA_ARCH__)
  const float r = __fsqrt_rn(philox_mul(ln, -2.0f));
#else
  const float r = sqrtf(philox_mul(ln, -2.0f));
#endif
  return philox_mul(r, c);
}

// The i-th standard normal of a stream: words (0,1) of block i/2 for even i, words (2,3) for odd i.
MO_HD float philox_normal(uint64_t seed, uint64_t stream, uint64_t i) {
  Philox4 b = philox_block(seed, stream, i >> 1);
  int o = static_cast<int>(i & 1) * 2;
  return philox_box_muller(b.v[o], b.v[o + 1]);
}

// A host-side generator: a seed and stream with a running counter (for sequential draws).
struct Generator {
  uint64_t seed = 0, stream = 0, counter = 0;
  Generator() = default;
  Generator(uint64_t s, uint64_t st = 0) : seed(s), stream(st) {}
  float uniform() { return philox_uniform(seed, stream, counter++); }
  float normal() { return philox_normal(seed, stream, counter++); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * static_cast<double>(uniform()); }
  int64_t randint(int64_t n) {  // [0, n)
    int64_t v = static_cast<int64_t>(static_cast<double>(uniform()) * n);
    return v >= n ? n - 1 : v;
  }
  // Reserve `n` consecutive counter values for a kernel; returns the first.
  uint64_t reserve(uint64_t n) {
    uint64_t c = counter;
    counter += n;
    return c;
  }
};

}  // namespace mo
