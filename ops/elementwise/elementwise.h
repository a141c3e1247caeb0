// elementwise.h: add, mul, scale (same-shape tensors) and mul_channel (x · γ over the last dim, the
// LayerScale of timm's rw variants). Contiguous in, contiguous out.
#pragma once
#include "autograd/tensor.h"

namespace mo {

Tensor add(const Tensor& a, const Tensor& b);    // a + b
Tensor mul(const Tensor& a, const Tensor& b);    // a ⊙ b
Tensor scale(const Tensor& a, double s);         // s · a
Tensor mul_channel(const Tensor& x, const Tensor& gamma);  // x (..., C) ⊙ γ (C)

namespace cuda {
enum class BinaryOp { add, mul };
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);  // contiguous, same dtype
void scale(const Tensor& a, float s, const Tensor& out);
void mul_channel(const Tensor& x, const Tensor& gamma, const Tensor& out);
// dγ[c] = Σ_rows dy[r, c] · x[r, c] (fp32 accumulation, deterministic)
void mul_channel_grad_gamma(const Tensor& dy, const Tensor& x, const Tensor& dgamma);
}  // namespace cuda

}  // namespace mo
