// data_parallel.h: synchronous data parallelism in the manner of PyTorch DDP.
//
// At construction the parameters of rank 0 are broadcast to every rank (after checking that every
// rank has the same parameter names and shapes), and the gradients are made views of one flat
// gradient arena in parameter order (the layout of nn::pack_parameters). When the gradients already
// form such an arena, as nn::AdamW's fp32 gradient buffer does, it is adopted as is: create the
// optimizer first, then DataParallel. Otherwise an arena in the parameters' dtype is made. The arena
// is cut into buckets of about `bucket_bytes`, filled in reverse parameter order (the order in which
// backward produces gradients), the first one smaller so that communication starts early.
// A post-accumulate hook on every parameter counts the gradients that are ready; a full bucket is
// all-reduced (averaged) at once, asynchronously: NCCL on its own stream, MPI on the communication
// thread, while backward goes on. Buckets are launched strictly in bucket order, so every rank
// issues the same collectives in the same order and the sums never depend on timing.
//
// Gradient accumulation: with sync off (no_sync(), the micro-steps before the last) gradients only
// accumulate locally; with sync on (the last micro-step) buckets are reduced during its backward.
// finish() launches what is left (parameters that got no gradient) and waits for every bucket;
// then every rank holds the same averaged gradients and the optimizer may step.
//
//   nn::AdamW opt(model, pg->device(), DType::bf16);            // packs parameters, owns fp32 grads
//   dist::DataParallelOptions o;  o.broadcast_also = {opt.master()};
//   dist::DataParallel ddp(pg, model.named_parameters(), o);    // adopts opt's gradient arena
//   opt.sync_compute_weights();                                 // bf16 copy of the broadcast master
//   for (int m = 0; m < accum; ++m) {
//     ddp.set_sync(m == accum - 1);
//     (loss(model, micro_batch(m)) * (1.0 / accum)).backward();
//   }
//   ddp.finish();  optimizer.step();  ddp.zero_grad();
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dist/process_group.h"

namespace mo::dist {

struct DataParallelOptions {
  size_t bucket_bytes = size_t(25) << 20;      // as PyTorch's bucket_cap_mb = 25
  size_t first_bucket_bytes = size_t(1) << 20; // the bucket of the last parameters (reduced first)
  bool broadcast_parameters = true;            // copy rank 0's initial parameters to every rank
  // More state broadcast from rank 0 with the parameters, e.g. the fp32 master weights of a bf16
  // optimizer (then refresh the compute weights from them).
  std::vector<Tensor> broadcast_also;
};

struct Bucket {
  int64_t begin = 0, end = 0;   // element range of the gradient arena
  std::vector<int> params;      // indices of its parameters, in the order their gradients come
};

class DataParallel {
 public:
  // `params`: every trainable parameter with its name, in model order (Module::named_parameters()).
  // All must share one dtype and device (the group's device for nccl). A gradient later re-bound to
  // another shared buffer is an error; a private one (backward after grads were reset) is absorbed.
  DataParallel(std::shared_ptr<ProcessGroup> pg, const std::vector<std::pair<std::string, Tensor>>& params,
               const DataParallelOptions& opts = DataParallelOptions());
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Whether the coming backward passes reduce gradients (default on). Off between the micro-steps
  // of an accumulated step; on for the last one.
  void set_sync(bool on);
  bool sync() const;
  // Scope with sync off, restoring the previous setting on exit.
  class NoSync {
   public:
    explicit NoSync(DataParallel& d) : d_(&d), prev_(d.sync()) { d.set_sync(false); }
    ~NoSync() { if (d_) d_->set_sync(prev_); }
    NoSync(NoSync&& o) noexcept : d_(o.d_), prev_(o.prev_) { o.d_ = nullptr; }
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;
   private:
    DataParallel* d_;
    bool prev_;
  };
  [[nodiscard]] NoSync no_sync() { return NoSync(*this); }

  // After the last backward of a step: launches the buckets not yet launched, waits for all
  // (nccl: the current stream waits), and leaves every gradient averaged over the ranks.
  void finish();
  // Zeroes the gradient arena (gradients stay bound to it). Not while buckets are in flight.
  void zero_grad();

  ProcessGroup& group() const;
  Tensor grad_arena() const;                 // flat gradients, parameter order
  bool adopted_arena() const;                // the arena was the gradients' existing buffer
  int64_t offset(int param) const;           // element offset of parameter `param` in the arena
  const std::vector<Bucket>& buckets() const;
  // Counters for tests and logs: buckets launched from backward hooks (overlapping) and from finish().
  int64_t buckets_launched_in_backward() const;
  int64_t buckets_launched_in_finish() const;

  // Throws mo::Error naming the first rank whose parameters differ from rank 0's (a checksum of
  // every parameter's bytes; costly, for tests and occasional checks).
  void check_replicas() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;  // the hooks hold a weak reference to it
};

}  // namespace mo::dist
