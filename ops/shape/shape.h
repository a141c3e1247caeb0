// shape.h: split and concat along the last (channel) dim of channels-last tensors, and permute
// (general; nchw_to_nhwc / nhwc_to_nchw are the two the model needs).
#pragma once
#include <vector>

#include "autograd/tensor.h"

namespace mo {

// x (..., C) -> pieces (..., sizes[i]) with Σ sizes = C (contiguous copies).
std::vector<Tensor> split_last(const Tensor& x, const std::vector<int64_t>& sizes);
// pieces (..., C_i) -> (..., Σ C_i)
Tensor concat_last(const std::vector<Tensor>& xs);
// out.shape[i] = x.shape[perm[i]] (contiguous result)
Tensor permute(const Tensor& x, const std::vector<int64_t>& perm);
inline Tensor nchw_to_nhwc(const Tensor& x) { return permute(x, {0, 2, 3, 1}); }
inline Tensor nhwc_to_nchw(const Tensor& x) { return permute(x, {0, 3, 1, 2}); }
// Differentiable reshape of a contiguous tensor.
Tensor reshape(const Tensor& x, const Shape& shape);

}  // namespace mo
