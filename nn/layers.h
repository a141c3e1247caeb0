// layers.h: the small modules the MambaOut family is built from (Linear, Conv2d, DepthwiseConv2d,
// LayerNorm, LayerScale) with the reference initialisation: conv/linear weights trunc_normal(std 0.02,
// cut-offs ±2 absolute), biases 0, LayerNorm weight 1 / bias 0, LayerScale γ = 1e-5 (timm).
// Parameter names match PyTorch ("weight", "bias", "gamma").
#pragma once
#include "autograd/rng.h"
#include "nn/module.h"

namespace mo::nn {

// Deterministic initialisation source: every parameter draws from its own Philox stream.
struct Init {
  uint64_t seed = 0;
  uint64_t next_stream = 1;
  bool skip = false;  // zeros instead of random draws (structure-only models, e.g. counting parameters)
  Tensor trunc_normal(const Shape& shape, double std = 0.02, double lo = -2.0, double hi = 2.0);
};

class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, Init& init, bool bias = true);
  Tensor forward(const Tensor& x) const;  // (..., in) -> (..., out)
  const char* type_name() const override { return "Linear"; }
  int64_t in_features, out_features;  // as stored (reference_shape("weight") where an owner pads them)
  Tensor* weight;  // (out, in)
  Tensor* bias;    // (out) or undefined
};

// Dense conv on channels-last input; weight kept in PyTorch OIHW layout.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int k, int stride, int pad, Init& init);
  Tensor forward(const Tensor& x) const;  // (B, H, W, in) -> (B, Ho, Wo, out)
  const char* type_name() const override { return "Conv2d"; }
  int64_t in_channels, out_channels;
  int kernel, stride, pad;
  Tensor *weight, *bias;
};

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t dim, double eps = 1e-6);
  Tensor forward(const Tensor& x) const;
  const char* type_name() const override { return "LayerNorm"; }
  int64_t dim;
  double eps;
  Tensor *weight, *bias;
};

}  // namespace mo::nn
