// mpi_test_nccl.cpp: the GPU path under `mpirun -np 2` on a machine with two GPUs: the NCCL group
// (one GPU per local rank, collectives on their own stream, CPU tensors through MPI), DataParallel on
// CUDA parameters against a CPU single-rank reference, nn::AdamW in bf16 with the master weights
// broadcast, and the all-reduce bandwidth (printed). Every test is named Cuda* and skips without a GPU.
#include <chrono>
#include <functional>
#include <string>

#include "autograd/cuda_allocator.h"
#include "dist/data_parallel.h"
#include "nn/adamw.h"
#include "tests/dist/dist_test_util.h"

using namespace mo;
using mo::test::Data;
using mo::test::g_pg;
using mo::test::Mlp;

namespace {
bool have_gpus() { return cuda_available() && g_pg->device().is_cuda(); }
#define SKIP_WITHOUT_GPU() \
  if (!have_gpus()) GTEST_SKIP() << "no GPU per rank"
}  // namespace

TEST(CudaNccl, BackendAndDevice) {
  SKIP_WITHOUT_GPU();
#ifdef MO_WITH_NCCL
  EXPECT_STREQ(g_pg->backend(), "nccl");
#endif
  EXPECT_EQ(g_pg->device().index, g_pg->local_rank());
  auto devs = g_pg->all_gather(g_pg->device().index);
  EXPECT_NE(devs[0], devs[1]) << "one GPU per rank";
}

TEST(CudaNccl, BroadcastAndAllReduce) {
  SKIP_WITHOUT_GPU();
  Device dev = g_pg->device();
  int r = g_pg->rank();
  Tensor a = Tensor::from_vector(std::vector<float>{1.f + r, 2.f, -3.f * r}, {3}, dev);
  g_pg->all_reduce(a, dist::ReduceOp::sum);
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{3.f, 4.f, -3.f}));
  Tensor b = Tensor::from_vector(std::vector<float>{1.5f * (r + 1), 256.f}, {2}, dev).to(DType::bf16);
  g_pg->all_reduce(b, dist::ReduceOp::avg);
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{2.25f, 256.f}));
  Tensor c = Tensor::full({1000}, 5.0 + r, DType::f32, dev);
  g_pg->broadcast(c, 1);
  EXPECT_EQ(c.to_vector<float>(), std::vector<float>(1000, 6.f));
  Tensor h = Tensor::full({4}, 1.0 + r, DType::f64);  // a CPU tensor goes through MPI
  g_pg->all_reduce(h, dist::ReduceOp::sum);
  EXPECT_EQ(h.to_vector<double>(), std::vector<double>(4, 3.0));
  // Several in flight, waited by the compute stream, checked afterwards.
  std::vector<Tensor> ts;
  std::vector<std::shared_ptr<dist::Work>> ws;
  for (int k = 0; k < 6; ++k) {
    ts.push_back(Tensor::full({1 + 100000 * k}, k + r, DType::f32, dev));
    ws.push_back(g_pg->all_reduce_async(ts.back(), dist::ReduceOp::sum, fmt::format("t{}", k)));
  }
  for (auto& w : ws) w->wait();
  for (int k = 0; k < 6; ++k) EXPECT_EQ(ts[k].to_vector<float>().back(), 2.f * k + 1) << k;
}

TEST(CudaNccl, DataParallelMatchesTheCpuReference) {
  SKIP_WITHOUT_GPU();
  constexpr int64_t B = 8, A = 2, G = 2 * B * A, K = 4;
  Data data(G * K);
  Mlp ref(1000);
  Mlp model(1000 + g_pg->rank());
  nn::pack_parameters(model, g_pg->device(), DType::f32);
  dist::DataParallelOptions o;
  o.first_bucket_bytes = 16;
  o.bucket_bytes = 64;
  dist::DataParallel ddp(g_pg, model.named_parameters(), o);
  std::vector<Tensor> mom_ref, mom;
  for (int64_t step = 0; step < K; ++step) {
    for (int64_t m = 0; m < A; ++m)
      test::micro_loss(ref, data.rows(step * G + m * 2 * B, 2 * B), A).backward();
    for (int64_t m = 0; m < A; ++m) {
      ddp.set_sync(m == A - 1);
      test::micro_loss(model, data.rows(step * G + m * 2 * B + g_pg->rank() * B, B, g_pg->device()), A).backward();
    }
    ddp.finish();
    test::sgd_step(ref, mom_ref, 0.2, 0.9);
    test::sgd_step(model, mom, 0.2, 0.9);
    for (auto& p : ref.parameters()) p.grad().zero_();
    ddp.zero_grad();
  }
  double err = test::max_rel_diff(test::flat_params(model), test::flat_params(ref));
  if (g_pg->rank() == 0) std::printf("[ cuda 2x%lld vs cpu 1x%lld ] max relative parameter difference: %.3g\n",
                                     (long long)B, (long long)(2 * B), err);
  EXPECT_LT(err, 2e-3);  // GPU fp32 matrix products may round differently from OpenBLAS
  ddp.check_replicas();
  EXPECT_EQ(ddp.buckets_launched_in_backward(), static_cast<int64_t>(K * ddp.buckets().size()));
}

TEST(CudaNccl, AdamWBf16WithBroadcastMasterStaysInStep) {
  SKIP_WITHOUT_GPU();
  Data data(64);
  Mlp model(2000 + g_pg->rank());
  nn::AdamW opt(model, g_pg->device(), DType::bf16);
  dist::DataParallelOptions o;
  o.broadcast_also = {opt.master()};
  dist::DataParallel ddp(g_pg, model.named_parameters(), o);
  opt.sync_compute_weights();
  ASSERT_TRUE(ddp.adopted_arena());
  EXPECT_EQ(ddp.grad_arena().dtype(), DType::f32);
  for (int step = 0; step < 3; ++step) {
    for (int m = 0; m < 2; ++m) {
      ddp.set_sync(m == 1);
      auto batch = data.rows(step * 16 + m * 8 + g_pg->rank() * 4, 4, g_pg->device());
      test::micro_loss(model, {batch.first.to(DType::bf16), batch.second}, 2).backward();
    }
    ddp.finish();
    opt.step(1e-2);
    opt.zero_grad();
  }
  ddp.check_replicas();
  Tensor master = opt.master().cpu();
  auto hs = g_pg->all_gather(std::hash<std::string>()(
      std::string(static_cast<const char*>(master.raw_data()), master.nbytes())));
  EXPECT_EQ(hs[0], hs[1]) << "fp32 master weights differ between the ranks";
}

TEST(CudaNccl, AllReduceBandwidth) {
  SKIP_WITHOUT_GPU();
  for (int64_t mib : {25, 256}) {
    Tensor t = Tensor::full({mib << 18}, 1.0, DType::f32, g_pg->device());  // mib MiB of floats
    for (int i = 0; i < 3; ++i) g_pg->all_reduce(t, dist::ReduceOp::avg);
    cuda_synchronize();
    g_pg->barrier();
    const int iters = 20;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) g_pg->all_reduce(t, dist::ReduceOp::avg);
    cuda_synchronize();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    double algbw = static_cast<double>(t.nbytes()) / s / 1e9;
    double busbw = algbw * 2.0 * (g_pg->world_size() - 1) / g_pg->world_size();
    if (g_pg->rank() == 0)
      std::printf("[ nccl all_reduce %lld MiB ] %.3f ms, algbw %.1f GB/s, busbw %.1f GB/s\n", (long long)mib, s * 1e3,
                  algbw, busbw);
    EXPECT_EQ(t.to_vector<float>()[0], 1.f);
  }
}

int main(int argc, char** argv) { return mo::test::run_mpi_gtest(argc, argv, /*own_mpi=*/false, /*use_gpu=*/true); }
