// process_group.h: the collective-communication interface of data parallelism, and init().
//
// One ProcessGroup per process, three implementations behind the same calls:
//   local  one process, no MPI (the trainer run without mpirun): every collective is the identity;
//   mpi    CPU tensors (CUDA tensors are staged through the host): a communication thread runs
//          non-blocking MPI collectives in issue order and polls them against a deadline;
//   nccl   CUDA tensors on a dedicated stream, communicator bootstrapped over MPI, a watchdog thread
//          for asynchronous errors and timeouts; CPU tensors and host values go through MPI.
// Collectives must be issued in the same order on every rank (as with MPI and NCCL themselves).
// A rank that dies or stops answering makes the others abort the job with a message naming it
// (dist/monitor.h). This header stays C++17: .cu files may include it.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "autograd/tensor.h"

namespace mo::dist {

enum class ReduceOp { sum, avg };

struct Topology {
  int rank = 0;              // in the world
  int world_size = 1;
  int local_rank = 0;        // among the ranks of this host (MPI_Comm_split_type shared memory)
  int local_world_size = 1;
  std::string host = "localhost";
};

// Handle of an asynchronous collective. wait(): mpi blocks until the result is in place (the job is
// aborted at the deadline); nccl makes the calling thread's current CUDA stream wait for it, without
// blocking the host. done() never blocks.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  virtual bool done() = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual const char* backend() const = 0;  // "local" | "mpi" | "nccl"

  const Topology& topology() const { return topo_; }
  int rank() const { return topo_.rank; }
  int world_size() const { return topo_.world_size; }
  int local_rank() const { return topo_.local_rank; }
  bool is_main() const { return topo_.rank == 0; }  // rank 0 alone logs and writes checkpoints
  // The device of this rank: cuda(local GPU) where a GPU was assigned by init(), else cpu.
  Device device() const { return device_; }

  // In place, on a contiguous tensor with the same shape and dtype on every rank.
  virtual void broadcast(const Tensor& t, int root) = 0;
  // `what` names the operation in timeout messages ("bucket 3 (1.0 MiB)").
  virtual std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op, const std::string& what) = 0;
  void all_reduce(const Tensor& t, ReduceOp op) { all_reduce_async(t, op, "all_reduce")->wait(); }
  virtual void barrier() = 0;
  // Host bytes: every rank gives `nbytes` bytes; `out` receives world_size * nbytes in rank order.
  virtual void all_gather_bytes(const void* in, size_t nbytes, void* out) = 0;

  // One small trivially copyable host value per rank, in rank order.
  template <typename T>
  std::vector<T> all_gather(const T& v) {
    static_assert(std::is_trivially_copyable<T>::value, "all_gather: T must be trivially copyable");
    std::vector<T> out(world_size());
    all_gather_bytes(&v, sizeof(T), out.data());
    return out;
  }
  // Elementwise sums of host vectors (same length on every rank), added in rank order: exact for
  // integers, and the same bits on every rank for doubles.
  std::vector<int64_t> all_reduce_sum(const std::vector<int64_t>& v);
  std::vector<double> all_reduce_sum(const std::vector<double>& v);

 protected:
  Topology topo_;
  Device device_ = Device::cpu();
};

struct InitOptions {
  std::string backend = "auto";     // auto | local | mpi | nccl (env MO_DIST_BACKEND overrides)
  double timeout_s = 600;            // a collective unfinished after this aborts the job (MO_DIST_TIMEOUT)
  double heartbeat_timeout_s = 60;   // a rank silent this long is reported dead (MO_DIST_HEARTBEAT_TIMEOUT)
  bool use_gpu = true;               // assign GPU local_rank to this process where there is one
};

// Sets up this process's group. Without a launcher (no mpirun/srun environment) and with backend
// auto, the world is this one process (local). Under a launcher: MPI is initialised (or adopted
// when the program already called MPI_Init), one GPU per local rank is selected, and auto picks
// nccl when the build has it and a GPU is present, else mpi. Calling it again returns the same group.
std::shared_ptr<ProcessGroup> init(const InitOptions& opts = InitOptions());

// True when the environment says an MPI launcher (mpirun, srun, mpiexec) started this process with
// a world of more than one process.
bool launched_by_mpi();

// Prints "[mo.dist] rank R: <msg>" to stderr and ends the whole job (MPI_Abort where MPI is up,
// else _exit). Used for faults that would otherwise leave the other ranks waiting forever.
[[noreturn]] void abort_job(const std::string& msg, int code = 3);

// Reads a duration in seconds from the environment, or `fallback` when unset (throws on junk).
double env_seconds(const char* name, double fallback);

}  // namespace mo::dist
