// mpi_group.h: the MPI ProcessGroup. Collectives are queued to one communication thread that posts
// them as non-blocking MPI calls on a private communicator, in issue order, and polls MPI_Test
// until they finish or their deadline passes (then the job is aborted with a message naming the
// ranks that are behind, from the Monitor). The calling thread keeps computing meanwhile: this is
// how bucket all-reduces overlap backward on CPU. CUDA tensors are staged through host memory
// (slow; the nccl group is the GPU path). bf16 sums use a user MPI_Op that adds in fp32.
#pragma once
#ifdef MO_WITH_MPI
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "dist/mpi_runtime.h"
#include "dist/process_group.h"

namespace mo::dist {

class MpiGroup : public ProcessGroup {
 public:
  // `dev`: the device reported by device() (CUDA tensors are staged through the host either way).
  MpiGroup(std::shared_ptr<MpiRuntime> rt, double timeout_s, Device dev = Device::cpu());
  ~MpiGroup() override;  // finishes the queued collectives, then stops the thread
  const char* backend() const override { return "mpi"; }

  void broadcast(const Tensor& t, int root) override;
  std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op, const std::string& what) override;
  void barrier() override;
  void all_gather_bytes(const void* in, size_t nbytes, void* out) override;

  struct Op;  // one queued collective (mpi_group.cpp)

 private:
  std::shared_ptr<Op> submit(std::shared_ptr<Op> op);
  void run();
  void execute(Op& op);

  std::shared_ptr<MpiRuntime> rt_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Op bf16_sum_ = MPI_OP_NULL;
  double timeout_s_;
  uint64_t local_seq_ = 0;  // collective numbers when there is no Monitor
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Op>> queue_;
  bool stop_ = false;
  std::thread thread_;  // not started without MPI_THREAD_MULTIPLE: ops then run on the caller
};

}  // namespace mo::dist
#endif  // MO_WITH_MPI
