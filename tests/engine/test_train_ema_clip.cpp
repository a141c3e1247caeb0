// test_train_ema_clip.cpp: model EMA and gradient clipping in the training loop (CPU, fp32, tiny model):
//  - the EMA starts as a copy of the weights after step 1 and follows e ← lerp(e, w, 1 − decay) after
//    every step, from the fp32 master weights;
//  - it is evaluated beside the model (log line, summary.csv's *_ema columns), saved in the checkpoint,
//    resumed bit for bit, and exported: mo_convert --entry state_dict_ema writes its weights;
//  - an interrupted and resumed run writes the same summary.csv row for the interrupted epoch as an
//    uninterrupted one (the epoch's loss sum travels in the checkpoint);
//  - clipping at a huge norm changes nothing (bit for bit); clipping is on the accumulated gradient
//    (4 micro-batches of 4 give the norm and update of one batch of 16); the norm is logged and in
//    summary.csv; bad values of the keys are refused naming them.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "nn/io/checkpoint_io.h"
#include "ops/optim/ema.h"
#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/common/omp_env.h"
#include "tools/engine/trainer.h"
#include "tools/engine/weights.h"

using namespace mo;
using namespace mo::tools;
using namespace mo::tools::testing;

namespace {

struct Outcome {
  TrainResult r;
  std::vector<float> master, ema;
  std::string log;
};

Outcome run(const TrainConfig& c) {
  std::FILE* log = std::tmpfile();
  Outcome out;
  {
    Trainer t(c, nullptr, log);
    out.r = t.fit();
    out.master = t.optimizer().master().to_vector<float>();
    if (t.ema()) out.ema = t.ema()->flat().to_vector<float>();
  }
  std::rewind(log);
  out.log.resize(1 << 18);
  out.log.resize(std::fread(out.log.data(), 1, out.log.size(), log));
  std::fclose(log);
  return out;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return !a.empty() && a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// summary.csv's rows without the images/s column (timing).
std::vector<std::string> summary_rows(const std::string& dir) {
  std::vector<std::string> rows;
  std::stringstream ss(read_text(dir + "/summary.csv"));
  std::string line;
  std::getline(ss, line);
  while (std::getline(ss, line)) rows.push_back(line.substr(0, line.rfind(',')));
  return rows;
}

const std::string& folder() {
  static const std::string root = make_image_folder("mo_train_ema_data", 3, 12, 4);
  return root;
}

TrainConfig config(const std::string& name) {
  TrainConfig c = small_config(folder(), mo::test::tmp_path(name));
  c.train.eval_every = 0;
  return c;
}

}  // namespace

TEST(TrainEma, StartsAsACopyAndFollowsTheMasterWeights) {
  TrainConfig one = config("mo_ema_one");
  one.model_ema = true;
  one.model_ema_decay = 1.0;  // after the first update's copy, never moves
  one.train.max_steps = 1;
  const Outcome a = run(one);
  EXPECT_TRUE(bit_equal(a.ema, a.master));
  TrainConfig three = one;
  three.train.output = mo::test::tmp_path("mo_ema_three");
  three.train.max_steps = 3;
  const Outcome b = run(three);
  EXPECT_TRUE(bit_equal(b.ema, a.master));
  EXPECT_FALSE(bit_equal(b.master, a.master));
  // Decay 0.5: after step 2, lerp(w1, w2, 0.5).
  TrainConfig two = one;
  two.train.output = mo::test::tmp_path("mo_ema_two");
  two.model_ema_decay = 0.5;
  two.train.max_steps = 2;
  const Outcome c = run(two);
  Tensor e = Tensor::from_vector(a.master, {static_cast<int64_t>(a.master.size())});
  ema_update(e, Tensor::from_vector(c.master, e.shape()), 0.5);
  EXPECT_TRUE(bit_equal(c.ema, e.to_vector<float>()));
}

TEST(TrainEma, EvaluatedSavedResumedAndExported) {
  TrainConfig base = config("mo_ema_straight");
  base.model_ema = true;
  base.model_ema_decay = 0.9;
  base.model_ema_warmup = true;
  base.train.eval_every = 1;
  base.optim.clip_grad = 0.5;
  base.train.max_steps = 7;  // 4 steps per epoch: epoch 0 and 3 steps of epoch 1
  const Outcome straight = run(base);
  ASSERT_TRUE(straight.r.last_eval_ema);
  EXPECT_EQ(straight.r.last_eval_ema->samples, 12);
  EXPECT_NE(straight.log.find("epoch 0: EMA (decay "), std::string::npos) << straight.log;

  TrainConfig first = base;
  first.train.output = mo::test::tmp_path("mo_ema_split");
  fs::remove_all(first.train.output);
  first.train.max_steps = 3;  // stops in the middle of epoch 0
  run(first);
  TrainConfig second = first;
  second.train.max_steps = 7;
  second.train.resume = "auto";
  const Outcome resumed = run(second);
  EXPECT_TRUE(bit_equal(straight.master, resumed.master));
  EXPECT_TRUE(bit_equal(straight.ema, resumed.ema));
  ASSERT_TRUE(resumed.r.last_eval_ema);
  EXPECT_EQ(straight.r.last_eval_ema->loss_sum, resumed.r.last_eval_ema->loss_sum);
  // Was: the resumed run's train_loss for epoch 0 averaged only steps 4..4.
  const std::vector<std::string> rows = summary_rows(base.train.output);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows, summary_rows(second.train.output));
  // train_loss, the model's eval columns, the EMA's, the gradient norm: all filled in.
  EXPECT_TRUE(std::regex_match(rows[0], std::regex("0,[0-9.]+,[0-9.]+,[0-9.]+,[0-9.]+,[0-9.e-]+,0,0,0,[0-9.]+,"
                                                   "[0-9.]+,[0-9.]+,[0-9.]+")))
      << rows[0];

  // The checkpoint holds the EMA; its state_dict_ema entry is what mo_convert exports.
  CheckpointManager m(second.train.output + "/checkpoints", 10, true);
  const std::string newest = m.list().back();
  CheckpointState s = load_checkpoint(newest);
  ASSERT_FALSE(s.ema.empty());
  EXPECT_EQ(s.ema.size(), s.model.size());
  register_mo_format();
  nn::io::RawStateDict sd = nn::io::read_checkpoint(newest, {"state_dict_ema"});
  ASSERT_EQ(sd.tensors.size(), s.ema.size());
  for (size_t i = 0; i < sd.tensors.size(); ++i) {
    EXPECT_EQ(sd.tensors[i].first, s.ema[i].first);
    EXPECT_EQ(nn::io::tensor_from_raw(sd.tensors[i].second).to_vector<float>(), s.ema[i].second.to_vector<float>());
  }
  const std::string out = second.train.output + "/ema.safetensors";
  const auto conv = mo::test::run_command(std::string(MO_BINARY_DIR) + "/tools/mo_convert " + newest + " " + out +
                                          " --entry state_dict_ema");
  ASSERT_EQ(conv.rc, 0) << conv.output;
  nn::MambaOutConfig mc = nn::mambaout_config("test_mambaout");
  mc.num_classes = 3;
  nn::MambaOut model(mc, 99);
  load_weights(model, out);
  for (const auto& [n, t] : s.ema) EXPECT_EQ(model.parameter(n).to_vector<float>(), t.to_vector<float>()) << n;
  // A run without the EMA has no such entry; an unknown entry names the ones there are.
  std::string e = mo::test::error_of([&] { nn::io::read_checkpoint(newest, {"state_dict_emma"}); });
  EXPECT_NE(e.find("no entry 'state_dict_emma' in a mo checkpoint; the entries are: state_dict, state_dict_ema"),
            std::string::npos) << e;
}

TEST(TrainEma, ResumingACheckpointWithoutEmaStartsItFromTheWeights) {
  TrainConfig first = config("mo_ema_late");
  first.train.max_steps = 2;
  run(first);
  TrainConfig second = first;
  second.model_ema = true;
  second.train.max_steps = 2;  // nothing left to train: the EMA is the resumed weights
  second.train.resume = "auto";
  const Outcome r = run(second);
  EXPECT_NE(r.log.find("holds no model EMA; the EMA starts from its weights"), std::string::npos) << r.log;
  EXPECT_TRUE(bit_equal(r.ema, r.master));
}

TEST(TrainClip, HugeThresholdChangesNothingAndTheNormIsLogged) {
  TrainConfig plain = config("mo_clip_plain");
  plain.train.max_steps = 4;
  TrainConfig huge = plain;
  huge.train.output = mo::test::tmp_path("mo_clip_huge");
  huge.optim.clip_grad = 1e30;
  huge.log.every_steps = 2;
  const Outcome a = run(plain), b = run(huge);
  EXPECT_TRUE(bit_equal(a.master, b.master));
  EXPECT_NE(b.log.find("grad-norm "), std::string::npos) << b.log;
  EXPECT_EQ(a.log.find("grad-norm "), std::string::npos) << a.log;
  TrainConfig tight = huge;
  tight.train.output = mo::test::tmp_path("mo_clip_tight");
  tight.optim.clip_grad = 1e-3;
  const Outcome c = run(tight);
  EXPECT_FALSE(bit_equal(a.master, c.master));
}

TEST(TrainClip, ClipsTheAccumulatedGradientOncePerStep) {
  TrainConfig big = config("mo_clip_big");
  big.data.mixup_prob = 0;  // one lambda per micro-batch: off, so both runs see the same targets
  big.data.reprob = 0;
  big.model.drop_path_rate = 0;
  big.train.batch_size = 16;
  big.train.global_batch = 16;
  big.train.steps_per_epoch = 2;
  big.train.max_steps = 2;
  big.optim.clip_grad = 0.05;
  TrainConfig small = big;
  small.train.output = mo::test::tmp_path("mo_clip_small");
  small.train.batch_size = 4;  // accumulation 4
  const Outcome a = run(big), b = run(small);
  // The epoch's mean norm is in summary.csv: the same in both (the norm of the mean gradient, not of
  // the sum of 4); and it exceeds the threshold, so both clipped.
  auto norm = [](const std::string& dir) {
    std::string row = summary_rows(dir).at(0);
    std::vector<std::string> f;
    std::stringstream ss(row);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    return std::stod(f.at(12));
  };
  const double na = norm(big.train.output), nb = norm(small.train.output);
  EXPECT_GT(na, 0.05);
  EXPECT_NEAR(na, nb, 1e-4 * na);
  double max_w = 0, diff = 0;
  for (size_t i = 0; i < a.master.size(); ++i) {
    max_w = std::max(max_w, std::abs(static_cast<double>(a.master[i])));
    diff = std::max(diff, std::abs(static_cast<double>(a.master[i]) - b.master[i]));
  }
  EXPECT_LT(diff, 1e-4 * max_w);
}

TEST(TrainClip, BadValuesAreRefusedNamingTheKey) {
  for (const auto& [set, says] : std::vector<std::pair<std::string, std::string>>{
           {"optim.clip_grad=-1", "config key 'optim.clip_grad' must be in [0, 1e30]"},
           {"optim.clip_grad=.nan", "key 'optim.clip_grad'"},
           {"optim.clip_grad=1e31", "config key 'optim.clip_grad' must be in [0, 1e30]"},
           {"model_ema_decay=1.5", "config key 'model_ema_decay' must be in [0, 1]"},
           {"model_ema=maybe", "model_ema"}}) {
    const std::string e = mo::test::error_of([&] { load_train_config("", {set}); });
    EXPECT_NE(e.find(says), std::string::npos) << set << ": " << e;
  }
}
