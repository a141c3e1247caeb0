// model_ema.h: the model EMA of a training run (timm's ModelEmaV3, `model_ema: true`). The average lives
// in one flat fp32 buffer on the training device, laid out like the optimizer's master arena, and is
// updated from the master weights after every optimizer step in one pass (ops/optim/ema.h). With data
// parallelism the master weights are the same on every rank after the step, so the EMA is too.
// For evaluation a second model of the same architecture holds the average in the compute dtype
// (refreshed from the fp32 buffer before each evaluation). Checkpoints store the average in the reference
// layout under the parameter names (CheckpointState::ema, mo_convert --entry state_dict_ema).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/adamw.h"
#include "nn/mambaout.h"

namespace mo::tools {

class ModelEma {
 public:
  // Starts as a copy of `opt`'s master weights (the model `mc` describes, on `dev`); `decay` in [0, 1],
  // `warmup`: timm's --model-ema-warmup decay schedule.
  ModelEma(const nn::ClassifierSpec& mc, const nn::AdamW& opt, Device dev, DType compute, double decay, bool warmup);

  // After optimizer step `step` (1-based, the global step count): e ← lerp(e, master, 1 − decay(step)).
  void update(int64_t step);
  // e ← master (a resumed checkpoint without an EMA).
  void reset_to_master() { flat_.copy_(opt_.master()); }
  double decay_for(int64_t step) const;

  // The EMA model with the current average in it, in eval mode (for evaluate()).
  nn::Classifier& eval_model();
  const Tensor& flat() const { return flat_; }
  // Checkpoint I/O in the reference layout, one tensor per parameter slot of the optimizer.
  std::vector<std::pair<std::string, Tensor>> export_state() const;
  // Throws naming `path` and the parameter when a tensor is missing or has the wrong shape.
  void import_state(const std::vector<std::pair<std::string, Tensor>>& ts, const std::string& path);

 private:
  const nn::AdamW& opt_;
  double decay_;
  bool warmup_;
  Tensor flat_;  // fp32, the master arena's layout
  std::unique_ptr<nn::Classifier> model_;
  Tensor compute_;  // model_'s packed parameters (compute dtype)
};

}  // namespace mo::tools
