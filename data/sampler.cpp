// sampler.cpp: see sampler.h.
#include "data/sampler.h"

#include <numeric>
#include <utility>

#include "autograd/check.h"
#include "data/random.h"

namespace mo::data {

DistributedSampler::DistributedSampler(int64_t n, int rank, int world, bool shuffle, uint64_t seed)
    : n_(n), rank_(rank), world_(world), shuffle_(shuffle), seed_(seed) {
  MO_CHECK(n > 0, "DistributedSampler: empty dataset");
  MO_CHECK(world >= 1 && rank >= 0 && rank < world, "DistributedSampler: rank {} outside world size {}", rank, world);
  num_samples_ = (n + world - 1) / world;
}

std::vector<SampleRef> DistributedSampler::epoch(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(n_));
  std::iota(order.begin(), order.end(), 0);
  if (shuffle_) {
    Rng rng(seed_, make_stream(Purpose::shuffle, epoch, 0));
    for (int64_t i = n_ - 1; i > 0; --i) std::swap(order[i], order[rng.randint(0, i)]);
  }
  std::vector<SampleRef> out;
  out.reserve(static_cast<size_t>(num_samples_));
  for (int64_t pos = rank_; pos < total_size(); pos += world_) out.push_back({order[pos % n_], pos});
  return out;
}

}  // namespace mo::data
