// activation.cu: CUDA halves of GELU (exact, erf) and SiLU (see activation.h).
//
// Flat contiguous arrays through cu::map1 (forward: y = act(x)) and cu::map2 (backward:
// dx = dy·act'(x)): grid-stride loops over 16-byte packs when aligned, fp32 math, one rounding to the
// storage type. Memory-bound; the formulas are the ones of act_value / act_grad in activation.h,
// written with erff / expf (full-precision, not the fast intrinsics).
#include "ops/activation/activation.h"

#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

constexpr float kSqrtHalf = 0.70710678118654752440f;    // 1/√2
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;  // 1/√(2π)

struct GeluForward {
  __device__ float operator()(float x) const { return x * 0.5f * (1.0f + erff(x * kSqrtHalf)); }
};
struct GeluBackward {  // (x, dy) -> dy · (Φ(x) + x·φ(x))
  __device__ float operator()(float x, float dy) const {
    const float cdf = 0.5f * (1.0f + erff(x * kSqrtHalf));
    const float pdf = expf(-0.5f * x * x) * kInvSqrt2Pi;
    return dy * (cdf + x * pdf);
  }
};
struct SiluForward {
  __device__ float operator()(float x) const { return x / (1.0f + expf(-x)); }
};
struct SiluBackward {  // (x, dy) -> dy · σ(x)(1 + x(1 − σ(x)))
  __device__ float operator()(float x, float dy) const {
    const float s = 1.0f / (1.0f + expf(-x));
    return dy * (s * (1.0f + x * (1.0f - s)));
  }
};

void check_pair(Act a, const Tensor& in, const Tensor& out) {
  MO_CHECK(in.is_contiguous() && out.is_contiguous() && in.numel() == out.numel() && in.dtype() == out.dtype() &&
               in.is_cuda() && out.device() == in.device(),
           "{}: CUDA kernel expects contiguous tensors of one dtype and size, got {} -> {}", act_name(a), in.str(),
           out.str());
}

}  // namespace

void act_forward(Act a, const Tensor& x, const Tensor& y) {
  check_pair(a, x, y);
  cu::float_dispatch(act_name(a), x, [&](auto z) {
    using T = decltype(z);
    if (a == Act::gelu) cu::map1<T>(GeluForward{}, cu::ptr<const T>(x), cu::ptr<T>(y), x.numel());
    else cu::map1<T>(SiluForward{}, cu::ptr<const T>(x), cu::ptr<T>(y), x.numel());
  });
}

void act_backward(Act a, const Tensor& x, const Tensor& dy, const Tensor& dx) {
  check_pair(a, x, dx);
  check_pair(a, dy, dx);
  cu::float_dispatch(act_name(a), x, [&](auto z) {
    using T = decltype(z);
    if (a == Act::gelu)
      cu::map2<T>(GeluBackward{}, cu::ptr<const T>(x), cu::ptr<const T>(dy), cu::ptr<T>(dx), x.numel());
    else
      cu::map2<T>(SiluBackward{}, cu::ptr<const T>(x), cu::ptr<const T>(dy), cu::ptr<T>(dx), x.numel());
  });
}

}  // namespace mo::cuda
