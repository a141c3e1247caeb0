// metrics.h: exact distributed evaluation and loss logging. Each rank counts only its real samples
// (see shard.h: skip padding, or use eval_range), then the counts are summed over the ranks in rank
// order, so the totals are exact integers and the loss sum has the same bits on every rank.
#pragma once
#include <cstdint>

#include "dist/process_group.h"

namespace mo::dist {

struct EvalCounts {
  int64_t samples = 0;   // real samples evaluated
  int64_t top1 = 0;      // correct at top-1
  int64_t top5 = 0;      // correct at top-5
  double loss_sum = 0;   // sum (not mean) of the per-sample losses

  double top1_pct() const { return samples ? 100.0 * static_cast<double>(top1) / samples : 0.0; }
  double top5_pct() const { return samples ? 100.0 * static_cast<double>(top5) / samples : 0.0; }
  double mean_loss() const { return samples ? loss_sum / static_cast<double>(samples) : 0.0; }
};

// Sums of every rank's counts (the same result on every rank).
EvalCounts all_reduce_counts(ProcessGroup& pg, const EvalCounts& local);

// The mean over ranks of one host value (e.g. the training loss of this rank's micro-batches).
double mean_over_ranks(ProcessGroup& pg, double value);

}  // namespace mo::dist
