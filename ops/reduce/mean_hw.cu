// mean_hw.cu: CUDA halves of global average pooling over a channels-last map (see mean_hw.h).
//
// forward: y[b, c] = (1/HW)·Σ_p x[b, p, c] is a batched column sum over the (B, HW, C) array:
//   cu::column_sum with a (32 × 8) block per 32 channels × pixel chunk (lanes along c: coalesced), fp32
//   partials added in a fixed order by a second pass when HW is large. Deterministic, no atomics.
// backward: dx[b, p, c] = dy[b, c] / HW, a broadcast write over 16-byte packs when C is a multiple
//   of the pack width (a pack then stays inside one pixel).
#include "ops/reduce/mean_hw.h"

#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

template <typename T>
__global__ void mean_hw_backward_kernel(const T* dy, T* dx, int64_t n, int64_t HW, int64_t C, bool vec) {
  constexpr int V = cu::Pack<T>::N;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const float hw = static_cast<float>(HW);
  if (vec) {  // C % V == 0, dx 16-byte aligned
    for (int64_t p = tid; p < n / V; p += step) {
      const int64_t i = p * V, c = i % C, b = i / (HW * C);
      cu::Pack<T> vo;
#pragma unroll
      for (int k = 0; k < V; ++k) vo.v[k] = cu::from_float<T>(cu::to_float(dy[b * C + c + k]) / hw);
      cu::store_pack(dx + i, vo);
    }
  } else {
    for (int64_t i = tid; i < n; i += step) {
      const int64_t c = i % C, b = i / (HW * C);
      dx[i] = cu::from_float<T>(cu::to_float(dy[b * C + c]) / hw);
    }
  }
}

}  // namespace

void mean_hw_forward(const Tensor& x, const Tensor& y) {
  MO_CHECK(x.dim() == 4 && x.is_contiguous() && y.is_contiguous() && y.numel() == x.size(0) * x.size(3) &&
               y.dtype() == x.dtype() && x.is_cuda() && y.device() == x.device(),
           "mean_hw: CUDA kernel expects contiguous x (B, H, W, C) and y (B, C), got {} -> {}", x.str(), y.str());
  const int64_t B = x.size(0), HW = x.size(1) * x.size(2), C = x.size(3);
  if (B == 0 || C == 0) return;
  cu::float_dispatch("mean_hw", x, [&](auto z) {
    using T = decltype(z);
    if (HW == 0) {  // mean of nothing: NaN, like the CPU's 0/0
      Tensor(y).fill_(NAN);
      return;
    }
    MO_CHECK(B <= 65535, "mean_hw: batch {} exceeds the CUDA grid limit 65535 ({})", B, x.str());
    cu::column_sum(cu::ColumnLoad<T>{cu::ptr<const T>(x), HW, C}, B, HW, C, 1.0f / static_cast<float>(HW),
                   cu::ptr<T>(y), x.device());
  });
}

void mean_hw_backward(const Tensor& dy, const Tensor& dx) {
  MO_CHECK(dx.dim() == 4 && dx.is_contiguous() && dy.is_contiguous() && dy.numel() == dx.size(0) * dx.size(3) &&
               dy.dtype() == dx.dtype() && dx.is_cuda() && dy.device() == dx.device(),
           "mean_hw: CUDA backward expects contiguous dy (B, C) and dx (B, H, W, C), got {} -> {}", dy.str(), dx.str());
  const int64_t n = dx.numel(), HW = dx.size(1) * dx.size(2), C = dx.size(3);
  if (n == 0) return;
  cu::float_dispatch("mean_hw", dx, [&](auto z) {
    using T = decltype(z);
    constexpr int V = cu::Pack<T>::N;
    const bool vec = C % V == 0 && cu::aligned16(dx.raw_data());
    mean_hw_backward_kernel<T><<<cu::grid_1d(vec ? n / V : n, 256), 256, 0, stream()>>>(
        cu::ptr<const T>(dy), cu::ptr<T>(dx), n, HW, C, vec);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mo::cuda
