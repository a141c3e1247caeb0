// random.h: the random draws of the input pipeline. Every draw comes from the counter-based Philox RNG
// (autograd/rng.h) keyed by (seed, stream), where the stream packs a purpose, the epoch and the sample's
// position in the epoch. So a sample's augmentation depends only on (seed, epoch, position), never on
// which worker thread ran it or in what order.
#pragma once
#include <cmath>
#include <cstdint>

#include "autograd/rng.h"

namespace mo::data {

// What a stream is used for (the top 4 bits of the stream id).
enum class Purpose : uint64_t {
  transform = 0,    // RandomResizedCrop, flip, RandAugment of one sample
  replacement = 1,  // choosing a stand-in for an unreadable sample
  erase_box = 2,    // random-erasing box of one sample
  erase_pixels = 3, // random-erasing N(0,1) fill of one sample (read per pixel on CPU and GPU)
  mixup = 4,        // mixup / cutmix parameters of one batch
  shuffle = 5,      // the epoch's permutation
};

// stream = purpose (4 bits) | epoch (20 bits) | index (40 bits).
inline uint64_t make_stream(Purpose p, int64_t epoch, int64_t index) {
  return (static_cast<uint64_t>(p) << 60) | ((static_cast<uint64_t>(epoch) & 0xFFFFFull) << 40) |
         (static_cast<uint64_t>(index) & 0xFFFFFFFFFFull);
}

// A sequential generator over one stream, with the distributions the transforms need.
struct Rng {
  Generator g;
  Rng(uint64_t seed, uint64_t stream) : g(seed, stream) {}
  double uniform() {  // [0, 1) with 48 random bits
    double hi = g.uniform(), lo = g.uniform();
    return hi + lo * (1.0 / 16777216.0);
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int64_t randint(int64_t lo, int64_t hi) {  // inclusive [lo, hi], like Python's random.randint
    int64_t n = hi - lo + 1;
    int64_t v = static_cast<int64_t>(uniform() * static_cast<double>(n));
    return lo + (v >= n ? n - 1 : v);
  }
  double normal() { return g.normal(); }
  double normal(double mean, double std) { return mean + std * normal(); }
  // Gamma(alpha, 1) by Marsaglia-Tsang (alpha < 1 boosted with U^(1/alpha)).
  double gamma(double alpha) {
    if (alpha < 1.0) return gamma(alpha + 1.0) * std::pow(uniform() + 1e-300, 1.0 / alpha);
    double d = alpha - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      double x = normal(), v = 1.0 + c * x;
      if (v <= 0) continue;
      v = v * v * v;
      double u = uniform();
      if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
      if (std::log(u + 1e-300) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
    }
  }
  double beta(double a, double b) {
    double x = gamma(a), y = gamma(b);
    return x + y > 0 ? x / (x + y) : 0.5;
  }
};

}  // namespace mo::data
