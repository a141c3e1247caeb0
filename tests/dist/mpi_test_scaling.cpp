// mpi_test_scaling.cpp: synthetic-data throughput of data-parallel MambaOut training, the measurement
// behind scripts/dist/gpu_scaling.sh (run it under `mpirun -np 1` and `-np 2` and divide). The step
// is the trainer's: forward_nhwc, soft-target cross-entropy, backward with DataParallel bucket
// all-reduces overlapping it (sync on the last micro-step only), finish(), nn::AdamW. Random inputs,
// different on every rank. Runs only with MO_DIST_BENCH=1 and a GPU per rank (else skips), so the
// ctest run stays short; MO_DIST_BENCH_DEVICE=cpu runs it on CPU ranks in fp32 instead (MPI backend: a
// check of the script's plumbing, not a GPU measurement). Settings from the environment:
//   MO_DIST_BENCH_MODEL (mambaout_tiny)  MO_DIST_BENCH_BATCH (256 per GPU)  MO_DIST_BENCH_ACCUM (1)
//   MO_DIST_BENCH_STEPS (15)  MO_DIST_BENCH_WARMUP (5)  MO_DIST_BENCH_DTYPE (bf16)  MO_DIST_BENCH_IMG (224)
//   MO_DIST_BENCH_BUCKET_MB (25: DataParallel's gradient bucket, the recipe key ddp.bucket_mb)
// Rank 0 prints one JSON line: {"tool": "mo", "what": "ddp_synthetic", "world": W, "images_per_s": ...}.
#include <chrono>
#include <cstdlib>

#include "autograd/cuda_allocator.h"
#include "autograd/rng.h"
#include "dist/data_parallel.h"
#include "nn/adamw.h"
#include "nn/mambaout.h"
#include "tests/dist/dist_test_util.h"

using namespace mo;
using mo::test::g_pg;

namespace {
std::string env_str(const char* k, const char* fallback) {
  const char* v = std::getenv(k);
  return v && *v ? v : fallback;
}
int env_int(const char* k, int fallback) { return std::stoi(env_str(k, std::to_string(fallback).c_str())); }
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

TEST(CudaScaling, MambaOutTrainStep) {
  if (env_str("MO_DIST_BENCH", "0") != "1") GTEST_SKIP() << "set MO_DIST_BENCH=1 to run the benchmark";
  const bool on_cpu = env_str("MO_DIST_BENCH_DEVICE", "cuda") == "cpu";
  if (!on_cpu && (!cuda_available() || !g_pg->device().is_cuda())) GTEST_SKIP() << "no GPU per rank";
  if (on_cpu && g_pg->device().is_cuda()) GTEST_SKIP() << "MO_DIST_BENCH_DEVICE=cpu but the ranks have GPUs";
  const std::string model_name = env_str("MO_DIST_BENCH_MODEL", "mambaout_tiny");
  const int batch = env_int("MO_DIST_BENCH_BATCH", 256), accum = env_int("MO_DIST_BENCH_ACCUM", 1);
  const int steps = env_int("MO_DIST_BENCH_STEPS", 15), warmup = env_int("MO_DIST_BENCH_WARMUP", 5);
  const DType dt = env_str("MO_DIST_BENCH_DTYPE", "bf16") == "bf16" && !on_cpu ? DType::bf16 : DType::f32;
  const int img = env_int("MO_DIST_BENCH_IMG", 224);
  const double bucket_mb = std::stod(env_str("MO_DIST_BENCH_BUCKET_MB", "25"));
  const Device dev = g_pg->device();
  const int world = g_pg->world_size();

  auto cfg = nn::mambaout_config(model_name);
  nn::MambaOut model(cfg, 0);
  nn::AdamW opt(model, dev, dt);
  std::unique_ptr<dist::DataParallel> ddp;
  if (world > 1) {
    dist::DataParallelOptions o;
    o.broadcast_also = {opt.master()};
    o.bucket_bytes = static_cast<size_t>(bucket_mb * 1048576.0);
    o.first_bucket_bytes = std::min(o.first_bucket_bytes, o.bucket_bytes);
    ddp = std::make_unique<dist::DataParallel>(g_pg, model.named_parameters(), o);
    opt.sync_compute_weights();
  }
  Generator g(1234, static_cast<uint64_t>(g_pg->rank()));
  std::vector<float> xv(static_cast<size_t>(batch) * img * img * 3);
  for (auto& v : xv) v = g.uniform() * 4.0f - 2.0f;
  Tensor x = Tensor::from_vector(xv, {batch, img, img, 3}, dev).to(dt);  // NHWC, as the loader gives
  std::vector<int64_t> lv(batch);
  for (auto& l : lv) l = g.randint(cfg.num_classes);
  Tensor target = smooth_one_hot(Tensor::from_vector(lv, {batch}), cfg.num_classes, 0.1, DType::f32, dev);

  model.train();
  int64_t micro_count = 0;
  auto step = [&]() {
    for (int m = 0; m < accum; ++m) {
      model.set_drop_path_key(0, static_cast<uint64_t>(micro_count++));
      if (ddp) ddp->set_sync(m == accum - 1);
      soft_target_cross_entropy(model.forward_nhwc(x), target).backward();
    }
    if (ddp) ddp->finish();
    opt.step(1e-4, 1.0 / accum);
    if (ddp) ddp->zero_grad();
    else opt.zero_grad();
  };
  for (int i = 0; i < warmup; ++i) step();
  if (!on_cpu) cuda_synchronize();
  g_pg->barrier();
  if (!on_cpu) cuda_reset_peak_stats(dev.index);
  double t0 = now_s();
  for (int i = 0; i < steps; ++i) step();
  if (!on_cpu) cuda_synchronize();
  double mine = now_s() - t0;
  double slowest = 0;
  for (double s : g_pg->all_gather(mine)) slowest = std::max(slowest, s);
  double ips = static_cast<double>(world) * batch * accum * steps / slowest;
  double peak = on_cpu ? 0.0 : cuda_memory_stats(dev.index).peak_allocated / 1073741824.0;
  if (g_pg->rank() == 0) {
    std::printf(
        "{\"tool\": \"mo\", \"what\": \"ddp_synthetic\", \"model\": \"%s\", \"world\": %d, \"batch\": %d, "
        "\"accum\": %d, \"img\": %d, \"dtype\": \"%s\", \"steps\": %d, \"images_per_s\": %.1f, "
        "\"step_ms\": %.1f, \"bucket_mb\": %g, \"buckets\": %zu, \"buckets_in_backward\": %lld, \"peak_gib\": %.2f, \"backend\": \"%s\"}\n",
        model_name.c_str(), world, batch, accum, img, dtype_name(dt), steps, ips, 1e3 * slowest / steps, bucket_mb,
        ddp ? ddp->buckets().size() : size_t(0), ddp ? static_cast<long long>(ddp->buckets_launched_in_backward()) : 0LL,
        peak, g_pg->backend());
    std::fflush(stdout);
  }
  if (ddp) ddp->check_replicas();
}

int main(int argc, char** argv) { return mo::test::run_mpi_gtest(argc, argv, /*own_mpi=*/false, /*use_gpu=*/true); }
