// mpi_runtime.cpp: MPI initialisation, topology (world and host-local ranks), error reporting and
// finalisation for mpi_runtime.h.
#ifdef MO_WITH_MPI
#include "dist/mpi_runtime.h"

#include <atomic>
#include <cstdio>
#include <exception>
#include <mutex>

namespace mo::dist {

namespace {
std::atomic<int> g_world_rank{-1};
}

int mpi_world_rank() { return g_world_rank.load(); }

void mpi_fail(int code, const char* call, const char* file, int line) {
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) std::snprintf(msg, sizeof msg, "error code %d", code);
  throw Error(fmt::format("MPI error in {} at {}:{} (rank {}): {}", call, file, line, mpi_world_rank(), msg));
}

std::shared_ptr<MpiRuntime> MpiRuntime::get(double heartbeat_timeout_s) {
  static std::mutex mu;
  static std::weak_ptr<MpiRuntime> current;
  std::lock_guard<std::mutex> lock(mu);
  if (auto rt = current.lock()) return rt;
  std::shared_ptr<MpiRuntime> rt(new MpiRuntime(heartbeat_timeout_s));
  current = rt;
  return rt;
}

MpiRuntime::MpiRuntime(double heartbeat_timeout_s) {
  int initialised = 0, finalised = 0;
  MPI_CHECK(MPI_Initialized(&initialised));
  MPI_CHECK(MPI_Finalized(&finalised));
  MO_CHECK(!finalised,
           "dist: MPI was already finalised in this process; keep the ProcessGroup from dist::init() alive for as "
           "long as the program communicates");
  int provided = MPI_THREAD_SINGLE;
  if (!initialised) {
    MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
    we_initialised_ = true;
  }
  MPI_CHECK(MPI_Query_thread(&provided));
  thread_multiple_ = provided >= MPI_THREAD_MULTIPLE;
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));

  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &topo_.rank));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &topo_.world_size));
  g_world_rank = topo_.rank;
  MPI_Comm local;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, topo_.rank, MPI_INFO_NULL, &local));
  MPI_CHECK(MPI_Comm_rank(local, &topo_.local_rank));
  MPI_CHECK(MPI_Comm_size(local, &topo_.local_world_size));
  MPI_CHECK(MPI_Comm_free(&local));
  char host[MPI_MAX_PROCESSOR_NAME] = {0};
  int len = 0;
  MPI_CHECK(MPI_Get_processor_name(host, &len));
  topo_.host.assign(host, len);

  if (!thread_multiple_ && topo_.rank == 0) {
    std::fprintf(stderr,
                 "[mo.dist] warning: this MPI gives thread level %d < MPI_THREAD_MULTIPLE: collectives run on the "
                 "calling thread (no overlap) and there are no heartbeats (a dead rank is named by the launcher only)\n",
                 provided);
  }
  if (thread_multiple_ && topo_.world_size > 1) monitor_ = std::make_unique<Monitor>(dup_world(), heartbeat_timeout_s);
}

MpiRuntime::~MpiRuntime() {
  if (std::uncaught_exceptions() > 0) {
    // Unwinding because of an error: the peers may be waiting in a collective for this rank, so no
    // goodbye and no MPI_Finalize (both would wait for them). Tell them; the launcher ends the job.
    if (monitor_) monitor_->leave_on_error();
    monitor_.reset();
    return;
  }
  monitor_.reset();  // goodbye with every peer before MPI_Finalize
  if (we_initialised_) {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (!finalised) MPI_Finalize();
  }
}

MPI_Comm MpiRuntime::dup_world() {
  MPI_Comm c;
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &c));
  MPI_CHECK(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN));
  return c;
}

}  // namespace mo::dist
#endif  // MO_WITH_MPI
