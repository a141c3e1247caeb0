// conv2d_gemm.cu: the dense channels-last convolution as im2col + cuBLASLt GEMMs, forward and backward.
// It replaced cuDNN (now only in the kernel benchmark, tools/bench/conv2d_cudnn.cu): cuDNN's deterministic
// backward algorithms for NHWC bf16 3×3 stride-2 convolutions with few channels (the stem's Ci = 3) took
// ~120 ms per call on the H200, its forward 12 ms for the five convolutions; these passes take a few ms:
//   cols[M, Kp] = im2col(x)         M = B·Ho·Wo rows, K = kh·kw·Ci columns in (ky, kx, ci) order,
//                                    zero-padded to Kp = ⌈K/8⌉·8 so every leading dimension is
//                                    16-byte aligned (cuBLASLt's tensor-core condition; K = 27 for the stem)
//   y = cols · Wᵣᵀ + b               (forward GEMM with the bias epilogue)
//   dWᵣ[Co, K] = dyᵀ · cols          (GEMM; deterministic), then reordered to OIHW
//   dcols[M, K] = dy · Wᵣ            (GEMM), then col2im as a gather: every input element sums the
//                                     ≤ ⌈k/s⌉² output taps that read it, in a fixed order (no atomics)
//   db = Σ_rows dy                  (in the dW GEMM's BGRADB epilogue)
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

// Index decoding with 32-bit FastDiv (a multiply-high and a shift each) instead of 64-bit divisions:
// the old kernels spent ~150 (im2col) and ~400 (col2im) integer instructions per element on it.
// Every launch covers < 2^31 items (the host splits larger problems into slices of rows/pixels).
struct Divs {
  cu::FastDiv chunks;  // items per cols row (im2col) or per pixel (col2im)
  cu::FastDiv ci;      // chunks of channels per tap (vector path) or Ci (scalar path)
  cu::FastDiv kw, wo, ho, w, h;
};

// One thread per 16-byte chunk of cols (E = 16 / sizeof(T) elements): row m, chunk j of Kp / E.
// VEC (Ci % E == 0): the chunk is E channels of one tap, one 16-byte load. Otherwise (the stem's Ci = 3)
// the E columns are decoded once and stepped (ci, kx, ky) without further divisions.
template <typename T, bool VEC>
__global__ void __launch_bounds__(256) im2col_nhwc(const T* __restrict__ x, T* __restrict__ cols, Geo g, Divs dv,
                                                   uint32_t row0, uint32_t n) {
  constexpr int E = cu::Pack<T>::N;
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t ml, j;
  dv.chunks.divmod(i, ml, j);
  const uint32_t m = row0 + ml;
  uint32_t r, ox, b, oy;
  dv.wo.divmod(m, r, ox);
  dv.ho.divmod(r, b, oy);
  const int y0 = static_cast<int>(oy) * g.stride - g.pad, x0 = static_cast<int>(ox) * g.stride - g.pad;
  const T* xb = x + static_cast<int64_t>(b) * g.H * g.W * g.Ci;
  T* out = cols + static_cast<int64_t>(m) * g.Kp + static_cast<int64_t>(j) * E;
  cu::Pack<T> v;
  if constexpr (VEC) {
    uint32_t t, c;
    dv.ci.divmod(j, t, c);
    uint32_t ky, kx;
    dv.kw.divmod(t, ky, kx);
    const int iy = y0 + static_cast<int>(ky), ix = x0 + static_cast<int>(kx);
    // (f32: when K = 9·Ci is not a multiple of 8, the last chunk of a row is Kp's zero padding)
    if (static_cast<int>(j) * E < g.kh * g.kw * g.Ci && iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) {
      v = cu::load_pack(xb + (static_cast<int64_t>(iy) * g.W + ix) * g.Ci + static_cast<int64_t>(c) * E);
    } else {
#pragma unroll
      for (int e = 0; e < E; ++e) v.v[e] = cu::from_float<T>(0.0f);
    }
  } else {
    const int K = g.kh * g.kw * g.Ci;
    const int k0 = static_cast<int>(j) * E;
    uint32_t t, ci0, ky0, kx0;
    dv.ci.divmod(static_cast<uint32_t>(min(k0, K - 1)), t, ci0);
    dv.kw.divmod(t, ky0, kx0);
    int ci = static_cast<int>(ci0), kx = static_cast<int>(kx0), ky = static_cast<int>(ky0);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      T val = cu::from_float<T>(0.0f);
      const int iy = y0 + ky, ix = x0 + kx;
      if (k0 + e < K && iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) val = xb[(static_cast<int64_t>(iy) * g.W + ix) * g.Ci + ci];
      v.v[e] = val;
      if (++ci == g.Ci) {
        ci = 0;
        if (++kx == g.kw) kx = 0, ++ky;
      }
    }
  }
  cu::store_pack(out, v);
}

// dx[b, iy, ix, c] = Σ over taps (ky, kx) with oy = (iy + pad − ky) / stride integral and in range, in
// ascending (ky, kx) order (fixed: deterministic). One thread per pixel and channel chunk (VEC: E
// channels, 16-byte loads of dcols) or per element. The taps that hit are stepped by the stride from
// the first one, so the only divisions are the two per thread that find it.
template <typename T, bool VEC>
__global__ void __launch_bounds__(256) col2im_gather_nhwc(const T* __restrict__ dcols, T* __restrict__ dx, Geo g,
                                                          Divs dv, uint32_t pix0, uint32_t n) {
  constexpr int E = VEC ? cu::Pack<T>::N : 1;
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t pl, c;
  dv.chunks.divmod(i, pl, c);
  const uint32_t pix = pix0 + pl;
  uint32_t r, ix, b, iy;
  dv.w.divmod(pix, r, ix);
  dv.h.divmod(r, b, iy);
  const int ny0 = static_cast<int>(iy) + g.pad, nx0 = static_cast<int>(ix) + g.pad;
  const int ky0 = ny0 % g.stride, kx0 = nx0 % g.stride;
  float acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.0f;
  const int64_t rowb = static_cast<int64_t>(b) * g.Ho;
  const int ch = static_cast<int>(c) * E;
  for (int ky = ky0, oy = (ny0 - ky0) / g.stride; ky < g.kh && oy >= 0; ky += g.stride, --oy) {
    if (oy >= g.Ho) continue;
    for (int kx = kx0, ox = (nx0 - kx0) / g.stride; kx < g.kw && ox >= 0; kx += g.stride, --ox) {
      if (ox >= g.Wo) continue;
      const T* src = dcols + ((rowb + oy) * g.Wo + ox) * g.Kp + (ky * g.kw + kx) * g.Ci + ch;
      if constexpr (VEC) {
        const cu::Pack<T> v = cu::load_pack(src);
#pragma unroll
        for (int e = 0; e < E; ++e) acc[e] += cu::to_float(v.v[e]);
      } else {
        acc[0] += cu::to_float(*src);
      }
    }
  }
  T* out = dx + static_cast<int64_t>(pix) * g.Ci + ch;
  if constexpr (VEC) {
    cu::Pack<T> v;
#pragma unroll
    for (int e = 0; e < E; ++e) v.v[e] = cu::from_float<T>(acc[e]);
    cu::store_pack(out, v);
  } else {
    *out = cu::from_float<T>(acc[0]);
  }
}

// Host side: launch over [0, total) items in slices of whole rows (pixels) of `per` items each,
// every slice < 2^31 items, so the kernels' 32-bit indices never wrap.
template <typename Launch>
void for_slices(int64_t rows, int64_t per, const Launch& launch) {
  MO_CHECK(rows < (int64_t{1} << 31), "conv2d: {} output rows/pixels exceed the 2^31 limit of the index math", rows);
  const int64_t max_rows = std::max<int64_t>(1, ((int64_t{1} << 31) - 1) / per);
  for (int64_t r0 = 0; r0 < rows; r0 += max_rows) {
    const int64_t nr = std::min(max_rows, rows - r0);
    const int64_t n = nr * per;
    launch(static_cast<uint32_t>(r0), static_cast<uint32_t>(n), static_cast<unsigned>((n + 255) / 256));
  }
}

template <typename T>
void launch_im2col(const Tensor& x, const Tensor& cols, const Geo& g) {
  constexpr int E = cu::Pack<T>::N;
  const bool vec = g.Ci % E == 0 && cu::aligned16(x.raw_data());
  MO_CHECK(cu::aligned16(cols.raw_data()), "conv2d: im2col buffer not 16-byte aligned");
  Divs dv;
  dv.chunks = cu::FastDiv(g.Kp / E);
  dv.ci = cu::FastDiv(vec ? g.Ci / E : g.Ci);
  dv.kw = cu::FastDiv(g.kw);
  dv.wo = cu::FastDiv(g.Wo);
  dv.ho = cu::FastDiv(g.Ho);
  const int64_t M = static_cast<int64_t>(g.B) * g.Ho * g.Wo;
  for_slices(M, g.Kp / E, [&](uint32_t r0, uint32_t n, unsigned blocks) {
    if (vec) im2col_nhwc<T, true><<<blocks, 256, 0, stream()>>>(cu::ptr<const T>(x), cu::ptr<T>(cols), g, dv, r0, n);
    else im2col_nhwc<T, false><<<blocks, 256, 0, stream()>>>(cu::ptr<const T>(x), cu::ptr<T>(cols), g, dv, r0, n);
    CUDA_CHECK_LAUNCH();
  });
}

template <typename T>
void launch_col2im(const Tensor& dcols, const Tensor& dx, const Geo& g) {
  constexpr int E = cu::Pack<T>::N;
  const bool vec = g.Ci % E == 0 && cu::aligned16(dx.raw_data()) && cu::aligned16(dcols.raw_data());
  const int per = vec ? g.Ci / E : g.Ci;
  Divs dv;
  dv.chunks = cu::FastDiv(per);
  dv.w = cu::FastDiv(g.W);
  dv.h = cu::FastDiv(g.H);
  const int64_t P = static_cast<int64_t>(g.B) * g.H * g.W;
  for_slices(P, per, [&](uint32_t p0, uint32_t n, unsigned blocks) {
    if (vec) col2im_gather_nhwc<T, true><<<blocks, 256, 0, stream()>>>(cu::ptr<const T>(dcols), cu::ptr<T>(dx), g, dv, p0, n);
    else col2im_gather_nhwc<T, false><<<blocks, 256, 0, stream()>>>(cu::ptr<const T>(dcols), cu::ptr<T>(dx), g, dv, p0, n);
    CUDA_CHECK_LAUNCH();
  });
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

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad, const Tensor& y) {
  Geo g = make_geo(x, w, static_cast<int>(y.size(1)), static_cast<int>(y.size(2)), stride, pad);
  const int64_t M = static_cast<int64_t>(g.B) * g.Ho * g.Wo, K = g.Kp;
  Device dev = x.device();
  Tensor cols = Tensor::empty({M, K}, x.dtype(), dev);
  Tensor wr = Tensor::empty({g.Co, K}, w.dtype(), dev);
  cu::float_dispatch("conv2d", x, [&](auto z) {
    using T = decltype(z);
    launch_im2col<T>(x, cols, g);
    reorder_weight<T><<<cu::grid_1d(g.Co * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(w), cu::ptr<T>(wr), g, true);
    CUDA_CHECK_LAUNCH();
  });
  gemm(cols, false, wr, true, y.view({M, g.Co}), 1.0f, 0.0f, b);  // y = cols · Wᵣᵀ + b
}

void conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, int stride, int pad, const Tensor& dx,
                          const Tensor& dw, const Tensor& db) {
  Geo g = make_geo(x, w, static_cast<int>(dy.size(1)), static_cast<int>(dy.size(2)), stride, pad);
  const int64_t M = static_cast<int64_t>(g.B) * g.Ho * g.Wo, K = g.Kp;
  Device dev = x.device();
  Tensor cols = Tensor::empty({M, K}, x.dtype(), dev);
  Tensor dy2 = dy.view({M, g.Co});
  cu::float_dispatch("conv2d", x, [&](auto z) {
    using T = decltype(z);
    launch_im2col<T>(x, cols, g);
    Tensor dwr = Tensor::empty({g.Co, K}, w.dtype(), dev);
    gemm(dy2, true, cols, false, dwr, 1.0f, 0.0f, Tensor(), db);  // dWᵣ = dyᵀ · cols, db = Σ_rows dy
    reorder_weight<T><<<cu::grid_1d(g.Co * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(dwr), cu::ptr<T>(dw), g, false);
    CUDA_CHECK_LAUNCH();
    if (dx.defined()) {
      Tensor wr = Tensor::empty({g.Co, K}, w.dtype(), dev);
      reorder_weight<T><<<cu::grid_1d(g.Co * K, 256), 256, 0, stream()>>>(cu::ptr<const T>(w), cu::ptr<T>(wr), g, true);
      CUDA_CHECK_LAUNCH();
      gemm(dy2, false, wr, false, cols, 1.0f, 0.0f, Tensor());  // dcols = dy · Wᵣ (reuses cols)
      launch_col2im<T>(cols, dx, g);
    }
  });
}

}  // namespace mo::cuda
