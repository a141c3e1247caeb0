// activation.cpp: GELU / SiLU forward and backward (dx = dy · act'(x)), CPU kernels and dispatch.
#include "ops/activation/activation.h"

#include "ops/common.h"
#include "ops/cpu/simd.h"

namespace mo {

const char* act_name(Act a) { return a == Act::gelu ? "gelu" : "silu"; }
Act act_from_name(const std::string& n) {
  if (n == "gelu") return Act::gelu;
  if (n == "silu") return Act::silu;
  MO_FAIL("unknown activation '{}' (expected gelu or silu)", n);
}

static Tensor act_grad_raw(Act a, const Tensor& x, const Tensor& dy_in) {
  Tensor dy = dy_in.contiguous();
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    MO_CUDA_DISPATCH(act_name(a), cuda::act_backward(a, x, dy, dx));
    return dx;
  }
  cpu_float_dispatch(act_name(a), x, [&](auto z) {
    using T = decltype(z);
    const T *px = x.data<T>(), *pd = dy.data<T>();
    T* po = dx.data<T>();
    int64_t n = x.numel();
    if constexpr (std::is_same_v<T, float>)
      if (simd::act_backward(a, px, pd, po, n)) return;
#pragma omp parallel for if (n > 16384)
    for (int64_t i = 0; i < n; ++i) po[i] = pd[i] * act_grad<T>(a, px[i]);
  });
  return dx;
}

Tensor activation(const Tensor& x_in, Act a) {
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    MO_CUDA_DISPATCH(act_name(a), cuda::act_forward(a, x, y));
  } else {
    cpu_float_dispatch(act_name(a), x, [&](auto z) {
      using T = decltype(z);
      const T* px = x.data<T>();
      T* py = y.data<T>();
      int64_t n = x.numel();
      if constexpr (std::is_same_v<T, float>)
        if (simd::act_forward(a, px, py, n)) return;
#pragma omp parallel for if (n > 16384)
      for (int64_t i = 0; i < n; ++i) py[i] = act_value<T>(a, px[i]);
    });
  }
  record(act_name(a), {x_in}, {&y}, [sx = Saved(x, act_name(a)), a](std::vector<Tensor>& g) -> std::vector<Tensor> {
    return {act_grad_raw(a, sx.get(), g[0])};
  });
  return y;
}

Tensor gelu(const Tensor& x) { return activation(x, Act::gelu); }
Tensor silu(const Tensor& x) { return activation(x, Act::silu); }

}  // namespace mo
