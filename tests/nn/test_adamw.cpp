// test_adamw.cpp: the AdamW optimizer: arenas and gradient views, no-decay groups, agreement with
// torch.optim.AdamW over several steps, and gradient accumulation (4 × B equals one 4B batch).
#include <filesystem>
#include <fstream>

#include "nn/adamw.h"
#include "nn/mambaout.h"
#include "ops/loss/cross_entropy.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn;

TEST(AdamW, DecayGroupsFollowTimm) {
  MambaOut m(mambaout_config("test_mambaout"), 0, false);
  EXPECT_TRUE(decays("stages.0.blocks.fc1.weight", m.parameter("stages.0.0.fc1.weight")));
  EXPECT_TRUE(decays("conv.weight", m.parameter("stages.0.0.conv.weight")));
  EXPECT_FALSE(decays("stages.0.0.fc1.bias", m.parameter("stages.0.0.fc1.bias")));
  EXPECT_FALSE(decays("norm.weight", m.parameter("norm.weight")));
  EXPECT_FALSE(decays("stages.0.0.ls.gamma", m.parameter("stages.0.0.ls.gamma")));
}

TEST(AdamW, MatchesTorchOverThreeSteps) {
  if (!mo::test::python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is not installed";
  std::string dir = mo::test::temp_dir("adamw");
  MambaOut m(mambaout_config("test_mambaout"), 1);
  std::ofstream names(dir + "/names.txt");
  for (auto& [n, p] : m.named_parameters()) {
    mo::test::save_npy(dir + "/" + n + ".npy", p);
    names << n << "\n";
  }
  names.close();
  std::ofstream(dir + "/config.txt") << "steps=3\nlr=0.004\nweight_decay=0.05\n";
  AdamW opt(m, Device::cpu(), DType::f32, {0.004, 0.9, 0.999, 1e-8, 0.05});
  for (int s = 0; s < 3; ++s) {
    std::filesystem::create_directories(dir + "/grad" + std::to_string(s));
    opt.zero_grad();
    uint64_t seed = 100 * s;
    for (auto& [n, p] : m.named_parameters()) {
      Tensor g = mo::test::randn(p.shape(), seed++, DType::f32, 0.01);
      p.grad().copy_(g);
      mo::test::save_npy(dir + "/grad" + std::to_string(s) + "/" + n + ".npy", g);
    }
    opt.step(0.004);
  }
  ASSERT_EQ(mo::test::run_python(std::string(MO_SOURCE_DIR) + "/tests/reference/adamw_ref.py", dir), 0);
  for (auto& [n, p] : m.named_parameters())
    EXPECT_TRUE(mo::test::all_close(p, mo::test::load_npy(dir + "/out/" + n + ".npy"), 2e-5, n));  // a few fp32 ulps
  std::filesystem::remove_all(dir);
}

TEST(AdamW, AccumulatingFourMicroBatchesEqualsOneBigBatch) {
  // fp32, CPU, no drop path: 4 micro-batches of B with the loss scaled by 1/4 give the same update
  // as one batch of 4B (the mean over 4B equals the mean of the 4 means).
  auto cfg = mambaout_config("test_mambaout");
  cfg.num_classes = 10;
  MambaOut a(cfg, 5), b(cfg, 5);
  AdamW oa(a, Device::cpu(), DType::f32), ob(b, Device::cpu(), DType::f32);
  Tensor x = mo::test::randn({8, 3, 32, 32}, 9);
  Tensor y = smooth_one_hot(Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7}, {8}), 10, 0.1);
  for (int step = 0; step < 2; ++step) {
    oa.zero_grad();
    soft_target_cross_entropy(a.forward(x), y).backward();
    oa.step(1e-3);
    ob.zero_grad();
    for (int k = 0; k < 4; ++k) {
      Tensor xs = x.as_strided({2, 3, 32, 32}, x.strides(), k * 2 * 3 * 32 * 32).contiguous();
      Tensor ys = y.as_strided({2, 10}, y.strides(), k * 2 * 10).contiguous();
      soft_target_cross_entropy(b.forward(xs), ys).backward();
    }
    // the accumulated gradient (scaled by 1/4 in the step) equals the big batch's gradient
    Tensor gb = ob.grads().clone();
    {
      NoGradGuard ng;
      gb = gb.to(DType::f64);
      auto v = gb.to_vector<double>();
      for (auto& e : v) e *= 0.25;
      gb = Tensor::from_vector(v, gb.shape());
    }
    EXPECT_TRUE(mo::test::all_close(gb, oa.grads(), 5e-5, "accumulated gradient"));  // fp32 sum order
    ob.step(1e-3, 0.25);
  }
  // Adam divides by sqrt(v): near-zero gradient entries amplify fp32 rounding, hence 1e-4 here
  EXPECT_TRUE(mo::test::all_close(ob.master(), oa.master(), 1e-4, "parameters"));
}
