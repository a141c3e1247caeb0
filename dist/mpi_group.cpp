// mpi_group.cpp: the MPI ProcessGroup (see mpi_group.h): the op queue, the communication thread
// with its deadline, dtype mapping, chunking of messages over 2^28 elements (MPI counts are int),
// and the host staging of CUDA tensors.
#ifdef MO_WITH_MPI
#include "dist/mpi_group.h"

#include <algorithm>
#include <chrono>
#include <climits>

namespace mo::dist {

namespace {

constexpr size_t kMaxChunk = size_t(1) << 28;  // elements per MPI call

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

void bf16_sum_fn(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const bf16_t*>(in);
  auto* b = static_cast<bf16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = bf16_t(static_cast<float>(a[i]) + static_cast<float>(b[i]));
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i64: return MPI_INT64_T;
    case DType::u8: return MPI_UINT8_T;
    case DType::bf16: return MPI_UINT16_T;  // summed by bf16_sum_fn
  }
  return MPI_DATATYPE_NULL;
}

template <typename T>
void scale_in_place(void* p, size_t n, double s) {
  T* x = static_cast<T*>(p);
  for (size_t i = 0; i < n; ++i) x[i] = T(static_cast<float>(x[i]) * static_cast<float>(s));
}
template <>
void scale_in_place<double>(void* p, size_t n, double s) {
  double* x = static_cast<double*>(p);
  for (size_t i = 0; i < n; ++i) x[i] *= s;
}

}  // namespace

struct MpiGroup::Op {
  enum Kind { all_reduce, bcast, barrier, all_gather } kind = barrier;
  void* buf = nullptr;          // in/out (all_reduce, bcast) or out (all_gather)
  const void* in = nullptr;     // all_gather input
  size_t count = 0;             // elements of buf (all_gather: bytes per rank)
  DType dtype = DType::u8;
  MPI_Op mop = MPI_SUM;
  int root = 0;
  double post_scale = 1.0;      // avg: 1 / world, applied after the sum
  std::string what;
  uint64_t seq = 0;
  Tensor keep;                  // keeps the buffer alive while the op is queued or running
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<bool> finished{false};

  void wait() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finished.load(); });
  }
};

namespace {

// A queued all-reduce; for a CUDA tensor the result is copied back from host memory in wait().
class MpiWork : public Work {
 public:
  MpiWork(std::shared_ptr<MpiGroup::Op> op, Tensor device, Tensor host)
      : op_(std::move(op)), device_(std::move(device)), host_(std::move(host)) {}
  void wait() override {
    op_->wait();
    if (device_.defined()) {
      device_.copy_(host_);
      device_ = Tensor();
    }
  }
  bool done() override { return op_->finished.load() && !device_.defined(); }

 private:
  std::shared_ptr<MpiGroup::Op> op_;
  Tensor device_, host_;
};

void check_tensor(const char* op, const Tensor& t) {
  MO_CHECK(t.defined(), "dist {}: undefined tensor", op);
  MO_CHECK(t.is_contiguous(), "dist {}: tensor {} must be contiguous", op, t.str());
}

}  // namespace

MpiGroup::MpiGroup(std::shared_ptr<MpiRuntime> rt, double timeout_s, Device dev)
    : rt_(std::move(rt)), timeout_s_(timeout_s) {
  topo_ = rt_->topology();
  device_ = dev;
  comm_ = rt_->dup_world();
  MPI_CHECK(MPI_Op_create(&bf16_sum_fn, 1, &bf16_sum_));
  if (rt_->thread_multiple()) thread_ = std::thread([this] { run(); });
}

MpiGroup::~MpiGroup() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  MPI_Op_free(&bf16_sum_);
  MPI_Comm_free(&comm_);
}

std::shared_ptr<MpiGroup::Op> MpiGroup::submit(std::shared_ptr<Op> op) {
  Monitor* mon = rt_->monitor();
  if (!thread_.joinable()) {  // no MPI_THREAD_MULTIPLE: run here
    op->seq = mon ? mon->begin_collective() : ++local_seq_;
    execute(*op);
    return op;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    op->seq = mon ? mon->begin_collective() : ++local_seq_;  // numbered in issue order
    queue_.push_back(op);
  }
  cv_.notify_one();
  return op;
}

void MpiGroup::run() {
  while (true) {
    std::shared_ptr<Op> op;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and drained
      op = queue_.front();
      queue_.pop_front();
    }
    execute(*op);
  }
}

void MpiGroup::execute(Op& op) {
  try {
    std::vector<MPI_Request> reqs;
    size_t esize = dtype_size(op.dtype);
    MPI_Datatype type = mpi_type(op.dtype);
    char* base = static_cast<char*>(op.buf);
    switch (op.kind) {
      case Op::all_reduce:
        for (size_t off = 0; off < op.count; off += kMaxChunk) {
          int n = static_cast<int>(std::min(kMaxChunk, op.count - off));
          reqs.emplace_back();
          MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, base + off * esize, n, type, op.mop, comm_, &reqs.back()));
        }
        break;
      case Op::bcast:
        for (size_t off = 0; off < op.count; off += kMaxChunk) {
          int n = static_cast<int>(std::min(kMaxChunk, op.count - off));
          reqs.emplace_back();
          MPI_CHECK(MPI_Ibcast(base + off * esize, n, type, op.root, comm_, &reqs.back()));
        }
        break;
      case Op::barrier:
        reqs.emplace_back();
        MPI_CHECK(MPI_Ibarrier(comm_, &reqs.back()));
        break;
      case Op::all_gather:
        reqs.emplace_back();
        MPI_CHECK(MPI_Iallgather(op.in, static_cast<int>(op.count), MPI_BYTE, op.buf, static_cast<int>(op.count),
                                 MPI_BYTE, comm_, &reqs.back()));
        break;
    }
    // Poll against the deadline: yield first, then sleep with a growing back-off (≤ 200 µs).
    double start = now_s();
    int polls = 0;
    while (true) {
      int flag = 0;
      MPI_CHECK(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &flag, MPI_STATUSES_IGNORE));
      if (flag) break;
      double waited = now_s() - start;
      if (waited > timeout_s_) {
        if (Monitor* mon = rt_->monitor()) mon->collective_timeout(op.what, op.seq, waited);
        abort_job(fmt::format("{} (collective #{}) did not complete within {:.1f} s (MO_DIST_TIMEOUT)", op.what,
                              op.seq, waited));
      }
      if (++polls < 32) {
        std::this_thread::yield();
      } else {
        int us = std::min(200, 2 * (polls - 31));
        std::this_thread::sleep_for(std::chrono::microseconds(us));
      }
    }
    if (op.post_scale != 1.0) {
      switch (op.dtype) {
        case DType::f32: scale_in_place<float>(op.buf, op.count, op.post_scale); break;
        case DType::f64: scale_in_place<double>(op.buf, op.count, op.post_scale); break;
        case DType::bf16: scale_in_place<bf16_t>(op.buf, op.count, op.post_scale); break;
        default: MO_ASSERT(false);
      }
    }
    if (Monitor* mon = rt_->monitor()) mon->end_collective(op.seq);
  } catch (const std::exception& e) {
    // A failed collective leaves the other ranks inside it: end the job rather than hang them.
    abort_job(fmt::format("{} (collective #{}) failed: {}", op.what, op.seq, e.what()));
  }
  {
    std::lock_guard<std::mutex> lock(op.mu);
    op.finished = true;
  }
  op.cv.notify_all();
}

void MpiGroup::broadcast(const Tensor& t, int root) {
  check_tensor("broadcast", t);
  MO_CHECK(root >= 0 && root < world_size(), "dist broadcast: root {} outside the world of {} ranks", root,
           world_size());
  Tensor host = t.is_cuda() ? t.cpu() : t;
  auto op = std::make_shared<Op>();
  op->kind = Op::bcast;
  op->buf = host.raw_data();
  op->count = static_cast<size_t>(host.numel());
  op->dtype = host.dtype();
  op->root = root;
  op->what = fmt::format("broadcast of {} from rank {}", t.str(), root);
  op->keep = host;
  submit(op)->wait();
  if (t.is_cuda()) {
    Tensor(t).copy_(host);
  } else {
    t.bump_version();
  }
}

std::shared_ptr<Work> MpiGroup::all_reduce_async(const Tensor& t, ReduceOp rop, const std::string& what) {
  check_tensor("all_reduce", t);
  MO_CHECK(rop == ReduceOp::sum || is_floating(t.dtype()), "dist all_reduce: average of integer tensor {}", t.str());
  MO_CHECK(t.dtype() != DType::u8, "dist all_reduce: uint8 tensor {} cannot be summed", t.str());
  Tensor host = t.is_cuda() ? t.cpu() : t;
  auto op = std::make_shared<Op>();
  op->kind = Op::all_reduce;
  op->buf = host.raw_data();
  op->count = static_cast<size_t>(host.numel());
  op->dtype = host.dtype();
  op->mop = host.dtype() == DType::bf16 ? bf16_sum_ : MPI_SUM;
  op->post_scale = rop == ReduceOp::avg ? 1.0 / world_size() : 1.0;
  op->what = fmt::format("all_reduce {} ({})", what, t.str());
  op->keep = host;
  t.bump_version();
  submit(op);
  return std::make_shared<MpiWork>(op, t.is_cuda() ? t : Tensor(), t.is_cuda() ? host : Tensor());
}

void MpiGroup::barrier() {
  auto op = std::make_shared<Op>();
  op->kind = Op::barrier;
  op->what = "barrier";
  submit(op)->wait();
}

void MpiGroup::all_gather_bytes(const void* in, size_t nbytes, void* out) {
  MO_CHECK(nbytes * static_cast<size_t>(world_size()) < static_cast<size_t>(INT_MAX),
           "dist all_gather: {} bytes per rank is too large for a host all-gather", nbytes);
  auto op = std::make_shared<Op>();
  op->kind = Op::all_gather;
  op->in = in;
  op->buf = out;
  op->count = nbytes;
  op->what = fmt::format("all_gather of {} bytes per rank", nbytes);
  submit(op)->wait();
}

}  // namespace mo::dist
#endif  // MO_WITH_MPI
