// layer_norm_linear.h: z = linear(layer_norm(x; γ, β, eps); W, b) as one op that does not keep the
// LayerNorm output for backward (it is recomputed there): the first half of every MambaOut block.
#pragma once
#include "autograd/tensor.h"

namespace mo {

// x (..., K), γ/β (K), W (N, K), b (N) or undefined -> (..., N); same values as
// linear(layer_norm(x, γ, β, eps), W, b), bit for bit, forward and backward.
Tensor layer_norm_linear(const Tensor& x, const Tensor& ln_w, const Tensor& ln_b, double eps, const Tensor& w,
                         const Tensor& b);

}  // namespace mo
