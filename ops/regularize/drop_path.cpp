// drop_path.cpp: y = x · s_b (s_b = keep_b / (1 − p));  dx = dy · s_b.
#include "ops/regularize/drop_path.h"

#include "autograd/rng.h"
#include "ops/common.h"

namespace mo {

std::vector<float> drop_path_scales(int64_t batch, double p, uint64_t seed, uint64_t stream) {
  std::vector<float> s(batch);
  double keep = 1.0 - p;
  float keepf = static_cast<float>(keep);
  for (int64_t b = 0; b < batch; ++b)  // the CUDA kernel computes exactly this expression
    s[b] = philox_uniform(seed, stream, static_cast<uint64_t>(b)) < keepf ? 1.0f / keepf : 0.0f;
  return s;
}

static Tensor scale_rows(const Tensor& x_in, double p, uint64_t seed, uint64_t stream) {
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  int64_t B = x.size(0), n = x.numel() / B;
  if (x.is_cuda()) {
    MO_CUDA_DISPATCH("drop_path", cuda::drop_path_rows(x, static_cast<float>(1.0 - p), seed, stream, y));
    return y;
  }
  auto s = drop_path_scales(B, p, seed, stream);
  const float* ps = s.data();
  cpu_float_dispatch("drop_path", x, [&](auto z) {
    using T = decltype(z);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < n; ++i) py[b * n + i] = px[b * n + i] * static_cast<T>(ps[b]);
  });
  return y;
}

Tensor drop_path(const Tensor& x, double p, bool training, uint64_t seed, uint64_t stream) {
  MO_CHECK(p >= 0.0 && p < 1.0, "drop_path: rate {} must be in [0, 1)", p);
  if (!training || p == 0.0) return x;
  MO_CHECK(x.dim() >= 1, "drop_path: expected a batch dim, got {}", x.str());
  Tensor y = scale_rows(x, p, seed, stream);
  record("drop_path", {x}, {&y}, [p, seed, stream](std::vector<Tensor>& g) -> std::vector<Tensor> {
    return {scale_rows(g[0], p, seed, stream)};
  });
  return y;
}

}  // namespace mo
