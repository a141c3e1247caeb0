// cpu_only_stubs.cpp: in a build without CUDA, the CUDA entry points exist and throw a clear error,
// so CPU-only code links and a request for a CUDA tensor says why it cannot work.
#ifndef MO_WITH_CUDA
#include "autograd/cuda_allocator.h"
#include "autograd/tensor_cuda.h"

namespace mo {
[[noreturn]] static void no_cuda() { MO_FAIL("this build of mo has no CUDA support (configure with -DMO_WITH_CUDA=ON)"); }
void* cuda_alloc(size_t, int) { no_cuda(); }
void cuda_free(void*, int) {}
CudaMemoryStats cuda_memory_stats(int) { return {}; }
void cuda_reset_peak_stats(int) {}
void cuda_empty_cache() {}
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
void* cuda_current_stream() { return nullptr; }
void cuda_set_current_stream(void*) {}
void cuda_synchronize() {}
CudaOwnStream::CudaOwnStream(int) {}
CudaOwnStream::~CudaOwnStream() {}
CudaRunAhead::CudaRunAhead(int) {}
CudaRunAhead::~CudaRunAhead() {}
void CudaRunAhead::mark() {}
void cuda_copy(const Tensor&, const Tensor&) { no_cuda(); }
void cuda_fill(const Tensor&, double) { no_cuda(); }
void cuda_add_(const Tensor&, const Tensor&, double) { no_cuda(); }
void cuda_accumulate_many(const std::vector<std::pair<Tensor, Tensor>>&) { no_cuda(); }
}  // namespace mo
#endif
