// layers.cpp: Linear, Conv2d, LayerNorm and the truncated-normal initialiser.
#include "nn/layers.h"

#include "ops/conv/conv2d.h"
#include "ops/linear/linear.h"
#include "ops/norm/layer_norm.h"

namespace mo::nn {

Tensor Init::trunc_normal(const Shape& shape, double std, double lo, double hi) {
  uint64_t stream = next_stream++;
  if (skip) return Tensor::zeros(shape, DType::f32);
  Tensor t = Tensor::empty(shape, DType::f32);
  float* p = t.data<float>();
  int64_t n = t.numel();
  // element i draws normal number i of its parameter's stream (counter-based: parallel and
  // deterministic); a draw outside [lo, hi] is redrawn at i + n, i + 2n, ... (timm's cut-offs are
  // absolute, ±2 ≫ 0.02, so this almost never happens)
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    double v;
    uint64_t k = static_cast<uint64_t>(i);
    do {
      v = philox_normal(seed, stream, k) * std;
      k += static_cast<uint64_t>(n);
    } while (v < lo || v > hi);
    p[i] = static_cast<float>(v);
  }
  return t;
}

Linear::Linear(int64_t in, int64_t out, Init& init, bool has_bias) : in_features(in), out_features(out) {
  weight = &register_parameter("weight", init.trunc_normal({out, in}));
  bias = has_bias ? &register_parameter("bias", Tensor::zeros({out})) : nullptr;
}
Tensor Linear::forward(const Tensor& x) const { return linear(x, *weight, bias ? *bias : Tensor()); }

Conv2d::Conv2d(int64_t in, int64_t out, int k, int s, int p, Init& init)
    : in_channels(in), out_channels(out), kernel(k), stride(s), pad(p) {
  weight = &register_parameter("weight", init.trunc_normal({out, in, k, k}));
  bias = &register_parameter("bias", Tensor::zeros({out}));
}
Tensor Conv2d::forward(const Tensor& x) const { return conv2d(x, *weight, *bias, stride, pad); }

LayerNorm::LayerNorm(int64_t d, double e) : dim(d), eps(e) {
  weight = &register_parameter("weight", Tensor::full({d}, 1.0));
  bias = &register_parameter("bias", Tensor::zeros({d}));
}
Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, *weight, *bias, eps); }

}  // namespace mo::nn
