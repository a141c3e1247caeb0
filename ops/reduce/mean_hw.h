// mean_hw.h: global average pooling of a channels-last map: (B, H, W, C) -> (B, C).
#pragma once
#include "autograd/tensor.h"

namespace mo {

Tensor mean_hw(const Tensor& x);

namespace cuda {
void mean_hw_forward(const Tensor& x, const Tensor& y);    // fp32 accumulation
void mean_hw_backward(const Tensor& dy, const Tensor& dx);  // dx[b,h,w,c] = dy[b,c] / (H·W)
}  // namespace cuda

}  // namespace mo
