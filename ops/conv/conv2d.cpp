// conv2d.cpp: channels-last convolution on the CPU via im2col (rows = output pixels, columns =
// (ky, kx, ci)) and gemm against the weight reordered to (Co, kh, kw, Ci).
//   y = cols · Wᵣᵀ + b;   dWᵣ = dyᵀ · cols;   dcols = dy · Wᵣ → col2im → dx;   db = Σ dy
#include "ops/conv/conv2d.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "ops/common.h"

namespace mo {

namespace {

struct Geo {
  int64_t B, H, W, Ci, Co, kh, kw, Ho, Wo;
  int stride, pad;
  int64_t M() const { return B * Ho * Wo; }
  int64_t K() const { return kh * kw * Ci; }
};

template <typename T>
void im2col(const T* x, T* cols, const Geo& g) {
  // for one (ky), the taps kx = 0..kw−1 read consecutive pixels: one copy of kw·Ci values when all lie
  // inside the row, per tap with zero fill at the borders
  const int64_t span = g.kw * g.Ci;
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t oy = 0; oy < g.Ho; ++oy)
      for (int64_t ox = 0; ox < g.Wo; ++ox) {
        T* row = cols + ((b * g.Ho + oy) * g.Wo + ox) * g.K();
        const int64_t ix0 = ox * g.stride - g.pad;
        const bool inside = ix0 >= 0 && ix0 + g.kw <= g.W;
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          int64_t iy = oy * g.stride - g.pad + ky;
          T* dst = row + ky * span;
          if (iy < 0 || iy >= g.H) {
            std::fill(dst, dst + span, T(0));
          } else if (inside) {
            std::copy_n(x + ((b * g.H + iy) * g.W + ix0) * g.Ci, span, dst);
          } else {
            for (int64_t kx = 0; kx < g.kw; ++kx) {
              int64_t ix = ix0 + kx;
              T* d = dst + kx * g.Ci;
              if (ix < 0 || ix >= g.W) std::fill(d, d + g.Ci, T(0));
              else std::copy_n(x + ((b * g.H + iy) * g.W + ix) * g.Ci, g.Ci, d);
            }
          }
        }
      }
}

template <typename T>
void col2im(const T* cols, T* dx, const Geo& g) {
  // Each sample is independent; within a sample, accumulate in a fixed order (deterministic).
#pragma omp parallel for
  for (int64_t b = 0; b < g.B; ++b) {
    T* xb = dx + b * g.H * g.W * g.Ci;
    for (int64_t i = 0; i < g.H * g.W * g.Ci; ++i) xb[i] = 0;
    for (int64_t oy = 0; oy < g.Ho; ++oy)
      for (int64_t ox = 0; ox < g.Wo; ++ox) {
        const T* row = cols + ((b * g.Ho + oy) * g.Wo + ox) * g.K();
        const int64_t ix0 = ox * g.stride - g.pad, span = g.kw * g.Ci;
        const bool inside = ix0 >= 0 && ix0 + g.kw <= g.W;
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          int64_t iy = oy * g.stride - g.pad + ky;
          if (iy < 0 || iy >= g.H) continue;
          const T* src = row + ky * span;
          if (inside) {  // same order of additions as per tap: each element gets one add here
            T* dst = xb + (iy * g.W + ix0) * g.Ci;
            for (int64_t e = 0; e < span; ++e) dst[e] += src[e];
            continue;
          }
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            int64_t ix = ix0 + kx;
            if (ix < 0 || ix >= g.W) continue;
            T* dst = xb + (iy * g.W + ix) * g.Ci;
            for (int64_t c = 0; c < g.Ci; ++c) dst[c] += src[kx * g.Ci + c];
          }
        }
      }
  }
}

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, const T* B, T* C) {
  auto TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  int64_t lda = ta ? M : K, ldb = tb ? K : N;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
  else
    cblas_dgemm(CblasRowMajor, TA, TB, M, N, K, 1.0, A, lda, B, ldb, 0.0, C, N);
}

// OIHW <-> O(HW)I reorder
template <typename T>
void reorder_w(const T* src, T* dst, const Geo& g, bool to_ohwi) {
  for (int64_t o = 0; o < g.Co; ++o)
    for (int64_t ci = 0; ci < g.Ci; ++ci)
      for (int64_t k = 0; k < g.kh * g.kw; ++k) {
        int64_t oihw = (o * g.Ci + ci) * g.kh * g.kw + k, ohwi = (o * g.kh * g.kw + k) * g.Ci + ci;
        if (to_ohwi) dst[ohwi] = src[oihw];
        else dst[oihw] = src[ohwi];
      }
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& b, int stride, int pad) {
  MO_CHECK(x_in.dim() == 4 && w_in.dim() == 4 && x_in.size(3) == w_in.size(1),
           "conv2d: input {} (B, H, W, Ci) does not match weight {} (Co, Ci, kh, kw)", x_in.str(), w_in.str());
  MO_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == w_in.size(0)), "conv2d: bias {} does not match weight {}",
           b.str(), w_in.str());
  MO_CHECK(stride >= 1 && pad >= 0, "conv2d: bad stride {} / pad {}", stride, pad);
  check_same("conv2d", {&x_in, &w_in, &b});
  Tensor x = x_in.contiguous(), w = w_in.contiguous();
  Geo g{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(2), w.size(3), 0, 0, stride, pad};
  g.Ho = (g.H + 2 * pad - g.kh) / stride + 1;
  g.Wo = (g.W + 2 * pad - g.kw) / stride + 1;
  MO_CHECK(g.Ho > 0 && g.Wo > 0, "conv2d: input {} too small for kernel {}x{} pad {}", x.str(), g.kh, g.kw, pad);
  Tensor y = Tensor::empty({g.B, g.Ho, g.Wo, g.Co}, x.dtype(), x.device());
  if (x.is_cuda()) {
    MO_CUDA_DISPATCH("conv2d", cuda::conv2d_forward(x, w, b, stride, pad, y));
  } else {
    cpu_float_dispatch("conv2d", x, [&](auto z) {
      using T = decltype(z);
      Tensor cols = Tensor::empty({g.M(), g.K()}, x.dtype());
      Tensor wr = Tensor::empty({g.Co, g.K()}, x.dtype());
      im2col(x.data<T>(), cols.data<T>(), g);
      reorder_w(w.data<T>(), wr.data<T>(), g, true);
      T* py = y.data<T>();
      gemm<T>(false, true, g.M(), g.Co, g.K(), cols.data<T>(), wr.data<T>(), py);
      if (b.defined()) {
        const T* pb = b.data<T>();
#pragma omp parallel for
        for (int64_t m = 0; m < g.M(); ++m)
          for (int64_t o = 0; o < g.Co; ++o) py[m * g.Co + o] += pb[o];
      }
    });
  }
  bool need_dx = x_in.requires_grad(), has_b = b.defined();
  record("conv2d", {x_in, w_in, b}, {&y},
         [sx = Saved(x, "conv2d"), sw = Saved(w, "conv2d"), g, need_dx, has_b](std::vector<Tensor>& gr) -> std::vector<Tensor> {
           const Tensor& x = sx.get();
           const Tensor& w = sw.get();
           Tensor dy = gr[0].contiguous();
           Tensor dx = need_dx ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
           Tensor dw = Tensor::empty(w.shape(), w.dtype(), w.device());
           Tensor db = has_b ? Tensor::empty({g.Co}, w.dtype(), w.device()) : Tensor();
           if (x.is_cuda()) {
             MO_CUDA_DISPATCH("conv2d", cuda::conv2d_backward(dy, x, w, g.stride, g.pad, dx, dw, db));
             return {dx, dw, db};
           }
           cpu_float_dispatch("conv2d", x, [&](auto z) {
             using T = decltype(z);
             Tensor cols = Tensor::empty({g.M(), g.K()}, x.dtype());
             im2col(x.data<T>(), cols.data<T>(), g);
             Tensor dwr = Tensor::empty({g.Co, g.K()}, x.dtype());
             gemm<T>(true, false, g.Co, g.K(), g.M(), dy.data<T>(), cols.data<T>(), dwr.data<T>());
             reorder_w(dwr.data<T>(), dw.data<T>(), g, false);
             if (need_dx) {
               Tensor wr = Tensor::empty({g.Co, g.K()}, x.dtype());
               reorder_w(w.data<T>(), wr.data<T>(), g, true);
               gemm<T>(false, false, g.M(), g.K(), g.Co, dy.data<T>(), wr.data<T>(), cols.data<T>());  // dcols
               col2im(cols.data<T>(), dx.data<T>(), g);
             }
             if (has_b) {
               const T* pd = dy.data<T>();
               T* pb = db.data<T>();
#pragma omp parallel for
               for (int64_t o = 0; o < g.Co; ++o) {
                 T s = 0;
                 for (int64_t m = 0; m < g.M(); ++m) s += pd[m * g.Co + o];
                 pb[o] = s;
               }
             }
           });
           return {dx, dw, db};
         });
  return y;
}

}  // namespace mo
