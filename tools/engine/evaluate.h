// evaluate.h: the evaluation loop (mambaout.md §4): top-1 / top-5 accuracy and the mean cross-entropy
// over a validation loader, summed exactly over the ranks (each rank skips the padding its sampler
// adds). Runs the model in eval mode without recording gradients, and restores training mode.
// A row of logits holding NaN or Inf counts as wrong (its comparisons would otherwise rank the label
// first) and is counted in `non_finite`; the loss then is NaN or Inf too, as it should read.
// `bad_images`: the stand-ins the loader drew for unreadable images during this pass (all ranks): the
// counts are then not those of the folder, which the callers refuse.
#pragma once
#include <atomic>
#include <functional>

#include "data/loader.h"
#include "dist/metrics.h"
#include "nn/mambaout.h"

namespace mo::tools {

struct EvalResult : dist::EvalCounts {
  int64_t non_finite = 0;   // samples whose logits were not all finite (counted as wrong)
  int64_t bad_images = 0;   // unreadable images replaced by stand-ins in this pass
  bool interrupted = false; // `stop` was set on some rank before the pass ended: the counts are partial
};

// `on_batch(done, total)` is called after each batch (progress display); may be empty. `stop`, when
// given, is polled between batches: the pass then ends early on that rank (interrupted on all).
EvalResult evaluate(nn::Classifier& model, data::Loader& loader, dist::ProcessGroup& pg,
                    const std::function<void(int64_t, int64_t)>& on_batch = {},
                    const std::atomic<bool>* stop = nullptr);

}  // namespace mo::tools
