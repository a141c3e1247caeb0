// common.h: helpers shared by the ops: CPU dtype dispatch, a guard for CUDA-only builds, and the
// accumulator type (float for bf16/f32, double for f64).
#pragma once
#include <type_traits>

#include "autograd/graph.h"
#include "autograd/tensor.h"

namespace mo {

template <typename T> using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Runs f(T{}) for the CPU floating dtypes (float, double); other dtypes are an error naming the op.
template <typename F>
void cpu_float_dispatch(const char* op, const Tensor& t, F&& f) {
  switch (t.dtype()) {
    case DType::f32: f(float{}); break;
    case DType::f64: f(double{}); break;
    default: MO_FAIL("{}: CPU kernels take float32 or float64, got {}", op, t.str());
  }
}

// Throws the standard error for a CUDA tensor in a CPU-only build.
[[noreturn]] void no_cuda_build(const char* op);

// Every defined tensor in `ts` is on the device of the first, with its dtype (undefined ones skipped).
void check_same(const char* op, std::initializer_list<const Tensor*> ts);

}  // namespace mo

#ifdef MO_WITH_CUDA
#define MO_CUDA_DISPATCH(op, expr) expr
#else
#define MO_CUDA_DISPATCH(op, expr) ::mo::no_cuda_build(op)
#endif
