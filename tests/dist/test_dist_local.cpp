// test_dist_local.cpp: dist/ without a launcher (the trainer run without mpirun): dist::init()
// gives the single-process "local" group whose collectives are identities, and DataParallel over it
// leaves training bit-identical to plain backward, accumulation included.
#include "dist/data_parallel.h"
#include "dist/metrics.h"
#include "dist/shard.h"
#include "tests/dist/dist_test_util.h"

using namespace mo;

TEST(DistLocal, InitWithoutLauncherIsOneProcess) {
  if (dist::launched_by_mpi()) GTEST_SKIP() << "started by an MPI launcher";
  dist::InitOptions o;
  o.use_gpu = false;
  auto pg = dist::init(o);
  EXPECT_STREQ(pg->backend(), "local");
  EXPECT_EQ(pg->rank(), 0);
  EXPECT_EQ(pg->world_size(), 1);
  EXPECT_TRUE(pg->is_main());
  EXPECT_EQ(dist::init().get(), pg.get());
  Tensor t = Tensor::from_vector(std::vector<float>{1.f, 2.f}, {2});
  pg->all_reduce(t, dist::ReduceOp::avg);
  pg->broadcast(t, 0);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1.f, 2.f}));
  EXPECT_THROW(pg->broadcast(t, 1), Error);
  EXPECT_EQ(pg->all_gather(int64_t{7}), std::vector<int64_t>{7});
  EXPECT_EQ(pg->all_reduce_sum(std::vector<int64_t>{3, 4}), (std::vector<int64_t>{3, 4}));
  dist::EvalCounts c{10, 7, 9, 2.5};
  auto s = dist::all_reduce_counts(*pg, c);
  EXPECT_EQ(s.samples, 10);
  EXPECT_EQ(s.top1, 7);
  EXPECT_DOUBLE_EQ(s.top1_pct(), 70.0);
  pg->barrier();
}

TEST(DistLocal, DataParallelOfOneIsPlainBackward) {
  if (dist::launched_by_mpi()) GTEST_SKIP() << "started by an MPI launcher";
  dist::InitOptions o;
  o.use_gpu = false;
  auto pg = dist::init(o);
  test::Data data(32);
  test::Mlp plain(3), model(3);
  dist::DataParallelOptions bo;
  bo.first_bucket_bytes = 16;
  bo.bucket_bytes = 64;
  dist::DataParallel ddp(pg, model.named_parameters(), bo);
  EXPECT_EQ(ddp.buckets().size(), 4u);
  for (int m = 0; m < 4; ++m) {  // 4 accumulation micro-steps
    ddp.set_sync(m == 3);
    auto batch = data.rows(m * 8, 8);
    test::micro_loss(plain, batch, 4).backward();
    test::micro_loss(model, batch, 4).backward();
  }
  ddp.finish();
  auto a = plain.parameters(), b = model.parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].grad().to_vector<float>(), b[i].grad().to_vector<float>());
  EXPECT_EQ(ddp.buckets_launched_in_backward(), 4);
  ddp.zero_grad();
  for (auto& p : model.parameters())
    for (float v : p.grad().to_vector<float>()) ASSERT_EQ(v, 0.f);
  {
    auto scope = ddp.no_sync();
    EXPECT_FALSE(ddp.sync());
  }
  EXPECT_TRUE(ddp.sync());
}

TEST(DistLocal, ShardArithmetic) {
  EXPECT_EQ(dist::padded_shard_size(10, 4), 3);
  EXPECT_EQ(dist::shard_positions(10, 3, 4), (std::vector<int64_t>{3, 7, 11}));
  EXPECT_TRUE(dist::is_padding(11, 10));
  EXPECT_EQ(dist::position_to_order_index(11, 10), 1);
  EXPECT_EQ(dist::real_shard_size(10, 3, 4), 2);
  EXPECT_EQ(dist::real_shard_size(10, 1, 4), 3);
  EXPECT_EQ(dist::eval_range(10, 0, 4), (std::pair<int64_t, int64_t>{0, 3}));
  EXPECT_EQ(dist::eval_range(10, 3, 4), (std::pair<int64_t, int64_t>{8, 10}));
  EXPECT_EQ(dist::accumulation_steps(4096, 1, 256), 16);
  EXPECT_THROW(dist::accumulation_steps(4096, 1, 300), Error);
  EXPECT_THROW(dist::env_seconds("PATH", 1.0), Error);  // not a number
  EXPECT_EQ(dist::env_seconds("MO_DIST_SURELY_UNSET_VARIABLE", 2.5), 2.5);
}
