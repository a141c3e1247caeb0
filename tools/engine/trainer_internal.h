// trainer_internal.h: what the parts of the Trainer share (trainer.cpp, trainer_checkpoint.cpp,
// trainer_finite.cpp, trainer_epoch.cpp); not for other code.
#pragma once
#include <atomic>
#include <cstdint>

#include "autograd/tensor.h"

namespace mo::tools::detail {

// Set by Trainer::request_stop() (async-signal-safe), cleared when fit() returns.
extern std::atomic<bool> g_stop;

constexpr int64_t kStatRows = 256;  // steps between reads of the step buffer at most
constexpr int64_t kStatCols = 3;    // loss sum, finiteness probe, gradient norm

// Seconds on the steady clock.
double now_s();

// One value, a (1) float32 tensor on the device of the flat float32 buffer `flat`, that is NaN or Inf when
// an element of `flat` is (or when their sum overflows, which only diverged values do). On the CPU the
// norm (double accumulation); on the GPU the sum, as column sums of a (n / 1024, 1024) view and then of
// the 1024 partial sums and of the tail: three launches of the bias-gradient reduction, no host sync.
Tensor finite_probe(const Tensor& flat);

}  // namespace mo::tools::detail
