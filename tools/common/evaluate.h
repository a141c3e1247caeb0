// evaluate.h: the evaluation loop (mambaout.md §4): top-1 / top-5 accuracy and the mean cross-entropy
// over a validation loader, summed exactly over the ranks (each rank skips the padding its sampler
// adds). Runs the model in eval mode without recording gradients, and restores training mode.
#pragma once
#include <functional>

#include "data/loader.h"
#include "dist/metrics.h"
#include "nn/mambaout.h"

namespace mo::tools {

// `on_batch(done, total)` is called after each batch (progress display); may be empty.
dist::EvalCounts evaluate(nn::MambaOut& model, data::Loader& loader, dist::ProcessGroup& pg,
                          const std::function<void(int64_t, int64_t)>& on_batch = {});

}  // namespace mo::tools
