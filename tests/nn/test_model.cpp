// test_model.cpp: the MambaOut family's structure: exact parameter counts, state_dict names, order
// and shapes, the drop-path schedule, initialisation statistics, forward/backward shapes.
#include <cmath>

#include "nn/mambaout.h"
#include "ops/loss/cross_entropy.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn;

TEST(MambaOut, ExactParameterCounts) {
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"mambaout_femto", 7304536},      {"mambaout_kobe", 9141208},          {"mambaout_tiny", 26545096},
      {"mambaout_small", 48488072},     {"mambaout_base", 84813092},         {"mambaout_small_rw", 48495560},
      {"mambaout_base_short_rw", 88827688}, {"mambaout_base_tall_rw", 86481448}, {"mambaout_base_wide_rw", 94448104},
      {"mambaout_base_plus_rw", 101656552}, {"test_mambaout", 447560}};
  for (auto& [name, count] : expected) {
    MambaOut m(mambaout_config(name), 0, /*initialize=*/false);
    EXPECT_EQ(m.num_parameters(), count) << name;
  }
}

TEST(MambaOut, TinyStateDictNamesOrderAndShapes) {
  MambaOut m(mambaout_config("mambaout_tiny"), 0, false);
  auto p = m.named_parameters();
  ASSERT_EQ(p.size(), 172u);
  EXPECT_EQ(p[0].first, "downsample_layers.0.conv1.weight");
  EXPECT_EQ(p[0].second.shape(), (Shape{48, 3, 3, 3}));
  EXPECT_EQ(p[2].first, "downsample_layers.0.norm1.weight");
  EXPECT_EQ(p[4].first, "downsample_layers.0.conv2.weight");
  EXPECT_EQ(p[4].second.shape(), (Shape{96, 48, 3, 3}));
  EXPECT_EQ(p[8].first, "downsample_layers.1.conv.weight");
  EXPECT_EQ(p[8].second.shape(), (Shape{192, 96, 3, 3}));
  EXPECT_EQ(p[10].first, "downsample_layers.1.norm.weight");
  EXPECT_EQ(m.parameter("stages.2.5.fc1.bias").shape(), (Shape{2048}));
  EXPECT_EQ(m.parameter("stages.0.0.fc1.weight").shape(), (Shape{512, 96}));
  EXPECT_EQ(m.parameter("stages.0.0.conv.weight").shape(), (Shape{96, 1, 7, 7}));
  EXPECT_EQ(m.parameter("stages.3.2.fc2.weight").shape(), (Shape{576, 1536}));
  EXPECT_EQ(m.parameter("head.fc1.weight").shape(), (Shape{2304, 576}));
  EXPECT_EQ(m.parameter("head.norm.weight").shape(), (Shape{2304}));
  EXPECT_EQ(m.parameter("head.fc2.weight").shape(), (Shape{1000, 2304}));
  // within a block: norm, fc1, conv, fc2
  std::vector<std::string> blk;
  for (auto& [n, t] : p)
    if (n.rfind("stages.1.2.", 0) == 0) blk.push_back(n.substr(11));
  EXPECT_EQ(blk, (std::vector<std::string>{"norm.weight", "norm.bias", "fc1.weight", "fc1.bias", "conv.weight",
                                           "conv.bias", "fc2.weight", "fc2.bias"}));
  EXPECT_EQ(p.back().first, "head.fc2.bias");
  EXPECT_THROW(m.parameter("stages.9.0.fc1.weight"), mo::Error);
}

TEST(MambaOut, HiddenWidthTruncation) {
  MambaOut m(mambaout_config("mambaout_base"), 0, false);
  EXPECT_EQ(m.stages[0][0]->hidden, 341);
  EXPECT_EQ(m.stages[1][0]->hidden, 682);
  EXPECT_EQ(m.stages[2][0]->hidden, 1365);
  EXPECT_EQ(m.stages[3][0]->hidden, 2048);
}

TEST(MambaOut, DropPathScheduleIsLinearOverAllBlocks) {
  auto cfg = mambaout_config("mambaout_tiny");
  cfg.drop_path_rate = 0.2;
  MambaOut m(cfg, 0, false);
  EXPECT_DOUBLE_EQ(m.stages[0][0]->drop_path, 0.0);
  EXPECT_NEAR(m.stages[1][0]->drop_path, 0.0353, 1e-4);
  EXPECT_NEAR(m.stages[2][0]->drop_path, 0.0706, 1e-4);
  EXPECT_NEAR(m.stages[3][0]->drop_path, 0.1765, 1e-4);
  EXPECT_DOUBLE_EQ(m.stages[3][2]->drop_path, 0.2);
  auto base = mambaout_config("mambaout_base");
  base.drop_path_rate = 0.6;
  MambaOut b(base, 0, false);
  EXPECT_NEAR(b.stages[1][0]->drop_path, 0.05, 1e-4);
  EXPECT_NEAR(b.stages[3][0]->drop_path, 0.5667, 1e-4);
}

TEST(MambaOut, InitialisationStatistics) {
  MambaOut m(mambaout_config("mambaout_femto"), 3);
  auto w = m.parameter("stages.2.0.fc1.weight").to_vector<double>();
  double s = 0, s2 = 0;
  for (double v : w) s += v, s2 += v * v;
  double mean = s / w.size(), sd = std::sqrt(s2 / w.size() - mean * mean);
  EXPECT_NEAR(mean, 0.0, 1e-3);
  EXPECT_NEAR(sd, 0.02, 5e-4);
  for (double v : m.parameter("stages.2.0.fc1.bias").to_vector<double>()) EXPECT_EQ(v, 0.0);
  for (double v : m.parameter("norm.weight").to_vector<double>()) EXPECT_EQ(v, 1.0);
  // different seeds give different weights, the same seed the same
  MambaOut m2(mambaout_config("mambaout_femto"), 3), m3(mambaout_config("mambaout_femto"), 4);
  EXPECT_EQ(m2.parameter("head.fc2.weight").to_vector<float>(), m.parameter("head.fc2.weight").to_vector<float>());
  EXPECT_NE(m3.parameter("head.fc2.weight").to_vector<float>(), m.parameter("head.fc2.weight").to_vector<float>());
}

TEST(MambaOut, ForwardBackwardShapesAndOddResolution) {
  auto cfg = mambaout_config("mambaout_femto");
  cfg.num_classes = 10;
  MambaOut m(cfg);
  Tensor x = mo::test::randn({2, 3, 37, 45}, 1);  // odd sizes: every stride-2 conv gives ceil(H/2)
  Tensor y = m.forward(x);
  EXPECT_EQ(y.shape(), (Shape{2, 10}));
  Tensor loss = soft_target_cross_entropy(y, smooth_one_hot(Tensor::from_vector<int64_t>({3, 7}, {2}), 10, 0.1));
  loss.backward();
  for (auto& [n, p] : m.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << n;
    EXPECT_EQ(p.grad().shape(), p.shape()) << n;
  }
  EXPECT_THROW(m.forward(mo::test::randn({2, 4, 32, 32}, 1)), mo::Error);
  EXPECT_THROW(mambaout_config("mambaout_huge"), mo::Error);
}

TEST(MambaOut, PackedParametersShareOneArena) {
  MambaOut m(mambaout_config("test_mambaout"));
  auto before = m.parameter("stages.1.0.fc1.weight").to_vector<float>();
  pack_parameters(m, Device::cpu());
  auto ps = m.parameters();
  for (auto& p : ps) EXPECT_EQ(p.storage().get(), ps[0].storage().get());
  EXPECT_EQ(m.parameter("stages.1.0.fc1.weight").to_vector<float>(), before);
  EXPECT_EQ(static_cast<int64_t>(ps[0].storage()->nbytes), m.num_parameters() * 4);
}
