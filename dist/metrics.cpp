// metrics.cpp: host-side sums of evaluation counts over the ranks (metrics.h).
#include "dist/metrics.h"

namespace mo::dist {

EvalCounts all_reduce_counts(ProcessGroup& pg, const EvalCounts& local) {
  auto ints = pg.all_reduce_sum(std::vector<int64_t>{local.samples, local.top1, local.top5});
  auto loss = pg.all_reduce_sum(std::vector<double>{local.loss_sum});
  EvalCounts out;
  out.samples = ints[0];
  out.top1 = ints[1];
  out.top5 = ints[2];
  out.loss_sum = loss[0];
  return out;
}

double mean_over_ranks(ProcessGroup& pg, double value) {
  return pg.all_reduce_sum(std::vector<double>{value})[0] / pg.world_size();
}

}  // namespace mo::dist
