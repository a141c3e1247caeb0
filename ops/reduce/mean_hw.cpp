// mean_hw.cpp: y[b,c] = mean over h,w of x[b,h,w,c];  dx[b,h,w,c] = dy[b,c] / (H·W).
#include "ops/reduce/mean_hw.h"

#include "ops/common.h"

namespace mo {

Tensor mean_hw(const Tensor& x_in) {
  MO_CHECK(x_in.dim() == 4, "mean_hw: expected a (B, H, W, C) tensor, got {}", x_in.str());
  Tensor x = x_in.contiguous();
  int64_t B = x.size(0), HW = x.size(1) * x.size(2), C = x.size(3);
  Tensor y = Tensor::empty({B, C}, x.dtype(), x.device());
  if (x.is_cuda()) {
    MO_CUDA_DISPATCH("mean_hw", cuda::mean_hw_forward(x, y));
  } else {
    cpu_float_dispatch("mean_hw", x, [&](auto z) {
      using T = decltype(z);
      const T* px = x.data<T>();
      T* py = y.data<T>();
#pragma omp parallel for
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t c = 0; c < C; ++c) py[b * C + c] = 0;
        for (int64_t p = 0; p < HW; ++p)
          for (int64_t c = 0; c < C; ++c) py[b * C + c] += px[(b * HW + p) * C + c];
        for (int64_t c = 0; c < C; ++c) py[b * C + c] /= static_cast<T>(HW);
      }
    });
  }
  record("mean_hw", {x_in}, {&y}, [xs = x.shape()](std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dy = g[0].contiguous();
    Tensor dx = Tensor::empty(xs, dy.dtype(), dy.device());
    int64_t B = xs[0], HW = xs[1] * xs[2], C = xs[3];
    if (dy.is_cuda()) {
      MO_CUDA_DISPATCH("mean_hw", cuda::mean_hw_backward(dy, dx));
      return {dx};
    }
    cpu_float_dispatch("mean_hw", dy, [&](auto z) {
      using T = decltype(z);
      const T* pd = dy.data<T>();
      T* px = dx.data<T>();
#pragma omp parallel for
      for (int64_t b = 0; b < B; ++b)
        for (int64_t p = 0; p < HW; ++p)
          for (int64_t c = 0; c < C; ++c) px[(b * HW + p) * C + c] = pd[b * C + c] / static_cast<T>(HW);
    });
    return {dx};
  });
  return y;
}

}  // namespace mo
