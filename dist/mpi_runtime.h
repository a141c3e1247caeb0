// mpi_runtime.h: this process's MPI session, shared by the mpi and nccl groups. It initialises MPI
// once with MPI_THREAD_MULTIPLE (or adopts an MPI the program already initialised, then leaves the
// finalising to it), finds the local rank with MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), sets
// MPI_ERRORS_RETURN so that MPI_CHECK can report failures, owns the heartbeat Monitor, and calls
// MPI_Finalize when the last group lets go of it. Include only where MO_WITH_MPI is defined.
#pragma once
#ifdef MO_WITH_MPI
#include <mpi.h>

#include <memory>
#include <string>

#include "dist/monitor.h"
#include "dist/process_group.h"

namespace mo::dist {

// MPI_CHECK(call): on failure throws mo::Error naming the call, file:line, the rank and MPI's message.
[[noreturn]] void mpi_fail(int code, const char* call, const char* file, int line);
#define MPI_CHECK(call)                                                  \
  do {                                                                   \
    int mo_mpi_e_ = (call);                                              \
    if (mo_mpi_e_ != MPI_SUCCESS) ::mo::dist::mpi_fail(mo_mpi_e_, #call, __FILE__, __LINE__); \
  } while (0)

class MpiRuntime {
 public:
  // The session, initialising MPI on first use. `heartbeat_timeout_s` applies to the first call.
  static std::shared_ptr<MpiRuntime> get(double heartbeat_timeout_s);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  const Topology& topology() const { return topo_; }
  bool thread_multiple() const { return thread_multiple_; }
  // A duplicate of MPI_COMM_WORLD (collective: every rank calls it in the same order), errors returned.
  MPI_Comm dup_world();
  Monitor* monitor() { return monitor_.get(); }  // null without MPI_THREAD_MULTIPLE or with one rank

 private:
  explicit MpiRuntime(double heartbeat_timeout_s);
  Topology topo_;
  bool we_initialised_ = false;
  bool thread_multiple_ = false;
  std::unique_ptr<Monitor> monitor_;
};

// The world rank of this process once MPI is up (-1 before), for messages.
int mpi_world_rank();

}  // namespace mo::dist
#endif  // MO_WITH_MPI
