// conv2d_gemm.cu: the dense channels-last convolution as im2col + cuBLASLt GEMMs, forward and backward.
// cuDNN's deterministic backward algorithms for NHWC bf16 3×3 stride-2 convolutions with few
// channels (the stem's Ci = 3) were measured at ~120 ms per call on the H200 (595 ms of a 660 ms
// mambaout_tiny step), and its forward at 12 ms for the five convolutions; these passes take a few ms:
//   cols[M, Kp] = im2col(x)         M = B·Ho·Wo rows, K = kh·kw·Ci columns in (ky, kx, ci) order,
//                                    zero-padded to Kp = ⌈K/8⌉·8 so every leading dimension is
//                                    16-byte aligned (cuBLASLt's tensor-core condition; K = 27 for the stem)
//   y = cols · Wᵣᵀ + b               (forward GEMM with the bias epilogue)
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
  int Kp;  // padded row length of cols / Wᵣ
};

Geo make_geo(const Tensor& x, const Tensor& w, int Ho, int Wo, int stride, int pad) {
  Geo g{static_cast<int>(x.size(0)), static_cast<int>(x.size(1)), static_cast<int>(x.size(2)),
        static_cast<int>(x.size(3)), static_cast<int>(w.size(0)), static_cast<int>(w.size(2)),
        static_cast<int>(w.size(3)), Ho, Wo, stride, pad, 0};
  int K = g.kh * g.kw * g.Ci;
  g.Kp = (K + 7) / 8 * 8;
  return g;
}

template <typename T>
__global__ void im2col_nhwc(const T* __restrict__ x, T* __restrict__ cols, Geo g, int64_t total) {
  const int K = g.kh * g.kw * g.Ci;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t m = i / g.Kp;
    int k = static_cast<int>(i - m * g.Kp);
    if (k >= K) {  // padding column
      cols[i] = cu::from_float<T>(0.0f);
      continue;
    }
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
  const int64_t K = g.Kp;
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

// OIHW <-> Wᵣ[Co, Kp] with columns (ky, kx, ci) and zero padding (to_ohwi: the padding is written).
template <typename T>
__global__ void reorder_weight(const T* __restrict__ src, T* __restrict__ dst, Geo g, bool to_ohwi) {
  const int khw = g.kh * g.kw, K = khw * g.Ci;
  int64_t total = static_cast<int64_t>(g.Co) * g.Kp;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t o = i / g.Kp;
    int kk = static_cast<int>(i - o * g.Kp);  // column of Wᵣ
    if (kk >= K) {
      if (to_ohwi) dst[i] = cu::from_float<T>(0.0f);
      continue;
    }
    int ci = kk % g.Ci, k = kk / g.Ci;
    int64_t j = (o * g.Ci + ci) * khw + k;  // OIHW index
    if (to_ohwi) dst[i] = src[j];
    else dst[j] = src[i];
  }
}

}  // namespace

void conv2d_forward_gemm(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad, const Tensor& y) {
  Geo g = make_geo(x, w, static_cast<int>(y.size(1)), static_cast<int>(y.size(2)), stride, pad);
  const int64_t M = static_cast<int64_t>(g.B) * g.Ho * g.Wo, K = g.Kp;
  Device dev = x.device();
  Tensor cols = Tensor::empty({M, K}, x.dtype(), dev);
  Tensor wr = Tensor::empty({g.Co, K}, w.dtype(), dev);
  cu::float_dispatch("conv2d", x, [&](auto z) {
    using T = decltype(z);
    im2col_nhwc<T><<<cu::grid_1d(M * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(x), cu::ptr<T>(cols), g, M * K);
    CUDA_CHECK_LAUNCH();
    reorder_weight<T><<<cu::grid_1d(g.Co * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(w), cu::ptr<T>(wr), g, true);
    CUDA_CHECK_LAUNCH();
  });
  gemm(cols, false, wr, true, y.view({M, g.Co}), 1.0f, 0.0f, b);  // y = cols · Wᵣᵀ + b
}

void conv2d_backward_gemm(const Tensor& dy, const Tensor& x, const Tensor& w, int stride, int pad, const Tensor& dx,
                          const Tensor& dw, const Tensor& db) {
  Geo g = make_geo(x, w, static_cast<int>(dy.size(1)), static_cast<int>(dy.size(2)), stride, pad);
  const int64_t M = static_cast<int64_t>(g.B) * g.Ho * g.Wo, K = g.Kp;
  Device dev = x.device();
  Tensor cols = Tensor::empty({M, K}, x.dtype(), dev);
  Tensor dy2 = dy.view({M, g.Co});
  cu::float_dispatch("conv2d", x, [&](auto z) {
    using T = decltype(z);
    im2col_nhwc<T><<<cu::grid_1d(M * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(x), cu::ptr<T>(cols), g, M * K);
    CUDA_CHECK_LAUNCH();
    Tensor dwr = Tensor::empty({g.Co, K}, w.dtype(), dev);
    gemm(dy2, true, cols, false, dwr, 1.0f, 0.0f, Tensor());  // dWᵣ = dyᵀ · cols
    reorder_weight<T><<<cu::grid_1d(g.Co * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(dwr), cu::ptr<T>(dw), g, false);
    CUDA_CHECK_LAUNCH();
    if (dx.defined()) {
      Tensor wr = Tensor::empty({g.Co, K}, w.dtype(), dev);
      reorder_weight<T><<<cu::grid_1d(g.Co * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(w), cu::ptr<T>(wr), g, true);
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
