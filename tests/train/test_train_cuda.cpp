// test_train_cuda.cpp: the training loop on the GPU (skipped without one).
//  - bf16: N steps straight == N/2, stop, resume, N/2, bit for bit (deterministic kernels, exact
//    checkpoint of the fp32 master weights and moments), with mixup, erasing and drop path on;
//  - the bf16 loss follows the fp32 loss, and the GPU fp32 loss the CPU one, over 3 epochs.
#include <gtest/gtest.h>

#include <cstring>

#include "autograd/cuda_allocator.h"
#include "tests/test_util.h"
#include "tests/train/train_test_util.h"
#include "tools/common/trainer.h"

using namespace mo;
using namespace mo::tools;
using namespace mo::tools::testing;

namespace {

const std::string& folder() {
  static const std::string root = make_image_folder("mo_train_cuda_data", 3, 12, 4);
  return root;
}

TrainConfig gpu_config(const std::string& out, const std::string& precision) {
  TrainConfig c = small_config(folder(), out);
  c.train.device = "cuda";
  c.train.precision = precision;
  return c;
}

struct RunOut {
  TrainResult r;
  std::vector<float> master, m, v;
};

RunOut run(const TrainConfig& c) {
  std::FILE* null = std::fopen("/dev/null", "w");
  RunOut out;
  {
    Trainer t(c, nullptr, null);
    out.r = t.fit();
    out.master = t.optimizer().master().to_vector<float>();
    out.m = t.optimizer().exp_avg().to_vector<float>();
    out.v = t.optimizer().exp_avg_sq().to_vector<float>();
  }
  std::fclose(null);
  return out;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(TrainCuda, Bf16ResumeIsBitIdentical) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  TrainConfig base = gpu_config(mo::test::tmp_path("mo_train_cuda_straight"), "bf16");
  base.data.reprob = 0.25;
  base.train.max_steps = 7;
  RunOut straight = run(base);
  EXPECT_EQ(straight.r.global_step, 7);
  TrainConfig first = gpu_config(mo::test::tmp_path("mo_train_cuda_split"), "bf16");
  first.data.reprob = 0.25;
  first.train.max_steps = 3;
  run(first);
  TrainConfig second = first;
  second.train.max_steps = 7;
  second.train.resume = "auto";
  RunOut resumed = run(second);
  EXPECT_TRUE(bit_equal(straight.master, resumed.master));
  EXPECT_TRUE(bit_equal(straight.m, resumed.m));
  EXPECT_TRUE(bit_equal(straight.v, resumed.v));
}

TEST(TrainCuda, Bf16LossFollowsFp32AndCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  TrainConfig c = gpu_config(mo::test::tmp_path("mo_train_cuda_fp32"), "fp32");
  c.train.max_steps = 12;  // 3 epochs of 4 steps
  c.train.eval_every = 0;
  RunOut fp32 = run(c);
  c.train.output = mo::test::tmp_path("mo_train_cuda_bf16");
  c.train.precision = "bf16";
  RunOut bf16 = run(c);
  c.train.output = mo::test::tmp_path("mo_train_cuda_cpu");
  c.train.device = "cpu";
  c.train.precision = "fp32";
  RunOut cpu = run(c);
  EXPECT_NEAR(fp32.r.last_train_loss, cpu.r.last_train_loss, 5e-3 * cpu.r.last_train_loss);  // TF32 GEMMs
  EXPECT_NEAR(bf16.r.last_train_loss, fp32.r.last_train_loss, 0.03 * fp32.r.last_train_loss);
  EXPECT_GT(fp32.r.last_train_loss, 0.0);
}
