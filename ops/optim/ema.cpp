// ema.cpp: the EMA update's checks, the decay schedule and the CPU loop (the CUDA twin is ema.cu).
#include "ops/optim/ema.h"

#include <algorithm>
#include <cmath>

#include "ops/common.h"

namespace mo {

double ema_decay_for_step(double decay, bool warmup, int64_t step) {
  // ModelEmaV3 (update_after_step = 0, warmup_gamma = 1, warmup_power = 2/3, min_decay = 0).
  const int64_t s = std::max<int64_t>(0, step - 1);
  if (s <= 0) return 0.0;
  if (!warmup) return decay;
  const double d = 1.0 - std::pow(1.0 + static_cast<double>(s), -2.0 / 3.0);
  return std::max(std::min(d, decay), 0.0);
}

void ema_update(const Tensor& ema, const Tensor& param, double decay) {
  MO_CHECK(ema.dtype() == DType::f32 && param.dtype() == DType::f32, "ema_update: float32 buffers expected, got {} "
           "and {}", ema.str(), param.str());
  MO_CHECK(ema.numel() == param.numel() && ema.is_contiguous() && param.is_contiguous() &&
               ema.device() == param.device(),
           "ema_update: contiguous buffers of equal size on one device expected, got {} and {}", ema.str(),
           param.str());
  MO_CHECK(decay >= 0 && decay <= 1, "ema_update: decay {} not in [0, 1]", decay);
  const auto w = static_cast<float>(1.0 - decay), omw = static_cast<float>(decay);
  ema.bump_version();
  if (ema.is_cuda()) {
    MO_CUDA_DISPATCH("ema_update", cuda::ema_update(ema, param, w, omw));
    return;
  }
  float* e = ema.data<float>();
  const float* p = param.data<float>();
  const int64_t n = ema.numel();
  // torch.lerp: start + w·(end − start) for w < 0.5, end − (end − start)·(1 − w) otherwise.
  if (w < 0.5f) {
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) e[i] = e[i] + w * (p[i] - e[i]);
  } else {
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) e[i] = p[i] - (p[i] - e[i]) * omw;
  }
}

}  // namespace mo
