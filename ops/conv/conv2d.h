// conv2d.h: dense 2-D convolution on channels-last data. x (B, H, W, Ci), w (Co, Ci, kh, kw) in
// PyTorch's OIHW layout (so state_dicts load unchanged), b (Co) -> (B, Ho, Wo, Co) with
// Ho = (H + 2·pad − kh) / stride + 1. The model uses 3×3 stride 2 pad 1 (stem and downsampling).
// CPU: im2col + OpenBLAS gemm. CUDA: im2col + cuBLASLt in conv2d_gemm.cu.
#pragma once
#include "autograd/tensor.h"

namespace mo {

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad);

namespace cuda {
// im2col + cuBLASLt GEMMs (conv2d_gemm.cu). dx may be undefined (input needs no gradient, e.g. the image).
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad, const Tensor& y);
void conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, int stride, int pad, const Tensor& dx,
                     const Tensor& dw, const Tensor& db);
}  // namespace cuda

}  // namespace mo
