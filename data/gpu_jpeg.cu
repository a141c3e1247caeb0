// gpu_jpeg.cu: nvJPEG batched decoding and the crop + resize + flip kernels (see gpu_jpeg.h).
// Per batch: the host parses each header (nvjpegJpegStreamParseHeader) and asks the hardware engine
// whether it takes it; nvjpegDecodeBatched decodes the rest into planar RGB (W x H per plane); resize_h
// filters the rows each crop needs into size columns (flip applied), resize_v the columns into size rows
// (uint8 HWC, the batch's slots), and one copy brings them back. A 500x375 photograph is 0.56 MB decoded,
// a 224 crop 0.15 MB: the kernels move ~1 MB an image, microseconds at the H200's bandwidth, so the
// decode (the engine, or the GPU-hybrid Huffman pass) is what the batch waits on.
#if MO_WITH_NVJPEG
#include <nvjpeg.h>

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include "autograd/cuda_allocator.h"
#include "autograd/cuda_check.h"
#include "data/gpu_jpeg.h"

namespace mo::data {
namespace {

const char* status_name(nvjpegStatus_t s) {  // nvjpegStatus_t 0..10, in order
  static const char* const kNames[] = {"success", "not initialized", "invalid parameter", "bad JPEG",
                                       "JPEG not supported", "allocator failure", "execution failed",
                                       "architecture mismatch", "internal error", "implementation not supported",
                                       "incomplete bitstream"};
  const int i = static_cast<int>(s);
  return i >= 0 && i < 11 ? kNames[i] : "unknown status";
}

#define NVJPEG_CHECK(call)                                                                                    \
  do {                                                                                                        \
    nvjpegStatus_t s_ = (call);                                                                               \
    if (s_ != NVJPEG_STATUS_SUCCESS)                                                                          \
      throw ::mo::Error(fmt::format("nvJPEG error {} ({}) in {} at {}:{}", static_cast<int>(s_), status_name(s_), \
                                    #call, __FILE__, __LINE__));                                              \
  } while (0)

// One crop of the batch, as the kernels read it.
struct CropParams {
  const uint8_t* src;  // planar RGB: plane c at src + c * W * H
  int W, H;
  float box[4];        // x0, y0, x1, y1 in src pixels
  int bicubic, flip;
  int y_first, rows;   // the source rows the vertical pass reads
  int64_t tmp_off;     // this crop's (rows, size, 3) in tmp
  int out_idx;         // its slot in the output
};

// PIL's precompute_coeffs for output pixel xx (resample.cpp): the source pixels [lo, hi) it reads, the
// filter's centre and 1 / its scale. The same on host and device.
struct Taps {
  int lo, hi;
  double center, ss;
};
__host__ __device__ inline Taps filter_taps(int in_size, float in0, float in1, int out_size, bool bicubic, int xx) {
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = (bicubic ? 2.0 : 1.0) * filterscale;
  Taps t;
  t.center = in0 + (xx + 0.5) * scale;
  t.ss = 1.0 / filterscale;
  t.lo = static_cast<int>(t.center - support + 0.5);
  t.hi = static_cast<int>(t.center + support + 0.5);
  t.lo = t.lo < 0 ? 0 : t.lo;
  t.hi = t.hi > in_size ? in_size : t.hi;
  return t;
}

__device__ inline float filter(float x, bool bicubic) {
  x = fabsf(x);
  if (!bicubic) return x < 1.0f ? 1.0f - x : 0.0f;
  constexpr float a = -0.5f;  // Keys cubic
  if (x < 1.0f) return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
  if (x < 2.0f) return (((x - 5.0f) * x + 8.0f) * x - 4.0f) * a;
  return 0.0f;
}

__device__ inline uint8_t to_u8(float v) { return static_cast<uint8_t>(fminf(fmaxf(floorf(v + 0.5f), 0.0f), 255.0f)); }

// (rows, size, 3) of crop blockIdx.y: thread = one (row, output column), the flip applied on the column.
__global__ void resize_h(const CropParams* __restrict__ params, int S, uint8_t* __restrict__ tmp) {
  const CropParams q = params[blockIdx.y];
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= q.rows * S) return;
  const int r = idx / S, ox = idx - r * S;
  const Taps t = filter_taps(q.W, q.box[0], q.box[2], S, q.bicubic, ox);
  const size_t plane = static_cast<size_t>(q.W) * q.H;
  const uint8_t* row = q.src + static_cast<size_t>(q.y_first + r) * q.W;
  float ww = 0.f, a0 = 0.f, a1 = 0.f, a2 = 0.f;
  for (int x = t.lo; x < t.hi; ++x) {
    const float w = filter(static_cast<float>((x - t.center + 0.5) * t.ss), q.bicubic);
    ww += w;
    a0 += w * row[x], a1 += w * row[plane + x], a2 += w * row[2 * plane + x];
  }
  const float inv = ww != 0.f ? 1.f / ww : 1.f;
  uint8_t* o = tmp + q.tmp_off + (static_cast<int64_t>(r) * S + (q.flip ? S - 1 - ox : ox)) * 3;
  o[0] = to_u8(a0 * inv), o[1] = to_u8(a1 * inv), o[2] = to_u8(a2 * inv);
}

// (size, size, 3) of crop blockIdx.y into its output slot: thread = one output pixel.
__global__ void resize_v(const CropParams* __restrict__ params, int S, const uint8_t* __restrict__ tmp,
                         uint8_t* __restrict__ out) {
  const CropParams q = params[blockIdx.y];
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= S * S) return;
  const int oy = idx / S, ox = idx - oy * S;
  const Taps t = filter_taps(q.H, q.box[1], q.box[3], S, q.bicubic, oy);
  float ww = 0.f, a0 = 0.f, a1 = 0.f, a2 = 0.f;
  for (int y = t.lo; y < t.hi; ++y) {
    const int r = min(max(y - q.y_first, 0), q.rows - 1);
    const uint8_t* p = tmp + q.tmp_off + (static_cast<int64_t>(r) * S + ox) * 3;
    const float w = filter(static_cast<float>((y - t.center + 0.5) * t.ss), q.bicubic);
    ww += w;
    a0 += w * p[0], a1 += w * p[1], a2 += w * p[2];
  }
  const float inv = ww != 0.f ? 1.f / ww : 1.f;
  uint8_t* o = out + (static_cast<int64_t>(q.out_idx) * S * S + idx) * 3;
  o[0] = to_u8(a0 * inv), o[1] = to_u8(a1 * inv), o[2] = to_u8(a2 * inv);
}

// Planar RGB at base: plane c at base + c * W * H.
void set_planes(nvjpegImage_t& d, uint8_t* base, int W, int H) {
  for (int k = 0; k < 3; ++k) d.channel[k] = base + static_cast<size_t>(k) * W * H, d.pitch[k] = static_cast<size_t>(W);
}

// A device buffer that only grows (its stream is idle whenever it is resized).
struct DevBuf {
  void* p = nullptr;
  size_t cap = 0;
  DevBuf() = default;
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <typename T>
  T* ensure(size_t bytes) {
    if (bytes > cap) {
      if (p) CUDA_CHECK(cudaFree(p));
      p = nullptr;
      cap = 0;
      const size_t want = std::max<size_t>(bytes + bytes / 4, 1 << 20);
      CUDA_CHECK(cudaMalloc(&p, want));
      cap = want;
    }
    return static_cast<T*>(p);
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
};

// nvJPEG's own buffers (its states' and the hardware engine's) come from stream-ordered allocators. The
// default ones call cudaFree and cudaFreeHost, which wait for the whole device while holding the context,
// so the training thread's launches would stall behind a decoder thread; these never wait. Device memory:
// a stream-ordered pool of the decoder's own (cudaMallocFromPoolAsync / cudaFreeAsync on the stream nvJPEG
// names; it keeps what is freed). Pinned memory: a block nvJPEG frees is kept, and handed out again once
// its stream has passed the free (an event). A failure returns 1 to nvJPEG (which reports it for the file
// or batch) and leaves no CUDA error behind for the next launch check; null pointers and empty sizes are
// what the default allocators make of them.
int failed(cudaError_t e) {
  if (e == cudaSuccess) return 0;
  (void)cudaGetLastError();
  return 1;
}
int dev_malloc(void* pool, void** p, size_t n, cudaStream_t s) {
  *p = nullptr;
  if (n == 0) return 0;
  if (failed(cudaMallocFromPoolAsync(p, n, static_cast<cudaMemPool_t>(pool), s))) return 1;
  // on the legacy stream (nvJPEG's set-up calls name no stream) the memory is ready once it has passed:
  // the decoder's non-blocking streams are not ordered after it
  return s ? 0 : failed(cudaStreamSynchronize(nullptr));
}
int dev_free(void*, void* p, size_t, cudaStream_t s) { return p ? failed(cudaFreeAsync(p, s)) : 0; }

struct PinnedPool {
  struct Block {
    void* p;
    size_t n;
    cudaEvent_t freed;  // null until freed once
  };
  std::mutex mu;
  std::vector<Block> blocks;  // every block taken from CUDA; in_use marks those nvJPEG holds
  std::vector<char> in_use;
  ~PinnedPool() {  // after nvjpegDestroy: nothing uses them any more
    for (Block& b : blocks) {
      if (b.freed) cudaEventDestroy(b.freed);
      cudaFreeHost(b.p);
    }
  }
};

int pinned_malloc(void* ctx, void** p, size_t n, cudaStream_t) {
  auto& pool = *static_cast<PinnedPool*>(ctx);
  std::lock_guard<std::mutex> lk(pool.mu);
  for (size_t i = 0; i < pool.blocks.size(); ++i) {  // a free block that fits, not more than twice the size
    PinnedPool::Block& b = pool.blocks[i];
    if (pool.in_use[i] || b.n < n || b.n > 2 * n + (1 << 20)) continue;
    if (failed(cudaEventQuery(b.freed))) continue;  // not ready: the stream has not passed the free yet
    pool.in_use[i] = 1;
    *p = b.p;
    return 0;
  }
  if (failed(cudaHostAlloc(p, std::max<size_t>(n, 1), cudaHostAllocDefault))) return *p = nullptr, 1;
  pool.blocks.push_back({*p, std::max<size_t>(n, 1), nullptr});
  pool.in_use.push_back(1);
  return 0;
}

int pinned_free(void* ctx, void* p, size_t, cudaStream_t s) {
  if (!p) return 0;
  auto& pool = *static_cast<PinnedPool*>(ctx);
  std::lock_guard<std::mutex> lk(pool.mu);
  for (size_t i = 0; i < pool.blocks.size(); ++i) {
    PinnedPool::Block& b = pool.blocks[i];
    if (b.p != p) continue;
    if (!b.freed && failed(cudaEventCreateWithFlags(&b.freed, cudaEventDisableTiming))) return 1;
    if (failed(cudaEventRecord(b.freed, s))) return 1;
    pool.in_use[i] = 0;
    return 0;
  }
  return 1;  // not ours
}

// The decoder's streams need hardware queues of their own. With CUDA's default of 8 connections, streams
// share them, and the decoder's copies and engine work wait in line behind the training step's queued
// kernels: beside a training step a batch took 120-440 ms instead of 11-17 (docs/bench_data.md). The driver
// reads the variable when it starts, so it is set when this library is loaded; a value already set is kept.
const bool kOwnQueues = setenv("CUDA_DEVICE_MAX_CONNECTIONS", "32", 0) == 0;

}  // namespace

bool gpu_jpeg_built() { return true; }
bool gpu_jpeg_available() { return cuda_available(); }

struct GpuJpegDecoder::Impl {
  struct Context {
    nvjpegJpegState_t state = nullptr;
    cudaStream_t stream = nullptr;
    std::vector<nvjpegJpegStream_t> parsed;  // one per job, reused
    DevBuf planes, tmp, out, params;
    cudaEvent_t done = nullptr;  // blocking-sync: the waiting worker sleeps instead of spinning on a core
    cudaEvent_t mark[4] = {};    // timing: the batch's start, decoded, resized, copied back (GpuDecodeTimes)
    bool busy = false;
  };
  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }
  // Waits for c.stream's work so far. cudaStreamSynchronize would spin (the default schedule with more
  // cores than GPUs) and take a core from the training thread and the other workers for the whole decode.
  static void wait(Context& c) {
    CUDA_CHECK(cudaEventRecord(c.done, c.stream));
    CUDA_CHECK(cudaEventSynchronize(c.done));
  }
  int device = 0, S = 0;
  PinnedPool pinned;              // outlives the handle (release() destroys the handle first)
  cudaMemPool_t pool = nullptr;  // device memory for nvJPEG (dev_malloc)
  nvjpegDevAllocatorV2_t dev_alloc{dev_malloc, dev_free, nullptr};
  nvjpegPinnedAllocatorV2_t pinned_alloc{pinned_malloc, pinned_free, &pinned};
  nvjpegHandle_t handle = nullptr;
  bool hardware = false;
  std::vector<std::unique_ptr<Context>> ctx;
  std::mutex mu;
  std::condition_variable cv;
  GpuDecodeTimes totals;  // under mu

  Context& acquire() {
    std::unique_lock<std::mutex> lk(mu);
    Context* c = nullptr;
    cv.wait(lk, [&] {
      for (auto& x : ctx)
        if (!x->busy) return (c = x.get()) != nullptr;
      return false;
    });
    c->busy = true;
    return *c;
  }
  void release(Context& c) {
    std::lock_guard<std::mutex> lk(mu);
    c.busy = false;
    cv.notify_one();
  }
  // Destroys what was made, in order; errors are ignored (a destructor cannot report, and the work that
  // used these has reported them). The handle before the streams: its allocators free on the stream
  // nvJPEG last used, which must exist; the pool last (it waits for frees still in flight).
  void release() {
    for (auto& c : ctx) {
      if (c->stream) cudaStreamSynchronize(c->stream);
      for (auto s : c->parsed) nvjpegJpegStreamDestroy(s);
      if (c->state) nvjpegJpegStateDestroy(c->state);
      c->parsed.clear(), c->state = nullptr;
    }
    if (handle) nvjpegDestroy(handle), handle = nullptr;
    for (auto& c : ctx) {
      if (c->stream) cudaStreamSynchronize(c->stream);
      if (c->done) cudaEventDestroy(c->done);
      for (cudaEvent_t e : c->mark)
        if (e) cudaEventDestroy(e);
      if (c->stream) cudaStreamDestroy(c->stream);
    }
    ctx.clear();  // the device buffers
    if (pool) cudaMemPoolDestroy(pool), pool = nullptr;
  }
  struct Lease {  // gives the context back on every way out, exceptions included
    Impl& m;
    Context& c;
    ~Lease() { m.release(c); }
  };

  // Parses data[0, n) into c.parsed[i]; the frame size, or an error for the caller's list.
  bool parse(Context& c, size_t i, const uint8_t* data, size_t n, int& W, int& H, std::string& err) {
    while (c.parsed.size() <= i) {
      nvjpegJpegStream_t s = nullptr;
      NVJPEG_CHECK(nvjpegJpegStreamCreate(handle, &s));
      c.parsed.push_back(s);
    }
    if (!data || n == 0) return err = "empty file", false;
    nvjpegStatus_t s = nvjpegJpegStreamParseHeader(handle, data, n, c.parsed[i]);
    if (s != NVJPEG_STATUS_SUCCESS) return err = fmt::format("nvJPEG cannot parse it ({})", status_name(s)), false;
    unsigned w = 0, h = 0, comps = 0;
    NVJPEG_CHECK(nvjpegJpegStreamGetFrameDimensions(c.parsed[i], &w, &h));
    NVJPEG_CHECK(nvjpegJpegStreamGetComponentsNum(c.parsed[i], &comps));
    if (w == 0 || h == 0 || comps != 3)
      return err = fmt::format("nvJPEG: {}x{} pixels, {} components (3 needed)", w, h, comps), false;
    if (hardware) {
      int unsupported = 1;
      s = nvjpegDecodeBatchedSupported(handle, c.parsed[i], &unsupported);
      if (s != NVJPEG_STATUS_SUCCESS || unsupported != 0)
        return err = "the hardware JPEG decoder does not take it (e.g. 4:1:0 or 4:1:1 chroma)", false;
    }
    W = static_cast<int>(w), H = static_cast<int>(h);
    return true;
  }

  // Decodes files `which` (indices into data/len) into c.planes at `dest`; those that fail leave `which`
  // with an error. One batched call; if nvJPEG refuses the batch, each file again alone.
  void decode(Context& c, std::vector<int>& which, const std::vector<const uint8_t*>& data,
              const std::vector<size_t>& len, std::vector<nvjpegImage_t>& dest, std::vector<std::string>& errors) {
    const int m = static_cast<int>(which.size());
    if (m == 0) return;
    std::vector<const unsigned char*> d(m);
    std::vector<size_t> l(m);
    std::vector<nvjpegImage_t> o(m);
    for (int k = 0; k < m; ++k) d[k] = data[which[k]], l[k] = len[which[k]], o[k] = dest[which[k]];
    nvjpegStatus_t s = nvjpegDecodeBatchedInitialize(handle, c.state, m, 1, NVJPEG_OUTPUT_RGB);
    if (s == NVJPEG_STATUS_SUCCESS) s = nvjpegDecodeBatched(handle, c.state, d.data(), l.data(), o.data(), c.stream);
    if (s == NVJPEG_STATUS_SUCCESS) return;
    wait(c);
    std::vector<int> kept;
    for (int k = 0; k < m; ++k) {
      s = nvjpegDecodeBatchedInitialize(handle, c.state, 1, 1, NVJPEG_OUTPUT_RGB);
      if (s == NVJPEG_STATUS_SUCCESS) s = nvjpegDecodeBatched(handle, c.state, &d[k], &l[k], &o[k], c.stream);
      if (s == NVJPEG_STATUS_SUCCESS) {
        kept.push_back(which[k]);
        continue;
      }
      wait(c);
      errors[which[k]] = fmt::format("nvJPEG could not decode it ({})", status_name(s));
    }
    which.swap(kept);
  }
};

GpuJpegDecoder::GpuJpegDecoder(int device, int size, int contexts, bool use_hardware, bool high_priority)
    : impl_(std::make_unique<Impl>()), size_(size) {
  MO_CHECK(size > 0 && contexts > 0, "GpuJpegDecoder: size {} and contexts {} must be positive", size, contexts);
  MO_CHECK(cuda_available(), "GpuJpegDecoder: no GPU (data.decoder: gpu needs one; use cpu or auto)");
  Impl& m = *impl_;
  m.device = device;
  m.S = size;
  CUDA_CHECK(cudaSetDevice(device));
  try {
    start_on(device, contexts, use_hardware, high_priority);
  } catch (...) {  // what was made so far is given back
    impl_->release();
    throw;
  }
}

void GpuJpegDecoder::start_on(int device, int contexts, bool use_hardware, bool high_priority) {
  Impl& m = *impl_;
  cudaMemPoolProps props{};  // the decoder's own pool, which keeps what nvJPEG frees instead of unmapping it
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  CUDA_CHECK(cudaMemPoolCreate(&m.pool, &props));
  uint64_t keep = UINT64_MAX;
  CUDA_CHECK(cudaMemPoolSetAttribute(m.pool, cudaMemPoolAttrReleaseThreshold, &keep));
  m.dev_alloc.dev_ctx = m.pool;
  // A backend counts once it has made a state and set up a batch. The hardware engine (A100, H100, H200...)
  // first, with interpolated chroma upsampling (libjpeg's "fancy" upsampling, what PIL decodes with), then
  // without it; else the GPU-hybrid backend the same way.
  auto start = [&](nvjpegBackend_t backend, unsigned flags) {
    if (nvjpegCreateExV2(backend, &m.dev_alloc, &m.pinned_alloc, flags, &m.handle) != NVJPEG_STATUS_SUCCESS) {
      m.handle = nullptr;
      return false;
    }
    nvjpegJpegState_t st = nullptr;
    const bool ok = nvjpegJpegStateCreate(m.handle, &st) == NVJPEG_STATUS_SUCCESS &&
                    nvjpegDecodeBatchedInitialize(m.handle, st, 1, 1, NVJPEG_OUTPUT_RGB) == NVJPEG_STATUS_SUCCESS;
    if (st) nvjpegJpegStateDestroy(st);
    if (!ok) nvjpegDestroy(m.handle), m.handle = nullptr;
    return ok;
  };
  constexpr unsigned kInterp = NVJPEG_FLAGS_UPSAMPLING_WITH_INTERPOLATION;
  m.hardware = use_hardware && (start(NVJPEG_BACKEND_HARDWARE, kInterp) || start(NVJPEG_BACKEND_HARDWARE, 0));
  if (!m.hardware && !start(NVJPEG_BACKEND_GPU_HYBRID, kInterp))
    NVJPEG_CHECK(nvjpegCreateExV2(NVJPEG_BACKEND_GPU_HYBRID, &m.dev_alloc, &m.pinned_alloc, NVJPEG_FLAGS_DEFAULT,
                                  &m.handle));
  // The decoder's streams at the highest priority (high_priority): its kernels are small (microseconds a
  // batch) and a batch waits on them, so they go first when an SM frees up instead of queueing behind the
  // training step's; else at the default priority, beside the step's.
  int least = 0, greatest = 0;
  CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  for (int i = 0; i < contexts; ++i) {
    m.ctx.push_back(std::make_unique<Impl::Context>());
    NVJPEG_CHECK(nvjpegJpegStateCreate(m.handle, &m.ctx.back()->state));
    CUDA_CHECK(cudaStreamCreateWithPriority(&m.ctx.back()->stream, cudaStreamNonBlocking, high_priority ? greatest : 0));
    CUDA_CHECK(cudaEventCreateWithFlags(&m.ctx.back()->done, cudaEventBlockingSync | cudaEventDisableTiming));
    for (cudaEvent_t& e : m.ctx.back()->mark) CUDA_CHECK(cudaEventCreate(&e));
  }
}

GpuJpegDecoder::~GpuJpegDecoder() { impl_->release(); }

bool GpuJpegDecoder::hardware() const { return impl_->hardware; }

GpuDecodeTimes GpuJpegDecoder::times() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->totals;
}

void GpuJpegDecoder::run(const GpuJob* jobs, int n, uint8_t* out, std::vector<char>& ok,
                         std::vector<std::string>& errors) {
  MO_CHECK(n >= 0 && n <= 65535, "GpuJpegDecoder::run: {} images in one batch (at most 65535)", n);
  ok.assign(static_cast<size_t>(n), 0);
  errors.assign(static_cast<size_t>(n), std::string());
  if (n == 0) return;
  Impl& m = *impl_;
  const int S = size_;
  CUDA_CHECK(cudaSetDevice(m.device));
  const auto t_queued = std::chrono::steady_clock::now();
  Impl::Context& c = m.acquire();
  Impl::Lease lease{m, c};
  const auto t_host = std::chrono::steady_clock::now();
  const double queued = std::chrono::duration<double>(t_host - t_queued).count();
  std::vector<int> which, W(n), H(n);
  std::vector<size_t> off(n), len(n);
  std::vector<const uint8_t*> data(n);
  size_t total = 0;
  for (int i = 0; i < n; ++i) {
    const GpuJob& j = jobs[i];
    data[i] = j.data, len[i] = j.size;
    if (!m.parse(c, static_cast<size_t>(i), j.data, j.size, W[i], H[i], errors[i])) continue;
    if (j.x < 0 || j.y < 0 || j.w <= 0 || j.h <= 0 || j.x + j.w > W[i] || j.y + j.h > H[i]) {
      errors[i] = fmt::format("crop ({}, {}, {}x{}) outside the {}x{} image", j.x, j.y, j.w, j.h, W[i], H[i]);
      continue;
    }
    which.push_back(i);
    off[i] = total;
    total += static_cast<size_t>(W[i]) * H[i] * 3;
  }
  if (which.empty()) return;
  uint8_t* planes = c.planes.ensure<uint8_t>(total);
  std::vector<nvjpegImage_t> dest(n);  // zeroed
  for (int i : which) set_planes(dest[i], planes + off[i], W[i], H[i]);
  CUDA_CHECK(cudaEventRecord(c.mark[0], c.stream));
  m.decode(c, which, data, len, dest, errors);
  if (which.empty()) return;
  CUDA_CHECK(cudaEventRecord(c.mark[1], c.stream));
  std::vector<CropParams> params;
  int64_t tmp_total = 0;
  int max_rows = 0;
  for (int i : which) {
    const GpuJob& j = jobs[i];
    CropParams q{};
    q.src = planes + off[i];
    q.W = W[i], q.H = H[i];
    q.box[0] = static_cast<float>(j.x), q.box[1] = static_cast<float>(j.y);
    q.box[2] = static_cast<float>(j.x + j.w), q.box[3] = static_cast<float>(j.y + j.h);
    q.bicubic = j.interp == Interp::bicubic, q.flip = j.flip;
    q.y_first = filter_taps(q.H, q.box[1], q.box[3], S, q.bicubic, 0).lo;
    q.rows = std::max(filter_taps(q.H, q.box[1], q.box[3], S, q.bicubic, S - 1).hi - q.y_first, 1);
    q.tmp_off = tmp_total;
    q.out_idx = i;
    tmp_total += static_cast<int64_t>(q.rows) * S * 3;
    max_rows = std::max(max_rows, q.rows);
    params.push_back(q);
  }
  const int m_n = static_cast<int>(params.size());
  CropParams* dparams = c.params.ensure<CropParams>(sizeof(CropParams) * params.size());
  uint8_t* tmp = c.tmp.ensure<uint8_t>(static_cast<size_t>(tmp_total));
  const size_t out_bytes = static_cast<size_t>(n) * S * S * 3;
  uint8_t* dout = c.out.ensure<uint8_t>(out_bytes);
  CUDA_CHECK(cudaMemcpyAsync(dparams, params.data(), sizeof(CropParams) * params.size(), cudaMemcpyHostToDevice,
                             c.stream));
  constexpr int kThreads = 256;
  const int64_t h_blocks = (static_cast<int64_t>(max_rows) * S + kThreads - 1) / kThreads;
  resize_h<<<dim3(static_cast<unsigned>(h_blocks), m_n), kThreads, 0, c.stream>>>(dparams, S, tmp);
  CUDA_CHECK_LAUNCH();
  resize_v<<<dim3(static_cast<unsigned>((S * S + kThreads - 1) / kThreads), m_n), kThreads, 0, c.stream>>>(dparams, S,
                                                                                                          tmp, dout);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaEventRecord(c.mark[2], c.stream));
  CUDA_CHECK(cudaMemcpyAsync(out, dout, out_bytes, cudaMemcpyDeviceToHost, c.stream));
  CUDA_CHECK(cudaEventRecord(c.mark[3], c.stream));
  const double host = Impl::seconds_since(t_host);
  const auto t_wait = std::chrono::steady_clock::now();
  Impl::wait(c);
  const double waited = Impl::seconds_since(t_wait);
  float ms[3] = {};
  for (int k = 0; k < 3; ++k) CUDA_CHECK(cudaEventElapsedTime(&ms[k], c.mark[k], c.mark[k + 1]));
  {
    std::lock_guard<std::mutex> lk(m.mu);
    GpuDecodeTimes& t = m.totals;
    ++t.batches, t.images += static_cast<int64_t>(which.size());
    t.queued_s += queued, t.host_s += host, t.wait_s += waited;
    t.decode_s += ms[0] / 1e3, t.resize_s += ms[1] / 1e3, t.copy_s += ms[2] / 1e3;
  }
  for (int i : which) ok[i] = 1;
}

bool GpuJpegDecoder::decode_full(const uint8_t* data, size_t n, Image& out, std::string& err) {
  Impl& m = *impl_;
  CUDA_CHECK(cudaSetDevice(m.device));
  Impl::Context& c = m.acquire();
  Impl::Lease lease{m, c};
  int W = 0, H = 0;
  if (!m.parse(c, 0, data, n, W, H, err)) return false;
  const size_t plane = static_cast<size_t>(W) * H;
  uint8_t* planes = c.planes.ensure<uint8_t>(plane * 3);
  std::vector<nvjpegImage_t> dest(1);
  set_planes(dest[0], planes, W, H);
  std::vector<int> which{0};
  std::vector<std::string> errors(1);
  m.decode(c, which, {data}, {n}, dest, errors);
  if (which.empty()) return err = errors[0], false;
  std::vector<uint8_t> host(plane * 3);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), planes, plane * 3, cudaMemcpyDeviceToHost, c.stream));
  Impl::wait(c);
  out.resize(W, H);
  for (size_t p = 0; p < plane; ++p)  // planar -> packed RGB
    for (int k = 0; k < 3; ++k) out.data()[p * 3 + k] = host[k * plane + p];
  return true;
}

}  // namespace mo::data
#endif  // MO_WITH_NVJPEG
