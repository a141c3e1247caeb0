// process_group.cpp: init() (launcher detection, MPI session, GPU per local rank, backend choice),
// the single-process LocalGroup, the host sum helpers shared by every group, and abort_job.
#include "dist/process_group.h"

#include "autograd/parse.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "autograd/cuda_allocator.h"
#include "dist/mpi_group.h"
#include "dist/nccl_group.h"
#ifdef MO_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace mo::dist {

namespace {

// World of one: every collective is the identity.
class DoneWork : public Work {
 public:
  void wait() override {}
  bool done() override { return true; }
};

class LocalGroup : public ProcessGroup {
 public:
  explicit LocalGroup(Device dev) { device_ = dev; }
  const char* backend() const override { return "local"; }
  void broadcast(const Tensor& t, int root) override {
    MO_CHECK(t.defined(), "dist broadcast: undefined tensor");
    MO_CHECK(root == 0, "dist broadcast: root {} outside the world of 1 rank", root);
  }
  std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp, const std::string&) override {
    MO_CHECK(t.defined(), "dist all_reduce: undefined tensor");
    return std::make_shared<DoneWork>();
  }
  void barrier() override {}
  void all_gather_bytes(const void* in, size_t nbytes, void* out) override {
    if (nbytes) std::memcpy(out, in, nbytes);
  }
};

int env_int(const char* name) {  // 0 when unset; a launcher variable that is not a count is an error
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  const std::optional<int64_t> n = parse_int(v);
  MO_CHECK(n && *n >= 0 && *n <= (int64_t{1} << 30), "environment variable {}='{}' is not a process count", name, v);
  return static_cast<int>(*n);
}

std::atomic<int> g_rank{0};

}  // namespace

// The number of processes the launcher says it started (0 when none says).
static int launcher_world_size() {
  int n = 0;
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"})
    n = std::max(n, env_int(v));
  return n;
}

bool launched_by_mpi() { return launcher_world_size() > 1; }

double env_seconds(const char* name, double fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  const std::optional<double> s = parse_float(v);
  MO_CHECK(s && *s > 0, "environment variable {}='{}' is not a positive number of seconds", name, v);
  return *s;
}

void abort_job(const std::string& msg, int code) {
  static std::atomic<bool> aborting{false};
  if (aborting.exchange(true)) {  // another thread is already ending the job
    while (true) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  int rank = g_rank.load();
#ifdef MO_WITH_MPI
  if (mpi_world_rank() >= 0) rank = mpi_world_rank();
#endif
  std::fprintf(stderr, "[mo.dist] rank %d: %s\n", rank, msg.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
#ifdef MO_WITH_MPI
  int up = 0, down = 0;
  MPI_Initialized(&up);
  MPI_Finalized(&down);
  if (up && !down) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

std::vector<int64_t> ProcessGroup::all_reduce_sum(const std::vector<int64_t>& v) {
  auto n = all_gather(static_cast<uint64_t>(v.size()));
  for (int r = 1; r < world_size(); ++r)
    MO_CHECK(n[r] == n[0], "dist all_reduce_sum: rank {} gave {} values but rank 0 gave {}", r, n[r], n[0]);
  std::vector<int64_t> all(v.size() * world_size());
  all_gather_bytes(v.data(), v.size() * sizeof(int64_t), all.data());
  std::vector<int64_t> out(v.size(), 0);
  for (int r = 0; r < world_size(); ++r)
    for (size_t i = 0; i < v.size(); ++i) out[i] += all[r * v.size() + i];
  return out;
}

std::vector<double> ProcessGroup::all_reduce_sum(const std::vector<double>& v) {
  auto n = all_gather(static_cast<uint64_t>(v.size()));
  for (int r = 1; r < world_size(); ++r)
    MO_CHECK(n[r] == n[0], "dist all_reduce_sum: rank {} gave {} values but rank 0 gave {}", r, n[r], n[0]);
  std::vector<double> all(v.size() * world_size());
  all_gather_bytes(v.data(), v.size() * sizeof(double), all.data());
  std::vector<double> out(v.size(), 0.0);
  for (int r = 0; r < world_size(); ++r)  // rank order: the same bits on every rank
    for (size_t i = 0; i < v.size(); ++i) out[i] += all[r * v.size() + i];
  return out;
}

std::shared_ptr<ProcessGroup> init(const InitOptions& opts_in) {
  static std::mutex mu;
  static std::weak_ptr<ProcessGroup> current;
  std::lock_guard<std::mutex> lock(mu);
  if (auto g = current.lock()) return g;

  InitOptions o = opts_in;
  if (const char* b = std::getenv("MO_DIST_BACKEND"); b && *b) o.backend = b;
  o.timeout_s = env_seconds("MO_DIST_TIMEOUT", o.timeout_s);
  o.heartbeat_timeout_s = env_seconds("MO_DIST_HEARTBEAT_TIMEOUT", o.heartbeat_timeout_s);
  MO_CHECK(o.backend == "auto" || o.backend == "local" || o.backend == "mpi" || o.backend == "nccl",
           "dist: unknown backend '{}' (expected auto, local, mpi or nccl; from MO_DIST_BACKEND or the config)",
           o.backend);
  bool gpu = o.use_gpu && cuda_available();

  std::shared_ptr<ProcessGroup> g;
  if (o.backend == "local" || (o.backend == "auto" && !launched_by_mpi())) {
    MO_CHECK(!launched_by_mpi(), "dist: backend 'local' asked for, but a launcher started {} processes",
             launcher_world_size());
    g = std::make_shared<LocalGroup>(gpu ? Device::cuda(0) : Device::cpu());
  } else {
#ifndef MO_WITH_MPI
    MO_FAIL("dist: backend '{}' needs MPI, but this build has MO_WITH_MPI=OFF", o.backend);
#else
    auto rt = MpiRuntime::get(o.heartbeat_timeout_s);
    const Topology& t = rt->topology();
    MO_CHECK(!launched_by_mpi() || t.world_size > 1,
             "dist: the launcher started {} processes but MPI sees a world of 1: this MPI cannot talk to the "
             "launcher (with srun, try --mpi=pmix; or start the job with this MPI's mpirun)",
             launcher_world_size());
    Device dev = Device::cpu();
    if (gpu) {
      // One GPU per rank: GPU `local_rank` when the host's ranks all see every GPU; GPU 0 when each
      // rank sees exactly one (the launcher assigned it: srun --gpus-per-task=1, CUDA_VISIBLE_DEVICES).
      int count = cuda_device_count();
      int index = count >= t.local_world_size ? t.local_rank : (count == 1 ? 0 : -1);
      if (index < 0) {
        MO_CHECK(o.backend != "nccl",
                 "dist: {} ranks on host {} but {} GPUs visible to rank {}: NCCL needs one GPU per rank (start "
                 "fewer ranks per host, give each rank one GPU, or use MO_DIST_BACKEND=mpi)",
                 t.local_world_size, t.host, count, t.rank);
        if (t.rank == 0)
          std::fprintf(stderr, "[mo.dist] warning: %d ranks on host %s but %d GPUs: the ranks compute on the CPU\n",
                       t.local_world_size, t.host.c_str(), count);
      } else {
        dev = Device::cuda(index);
#ifdef MO_WITH_CUDA
        cudaError_t e = cudaSetDevice(index);
        MO_CHECK(e == cudaSuccess, "dist: cudaSetDevice({}) on rank {} (host {}): {}", index, t.rank, t.host,
                 cudaGetErrorString(e));
#endif
      }
    }
    // NVLink multicast (NVLS) stays off unless the user asks for it explicitly.
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    std::string backend = o.backend;
    if (backend == "auto") {
#ifdef MO_WITH_NCCL
      backend = dev.is_cuda() ? "nccl" : "mpi";
#else
      backend = "mpi";
#endif
    }
    if (backend == "nccl") {
#ifdef MO_WITH_NCCL
      MO_CHECK(dev.is_cuda(), "dist: backend 'nccl' needs a GPU on rank {} (host {}), none found", t.rank, t.host);
      g = make_nccl_group(rt, std::make_shared<MpiGroup>(rt, o.timeout_s), o.timeout_s, dev);
#else
      MO_FAIL("dist: backend 'nccl' asked for, but this build has no NCCL (see dist/CMakeLists.txt's message)");
#endif
    } else {
      g = std::make_shared<MpiGroup>(rt, o.timeout_s, dev);
    }
#endif
  }
  g_rank = g->rank();
  current = g;
  return g;
}

}  // namespace mo::dist
