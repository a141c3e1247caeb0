// dwconv2d.h: depthwise 2-D convolution, stride 1, on channels-last data (the MambaOut token mixer,
// 7×7 pad 3). x (B, H, W, C), w (C, 1, k, k) (PyTorch layout), b (C) -> (B, H, W, C).
// Forward, input gradient and weight gradient; the weight gradient is reduced in a fixed order
// (no atomics), so results are deterministic.
#pragma once
#include "autograd/tensor.h"

namespace mo {

Tensor dwconv2d(const Tensor& x, const Tensor& w, const Tensor& b, int pad);

// Raw kernels shared with the fused gate (ops/fused/gated_dwconv). Pointers to contiguous NHWC data
// whose rows have `ld` elements (x may be a channel slice of a wider tensor: channel c of pixel p is
// x[p·ld + c]). CPU only; the CUDA side has its own kernels.
template <typename T>
void dwconv2d_forward_cpu(const T* x, int64_t ldx, const T* w, const T* b, T* y, int64_t ldy, int64_t B, int64_t H,
                          int64_t W, int64_t C, int k, int pad);
// dx (may be null), dw, db (may be null); dy has rows of ldy.
template <typename T>
void dwconv2d_backward_cpu(const T* dy, int64_t ldy, const T* x, int64_t ldx, const T* w, T* dx, int64_t lddx, T* dw,
                           T* db, int64_t B, int64_t H, int64_t W, int64_t C, int k, int pad);

namespace cuda {
void dwconv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, int pad, const Tensor& y);
void dwconv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, int pad, const Tensor& dx,
                       const Tensor& dw, const Tensor& db);
}  // namespace cuda

}  // namespace mo
