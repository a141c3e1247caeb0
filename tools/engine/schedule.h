// schedule.h: the learning-rate schedule of the recipe (timm 0.6.11 CosineLRScheduler, cycle_limit 1):
//   t < warmup:            warmup_lr + t * (lr - warmup_lr) / warmup
//   warmup <= t < epochs:  min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * t / epochs))   (t absolute, no offset)
//   t >= epochs:           min_lr   (the cooldown epochs)
// Per epoch (the reference, t = integer epoch) or per optimizer step (t = step / steps_per_epoch, the
// same curve sampled finer, as timm does with t_in_epochs=False).
#pragma once
#include <cstdint>

namespace mo::tools {

struct LrSchedule {
  double lr = 4e-3;
  double warmup_lr = 1e-6;
  double min_lr = 1e-5;
  double warmup_epochs = 20;
  double epochs = 300;          // cosine length; cooldown epochs come on top
  double cooldown_epochs = 10;
  bool per_step = false;

  // Learning rate at time t (in epochs, may be fractional).
  double at(double t) const;
  // The rate in effect for optimizer step `step_in_epoch` of `epoch` (steps_per_epoch > 0).
  double for_step(int64_t epoch, int64_t step_in_epoch, int64_t steps_per_epoch) const;
  // Epochs the loop runs (epochs + cooldown), rounded up.
  int64_t total_epochs() const;
};

}  // namespace mo::tools
