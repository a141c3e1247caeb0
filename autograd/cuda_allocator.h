// cuda_allocator.h: the one place that takes device memory. A stream-aware caching allocator:
// blocks are kept per (device, stream) in size-ordered free lists and reused; on out-of-memory the
// cache is released and the allocation retried, then a clear error gives the sizes.
// In a CPU-only build these functions throw ("built without CUDA").
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mo {

void* cuda_alloc(size_t nbytes, int device);
void cuda_free(void* p, int device);

struct CudaMemoryStats {
  size_t allocated = 0;       // bytes handed out now
  size_t reserved = 0;        // bytes held from the driver (allocated + cached)
  size_t peak_allocated = 0;  // high-water mark of `allocated`
  size_t peak_reserved = 0;
  uint64_t num_allocs = 0, num_cache_hits = 0, num_oom_retries = 0;
};
CudaMemoryStats cuda_memory_stats(int device = 0);
void cuda_reset_peak_stats(int device = 0);
void cuda_empty_cache();  // return every cached block to the driver

bool cuda_available();
int cuda_device_count();

// The compute stream of the calling thread (cudaStream_t as void*). All ops launch on it.
void* cuda_current_stream();
void cuda_set_current_stream(void* stream);
void cuda_synchronize();

// For its lifetime the calling thread computes on a non-blocking stream of its own (one per thread and
// device, made once), then on the stream it had; each switch first waits for the stream it leaves, so no
// block is in use on two streams. The legacy default stream would order the work after every legacy-
// stream call of any other thread (a library's: nvJPEG's, in the loader's GPU decoder) and hold it up.
class CudaOwnStream {
 public:
  explicit CudaOwnStream(int device);
  ~CudaOwnStream();
  CudaOwnStream(const CudaOwnStream&) = delete;
  CudaOwnStream& operator=(const CudaOwnStream&) = delete;

 private:
  void* prev_ = nullptr;
};

// Bounds how far the calling thread's launches run ahead of the GPU: mark() (once a training step) records
// an event on the current stream and waits (sleeping) until the GPU has passed the mark made `depth` marks
// ago. Unbounded, the host queues steps until the launch queue is full, and any other thread's CUDA work
// that the GPU serialises behind it (the GPU decoder's copies and engine submissions) waits for all of them.
// depth 0: no bound; no-op without a GPU.
class CudaRunAhead {
 public:
  explicit CudaRunAhead(int depth);
  ~CudaRunAhead();
  CudaRunAhead(const CudaRunAhead&) = delete;
  CudaRunAhead& operator=(const CudaRunAhead&) = delete;
  void mark();

 private:
  std::vector<void*> events_;  // cudaEvent_t, a ring
  size_t next_ = 0, made_ = 0;
};

}  // namespace mo
