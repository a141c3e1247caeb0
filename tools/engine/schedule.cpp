// schedule.cpp: warmup + cosine + cooldown (see schedule.h for the formula and the reference).
#include "tools/engine/schedule.h"

#include <cmath>

namespace mo::tools {

double LrSchedule::at(double t) const {
  if (t < warmup_epochs) return warmup_lr + t * (lr - warmup_lr) / warmup_epochs;
  if (t >= epochs) return min_lr;
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * t / epochs));
}

double LrSchedule::for_step(int64_t epoch, int64_t step_in_epoch, int64_t steps_per_epoch) const {
  if (!per_step) return at(static_cast<double>(epoch));
  return at(static_cast<double>(epoch) + static_cast<double>(step_in_epoch) / static_cast<double>(steps_per_epoch));
}

int64_t LrSchedule::total_epochs() const { return static_cast<int64_t>(std::ceil(epochs + cooldown_epochs)); }

}  // namespace mo::tools
