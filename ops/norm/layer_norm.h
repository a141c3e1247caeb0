// layer_norm.h: LayerNorm over the last dim: y = (x − μ) / sqrt(σ² + eps) · w + b, biased variance,
// statistics in fp32 (fp64 for fp64 input). CUDA: one warp per row, fused forward and backward.
#pragma once
#include "autograd/tensor.h"

namespace mo {

// x (..., C), w (C), b (C) -> (..., C)
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps = 1e-6);

namespace cuda {
// mean/rstd: float32 [rows]
void layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y,
                        const Tensor& mean, const Tensor& rstd);
// dw/db: same dtype as w (accumulated in fp32, deterministic)
void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& dx, const Tensor& dw, const Tensor& db);
}  // namespace cuda

}  // namespace mo
