// cuda_check.h: CUDA_CHECK / CUBLAS_CHECK / CUDNN_CHECK wrappers (include only from .cu files or
// CUDA translation units). They report the call, file and line and throw mo::Error.
#pragma once
#include <cuda_runtime.h>

#include "autograd/check.h"

#define CUDA_CHECK(call)                                                                              \
  do {                                                                                                \
    cudaError_t e_ = (call);                                                                          \
    if (e_ != cudaSuccess)                                                                            \
      throw ::mo::Error(fmt::format("CUDA error {} ({}) in {} at {}:{}", static_cast<int>(e_),        \
                                    cudaGetErrorString(e_), #call, __FILE__, __LINE__));              \
  } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                            \
  do {                                                                                                \
    auto s_ = (call);                                                                                 \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                                  \
      throw ::mo::Error(fmt::format("cuBLAS error {} in {} at {}:{}", static_cast<int>(s_), #call,    \
                                    __FILE__, __LINE__));                                             \
  } while (0)

#define CUDNN_CHECK(call)                                                                             \
  do {                                                                                                \
    auto s_ = (call);                                                                                 \
    if (s_ != CUDNN_STATUS_SUCCESS)                                                                   \
      throw ::mo::Error(fmt::format("cuDNN error {} ({}) in {} at {}:{}", static_cast<int>(s_),      \
                                    cudnnGetErrorString(s_), #call, __FILE__, __LINE__));             \
  } while (0)

namespace mo {
inline cudaStream_t stream() {
  extern void* cuda_current_stream();
  return static_cast<cudaStream_t>(cuda_current_stream());
}
}  // namespace mo
