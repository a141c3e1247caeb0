// test_train_loop.cpp: the training loop on the CPU (fp32) with a tiny model and image folder.
//  - accumulating 4 micro-batches of B gives the same update as one batch of 4B;
//  - N steps straight == N/2 steps, stop, resume, N/2 steps, bit for bit (weights and AdamW moments),
//    with mixup, random erasing and drop path on and the stop in the middle of an epoch;
//  - a damaged newest checkpoint is refused and resuming falls back to the previous one, still exact;
//  - the run writes summary.csv rows, TensorBoard events, and keeps the last K checkpoints + best.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "nn/io/checkpoint_io.h"
#include "nn/mambaout.h"
#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/common/omp_env.h"
#include "tests/engine/tensorboard_reader.h"
#include "tools/engine/tensorboard_writer.h"
#include "tools/engine/trainer.h"

using namespace mo;
using namespace mo::tools;
using namespace mo::tools::testing;

namespace {

struct Snapshot {
  std::vector<float> master, m, v;
};

Snapshot snapshot(const Trainer& t) {
  return {t.optimizer().master().to_vector<float>(), t.optimizer().exp_avg().to_vector<float>(),
          t.optimizer().exp_avg_sq().to_vector<float>()};
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TrainResult run(const TrainConfig& c, Snapshot* snap = nullptr) {
  std::FILE* devnull = std::fopen("/dev/null", "w");
  Trainer t(c, nullptr, devnull);
  TrainResult r = t.fit();
  if (snap) *snap = snapshot(t);
  std::fclose(devnull);
  return r;
}

const std::string& folder() {
  static const std::string root = make_image_folder("mo_train_loop_data", 3, 12, 4);
  return root;
}

}  // namespace

TEST(TrainLoop, AccumulationEqualsOneBigBatch) {
  TrainConfig big = small_config(folder(), mo::test::tmp_path("mo_train_accum_big"));
  big.data.mixup_prob = 0;  // mixup draws one lambda per micro-batch: off, so both see the same targets
  big.data.reprob = 0;
  big.model.drop_path_rate = 0;  // drop-path masks are keyed per micro-batch
  big.train.eval_every = 0;
  big.train.batch_size = 16;
  big.train.global_batch = 16;
  big.train.max_steps = 2;
  TrainConfig small = big;
  small.train.output = mo::test::tmp_path("mo_train_accum_small");
  small.train.batch_size = 4;  // accumulation 4

  Snapshot init, a, b;
  {
    TrainConfig none = big;
    none.train.max_steps = 0;
    Trainer t(none, nullptr, std::fopen("/dev/null", "w"));
    init = snapshot(t);
    EXPECT_EQ(t.accumulation(), 1);
  }
  run(big, &a);
  {
    Trainer t(small, nullptr, std::fopen("/dev/null", "w"));
    EXPECT_EQ(t.accumulation(), 4);
    t.fit();
    b = snapshot(t);
  }
  ASSERT_EQ(a.master.size(), b.master.size());
  double max_update = 0, max_diff = 0;
  for (size_t i = 0; i < a.master.size(); ++i) {
    max_update = std::max(max_update, std::abs(static_cast<double>(a.master[i]) - init.master[i]));
    max_diff = std::max(max_diff, std::abs(static_cast<double>(a.master[i]) - b.master[i]));
  }
  EXPECT_GT(max_update, 1e-4);  // the two steps did move the weights (lr 1e-3 per-step warmup)
  EXPECT_LT(max_diff, 1e-6 + 1e-3 * max_update) << "max update " << max_update;
  double max_m = 0, diff_m = 0;
  for (size_t i = 0; i < a.m.size(); ++i) {
    max_m = std::max(max_m, std::abs(static_cast<double>(a.m[i])));
    diff_m = std::max(diff_m, std::abs(static_cast<double>(a.m[i]) - b.m[i]));
  }
  EXPECT_LT(diff_m, 1e-4 * max_m);  // the averaged gradients agree
}

TEST(TrainLoop, ResumeIsBitIdentical) {
  TrainConfig base = small_config(folder(), mo::test::tmp_path("mo_train_resume_straight"));
  base.data.reprob = 0.25;
  base.data.mixup_prob = 1.0;
  base.train.max_steps = 7;  // 36 images / 4 = 9 batches, accumulation 2 -> 4 steps per epoch
  Snapshot straight, resumed;
  TrainResult r0 = run(base, &straight);
  EXPECT_EQ(r0.global_step, 7);

  TrainConfig first = base;
  first.train.output = mo::test::tmp_path("mo_train_resume_split");
  fs::remove_all(first.train.output);
  first.train.max_steps = 3;  // stops mid-epoch 0 and saves
  TrainResult r1 = run(first);
  EXPECT_EQ(r1.global_step, 3);
  EXPECT_TRUE(r1.stopped);
  TrainConfig second = first;
  second.train.max_steps = 7;
  second.train.resume = "auto";
  TrainResult r2 = run(second, &resumed);
  EXPECT_EQ(r2.global_step, 7);
  EXPECT_TRUE(bit_equal(straight.master, resumed.master));
  EXPECT_TRUE(bit_equal(straight.m, resumed.m));
  EXPECT_TRUE(bit_equal(straight.v, resumed.v));
  // The same evaluation at the end of epoch 0 in both runs.
  ASSERT_TRUE(r0.last_eval && r2.last_eval);
  EXPECT_EQ(r0.last_eval->top1, r2.last_eval->top1);
  EXPECT_EQ(r0.last_eval->loss_sum, r2.last_eval->loss_sum);
}

TEST(TrainLoop, DamagedCheckpointFallsBackToThePreviousOne) {
  TrainConfig base = small_config(folder(), mo::test::tmp_path("mo_train_fallback_straight"));
  base.train.max_steps = 6;
  base.train.eval_every = 0;
  Snapshot straight, resumed;
  run(base, &straight);

  TrainConfig first = base;
  first.train.output = mo::test::tmp_path("mo_train_fallback_split");
  fs::remove_all(first.train.output);
  first.train.max_steps = 5;
  first.ckpt.every_steps = 1;
  run(first);
  CheckpointManager m(first.train.output + "/checkpoints", 10, true);
  std::vector<std::string> all = m.list();
  ASSERT_GE(all.size(), 2u);
  EXPECT_NE(all.back().find("s00000005"), std::string::npos) << all.back();
  fs::resize_file(all.back(), fs::file_size(all.back()) - 100);  // the newest is truncated

  TrainConfig second = first;
  second.train.max_steps = 6;
  second.train.resume = "auto";
  std::FILE* log = std::tmpfile();
  {
    Trainer t(second, nullptr, log);
    t.fit();
    resumed = snapshot(t);
  }
  std::rewind(log);
  std::string text(1 << 16, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), log));
  std::fclose(log);
  EXPECT_NE(text.find("warning: checkpoint '" + all.back() + "' is truncated"), std::string::npos) << text;
  EXPECT_NE(text.find("resumed from " + all[all.size() - 2]), std::string::npos) << text;
  EXPECT_TRUE(bit_equal(straight.master, resumed.master));
  EXPECT_TRUE(bit_equal(straight.v, resumed.v));

  // An explicitly named damaged checkpoint is an error naming it.
  const std::string bad = first.train.output + "/bad.mo";
  fs::copy_file(all.front(), bad);
  fs::resize_file(bad, fs::file_size(bad) - 1);
  TrainConfig third = first;
  third.train.resume = bad;
  try {
    Trainer t(third, nullptr, std::fopen("/dev/null", "w"));
    FAIL() << "a truncated checkpoint was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint '" + bad + "' is truncated"), std::string::npos) << e.what();
  }
}

TEST(TrainLoop, LogsSummaryTensorBoardAndCheckpoints) {
  TrainConfig c = small_config(folder(), mo::test::tmp_path("mo_train_logs"));
  c.sched.epochs = 2;
  c.sched.cooldown_epochs = 1;  // 3 epochs x 4 steps
  c.ckpt.keep_last = 2;
  c.log.every_steps = 2;
  TrainResult r = run(c);
  EXPECT_EQ(r.global_step, 12);
  EXPECT_EQ(r.epochs_done, 3);
  EXPECT_FALSE(r.stopped);
  ASSERT_TRUE(r.last_eval);
  EXPECT_EQ(r.last_eval->samples, 12);

  std::ifstream csv(c.train.output + "/summary.csv");
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(csv, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], kSummaryHeader);
  EXPECT_EQ(lines[1].rfind("0,", 0), 0u);
  // No bad images, finite logits; no EMA, no clipping; a speed.
  EXPECT_TRUE(std::regex_search(lines[1], std::regex(",0,0,0,,,,,[0-9.e+]+$"))) << lines[1];
  EXPECT_EQ(lines[3].rfind("2,", 0), 0u);

  CheckpointManager m(c.train.output + "/checkpoints", 2, true);
  auto all = m.list();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_NE(all.back().find("ckpt-e0003-s00000012"), std::string::npos);
  CheckpointState best = read_checkpoint_header(m.best_path());
  ASSERT_TRUE(best.metric.has_value());
  EXPECT_EQ(*best.metric, r.best_top1);
  CheckpointState last = read_checkpoint_header(all.back());
  EXPECT_EQ(last.class_names, (std::vector<std::string>{"class_0", "class_1", "class_2"}));

  std::vector<std::string> tb;
  for (auto& e : fs::directory_iterator(c.train.output + "/tb")) tb.push_back(e.path().string());
  ASSERT_EQ(tb.size(), 1u);
  int loss = 0, top1 = 0, lr = 0, ips = 0;
  for (auto& e : read_scalar_events(tb[0])) {
    loss += e.tag == "train/loss";
    top1 += e.tag == "eval/top1";
    lr += e.tag == "train/lr";
    ips += e.tag == "train/images_per_s";
  }
  EXPECT_EQ(loss, 6);  // steps 2, 4, ..., 12
  EXPECT_EQ(lr, 6);
  EXPECT_EQ(ips, 6);
  EXPECT_EQ(top1, 3);
}

TEST(TrainLoop, InitFromWeightsForAnotherClassCount) {
  // model.init with 1000-class weights for a 3-class folder: the body is loaded, the classifier starts
  // afresh, and the log says which tensors were not loaded.
  TrainConfig c = small_config(folder(), mo::test::tmp_path("mo_train_finetune"));
  nn::MambaOutConfig mc = nn::mambaout_config("test_mambaout");
  mc.num_classes = 1000;
  nn::MambaOut imagenet(mc, 11);
  fs::create_directories(c.train.output);
  const std::string w = c.train.output + "/imagenet.pth";
  nn::io::save_model(imagenet, w);
  c.model.init = w;
  std::FILE* log = std::tmpfile();
  std::string text;
  {
    Trainer t(c, nullptr, log);
    const nn::AdamW& opt = t.optimizer();
    for (const auto& slot : opt.slots()) {
      Tensor now = opt.master().as_strided(slot.shape, contiguous_strides(slot.shape), opt.master().offset() + slot.offset);
      if (slot.name.rfind("head.fc2.", 0) == 0) {
        EXPECT_EQ(now.shape()[0], 3) << slot.name;
      } else {
        EXPECT_EQ(now.contiguous().to_vector<float>(), imagenet.parameter(slot.name).to_vector<float>()) << slot.name;
      }
    }
  }
  std::rewind(log);
  text.resize(1 << 16);
  text.resize(std::fread(text.data(), 1, text.size(), log));
  std::fclose(log);
  EXPECT_NE(text.find("2 tensor(s) of another shape not loaded, the model's initialisation kept: head.fc2.weight "
                      "(file [1000, 256], model [3, 256])"),
            std::string::npos)
      << text;
}
