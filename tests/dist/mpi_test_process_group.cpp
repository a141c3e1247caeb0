// mpi_test_process_group.cpp: the MPI ProcessGroup under `mpirun -np 2`: topology, broadcast,
// all-reduce (sum/avg, f32/f64/bf16/i64, several in flight), barrier, host all-gather and sums,
// determinism, and the errors for misuse. The program initialises MPI itself, so this also checks
// that dist::init adopts an MPI it did not start.
#include <thread>

#include "dist/process_group.h"
#include "tests/dist/dist_test_util.h"

using namespace mo;
using mo::test::g_pg;

TEST(MpiGroup, Topology) {
  ASSERT_EQ(g_pg->world_size(), 2);
  EXPECT_STREQ(g_pg->backend(), "mpi");
  auto ranks = g_pg->all_gather(g_pg->rank());
  EXPECT_EQ(ranks, (std::vector<int>{0, 1}));
  // Both ranks run on this host: local ranks 0 and 1 of 2.
  EXPECT_EQ(g_pg->topology().local_world_size, 2);
  auto local = g_pg->all_gather(g_pg->local_rank());
  EXPECT_EQ(local, (std::vector<int>{0, 1}));
  EXPECT_TRUE(g_pg->device().is_cpu());
  EXPECT_EQ(dist::init().get(), g_pg.get());  // init() again: the same group
}

TEST(MpiGroup, BroadcastFromEitherRoot) {
  for (int root : {0, 1}) {
    std::vector<float> mine(1000);
    for (size_t i = 0; i < mine.size(); ++i) mine[i] = static_cast<float>(g_pg->rank() * 1000 + i);
    Tensor t = Tensor::from_vector(mine, {10, 100});
    g_pg->broadcast(t, root);
    auto v = t.to_vector<float>();
    for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], static_cast<float>(root * 1000 + i)) << "root " << root;
  }
}

TEST(MpiGroup, AllReduceSumAndAverage) {
  int r = g_pg->rank();
  // f32 sum and avg
  Tensor a = Tensor::from_vector(std::vector<float>{1.f + r, 2.f, -3.f * r}, {3});
  g_pg->all_reduce(a, dist::ReduceOp::sum);
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{3.f, 4.f, -3.f}));
  Tensor b = Tensor::from_vector(std::vector<float>{1.f + r, 2.f, -3.f * r}, {3});
  g_pg->all_reduce(b, dist::ReduceOp::avg);
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{1.5f, 2.f, -1.5f}));
  // f64 avg
  Tensor c = Tensor::from_vector(std::vector<double>{0.25 * r, 1.0}, {2});
  g_pg->all_reduce(c, dist::ReduceOp::avg);
  EXPECT_EQ(c.to_vector<double>(), (std::vector<double>{0.125, 1.0}));
  // i64 sum (exact beyond 2^53)
  int64_t big = (int64_t(1) << 60) + r;
  Tensor d = Tensor::from_vector(std::vector<int64_t>{big, -r}, {2});
  g_pg->all_reduce(d, dist::ReduceOp::sum);
  EXPECT_EQ(d.to_vector<int64_t>(), (std::vector<int64_t>{(int64_t(1) << 61) + 1, -1}));
  // bf16 sum and avg (values exact in bf16)
  Tensor e = Tensor::from_vector(std::vector<float>{1.5f * (r + 1), 256.f}, {2}).to(DType::bf16);
  g_pg->all_reduce(e, dist::ReduceOp::sum);
  EXPECT_EQ(e.to_vector<float>(), (std::vector<float>{4.5f, 512.f}));
  Tensor f = Tensor::from_vector(std::vector<float>{1.5f * (r + 1), 256.f}, {2}).to(DType::bf16);
  g_pg->all_reduce(f, dist::ReduceOp::avg);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{2.25f, 256.f}));
}

TEST(MpiGroup, ManyInFlightCompleteInIssueOrder) {
  int r = g_pg->rank();
  std::vector<Tensor> ts;
  std::vector<std::shared_ptr<dist::Work>> works;
  for (int k = 0; k < 8; ++k) {
    ts.push_back(Tensor::full({1 + 50000 * k}, k + r, DType::f32));
    works.push_back(g_pg->all_reduce_async(ts.back(), dist::ReduceOp::sum, fmt::format("t{}", k)));
  }
  for (int k = 7; k >= 0; --k) works[k]->wait();  // waiting out of order is fine
  for (int k = 0; k < 8; ++k) {
    EXPECT_TRUE(works[k]->done());
    auto v = ts[k].to_vector<float>();
    EXPECT_EQ(v.front(), 2.f * k + 1) << k;
    EXPECT_EQ(v.back(), 2.f * k + 1) << k;
  }
}

TEST(MpiGroup, SumsAreIdenticalOnEveryRank) {
  // Random values of mixed magnitude: the reduced bits must agree on both ranks.
  Tensor t = test::randn({300001}, 100 + g_pg->rank(), DType::f32, 1e3);
  g_pg->all_reduce(t, dist::ReduceOp::avg);
  auto v = t.to_vector<float>();
  uint64_t h = 1469598103934665603ull;
  for (float f : v) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    h = (h ^ u) * 1099511628211ull;
  }
  auto hs = g_pg->all_gather(h);
  EXPECT_EQ(hs[0], hs[1]);
}

TEST(MpiGroup, HostGatherAndSums) {
  int r = g_pg->rank();
  struct Small {
    int32_t a;
    double b;
  };
  auto all = g_pg->all_gather(Small{10 + r, 0.5 * r});
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].a, 11);
  EXPECT_EQ(all[1].b, 0.5);
  auto s = g_pg->all_reduce_sum(std::vector<int64_t>{r, 100, -7 * r});
  EXPECT_EQ(s, (std::vector<int64_t>{1, 200, -7}));
  auto d = g_pg->all_reduce_sum(std::vector<double>{0.1 + r, 1e-17});
  EXPECT_DOUBLE_EQ(d[0], 1.2);
  EXPECT_EQ(d[1], 2e-17);
  g_pg->barrier();
}

TEST(MpiGroup, MisuseIsReported) {
  Tensor i = Tensor::from_vector(std::vector<int64_t>{1, 2}, {2});
  EXPECT_THROW(g_pg->all_reduce(i, dist::ReduceOp::avg), Error);
  Tensor m = test::randn({4, 4}, 1);
  Tensor nc = m.as_strided({4, 2}, {4, 2}, 0);  // not contiguous
  EXPECT_THROW(g_pg->all_reduce(nc, dist::ReduceOp::sum), Error);
  EXPECT_THROW(g_pg->broadcast(m, 2), Error);
  // Different lengths on the two ranks: both ranks see it and throw, naming the ranks.
  try {
    g_pg->all_reduce_sum(std::vector<int64_t>(2 + g_pg->rank(), 1));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 gave 3 values but rank 0 gave 2"), std::string::npos) << e.what();
  }
  g_pg->barrier();  // still in step after the errors
}

TEST(MpiGroup, OverlapsWithTheCallingThread) {
  // A large all-reduce is queued; the caller gets control back at once and can compute meanwhile.
  Tensor t = Tensor::full({8 << 20}, 1.0, DType::f32);
  auto w = g_pg->all_reduce_async(t, dist::ReduceOp::sum, "big");
  double acc = 0;
  for (int i = 0; i < 1000; ++i) acc += i * 0.5;  // "compute"
  EXPECT_GT(acc, 0);
  w->wait();
  auto v = t.to_vector<float>();
  EXPECT_EQ(v[0], 2.f);
  EXPECT_EQ(v[(8 << 20) - 1], 2.f);
}

int main(int argc, char** argv) { return mo::test::run_mpi_gtest(argc, argv, /*own_mpi=*/true); }
