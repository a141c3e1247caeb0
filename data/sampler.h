// sampler.h: torch's DistributedSampler semantics for one rank. An epoch's order is a permutation of
// the dataset (Fisher-Yates on Philox keyed by (seed, epoch); the identity when not shuffling), padded
// to a multiple of the world size by repeating its start; rank r takes positions r, r + world, ...
// Each sample keeps its position in that padded global order: the per-sample random draws are keyed by
// it, so augmentations depend on (seed, epoch, position) only.
#pragma once
#include <cstdint>
#include <vector>

namespace mo::data {

struct SampleRef {
  int64_t index = 0;     // into the dataset
  int64_t position = 0;  // in the epoch's padded global order (unique within the epoch)
};

class DistributedSampler {
 public:
  DistributedSampler(int64_t dataset_size, int rank, int world_size, bool shuffle, uint64_t seed);
  int64_t num_samples() const { return num_samples_; }  // per rank: ceil(n / world)
  int64_t total_size() const { return num_samples_ * world_; }
  std::vector<SampleRef> epoch(int64_t epoch) const;  // this rank's samples, in order

 private:
  int64_t n_, num_samples_;
  int rank_, world_;
  bool shuffle_;
  uint64_t seed_;
};

}  // namespace mo::data
