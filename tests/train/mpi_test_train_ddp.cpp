// mpi_test_train_ddp.cpp: the trainer under `mpirun -np 2` (CPU, MPI backend).
// 2 ranks x batch 4 (accumulation 1) reach the same weights as 1 process x batch 4 x accumulation 2:
// the same 8 samples make each global step (the sampler interleaves positions over the ranks), so
// only the summation order differs. The replicas stay bit-identical, only rank 0 writes files, and
// the distributed evaluation counts every validation image exactly once (15 images: rank 1 gets a
// padding repeat that must not be counted).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "tests/dist/dist_test_util.h"
#include "tests/test_util.h"
#include "tests/train/train_test_util.h"
#include "tools/common/crc32c.h"
#include "tools/common/trainer.h"

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

int main(int argc, char** argv) { return mo::test::run_mpi_gtest(argc, argv, /*own_mpi=*/false); }
