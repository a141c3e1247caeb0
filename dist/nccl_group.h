// nccl_group.h: the NCCL ProcessGroup for CUDA tensors (nccl_group.cpp). The communicator is
// bootstrapped by broadcasting an ncclUniqueId over MPI; collectives run on a dedicated
// high-priority stream after an event on the caller's current stream, and the caller's stream
// waits for them (no host blocking). A watchdog thread polls ncclCommGetAsyncError and the
// completion events: an asynchronous error or a collective past its deadline aborts the
// communicator (ncclCommAbort) and the job, naming the ranks that are behind. CPU tensors, the
// barrier and host all-gathers go through the MPI group `host`.
#pragma once
#if defined(MO_WITH_NCCL) && defined(MO_WITH_MPI)
#include <memory>

#include "dist/mpi_group.h"

namespace mo::dist {

// `dev` is the CUDA device this rank drives (already made current by init()).
std::shared_ptr<ProcessGroup> make_nccl_group(std::shared_ptr<MpiRuntime> rt, std::shared_ptr<MpiGroup> host,
                                              double timeout_s, Device dev);

}  // namespace mo::dist
#endif
