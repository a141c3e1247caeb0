// dwconv2d.cpp: depthwise convolution on the CPU.
//   y[b,i,j,c] = bias[c] + Σ_{u,v} w[c,u,v] · x[b, i+u−p, j+v−p, c]
//   dx[b,i,j,c] = Σ_{u,v} w[c,u,v] · dy[b, i−u+p, j−v+p, c]
//   dw[c,u,v] = Σ_{b,i,j} dy[b,i,j,c] · x[b, i+u−p, j+v−p, c]   (per-sample partials, summed in order)
#include "ops/conv/dwconv2d.h"

#include <vector>

#include "ops/common.h"
#include "ops/cpu/simd.h"

namespace mo {

template <typename T>
void dwconv2d_forward_cpu(const T* x, int64_t ldx, const T* w, const T* b, T* y, int64_t ldy, int64_t B, int64_t H,
                          int64_t W, int64_t C, int k, int pad) {
  // weights transposed to (u, v, c) so the inner loop runs over contiguous channels
  std::vector<T> wt(k * k * C);
  for (int64_t c = 0; c < C; ++c)
    for (int u = 0; u < k * k; ++u) wt[u * C + c] = w[c * k * k + u];
  if constexpr (std::is_same_v<T, float>)
    if (simd::dwconv_forward(x, ldx, wt.data(), b, y, ldy, B, H, W, C, k, pad)) return;
#pragma omp parallel for collapse(2)
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t i = 0; i < H; ++i) {
      std::vector<T> acc(C);
      for (int64_t j = 0; j < W; ++j) {
        for (int64_t c = 0; c < C; ++c) acc[c] = b ? b[c] : T(0);
        for (int u = 0; u < k; ++u) {
          int64_t ii = i + u - pad;
          if (ii < 0 || ii >= H) continue;
          for (int v = 0; v < k; ++v) {
            int64_t jj = j + v - pad;
            if (jj < 0 || jj >= W) continue;
            const T* xp = x + ((bb * H + ii) * W + jj) * ldx;
            const T* wp = wt.data() + (u * k + v) * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += wp[c] * xp[c];
          }
        }
        T* yp = y + ((bb * H + i) * W + j) * ldy;
        for (int64_t c = 0; c < C; ++c) yp[c] = acc[c];
      }
    }
}

template <typename T>
void dwconv2d_backward_cpu(const T* dy, int64_t ldy, const T* x, int64_t ldx, const T* w, T* dx, int64_t lddx, T* dw,
                           T* db, int64_t B, int64_t H, int64_t W, int64_t C, int k, int pad) {
  if (dx) {
    // dx is a correlation of dy with the flipped kernel: reuse the forward with w flipped.
    std::vector<T> wf(C * k * k);
    for (int64_t c = 0; c < C; ++c)
      for (int u = 0; u < k; ++u)
        for (int v = 0; v < k; ++v) wf[(c * k + u) * k + v] = w[(c * k + (k - 1 - u)) * k + (k - 1 - v)];
    dwconv2d_forward_cpu<T>(dy, ldy, wf.data(), nullptr, dx, lddx, B, H, W, C, k, k - 1 - pad);
  }
  // per-sample partial sums (kk·C + C for the bias), then a fixed-order reduction over samples
  int64_t per = k * k * C + C;
  std::vector<T> part(B * per, T(0));
  bool done = false;
  if constexpr (std::is_same_v<T, float>) done = simd::dwconv_weight_grad(dy, ldy, x, ldx, part.data(), B, H, W, C, k, pad);
#pragma omp parallel for if (!done)
  for (int64_t bb = 0; bb < (done ? 0 : B); ++bb) {
    T* pw = part.data() + bb * per;  // (u, v, c)
    T* pb = pw + k * k * C;
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const T* g = dy + ((bb * H + i) * W + j) * ldy;
        for (int64_t c = 0; c < C; ++c) pb[c] += g[c];
        for (int u = 0; u < k; ++u) {
          int64_t ii = i + u - pad;
          if (ii < 0 || ii >= H) continue;
          for (int v = 0; v < k; ++v) {
            int64_t jj = j + v - pad;
            if (jj < 0 || jj >= W) continue;
            const T* xp = x + ((bb * H + ii) * W + jj) * ldx;
            T* q = pw + (u * k + v) * C;
            for (int64_t c = 0; c < C; ++c) q[c] += g[c] * xp[c];
          }
        }
      }
  }
  for (int64_t c = 0; c < C; ++c) {
    for (int u = 0; u < k * k; ++u) {
      T s = 0;
      for (int64_t bb = 0; bb < B; ++bb) s += part[bb * per + u * C + c];
      dw[c * k * k + u] = s;
    }
    if (db) {
      T s = 0;
      for (int64_t bb = 0; bb < B; ++bb) s += part[bb * per + k * k * C + c];
      db[c] = s;
    }
  }
}

template void dwconv2d_forward_cpu<float>(const float*, int64_t, const float*, const float*, float*, int64_t, int64_t,
                                          int64_t, int64_t, int64_t, int, int);
template void dwconv2d_forward_cpu<double>(const double*, int64_t, const double*, const double*, double*, int64_t,
                                           int64_t, int64_t, int64_t, int64_t, int, int);
template void dwconv2d_backward_cpu<float>(const float*, int64_t, const float*, int64_t, const float*, float*, int64_t,
                                           float*, float*, int64_t, int64_t, int64_t, int64_t, int, int);
template void dwconv2d_backward_cpu<double>(const double*, int64_t, const double*, int64_t, const double*, double*,
                                            int64_t, double*, double*, int64_t, int64_t, int64_t, int64_t, int, int);

Tensor dwconv2d(const Tensor& x_in, const Tensor& w, const Tensor& b, int pad) {
  MO_CHECK(x_in.dim() == 4 && w.dim() == 4 && w.size(1) == 1 && w.size(2) == w.size(3) && w.size(0) == x_in.size(3),
           "dwconv2d: input {} (B, H, W, C) does not match depthwise weight {} (C, 1, k, k)", x_in.str(), w.str());
  MO_CHECK(b.dim() == 1 && b.size(0) == w.size(0), "dwconv2d: bias {} does not match weight {}", b.str(), w.str());
  int k = static_cast<int>(w.size(2));
  MO_CHECK(k % 2 == 1 && 2 * pad == k - 1, "dwconv2d: only 'same' padding (pad = (k-1)/2) is supported, got k {} pad {}", k, pad);
  check_same("dwconv2d", {&x_in, &w, &b});
  Tensor x = x_in.contiguous();
  int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cuda()) {
    MO_CUDA_DISPATCH("dwconv2d", cuda::dwconv2d_forward(x, w.contiguous(), b, pad, y));
  } else {
    cpu_float_dispatch("dwconv2d", x, [&](auto z) {
      using T = decltype(z);
      dwconv2d_forward_cpu<T>(x.data<T>(), C, w.contiguous().data<T>(), b.data<T>(), y.data<T>(), C, B, H, W, C, k, pad);
    });
  }
  record("dwconv2d", {x_in, w, b}, {&y},
         [sx = Saved(x, "dwconv2d"), sw = Saved(w.contiguous(), "dwconv2d"), pad, k, B, H, W, C](std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor& x = sx.get();
           const Tensor& w = sw.get();
           Tensor dy = g[0].contiguous();
           Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
           Tensor dw = Tensor::empty(w.shape(), w.dtype(), w.device()), db = Tensor::empty({C}, w.dtype(), w.device());
           if (x.is_cuda()) {
             MO_CUDA_DISPATCH("dwconv2d", cuda::dwconv2d_backward(dy, x, w, pad, dx, dw, db));
             return {dx, dw, db};
           }
           cpu_float_dispatch("dwconv2d", x, [&](auto z) {
             using T = decltype(z);
             dwconv2d_backward_cpu<T>(dy.data<T>(), C, x.data<T>(), C, w.data<T>(), dx.data<T>(), C, dw.data<T>(),
                                      db.data<T>(), B, H, W, C, k, pad);
           });
           return {dx, dw, db};
         });
  return y;
}

}  // namespace mo
