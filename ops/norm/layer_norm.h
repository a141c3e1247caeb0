// layer_norm.h: LayerNorm over the last dim: y = (x − μ) / sqrt(σ² + eps) · w + b, biased variance,
// statistics in fp32 (fp64 for fp64 input). CUDA: one warp per row, fused forward and backward.
#pragma once
#include "autograd/tensor.h"

namespace mo {

// x (..., C), w (C), b (C) -> (..., C)
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps = 1e-6);

// The op's two halves without autograd, on the tensors' device (for fused ops built from LayerNorm):
// x (R, C) contiguous; y like x; mean/rstd float32 [R] (float64 for float64 x); dx like x; dw/db like w.
void layer_norm_forward_into(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y,
                             const Tensor& mean, const Tensor& rstd);
void layer_norm_backward_into(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                              const Tensor& dx, const Tensor& dw, const Tensor& db);

namespace cuda {
// mean/rstd: float32 [rows]
void layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y,
                        const Tensor& mean, const Tensor& rstd);
// dw/db: same dtype as w (accumulated in fp32, deterministic)
void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& dx, const Tensor& dw, const Tensor& db);
}  // namespace cuda

}  // namespace mo
