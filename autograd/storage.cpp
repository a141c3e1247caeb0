// storage.cpp: CPU allocation and the Storage lifetime; CUDA blocks go back to the caching allocator.
#include "autograd/storage.h"

#include <cstdlib>

#include "autograd/check.h"
#include "autograd/cuda_allocator.h"

namespace mo {

void* cpu_alloc(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  MO_CHECK(p != nullptr, "out of host memory allocating {} bytes", nbytes);
  return p;
}
void cpu_free(void* p) { std::free(p); }

Storage::Storage(size_t n, Device d) : nbytes(n), device(d) {
  if (d.is_cpu()) {
    data = cpu_alloc(n);
  } else {
    data = cuda_alloc(n, d.index);
  }
}
Storage::Storage(void* external, size_t n, Device d) : data(external), nbytes(n), device(d), owned(false) {}

Storage::~Storage() {
  if (!owned || data == nullptr) return;
  if (device.is_cpu()) {
    cpu_free(data);
  } else {
    cuda_free(data, device.index);
  }
}

}  // namespace mo
