// layer_norm.cpp: LayerNorm forward/backward on the CPU, checks and the autograd node; the device-
// dispatching forward/backward bodies are also the building blocks of ops/fused/layer_norm_linear.
//   x̂ = (x − μ)·rstd;  y = x̂·w + b
//   dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)),  g = dy ⊙ w;   dw = Σ dy ⊙ x̂;   db = Σ dy
#include "ops/norm/layer_norm.h"

#include <cmath>

#include "ops/common.h"
#include "ops/cpu/simd.h"

namespace mo {

void layer_norm_forward_into(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& y,
                             const Tensor& mean, const Tensor& rstd) {
  const int64_t C = w.size(0), R = x.numel() / C;
  if (x.is_cuda()) {
    MO_CUDA_DISPATCH("layer_norm", cuda::layer_norm_forward(x, w, b, eps, y, mean, rstd));
  } else {
    cpu_float_dispatch("layer_norm", x, [&](auto z) {
      using T = decltype(z);
      const T *px = x.data<T>(), *pw = w.data<T>(), *pb = b.data<T>();
      T *py = y.data<T>(), *pm = mean.data<T>(), *pr = rstd.data<T>();
      if constexpr (std::is_same_v<T, float>)
        if (simd::layer_norm_forward(px, pw, pb, static_cast<float>(eps), py, pm, pr, R, C)) return;
#pragma omp parallel for if (R * C > 16384)
      for (int64_t r = 0; r < R; ++r) {
        const T* xr = px + r * C;
        double s = 0, s2 = 0;
        for (int64_t c = 0; c < C; ++c) s += xr[c];
        double mu = s / C;
        for (int64_t c = 0; c < C; ++c) s2 += (xr[c] - mu) * (xr[c] - mu);
        T rs = static_cast<T>(1.0 / std::sqrt(s2 / C + eps));
        T m = static_cast<T>(mu);
        pm[r] = m;
        pr[r] = rs;
        for (int64_t c = 0; c < C; ++c) py[r * C + c] = (xr[c] - m) * rs * pw[c] + pb[c];
      }
    });
  }
}

void layer_norm_backward_into(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                              const Tensor& dx, const Tensor& dw, const Tensor& db) {
  const int64_t C = w.size(0), R = x.numel() / C;
  if (x.is_cuda()) {
    MO_CUDA_DISPATCH("layer_norm", cuda::layer_norm_backward(dy, x, w, mean, rstd, dx, dw, db));
    return;
  }
  cpu_float_dispatch("layer_norm", x, [&](auto z) {
    using T = decltype(z);
    const T *px = x.data<T>(), *pw = w.data<T>(), *pd = dy.data<T>(), *pm = mean.data<T>(), *pr = rstd.data<T>();
    T* pdx = dx.data<T>();
    if constexpr (std::is_same_v<T, float>)
      if (simd::layer_norm_backward(pd, px, pw, pm, pr, pdx, dw.data<T>(), db.data<T>(), R, C)) return;
#pragma omp parallel for if (R * C > 16384)
    for (int64_t r = 0; r < R; ++r) {
      const T *xr = px + r * C, *dr = pd + r * C;
      T m = pm[r], rs = pr[r];
      double sg = 0, sgx = 0;
      for (int64_t c = 0; c < C; ++c) {
        double gg = dr[c] * pw[c];
        sg += gg;
        sgx += gg * (xr[c] - m) * rs;
      }
      T mg = static_cast<T>(sg / C), mgx = static_cast<T>(sgx / C);
      for (int64_t c = 0; c < C; ++c) pdx[r * C + c] = rs * (dr[c] * pw[c] - mg - (xr[c] - m) * rs * mgx);
    }
    // dw, db: column sums, threads over columns (deterministic)
    T *pdw = dw.data<T>(), *pdb = db.data<T>();
#pragma omp parallel for if (R * C > 16384)
    for (int64_t c = 0; c < C; ++c) {
      T sw = 0, sb = 0;
      for (int64_t r = 0; r < R; ++r) {
        sw += pd[r * C + c] * (px[r * C + c] - pm[r]) * pr[r];
        sb += pd[r * C + c];
      }
      pdw[c] = sw;
      pdb[c] = sb;
    }
  });
}

Tensor layer_norm(const Tensor& x_in, const Tensor& w, const Tensor& b, double eps) {
  MO_CHECK(x_in.dim() >= 1 && w.dim() == 1 && b.dim() == 1 && w.size(0) == x_in.size(-1) && b.size(0) == w.size(0),
           "layer_norm: weight {} / bias {} do not match the last dim of input {}", w.str(), b.str(), x_in.str());
  check_same("layer_norm", {&x_in, &w, &b});
  Tensor x = x_in.contiguous();
  int64_t C = w.size(0), R = x.numel() / C;
  DType stat_t = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({R}, stat_t, x.device()), rstd = Tensor::empty({R}, stat_t, x.device());
  layer_norm_forward_into(x, w, b, eps, y, mean, rstd);
  record("layer_norm", {x_in, w, b}, {&y},
         [sx = Saved(x, "layer_norm"), sw = Saved(w, "layer_norm"), mean, rstd, C](std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Tensor& x = sx.get();
           const Tensor& w = sw.get();
           Tensor dy = g[0].contiguous();
           Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
           Tensor dw = Tensor::empty({C}, w.dtype(), w.device()), db = Tensor::empty({C}, w.dtype(), w.device());
           layer_norm_backward_into(dy, x, w, mean, rstd, dx, dw, db);
           return {dx, dw, db};
         });
  return y;
}

}  // namespace mo
