// drop_path.h: stochastic depth. In training each sample of the batch is kept with probability
// 1 − p and, if kept, scaled by 1 / (1 − p); otherwise zeroed. Identity in eval or when p = 0.
// The keep decision of sample b is philox_uniform(seed, stream, b) < 1 − p (same on CPU and CUDA).
#pragma once
#include <cstdint>
#include <vector>

#include "autograd/tensor.h"

namespace mo {

Tensor drop_path(const Tensor& x, double p, bool training, uint64_t seed, uint64_t stream);

// The per-sample scale factors (0 or 1/(1−p)) as float32 [B] on the CPU (used by kernels and tests).
std::vector<float> drop_path_scales(int64_t batch, double p, uint64_t seed, uint64_t stream);

namespace cuda {
// y[b, ...] = x[b, ...] · s_b with s_b = (philox_uniform(seed, stream, b) < keep) / keep, drawn in-kernel.
void drop_path_rows(const Tensor& x, float keep, uint64_t seed, uint64_t stream, const Tensor& y);
}  // namespace cuda

}  // namespace mo
