// tokens.cu: class_token_embed on CUDA (maths and the CPU twin: tokens.cpp). Elementwise over (B, L, C)
// forward and for dx; dpos/dcls: one thread per (position, channel) summing the batch in order (fp32,
// deterministic). A ViT-S/16 batch of 256 moves ~2·B·L·C·2 bytes = 78 MB in bf16 each way: ~25 µs.
#include "ops/shape/tokens.h"

#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

// Position-embedding row of sequence slot t (L = N + 1 slots): the class token's is row 0.
__device__ __forceinline__ int64_t pos_row(int64_t t, int64_t L, bool cls_last) {
  if (cls_last) return t == L - 1 ? 0 : t + 1;
  return t;
}

template <typename T>
__global__ void embed_forward(const T* __restrict__ x, const T* __restrict__ cls, const T* __restrict__ pos,
                              T* __restrict__ out, int64_t B, int64_t L, int64_t C, bool cls_last) {
  const int64_t n = B * L * C, step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n; e += step) {
    const int64_t c = e % C, t = e / C % L, b = e / (C * L), pr = pos_row(t, L, cls_last);
    const float v = pr == 0 ? cu::to_float(cls[c]) : cu::to_float(x[(b * (L - 1) + pr - 1) * C + c]);
    out[e] = cu::from_float<T>(v + cu::to_float(pos[pr * C + c]));
  }
}

template <typename T>
__global__ void embed_backward_x(const T* __restrict__ dout, T* __restrict__ dx, int64_t B, int64_t L, int64_t C,
                                 bool cls_last) {
  const int64_t N = L - 1, n = B * N * C, step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n; e += step) {
    const int64_t c = e % C, p = e / C % N, b = e / (C * N);
    dx[e] = dout[(b * L + (cls_last ? p : p + 1)) * C + c];
  }
}

template <typename T>
__global__ void embed_backward_pos(const T* __restrict__ dout, T* __restrict__ dcls, T* __restrict__ dpos, int64_t B,
                                   int64_t L, int64_t C, bool cls_last) {
  const int64_t n = L * C, step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n; e += step) {
    const int64_t c = e % C, t = e / C, pr = pos_row(t, L, cls_last);
    float s = 0.0f;
    for (int64_t b = 0; b < B; ++b) s += cu::to_float(dout[(b * L + t) * C + c]);
    dpos[pr * C + c] = cu::from_float<T>(s);
    if (pr == 0) dcls[c] = cu::from_float<T>(s);
  }
}

}  // namespace

void class_token_embed_forward(const Tensor& x, const Tensor& cls, const Tensor& pos, bool cls_last, const Tensor& out) {
  const int64_t B = out.size(0), L = out.size(1), C = out.size(2);
  if (out.numel() == 0) return;
  cu::float_dispatch("class_token_embed", x, [&](auto z) {
    using T = decltype(z);
    embed_forward<T><<<cu::grid_1d(B * L * C, 256), 256, 0, stream()>>>(cu::ptr<T>(x), cu::ptr<T>(cls), cu::ptr<T>(pos),
                                                                       cu::ptr<T>(out), B, L, C, cls_last);
    CUDA_CHECK_LAUNCH();
  });
}

void class_token_embed_backward(const Tensor& dout, bool cls_last, const Tensor& dx, const Tensor& dcls,
                                const Tensor& dpos) {
  const int64_t B = dout.size(0), L = dout.size(1), C = dout.size(2);
  if (C == 0) return;
  cu::float_dispatch("class_token_embed", dout, [&](auto z) {
    using T = decltype(z);
    if (B * (L - 1) * C > 0) {
      embed_backward_x<T><<<cu::grid_1d(B * (L - 1) * C, 256), 256, 0, stream()>>>(cu::ptr<T>(dout), cu::ptr<T>(dx), B,
                                                                                  L, C, cls_last);
      CUDA_CHECK_LAUNCH();
    }
    embed_backward_pos<T><<<cu::grid_1d(L * C, 256), 256, 0, stream()>>>(cu::ptr<T>(dout), cu::ptr<T>(dcls),
                                                                        cu::ptr<T>(dpos), B, L, C, cls_last);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mo::cuda
