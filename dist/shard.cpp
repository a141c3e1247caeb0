// shard.cpp: the sharding and batch arithmetic of shard.h.
#include "dist/shard.h"

#include <algorithm>

#include "autograd/check.h"

namespace mo::dist {

namespace {
void check_world(int rank, int world) {
  MO_CHECK(world >= 1 && rank >= 0 && rank < world, "dist shard: rank {} is outside a world of {} ranks", rank, world);
}
}  // namespace

int64_t padded_shard_size(int64_t n, int world) {
  MO_CHECK(n >= 0 && world >= 1, "dist shard: {} samples over {} ranks", n, world);
  return (n + world - 1) / world;
}

int64_t shard_position(int64_t j, int rank, int world) {
  check_world(rank, world);
  return j * world + rank;
}

std::vector<int64_t> shard_positions(int64_t n, int rank, int world) {
  check_world(rank, world);
  MO_CHECK(n > 0, "dist shard: an empty data set cannot be sharded");
  std::vector<int64_t> out(padded_shard_size(n, world));
  for (size_t j = 0; j < out.size(); ++j) out[j] = static_cast<int64_t>(j) * world + rank;
  return out;
}

int64_t real_shard_size(int64_t n, int rank, int world) {
  check_world(rank, world);
  MO_CHECK(n >= 0, "dist shard: {} samples", n);
  return n > rank ? (n - rank + world - 1) / world : 0;  // #{j : j·world + rank < n}
}

std::pair<int64_t, int64_t> eval_range(int64_t n, int rank, int world) {
  check_world(rank, world);
  MO_CHECK(n >= 0, "dist shard: {} samples", n);
  int64_t base = n / world, extra = n % world;
  int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

int64_t accumulation_steps(int64_t global_batch, int world, int64_t micro_batch) {
  MO_CHECK(global_batch > 0 && world > 0 && micro_batch > 0,
           "dist: global batch {}, {} ranks and micro-batch {} must all be positive", global_batch, world, micro_batch);
  int64_t per_step = static_cast<int64_t>(world) * micro_batch;
  MO_CHECK(global_batch % per_step == 0,
           "dist: global batch {} is not a multiple of {} ranks × micro-batch {} = {}; choose a micro-batch that "
           "divides {} / {}",
           global_batch, world, micro_batch, per_step, global_batch, world);
  return global_batch / per_step;
}

void check_resume_world_size(int saved_world, int world, bool mid_epoch) {
  MO_CHECK(saved_world >= 1, "dist: the checkpoint records a world size of {}", saved_world);
  MO_CHECK(!mid_epoch || saved_world == world,
           "dist: the checkpoint was written mid-epoch by {} ranks and cannot resume on {}: the position inside "
           "the epoch counts per-rank batches. Resume with {} ranks, or from a checkpoint at an epoch boundary",
           saved_world, world, saved_world);
}

}  // namespace mo::dist
