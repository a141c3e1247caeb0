// nccl_group.cpp: the NCCL ProcessGroup of nccl_group.h: bootstrap, stream ordering with events,
// and the watchdog (asynchronous errors, deadlines, ncclCommAbort). Compiled only with NCCL.
#if defined(MO_WITH_NCCL) && defined(MO_WITH_MPI)
#include "dist/nccl_group.h"

#include <nccl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "autograd/cuda_allocator.h"
#include "autograd/cuda_check.h"

#define NCCL_CHECK(call)                                                                                \
  do {                                                                                                  \
    ncclResult_t r_ = (call);                                                                           \
    if (r_ != ncclSuccess)                                                                              \
      throw ::mo::Error(fmt::format("NCCL error {} ({}) in {} at {}:{} (rank {})", static_cast<int>(r_), \
                                    ncclGetErrorString(r_), #call, __FILE__, __LINE__,                  \
                                    ::mo::dist::mpi_world_rank()));                                     \
  } while (0)

namespace mo::dist {

namespace {

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

ncclDataType_t nccl_type(const Tensor& t) {
  switch (t.dtype()) {
    case DType::f32: return ncclFloat32;
    case DType::bf16: return ncclBfloat16;
    case DType::f64: return ncclFloat64;
    case DType::i64: return ncclInt64;
    case DType::u8: return ncclUint8;
  }
  MO_FAIL("dist nccl: unsupported dtype of {}", t.str());
}

// A CUDA event without timing, destroyed with its last owner (a Work or the watchdog queue).
struct Event {
  cudaEvent_t ev = nullptr;
  Event() { CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming)); }
  ~Event() { cudaEventDestroy(ev); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

class NcclWork : public Work {
 public:
  explicit NcclWork(std::shared_ptr<Event> done) : done_(std::move(done)) {}
  void wait() override {
    CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(cuda_current_stream()), done_->ev, 0));
  }
  bool done() override { return cudaEventQuery(done_->ev) == cudaSuccess; }

 private:
  std::shared_ptr<Event> done_;
};

class NcclGroup : public ProcessGroup {
 public:
  NcclGroup(std::shared_ptr<MpiRuntime> rt, std::shared_ptr<MpiGroup> host, double timeout_s, Device dev)
      : rt_(std::move(rt)), host_(std::move(host)), timeout_s_(timeout_s) {
    topo_ = rt_->topology();
    device_ = dev;
    CUDA_CHECK(cudaSetDevice(dev.index));
    ncclUniqueId id;
    if (rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    host_->broadcast(Tensor::from_blob(&id, {static_cast<int64_t>(sizeof id)}, DType::u8), 0);
    init_started_ = now_s();
    watchdog_ = std::thread([this] { watch(); });  // guards ncclCommInitRank's wait for the peers
    try {
      NCCL_CHECK(ncclCommInitRank(&comm_, world_size(), id, rank()));
      init_done_ = true;
      int lo = 0, hi = 0;
      CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
      CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, hi));
      ready_ = std::make_unique<Event>();
    } catch (...) {
      stop_watchdog();
      throw;
    }
  }

  void stop_watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
  }

  ~NcclGroup() override {
    if (stream_) cudaStreamSynchronize(stream_);  // the watchdog still guards this wait
    stop_watchdog();
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  const char* backend() const override { return "nccl"; }

  void broadcast(const Tensor& t, int root) override {
    if (!t.defined() || !t.is_cuda()) return host_->broadcast(t, root);
    check(t, "broadcast");
    MO_CHECK(root >= 0 && root < world_size(), "dist broadcast: root {} outside the world of {} ranks", root,
             world_size());
    auto done = enqueue(t, fmt::format("broadcast of {} from rank {}", t.str(), root), [&](void* p) {
      NCCL_CHECK(ncclBroadcast(p, p, static_cast<size_t>(t.numel()), nccl_type(t), root, comm_, stream_));
    });
    NcclWork(done).wait();
    t.bump_version();
  }

  std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op, const std::string& what) override {
    if (!t.defined() || !t.is_cuda()) return host_->all_reduce_async(t, op, what);
    check(t, "all_reduce");
    MO_CHECK(op == ReduceOp::sum || is_floating(t.dtype()), "dist all_reduce: average of integer tensor {}", t.str());
    ncclRedOp_t nop = op == ReduceOp::avg ? ncclAvg : ncclSum;
    auto done = enqueue(t, fmt::format("all_reduce {} ({})", what, t.str()), [&](void* p) {
      NCCL_CHECK(ncclAllReduce(p, p, static_cast<size_t>(t.numel()), nccl_type(t), nop, comm_, stream_));
    });
    t.bump_version();
    return std::make_shared<NcclWork>(done);
  }

  void barrier() override { host_->barrier(); }
  void all_gather_bytes(const void* in, size_t nbytes, void* out) override { host_->all_gather_bytes(in, nbytes, out); }

 private:
  struct Pending {
    uint64_t seq;
    std::string what;
    std::shared_ptr<Event> done;
    Tensor keep;  // the buffer stays allocated until the collective has finished
    double start;
  };

  void check(const Tensor& t, const char* op) const {
    MO_CHECK(t.is_contiguous(), "dist {}: tensor {} must be contiguous", op, t.str());
    MO_CHECK(t.device() == device_, "dist {}: tensor {} is not on this rank's device {}", op, t.str(), device_.str());
  }

  // Orders the collective after the caller's stream, launches it on stream_, records completion.
  template <typename Launch>
  std::shared_ptr<Event> enqueue(const Tensor& t, std::string what, Launch&& launch) {
    std::lock_guard<std::mutex> lock(launch_mu_);
    Monitor* mon = rt_->monitor();
    uint64_t seq = mon ? mon->begin_collective() : ++local_seq_;
    CUDA_CHECK(cudaEventRecord(ready_->ev, static_cast<cudaStream_t>(cuda_current_stream())));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_->ev, 0));
    launch(t.raw_data());
    auto done = std::make_shared<Event>();
    CUDA_CHECK(cudaEventRecord(done->ev, stream_));
    {
      std::lock_guard<std::mutex> q(mu_);
      pending_.push_back({seq, std::move(what), done, t, now_s()});
    }
    return done;
  }

  [[noreturn]] void fault(const std::string& msg) {
    if (comm_) ncclCommAbort(comm_);  // unblocks kernels and host calls waiting on the peers
    abort_job(msg);
  }

  // The watchdog: every 50 ms, the communicator's asynchronous error and the oldest collectives.
  void watch() {
    if (cudaError_t e = cudaSetDevice(device_.index); e != cudaSuccess)
      abort_job(fmt::format("NCCL watchdog: cannot select GPU {}: {}", device_.index, cudaGetErrorString(e)));
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(50));
      double t = now_s();
      if (!init_done_) {
        if (t - init_started_ > timeout_s_)
          abort_job(fmt::format("ncclCommInitRank did not complete within {:.0f} s (MO_DIST_TIMEOUT){}", timeout_s_,
                                rt_->monitor() ? "\n" + rt_->monitor()->describe_peers(1) : std::string()));
        continue;
      }
      ncclResult_t async = ncclSuccess;
      ncclResult_t r = ncclCommGetAsyncError(comm_, &async);
      if (r != ncclSuccess || (async != ncclSuccess && async != ncclInProgress))
        fault(fmt::format("NCCL asynchronous error: {} ({})", ncclGetErrorString(r != ncclSuccess ? r : async),
                          ncclGetLastError(comm_)));
      while (!pending_.empty()) {
        Pending& p = pending_.front();
        cudaError_t e = cudaEventQuery(p.done->ev);
        if (e == cudaSuccess) {
          if (Monitor* mon = rt_->monitor()) mon->end_collective(p.seq);
          pending_.pop_front();
          continue;
        }
        if (e != cudaErrorNotReady)
          fault(fmt::format("{} (collective #{}) failed on the GPU: {}", p.what, p.seq, cudaGetErrorString(e)));
        if (t - p.start > timeout_s_) {
          std::string peers = rt_->monitor() ? rt_->monitor()->describe_peers(p.seq) : std::string();
          fault(fmt::format("{} (collective #{}) did not complete within {:.1f} s (MO_DIST_TIMEOUT).\n{}", p.what,
                            p.seq, t - p.start, peers));
        }
        break;  // collectives complete in order on stream_
      }
    }
  }

  std::shared_ptr<MpiRuntime> rt_;
  std::shared_ptr<MpiGroup> host_;
  double timeout_s_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Event> ready_;  // recorded on the caller's stream before each launch
  std::mutex launch_mu_;  // one launcher at a time
  uint64_t local_seq_ = 0;
  std::mutex mu_;  // guards pending_ and stop_
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  bool stop_ = false;
  std::atomic<bool> init_done_{false};
  double init_started_ = 0;
  std::thread watchdog_;
};

}  // namespace

std::shared_ptr<ProcessGroup> make_nccl_group(std::shared_ptr<MpiRuntime> rt, std::shared_ptr<MpiGroup> host,
                                              double timeout_s, Device dev) {
  return std::make_shared<NcclGroup>(std::move(rt), std::move(host), timeout_s, dev);
}

}  // namespace mo::dist
#endif
