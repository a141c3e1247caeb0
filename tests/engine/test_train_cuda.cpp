// test_train_cuda.cpp: the training loop on the GPU (skipped without one).
//  - bf16: N steps straight == N/2, stop, resume, N/2, bit for bit (deterministic kernels, exact
//    checkpoint of the fp32 master weights and moments), with mixup, erasing and drop path on;
//  - the bf16 loss follows the fp32 loss, and the GPU fp32 loss the CPU one, over 3 epochs;
//  - with model_ema and optim.clip_grad (clipping every step) the same: the EMA resumes bit for bit, the
//    epoch's summary.csv row (EMA columns, gradient norm) is that of the uninterrupted run, and the EMA
//    and the norms follow the CPU run's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "autograd/cuda_allocator.h"
#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/engine/trainer.h"

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
  std::vector<float> master, m, v, ema;
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
    if (t.ema()) out.ema = t.ema()->flat().to_vector<float>();
  }
  std::fclose(null);
  return out;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// max |a − b| / max |b|.
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 1e-6, diff = a.size() == b.size() ? 0 : 1e30;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(b[i])));
    diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
  }
  return diff / scale;
}

// summary.csv's first row, cell by cell, without the images/s column (timing).
std::vector<std::string> first_row(const std::string& dir) {
  std::ifstream in(dir + "/summary.csv");
  std::string line;
  std::getline(in, line);
  std::getline(in, line);
  std::vector<std::string> f;
  std::stringstream ss(line);
  for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
  if (!f.empty()) f.pop_back();
  return f;
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

TEST(TrainCuda, Bf16EmaAndClippingResumeBitIdenticalAndFollowTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  auto with = [](TrainConfig c) {
    c.model_ema = true;
    c.model_ema_decay = 0.9;
    c.model_ema_warmup = true;
    c.optim.clip_grad = 0.05;  // below the norms here: every step is clipped
    c.train.max_steps = 7;
    return c;
  };
  TrainConfig base = with(gpu_config(mo::test::tmp_path("mo_train_cuda_ema_straight"), "bf16"));
  RunOut straight = run(base);
  ASSERT_TRUE(straight.r.last_eval_ema);
  TrainConfig first = with(gpu_config(mo::test::tmp_path("mo_train_cuda_ema_split"), "bf16"));
  first.train.max_steps = 3;
  run(first);
  TrainConfig second = first;
  second.train.max_steps = 7;
  second.train.resume = "auto";
  RunOut resumed = run(second);
  EXPECT_TRUE(bit_equal(straight.master, resumed.master));
  EXPECT_TRUE(bit_equal(straight.ema, resumed.ema));
  const std::vector<std::string> row = first_row(base.train.output);
  ASSERT_EQ(row.size(), 13u);
  EXPECT_EQ(row, first_row(second.train.output));
  EXPECT_GT(std::stod(row[12]), 0.05);  // the epoch's mean norm, above the threshold

  // fp32 on the GPU against the CPU: the EMA and the norms agree up to TF32 GEMMs.
  TrainConfig g = with(gpu_config(mo::test::tmp_path("mo_train_cuda_ema_fp32"), "fp32"));
  g.data.mixup_prob = 0;
  g.data.reprob = 0;
  g.model.drop_path_rate = 0;
  RunOut gpu = run(g);
  TrainConfig c = g;
  c.train.output = mo::test::tmp_path("mo_train_cuda_ema_cpu");
  c.train.device = "cpu";
  RunOut cpu = run(c);
  EXPECT_LT(max_rel_diff(gpu.ema, cpu.ema), 1e-2);
  const double ng = std::stod(first_row(g.train.output).at(12)), nc = std::stod(first_row(c.train.output).at(12));
  EXPECT_NEAR(ng, nc, 1e-2 * nc);
}
