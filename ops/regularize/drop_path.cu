// drop_path.cu: CUDA half of stochastic depth (see drop_path.h).
//
// y[b, i] = x[b, i]·s_b with s_b = (philox_uniform(seed, stream, b) < keep) / keep — the very
// expression of drop_path_scales() in drop_path.cpp (same float compare, same 1.0f / keep), so the keep
// draws and the products are bit-identical to the CPU. Grid (blocks_x, B): blockIdx.y picks the sample,
// every thread derives s_b itself (one Philox block, cheaper than a second launch), then a grid-stride
// loop over 16-byte packs of the row when the row length is a multiple of the pack width and the
// pointers are aligned. The multiply is always done (no shortcut for s_b = 0), like the CPU, so NaN/Inf
// propagate the same way.
#include "ops/regularize/drop_path.h"

#include "autograd/rng.h"
#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

template <typename T>
__global__ void drop_path_kernel(const T* x, T* y, int64_t n, bool vec, float keep, uint64_t seed,
                                 uint64_t rng_stream) {
  constexpr int V = cu::Pack<T>::N;
  const int64_t b = blockIdx.y;
  const float s = philox_uniform(seed, rng_stream, static_cast<uint64_t>(b)) < keep ? 1.0f / keep : 0.0f;
  const T* xr = x + b * n;
  T* yr = y + b * n;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  if (vec) {  // n % V == 0 and x, y 16-byte aligned: every row start is aligned too
    for (int64_t p = tid; p < n / V; p += step) {
      const cu::Pack<T> vx = cu::load_pack(xr + p * V);
      cu::Pack<T> vo;
#pragma unroll
      for (int k = 0; k < V; ++k) vo.v[k] = cu::from_float<T>(cu::to_float(vx.v[k]) * s);
      cu::store_pack(yr + p * V, vo);
    }
  } else {
    for (int64_t i = tid; i < n; i += step) yr[i] = cu::from_float<T>(cu::to_float(xr[i]) * s);
  }
}

}  // namespace

void drop_path_rows(const Tensor& x, float keep, uint64_t seed, uint64_t rng_stream, const Tensor& y) {
  MO_CHECK(x.dim() >= 1 && x.is_contiguous() && y.is_contiguous() && x.shape() == y.shape() && x.dtype() == y.dtype() &&
               x.is_cuda() && y.device() == x.device(),
           "drop_path: CUDA kernel expects contiguous x and y of one shape and dtype, got {} -> {}", x.str(), y.str());
  MO_CHECK(keep > 0.0f && keep <= 1.0f, "drop_path: keep probability {} must be in (0, 1]", keep);
  const int64_t B = x.size(0);
  if (B == 0 || x.numel() == 0) return;
  MO_CHECK(B <= 65535, "drop_path: batch {} exceeds the CUDA grid limit 65535 ({})", B, x.str());
  const int64_t n = x.numel() / B;
  cu::float_dispatch("drop_path", x, [&](auto z) {
    using T = decltype(z);
    constexpr int V = cu::Pack<T>::N;
    const bool vec = n % V == 0 && cu::aligned16(x.raw_data()) && cu::aligned16(y.raw_data());
    const int64_t work = vec ? n / V : n;
    const int64_t bx = std::min<int64_t>((work + 255) / 256, std::max<int64_t>(1, 8192 / B));
    dim3 grid(static_cast<unsigned>(std::max<int64_t>(1, bx)), static_cast<unsigned>(B));
    drop_path_kernel<T><<<grid, 256, 0, stream()>>>(cu::ptr<const T>(x), cu::ptr<T>(y), n, vec, keep, seed,
                                                    rng_stream);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mo::cuda
