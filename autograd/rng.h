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

// The i-th standard normal of a stream: Box-Muller on words (0,1) of block i/2 for even i and on
// words (2,3) for odd i.
MO_HD float philox_normal(uint64_t seed, uint64_t stream, uint64_t i) {
  Philox4 b = philox_block(seed, stream, i >> 1);
  int o = static_cast<int>(i & 1) * 2;
  float u1 = ((b.v[o] >> 8) + 1) * (1.0f / 16777217.0f);  // (0, 1]
  float u2 = philox_u32_to_unit(b.v[o + 1]);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
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
