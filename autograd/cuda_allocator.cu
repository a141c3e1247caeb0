// cuda_allocator.cu: the stream-aware caching allocator (see cuda_allocator.h) and the per-thread
// current stream. Freed blocks return to a free list keyed by (stream, size) and are reused by later
// requests on the same stream without synchronisation, as in PyTorch's CUDACachingAllocator.
#include <map>
#include <vector>
#include <mutex>
#include <unordered_map>

#include "autograd/cuda_allocator.h"
#include "autograd/cuda_check.h"

namespace mo {

namespace {

struct Block {
  size_t size;
  cudaStream_t stream;
};

size_t round_size(size_t n) {
  if (n < (1u << 20)) return (n + 511) / 512 * 512;            // small: 512 B granules
  if (n < (32u << 20)) return (n + (1u << 20) - 1) >> 20 << 20;  // medium: 1 MiB granules
  return (n + (2u << 20) - 1) / (2u << 20) * (2u << 20);         // large: 2 MiB granules
}

struct DeviceAllocator {
  std::mutex mu;
  std::unordered_map<void*, Block> live;
  std::map<std::pair<cudaStream_t, size_t>, std::vector<void*>> free_blocks;
  CudaMemoryStats stats;

  void release_cache() {
    CUDA_CHECK(cudaDeviceSynchronize());
    for (auto& [key, ptrs] : free_blocks)
      for (void* p : ptrs) {
        CUDA_CHECK(cudaFree(p));
        stats.reserved -= key.second;
      }
    free_blocks.clear();
  }

  void* alloc(size_t n, int device) {
    std::lock_guard<std::mutex> lock(mu);
    size_t sz = round_size(n);
    cudaStream_t s = static_cast<cudaStream_t>(cuda_current_stream());
    stats.num_allocs++;
    // best fit on this stream, wasting at most 1/32 of the block (or 1 MiB): a training step asks for the
    // same sizes every step, so after the first one nearly every request finds its own size; a looser fit
    // (1/8) let big activations sit in bigger blocks and cost mambaout_tiny ~1 GiB of peak memory
    auto it = free_blocks.lower_bound({s, sz});
    if (it != free_blocks.end() && it->first.first == s && it->first.second <= sz + std::max<size_t>(sz / 32, 1u << 20)) {
      void* p = it->second.back();
      size_t bsz = it->first.second;
      it->second.pop_back();
      if (it->second.empty()) free_blocks.erase(it);
      live[p] = {bsz, s};
      stats.allocated += bsz;
      stats.peak_allocated = std::max(stats.peak_allocated, stats.allocated);
      stats.num_cache_hits++;
      return p;
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, sz);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      stats.num_oom_retries++;
      release_cache();
      e = cudaMalloc(&p, sz);
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      MO_FAIL(
          "CUDA out of memory on device {}: asked for {:.1f} MiB; {:.1f} MiB in use by mo, {:.1f} MiB reserved, "
          "{:.1f} MiB free of {:.1f} MiB ({})",
          device, sz / 1048576.0, stats.allocated / 1048576.0, stats.reserved / 1048576.0, free_b / 1048576.0,
          total_b / 1048576.0, cudaGetErrorString(e));
    }
    live[p] = {sz, s};
    stats.allocated += sz;
    stats.reserved += sz;
    stats.peak_allocated = std::max(stats.peak_allocated, stats.allocated);
    stats.peak_reserved = std::max(stats.peak_reserved, stats.reserved);
    return p;
  }

  void free(void* p) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = live.find(p);
    MO_ASSERT(it != live.end());
    Block b = it->second;
    live.erase(it);
    stats.allocated -= b.size;
    free_blocks[{b.stream, b.size}].push_back(p);
  }
};

DeviceAllocator& allocator(int device) {
  static DeviceAllocator* devs = new DeviceAllocator[16];  // never destroyed: blocks may outlive main
  MO_ASSERT(device >= 0 && device < 16);
  return devs[device];
}

thread_local cudaStream_t t_stream = nullptr;  // null = legacy default stream until set

}  // namespace

void* cuda_alloc(size_t nbytes, int device) {
  if (nbytes == 0) return nullptr;
  return allocator(device).alloc(nbytes, device);
}
void cuda_free(void* p, int device) {
  if (p) allocator(device).free(p);
}
CudaMemoryStats cuda_memory_stats(int device) {
  auto& a = allocator(device);
  std::lock_guard<std::mutex> lock(a.mu);
  return a.stats;
}
void cuda_reset_peak_stats(int device) {
  auto& a = allocator(device);
  std::lock_guard<std::mutex> lock(a.mu);
  a.stats.peak_allocated = a.stats.allocated;
  a.stats.peak_reserved = a.stats.reserved;
}
void cuda_empty_cache() {
  int n = cuda_device_count();
  for (int d = 0; d < n; ++d) {
    auto& a = allocator(d);
    std::lock_guard<std::mutex> lock(a.mu);
    a.release_cache();
  }
}
bool cuda_available() { return cuda_device_count() > 0; }
int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}
void* cuda_current_stream() { return t_stream; }
void cuda_set_current_stream(void* s) { t_stream = static_cast<cudaStream_t>(s); }
void cuda_synchronize() { CUDA_CHECK(cudaStreamSynchronize(t_stream)); }

CudaOwnStream::CudaOwnStream(int device) : prev_(t_stream) {
  MO_CHECK(device >= 0 && device < 16, "CudaOwnStream: device {}", device);
  thread_local cudaStream_t own[16] = {};  // never destroyed: the allocator keeps blocks against them
  CUDA_CHECK(cudaSetDevice(device));
  if (!own[device]) CUDA_CHECK(cudaStreamCreateWithFlags(&own[device], cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamSynchronize(t_stream));
  t_stream = own[device];
}
CudaOwnStream::~CudaOwnStream() {  // a destructor cannot report: a failed device has failed the work before
  cudaStreamSynchronize(t_stream);
  t_stream = static_cast<cudaStream_t>(prev_);
}

CudaRunAhead::CudaRunAhead(int depth) {
  MO_CHECK(depth >= 0 && depth <= 64, "CudaRunAhead: depth {} outside [0, 64]", depth);
  if (depth == 0 || !cuda_available()) return;
  events_.resize(static_cast<size_t>(depth), nullptr);
  for (void*& e : events_) {
    cudaEvent_t ev = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventBlockingSync | cudaEventDisableTiming));
    e = ev;
  }
}
CudaRunAhead::~CudaRunAhead() {
  for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
}
void CudaRunAhead::mark() {
  if (events_.empty()) return;
  auto ev = static_cast<cudaEvent_t>(events_[next_]);
  if (made_ >= events_.size()) CUDA_CHECK(cudaEventSynchronize(ev));  // the mark of `depth` steps ago
  CUDA_CHECK(cudaEventRecord(ev, t_stream));
  next_ = (next_ + 1) % events_.size();
  ++made_;
}

}  // namespace mo
