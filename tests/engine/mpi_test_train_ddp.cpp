// mpi_test_train_ddp.cpp: the trainer under `mpirun -np 2` (CPU, MPI backend).
// 2 ranks x batch 4 (accumulation 1) reach the same weights as 1 process x batch 4 x accumulation 2:
// the same 8 samples make each global step (the sampler interleaves positions over the ranks), so
// only the summation order differs. The replicas stay bit-identical, only rank 0 writes files, and
// the distributed evaluation counts every validation image exactly once (15 images: rank 1 gets a
// padding repeat that must not be counted). With model_ema and optim.clip_grad the EMA is the same on
// both ranks and agrees with the one-process run (the norm is of the all-reduced gradient), and a run
// stopped mid-epoch and resumed on 2 ranks writes the epoch's train_loss of the uninterrupted run (the
// checkpoint carries the mean of the ranks' loss sums).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dist/data_parallel.h"
#include "tests/dist/dist_test_util.h"
#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/engine/crc32c.h"
#include "tools/engine/trainer.h"

using namespace mo;
using namespace mo::tools;

namespace {

// A world of one process for the reference run inside the MPI program.
class OneProcessGroup : public dist::ProcessGroup {
  struct Done : dist::Work {
    void wait() override {}
    bool done() override { return true; }
  };

 public:
  const char* backend() const override { return "local"; }
  void broadcast(const Tensor&, int) override {}
  std::shared_ptr<dist::Work> all_reduce_async(const Tensor&, dist::ReduceOp, const std::string&) override {
    return std::make_shared<Done>();
  }
  void barrier() override {}
  void all_gather_bytes(const void* in, size_t n, void* out) override { std::memcpy(out, in, n); }
};

TrainConfig config(const std::string& root, const std::string& out, bool clear) {
  TrainConfig c = mo::tools::testing::small_config(root, out, clear);
  c.data.mixup_prob = 0;         // one lambda per micro-batch: the layouts would differ
  c.model.drop_path_rate = 0;    // masks are keyed per micro-batch
  c.data.workers = 1;
  c.train.max_steps = 5;         // crosses the end of epoch 0 (4 steps) and its evaluation
  return c;
}

}  // namespace

TEST(TrainDdp, TwoRanksMatchOneProcessWithAccumulation) {
  auto& pg = *mo::test::g_pg;
  ASSERT_EQ(pg.world_size(), 2);
  const std::string root = "/tmp/mo_train_ddp_data";
  if (pg.rank() == 0) mo::tools::testing::make_image_folder("mo_train_ddp_data", 3, 12, 5);
  pg.barrier();

  std::FILE* null = std::fopen("/dev/null", "w");
  TrainConfig c = config(root, "/tmp/mo_train_ddp_two", /*clear=*/pg.rank() == 0);
  pg.barrier();  // rank 0 cleared the output before anyone writes
  Trainer two(c, mo::test::g_pg, null);
  EXPECT_EQ(two.accumulation(), 1);
  TrainResult r2 = two.fit();
  std::vector<float> w2 = two.optimizer().master().to_vector<float>();
  // Every rank holds the same weights, bit for bit.
  auto sums = pg.all_gather(crc32c(w2.data(), w2.size() * sizeof(float)));
  EXPECT_EQ(sums[0], sums[1]);
  ASSERT_TRUE(r2.last_eval.has_value());
  EXPECT_EQ(r2.last_eval->samples, 15);

  if (pg.rank() == 0) {
    TrainConfig c1 = config(root, "/tmp/mo_train_ddp_one", true);
    Trainer one(c1, std::make_shared<OneProcessGroup>(), null);
    EXPECT_EQ(one.accumulation(), 2);
    TrainResult r1 = one.fit();
    std::vector<float> w1 = one.optimizer().master().to_vector<float>();
    ASSERT_EQ(w1.size(), w2.size());
    EXPECT_LT(mo::test::max_rel_diff(w1, w2), 1e-5);
    ASSERT_TRUE(r1.last_eval.has_value());
    EXPECT_EQ(r1.last_eval->samples, 15);
    EXPECT_EQ(r1.last_eval->top1, r2.last_eval->top1);
    EXPECT_NEAR(r1.last_eval->loss_sum, r2.last_eval->loss_sum, 1e-3 * r1.last_eval->loss_sum);
    // Only rank 0 wrote checkpoints and logs.
    EXPECT_TRUE(std::filesystem::exists("/tmp/mo_train_ddp_two/summary.csv"));
  }
  std::fclose(null);
}

TEST(TrainDdp, BucketSizeFromTheRecipe) {
  auto& pg = *mo::test::g_pg;
  const std::string root = "/tmp/mo_train_ddp_data";
  if (pg.rank() == 0) mo::tools::testing::make_image_folder("mo_train_ddp_data", 3, 12, 5);
  pg.barrier();
  std::FILE* null = std::fopen("/dev/null", "w");
  TrainConfig c = config(root, mo::test::tmp_path("mo_train_ddp_bucket"), pg.rank() == 0);  // TMPDIR is shared
  pg.barrier();
  Trainer big(c, mo::test::g_pg, null);
  c.ddp.bucket_mb = 1.0 / 1024;  // 1 KiB: a bucket (nearly) per parameter
  Trainer small(c, mo::test::g_pg, null);
  ASSERT_TRUE(big.data_parallel() && small.data_parallel());
  EXPECT_LE(big.data_parallel()->buckets().size(), 2u);  // the 1 MiB first bucket and the rest
  EXPECT_GT(small.data_parallel()->buckets().size(), 10u);
  std::fclose(null);
}

TEST(TrainDdp, DivergenceStopsEveryRankTogether) {
  // A NaN/Inf on any rank ends the run on all of them (one verdict per step, all-reduced with the stop
  // request), naming the step, and no checkpoint is written from the non-finite weights.
  auto& pg = *mo::test::g_pg;
  const std::string root = "/tmp/mo_train_ddp_data";
  if (pg.rank() == 0) mo::tools::testing::make_image_folder("mo_train_ddp_data", 3, 12, 5);
  pg.barrier();
  std::FILE* null = std::fopen("/dev/null", "w");
  TrainConfig c = config(root, "/tmp/mo_train_ddp_diverge", /*clear=*/pg.rank() == 0);
  c.optim.lr = 1e6;
  c.sched.warmup_epochs = 0;
  c.train.max_steps = 0;
  c.ckpt.every_steps = 1;
  pg.barrier();
  const std::string msg = mo::test::error_of([&] {
    Trainer t(c, mo::test::g_pg, null);
    t.fit();
  });
  EXPECT_NE(msg.find("training diverged: the "), std::string::npos) << "rank " << pg.rank() << ": " << msg;
  EXPECT_NE(msg.find(" of step "), std::string::npos) << msg;
  pg.barrier();  // both ranks got here: neither is left waiting in a collective
  if (pg.rank() == 0)
    for (auto& e : std::filesystem::directory_iterator("/tmp/mo_train_ddp_diverge/checkpoints")) {
      CheckpointState s = load_checkpoint(e.path().string());
      for (auto& [name, t] : s.model)
        for (float v : t.to_vector<float>()) ASSERT_TRUE(std::isfinite(v)) << e.path() << " " << name;
    }
  std::fclose(null);
}

namespace {
// Column `col` of summary.csv's row for `epoch` (rank 0).
double summary_cell(const std::string& dir, int epoch, size_t col) {
  std::ifstream in(dir + "/summary.csv");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    if (!f.empty() && f[0] == std::to_string(epoch)) return std::stod(f.at(col));
  }
  ADD_FAILURE() << "no row for epoch " << epoch << " in " << dir << "/summary.csv";
  return 0;
}
}  // namespace

TEST(TrainDdp, EmaAndClippingFollowTheAllReducedGradients) {
  auto& pg = *mo::test::g_pg;
  const std::string root = "/tmp/mo_train_ddp_data";
  if (pg.rank() == 0) mo::tools::testing::make_image_folder("mo_train_ddp_data", 3, 12, 5);
  pg.barrier();
  std::FILE* null = std::fopen("/dev/null", "w");
  auto with_ema = [&](const std::string& out, bool clear) {
    TrainConfig c = config(root, out, clear);
    c.model_ema = true;
    c.model_ema_decay = 0.8;
    c.optim.clip_grad = 0.05;
    return c;
  };
  TrainConfig c = with_ema("/tmp/mo_train_ddp_ema", pg.rank() == 0);
  pg.barrier();
  std::vector<float> ema2;
  {
    Trainer two(c, mo::test::g_pg, null);
    two.fit();
    ema2 = two.ema()->flat().to_vector<float>();
  }
  auto sums = pg.all_gather(crc32c(ema2.data(), ema2.size() * sizeof(float)));
  EXPECT_EQ(sums[0], sums[1]);  // the same EMA on every rank, bit for bit

  // Stopped after step 3 (mid-epoch 0) and resumed on both ranks: epoch 0's row is the same.
  TrainConfig first = with_ema("/tmp/mo_train_ddp_ema_split", pg.rank() == 0);
  pg.barrier();
  first.train.max_steps = 3;
  {
    Trainer t(first, mo::test::g_pg, null);
    t.fit();
  }
  pg.barrier();
  TrainConfig second = first;
  second.train.max_steps = 5;
  second.train.resume = "auto";
  std::vector<float> ema_resumed;
  {
    Trainer t(second, mo::test::g_pg, null);
    t.fit();
    ema_resumed = t.ema()->flat().to_vector<float>();
  }
  EXPECT_EQ(ema_resumed, ema2);
  if (pg.rank() == 0) {
    const double a = summary_cell(c.train.output, 0, 1), b = summary_cell(second.train.output, 0, 1);
    EXPECT_NEAR(a, b, 1e-5 * a);  // train_loss
    // One process with accumulation 2: the same EMA and gradient norms up to summation order.
    TrainConfig c1 = with_ema("/tmp/mo_train_ddp_ema_one", true);
    Trainer one(c1, std::make_shared<OneProcessGroup>(), null);
    one.fit();
    EXPECT_LT(mo::test::max_rel_diff(one.ema()->flat().to_vector<float>(), ema2), 1e-5);
    const double n1 = summary_cell(c1.train.output, 0, 12), n2 = summary_cell(c.train.output, 0, 12);
    EXPECT_GT(n2, 0.05);
    EXPECT_NEAR(n1, n2, 1e-4 * n2);  // grad_norm: the averaged gradient's, not one rank's
  }
  std::fclose(null);
}

int main(int argc, char** argv) { return mo::test::run_mpi_gtest(argc, argv, /*own_mpi=*/false); }
