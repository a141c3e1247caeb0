// shard.h: how the samples of a data set are divided among ranks, how the global batch stays fixed
// whatever the number of processes, and what resuming with another world size means.
//
// Training (the DistributedSampler rule of timm/PyTorch): the epoch's order (a permutation of the n
// samples, the same on every rank) is padded to ceil(n/w)·w positions by repeating its head, and
// rank r takes positions r, r+w, r+2w, ... Every rank then has the same number of samples (so the
// same number of steps and collectives); the shards are disjoint in positions and cover all n.
// Evaluation needs exact counts: either skip the padded positions (is_padding) or use eval_range,
// a contiguous split without padding (ranks then differ by at most one sample; evaluation issues no
// collective per batch, so that is fine), then sum the counts with all_reduce_counts (metrics.h).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace mo::dist {

// Samples per rank with padding: ceil(n / world).
int64_t padded_shard_size(int64_t n, int world);
// Position in the padded epoch order of rank `rank`'s j-th sample: j·world + rank.
int64_t shard_position(int64_t j, int rank, int world);
// True when `position` is a repeat added by the padding (position ≥ n): not to be counted.
inline bool is_padding(int64_t position, int64_t n) { return position >= n; }
// The index into the epoch order at `position` (padding wraps around to the head).
inline int64_t position_to_order_index(int64_t position, int64_t n) { return position % n; }
// Positions of every sample of `rank` (padded_shard_size of them).
std::vector<int64_t> shard_positions(int64_t n, int rank, int world);
// How many of `rank`'s samples are real (not padding).
int64_t real_shard_size(int64_t n, int rank, int world);

// Contiguous split without padding: rank r evaluates [begin, end); sizes differ by at most one.
std::pair<int64_t, int64_t> eval_range(int64_t n, int rank, int world);

// Global batch = world · micro_batch · accumulation steps. Returns the accumulation steps; throws
// mo::Error naming the three numbers when they do not divide (e.g. 4096 over 3 ranks).
int64_t accumulation_steps(int64_t global_batch, int world, int64_t micro_batch);

// Resuming: parameters, optimizer state and the epoch/step counters do not depend on the world
// size, but the position inside an epoch does (it counts per-rank batches). Resuming at an epoch
// boundary works with any world size; resuming mid-epoch with another world size throws, naming
// both sizes.
void check_resume_world_size(int saved_world, int world, bool mid_epoch);

}  // namespace mo::dist
