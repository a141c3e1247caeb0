// activation.h: exact GELU, x·Φ(x) with Φ via erf (PyTorch's default), and SiLU x·σ(x) (timm's
// *_wide_rw / *_plus_rw variants).
#pragma once
#include <cmath>
#include <string>

#include "autograd/tensor.h"

namespace mo {

enum class Act { gelu, silu };
const char* act_name(Act a);
Act act_from_name(const std::string& name);  // "gelu" | "silu"

Tensor gelu(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor activation(const Tensor& x, Act a);

namespace cuda {
void act_forward(Act a, const Tensor& x, const Tensor& y);
void act_backward(Act a, const Tensor& x, const Tensor& dy, const Tensor& dx);
}  // namespace cuda

// Scalar forms shared by CPU kernels (and fused ops): value and derivative.
template <typename T>
inline T act_value(Act a, T x) {
  if (a == Act::gelu) return x * T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
  return x / (T(1) + std::exp(-x));
}
template <typename T>
inline T act_grad(Act a, T x) {
  if (a == Act::gelu) {
    T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
    T pdf = std::exp(T(-0.5) * x * x) * T(0.39894228040143267794);
    return cdf + x * pdf;
  }
  T s = T(1) / (T(1) + std::exp(-x));
  return s * (T(1) + x * (T(1) - s));
}

}  // namespace mo
