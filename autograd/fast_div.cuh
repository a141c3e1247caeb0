// fast_div.cuh: FastDiv, 32-bit division by a runtime divisor as a multiply-high, an add and a shift,
// for index decoding in CUDA kernels (the divisor's magic number is computed once on the host). Include
// only from .cu files. Used by the tensor copies (tensor_cuda.cu) and by the ops (ops/cuda_utils.cuh).
#pragma once
#include <cstdint>

#include "autograd/check.h"

namespace mo {

// q = n / d for 0 <= n < 2^31 and 1 <= d < 2^31 (Granlund & Montgomery, the round-up variant):
// l = ⌈log2 d⌉, magic = ⌊2^32 (2^l − d) / d⌋ + 1, q = (umulhi(magic, n) + n) >> l. The sum stays below
// 2^32 because n < 2^31. Four instructions instead of the ~20 of a division by a variable.
struct FastDiv {
  uint32_t d = 1, magic = 1, shift = 0;
  FastDiv() = default;
  explicit FastDiv(int64_t divisor) {
    MO_CHECK(divisor >= 1 && divisor < (int64_t{1} << 31), "FastDiv: divisor {} out of range", divisor);
    d = static_cast<uint32_t>(divisor);
    while ((uint64_t{1} << shift) < d) ++shift;
    magic = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(magic, n) + n) >> shift; }
  // n = q·d + r
  __device__ __forceinline__ void divmod(uint32_t n, uint32_t& q, uint32_t& r) const {
    q = div(n);
    r = n - q * d;
  }
};

}  // namespace mo
