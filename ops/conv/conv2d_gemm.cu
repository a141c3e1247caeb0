// conv2d_gemm.cu: the backward of the dense channels-last convolution as im2col + cuBLASLt GEMMs.
// cuDNN's deterministic backward algorithms for NHWC bf16 3×3 stride-2 convolutions with few
// channels (the stem's Ci = 3) were measured at ~120 ms per call on the H200 (595 ms of a 660 ms
// mambaout_tiny step), while these three passes take a few ms:
//   cols[M, K] = im2col(x)          M = B·Ho·Wo rows, K = kh·kw·Ci columns in (ky, kx, ci) order
//   dWᵣ[Co, K] = dyᵀ · cols          (GEMM; deterministic), then reordered to OIHW
//   dcols[M, K] = dy · Wᵣ            (GEMM), then col2im as a gather: every input element sums the
//                                     ≤ ⌈k/s⌉² output taps that read it, in a fixed order (no atomics)
//   db = Σ_rows dy                  (cuda::sum_rows)
// cols and dcols share one scratch buffer from the caching allocator.
#include "ops/conv/conv2d.h"
#include "ops/cuda_utils.cuh"
#include "ops/linear/linear.h"

namespace mo::cuda {

namespace {

struct Geo {
  int B, H, W, Ci, Co, kh, kw, Ho, Wo, stride, pad;
};

template <typename T>
__global__ void im2col_nhwc(const T* __restrict__ x, T* __restrict__ cols, Geo g, int64_t total) {
  int64_t K = static_cast<int64_t>(g.kh) * g.kw * g.Ci;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t m = i / K;
    int k = static_cast<int>(i - m * K);
    int ci = k % g.Ci, t = k / g.Ci, kx = t % g.kw, ky = t / g.kw;
    int ox = static_cast<int>(m % g.Wo);
    int64_t r = m / g.Wo;
    int oy = static_cast<int>(r % g.Ho);
    int b = static_cast<int>(r / g.Ho);
    int iy = oy * g.stride - g.pad + ky, ix = ox * g.stride - g.pad + kx;
    T v = cu::from_float<T>(0.0f);
    if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) v = x[((static_cast<int64_t>(b) * g.H + iy) * g.W + ix) * g.Ci + ci];
    cols[i] = v;
  }
}

// dx[b, iy, ix, ci] = Σ over taps (ky, kx) with oy = (iy + pad − ky) / stride integral and in range.
template <typename T>
__global__ void col2im_gather_nhwc(const T* __restrict__ dcols, T* __restrict__ dx, Geo g, int64_t total) {
  int64_t K = static_cast<int64_t>(g.kh) * g.kw * g.Ci;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int ci = static_cast<int>(i % g.Ci);
    int64_t r = i / g.Ci;
    int ix = static_cast<int>(r % g.W);
    r /= g.W;
    int iy = static_cast<int>(r % g.H);
    int b = static_cast<int>(r / g.H);
    float acc = 0.0f;
    for (int ky = 0; ky < g.kh; ++ky) {
      int ny = iy + g.pad - ky;
      if (ny < 0 || ny % g.stride) continue;
      int oy = ny / g.stride;
      if (oy >= g.Ho) continue;
      for (int kx = 0; kx < g.kw; ++kx) {
        int nx = ix + g.pad - kx;
        if (nx < 0 || nx % g.stride) continue;
        int ox = nx / g.stride;
        if (ox >= g.Wo) continue;
        int64_t m = (static_cast<int64_t>(b) * g.Ho + oy) * g.Wo + ox;
        acc += cu::to_float(dcols[m * K + (ky * g.kw + kx) * g.Ci + ci]);
      }
    }
    dx[i] = cu::from_float<T>(acc);
  }
}

// OIHW <-> O(kh kw)I
template <typename T>
__global__ void reorder_weight(const T* __restrict__ src, T* __restrict__ dst, Geo g, bool to_ohwi) {
  int64_t total = static_cast<int64_t>(g.Co) * g.Ci * g.kh * g.kw;
  int khw = g.kh * g.kw;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // i indexes OIHW
    int k = static_cast<int>(i % khw);
    int64_t r = i / khw;
    int ci = static_cast<int>(r % g.Ci);
    int64_t o = r / g.Ci;
    int64_t j = (o * khw + k) * g.Ci + ci;  // O(HW)I index
    if (to_ohwi) dst[j] = src[i];
    else dst[i] = src[j];
  }
}

}  // namespace

void conv2d_backward_gemm(const Tensor& dy, const Tensor& x, const Tensor& w, int stride, int pad, const Tensor& dx,
                          const Tensor& dw, const Tensor& db) {
  Geo g{static_cast<int>(x.size(0)), static_cast<int>(x.size(1)), static_cast<int>(x.size(2)),
        static_cast<int>(x.size(3)), static_cast<int>(w.size(0)), static_cast<int>(w.size(2)),
        static_cast<int>(w.size(3)), static_cast<int>(dy.size(1)), static_cast<int>(dy.size(2)), stride, pad};
  const int64_t M = static_cast<int64_t>(g.B) * g.Ho * g.Wo, K = static_cast<int64_t>(g.kh) * g.kw * g.Ci;
  Device dev = x.device();
  Tensor cols = Tensor::empty({M, K}, x.dtype(), dev);
  Tensor dy2 = dy.view({M, g.Co});
  cu::float_dispatch("conv2d", x, [&](auto z) {
    using T = decltype(z);
    im2col_nhwc<T><<<cu::grid_1d(M * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(x), cu::ptr<T>(cols), g, M * K);
    CUDA_CHECK_LAUNCH();
    Tensor dwr = Tensor::empty({g.Co, K}, w.dtype(), dev);
    gemm(dy2, true, cols, false, dwr, 1.0f, 0.0f, Tensor());  // dWᵣ = dyᵀ · cols
    reorder_weight<T><<<cu::grid_1d(dw.numel(), 256), 256, 0, stream()>>>(cu::ptr<const T>(dwr), cu::ptr<T>(dw), g, false);
    CUDA_CHECK_LAUNCH();
    if (dx.defined()) {
      Tensor wr = Tensor::empty({g.Co, K}, w.dtype(), dev);
      reorder_weight<T><<<cu::grid_1d(w.numel(), 256), 256, 0, stream()>>>(cu::ptr<const T>(w), cu::ptr<T>(wr), g, true);
      CUDA_CHECK_LAUNCH();
      gemm(dy2, false, wr, false, cols, 1.0f, 0.0f, Tensor());  // dcols = dy · Wᵣ (reuses cols)
      col2im_gather_nhwc<T><<<cu::grid_1d(dx.numel(), 256), 256, 0, stream()>>>(cu::ptr<const T>(cols), cu::ptr<T>(dx),
                                                                                 g, dx.numel());
      CUDA_CHECK_LAUNCH();
    }
  });
  if (db.defined()) sum_rows(dy2, db);
}

}  // namespace mo::cuda
