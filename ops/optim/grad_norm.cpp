// grad_norm.cpp: checks and the CPU sum of squares of clip_grad_norm (the CUDA twin is grad_norm.cu).
#include "ops/optim/grad_norm.h"

#include <algorithm>
#include <cmath>

#include "ops/common.h"

namespace mo {

Tensor clip_grad_norm(const Tensor& grad, double scale, double max_norm) {
  MO_CHECK(grad.dtype() == DType::f32 && grad.dim() == 1 && grad.is_contiguous(),
           "clip_grad_norm: a contiguous 1-D float32 gradient buffer expected, got {}", grad.str());
  MO_CHECK(max_norm > 0 && std::isfinite(max_norm), "clip_grad_norm: max_norm must be > 0, got {}", max_norm);
  MO_CHECK(scale > 0 && std::isfinite(scale), "clip_grad_norm: scale must be > 0, got {}", scale);
  if (grad.is_cuda()) {
    Tensor out = Tensor::empty({2}, DType::f32, grad.device());
    MO_CUDA_DISPATCH("clip_grad_norm", cuda::clip_grad_norm(grad, scale, max_norm, out));
    return out;
  }
  const float* g = grad.data<float>();
  const int64_t n = grad.numel();
  double sq = 0;
#pragma omp parallel for reduction(+ : sq) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) sq += static_cast<double>(g[i]) * g[i];
  const double norm = scale * std::sqrt(sq);
  const double coef = std::min(1.0, max_norm / (norm + 1e-6));  // NaN norm: coef 1 here, the probe fails the step
  return Tensor::from_vector(std::vector<float>{static_cast<float>(norm), static_cast<float>(coef)}, {2});
}

}  // namespace mo
