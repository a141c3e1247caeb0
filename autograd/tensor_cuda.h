// tensor_cuda.h: CUDA halves of the raw Tensor helpers (copy with dtype cast and any strides, fill,
// in-place add). Defined in tensor_cuda.cu; in a CPU-only build they throw (cpu_only_stubs.cpp).
#pragma once
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace mo {
void cuda_copy(const Tensor& dst, const Tensor& src);  // at least one side on CUDA
void cuda_fill(const Tensor& dst, double v);
void cuda_add_(const Tensor& dst, const Tensor& src, double alpha);
// first += second for every pair (f32 contiguous destination, bf16 or f32 source of its size), in one
// launch per 120 pairs: the leaves' gradient accumulation of a backward pass.
void cuda_accumulate_many(const std::vector<std::pair<Tensor, Tensor>>& pairs);
}  // namespace mo
