// conv2d_cudnn.h: the cuDNN dense convolution (NHWC, deterministic algorithms, with cuDNN-free direct
// kernels as fallback) that mo_bench_kernels times against ops/conv's im2col + cuBLASLt path. Not part
// of the library: it lost on MambaOut's shapes. Same contract as mo::cuda::conv2d_forward/backward.
#pragma once
#include "autograd/tensor.h"

namespace mo::bench {
void cudnn_conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad, const Tensor& y);
void cudnn_conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, int stride, int pad, const Tensor& dx,
                           const Tensor& dw, const Tensor& db);
}  // namespace mo::bench
