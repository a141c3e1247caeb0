// storage.h: a reference-counted block of memory on one device, with the version counter that
// autograd uses to catch in-place edits of saved tensors. CUDA blocks come only from the caching
// allocator (cuda_allocator.h); CPU blocks are 64-byte aligned.
#pragma once
#include <atomic>
#include <cstddef>
#include <memory>

#include "autograd/dtype.h"

namespace mo {

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  std::atomic<uint64_t> version{0};
  bool owned = true;  // false for storages that wrap external memory (never freed here)

  Storage(size_t nbytes, Device device);
  Storage(void* external, size_t nbytes, Device device);  // not owned
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

void* cpu_alloc(size_t nbytes);
void cpu_free(void* p);

}  // namespace mo
