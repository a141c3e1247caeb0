// test_tool_errors.cpp: bad input to the programs, run as child processes: each case ends with a non-zero
// exit (never a signal or terminate()), a message naming the file, key or option, and nothing already
// saved is lost. One case per mistake found in the bad-input audit of the tools.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/test_util.h"
#include "tests/train/train_test_util.h"

namespace fs = std::filesystem;
using mo::tools::testing::make_image_folder;

namespace {

const std::string kBin = std::string(MO_BINARY_DIR) + "/tools/";

using Result = mo::test::RunResult;
const auto sh = mo::test::run_command;

// The program failed cleanly (exit 1 or 2, no crash) and said each of `says`.
::testing::AssertionResult fails_saying(const Result& r, const std::vector<std::string>& says) {
  if (r.rc != 1 && r.rc != 2) return ::testing::AssertionFailure() << "exit " << r.rc << ", output:\n" << r.output;
  if (r.output.find("terminate called") != std::string::npos)
    return ::testing::AssertionFailure() << "terminate() was called:\n" << r.output;
  for (const auto& s : says)
    if (r.output.find(s) == std::string::npos)
      return ::testing::AssertionFailure() << "the output does not say \"" << s << "\":\n" << r.output;
  return ::testing::AssertionSuccess();
}

std::string tmp(const std::string& name) { return (fs::temp_directory_path() / name).string(); }

// 3 classes x 4 training and 2 validation 32x32 images.
const std::string& folder() {
  static const std::string root = make_image_folder("tool_errors_data", 3, 4, 2);
  return root;
}

std::string write(const std::string& name, const std::string& text) {
  const std::string path = tmp(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// A recipe for test_mambaout on folder(); `output` is the run folder.
std::string recipe(const std::string& output, int max_steps = 2) {
  return write("tool_errors_" + fs::path(output).filename().string() + ".yaml",
               "model: {name: test_mambaout, num_classes: 3}\n"
               "data: {root: " + folder() + ", img_size: 32, workers: 1, crop_pct: 1.0}\n"
               "sched: {epochs: 4, warmup_epochs: 0, cooldown_epochs: 0}\n"
               "train: {batch_size: 4, global_batch: 4, device: cpu, precision: fp32, eval_every: 0,\n"
               "        output: " + output + ", max_steps: " + std::to_string(max_steps) + "}\n"
               "ckpt: {every_steps: 1, keep_last: 3}\n"
               "log: {progress: lines, tensorboard: false}\n");
}

std::string train(const std::string& args) { return kBin + "mo_train " + args; }

// A trained checkpoint of test_mambaout (3 classes), made once per test process.
const std::string& checkpoint() {
  static const std::string path = [] {
    const std::string out = tmp("tool_errors_ckpt");
    fs::remove_all(out);
    Result r = sh(train(recipe(out, 1)));
    EXPECT_EQ(r.rc, 0) << r.output;
    return out + "/checkpoints/ckpt-e0000-s00000001.mo";
  }();
  return path;
}

std::vector<std::pair<std::string, uintmax_t>> listing(const std::string& dir) {
  std::vector<std::pair<std::string, uintmax_t>> v;
  for (auto& e : fs::directory_iterator(dir))
    v.emplace_back(e.path().filename().string(), e.is_regular_file() ? e.file_size() : 0);
  std::sort(v.begin(), v.end());
  return v;
}

class ToolErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kBin + "mo_train")) GTEST_SKIP() << "build the programs first (ninja): no " << kBin << "mo_train";
  }
};

}  // namespace

TEST_F(ToolErrors, TrainRecipeThatIsADirectory) {
  // Was: the folder read as an empty recipe, then "config key 'data.root' is empty".
  EXPECT_TRUE(fails_saying(sh(train(folder())), {"config file '" + folder() + "' is a directory, not a YAML recipe"}));
}

TEST_F(ToolErrors, TrainRejectsValuesOutOfRange) {
  // Each was accepted and trained (a probability of 2, negative rates and counts, an infinite lr).
  const std::string r = recipe(tmp("tool_errors_range"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"optim.betas=[1.5,0.999]", "config key 'optim.betas': [1.5, 0.999] must both be in [0, 1)"},
      {"optim.eps=-1", "config key 'optim.eps' must be > 0"},
      {"optim.eps=0", "config key 'optim.eps' must be > 0 (with 0, a weight whose gradients are all 0"},
      {"optim.lr=inf", "key 'optim.lr': expected a finite number, got 'inf'"},
      {"sched.min_lr=-1", "'sched.min_lr' (-1) must be >= 0"},
      {"data.hflip=2", "config key 'data.hflip' is a probability: 2 not in [0, 1]"},
      {"data.reprob=-3", "config key 'data.reprob' is a probability: -3 not in [0, 1]"},
      {"data.mixup_switch_prob=7", "config key 'data.mixup_switch_prob' is a probability"},
      {"data.mixup=-1", "config keys 'data.mixup' (-1) and 'data.cutmix'"},
      {"data.workers=-1", "config key 'data.workers' must be >= 0, got -1"},
      {"train.eval_batch_size=-5", "config key 'train.eval_batch_size' must be >= 0"},
      {"ckpt.every_steps=-1", "config key 'ckpt.every_steps' must be >= 0"},
  };
  for (const auto& [set, says] : cases) EXPECT_TRUE(fails_saying(sh(train(r + " --set " + set)), {says})) << set;
  EXPECT_FALSE(fs::exists(tmp("tool_errors_range"))) << "a rejected config still created the output folder";
}

TEST_F(ToolErrors, TrainOnAFolderWithOneClass) {
  // Was: trained "successfully" at loss 0 and 100% top-1.
  const std::string one = make_image_folder("tool_errors_one_class", 1, 4, 2);
  const Result r = sh(train(recipe(tmp("tool_errors_one")) + " --set data.root=" + one + " --set model.num_classes=1"));
  EXPECT_TRUE(fails_saying(r, {"'" + one + "/train' has one class folder ('class_0')", "at least 2 classes"}));
}

TEST_F(ToolErrors, FreshRunDoesNotOverwriteAnExistingRun) {
  // Was: a second run into the same train.output saved its checkpoints there, pruned them at once (the
  // older run's had higher steps), rewrote config.yaml and named a checkpoint that no longer existed.
  const std::string out = tmp("tool_errors_rerun");
  fs::remove_all(out);
  const std::string r = recipe(out, 2);  // 3 steps per epoch: checkpoints after steps 1 and 2
  Result first = sh(train(r));
  ASSERT_EQ(first.rc, 0) << first.output;
  const auto before = listing(out + "/checkpoints");
  ASSERT_EQ(before.size(), 2u);
  std::ifstream c0(out + "/config.yaml");
  const std::string config((std::istreambuf_iterator<char>(c0)), {});

  Result second = sh(train(r + " --set train.max_steps=1 --set optim.lr=0.5"));
  EXPECT_TRUE(fails_saying(second, {"train.output '" + out + "' already holds checkpoints of a run (latest: " + out +
                                        "/checkpoints/ckpt-e0000-s00000002.mo)",
                                    "--set train.resume=auto"}));
  EXPECT_EQ(listing(out + "/checkpoints"), before);
  std::ifstream c1(out + "/config.yaml");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(c1)), {}), config);

  Result resumed = sh(train(r + " --set train.max_steps=3 --set train.resume=auto"));  // the way to continue
  EXPECT_EQ(resumed.rc, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from " + out + "/checkpoints/ckpt-e0000-s00000002.mo"), std::string::npos)
      << resumed.output;
}

TEST_F(ToolErrors, ResumeAutoKeepsCheckpointsItCannotRead) {
  // Was: "starting from scratch", and the new run's pruning deleted the unreadable files.
  const std::string out = tmp("tool_errors_unreadable");
  fs::remove_all(out);
  const std::string r = recipe(out, 2);
  ASSERT_EQ(sh(train(r)).rc, 0);
  for (auto& e : fs::directory_iterator(out + "/checkpoints")) fs::resize_file(e.path(), 100);
  const auto before = listing(out + "/checkpoints");
  ASSERT_EQ(before.size(), 2u);
  Result run = sh(train(r + " --set train.resume=auto"));
  EXPECT_TRUE(fails_saying(run, {"warning: checkpoint '" + out + "/checkpoints/ckpt-e0000-s00000002.mo' is truncated",
                                 "train.resume=auto: none of the 2 checkpoints in '" + out + "/checkpoints' can be read"}));
  EXPECT_EQ(listing(out + "/checkpoints"), before);
}

TEST_F(ToolErrors, ResumeFromAFolderOrAPyTorchFile) {
  const std::string r = recipe(tmp("tool_errors_resume"));
  // Was: "checkpoint '<folder>' is truncated (reading the header)".
  EXPECT_TRUE(fails_saying(sh(train(r + " --set train.resume=" + folder())),
                           {"checkpoint '" + folder() + "' is a directory, not a checkpoint file"}));
  // Was: "'x.pth' is not a mo checkpoint (bad magic)", without the way to use the file.
  const std::string pth = tmp("tool_errors_w.pth");
  ASSERT_EQ(sh(kBin + "mo_convert " + checkpoint() + " " + pth).rc, 0);
  EXPECT_TRUE(fails_saying(sh(train(r + " --set train.resume=" + pth)),
                           {"config key 'train.resume': '" + pth + "' is not a mo checkpoint", "use model.init"}));
}

TEST_F(ToolErrors, ValidateWithAnUnreadableImage) {
  // Was: exit 0; the unreadable image was replaced by another one and counted in the accuracy.
  const std::string root = make_image_folder("tool_errors_bad_val", 3, 4, 2);
  const std::string bad = root + "/val/class_1/zz_bad.jpg";
  write("not_a_jpeg", "not a jpeg\n");
  fs::copy_file(tmp("not_a_jpeg"), bad);
  const Result r = sh(kBin + "mo_validate " + checkpoint() + " --data " + root + " --workers 1");
  EXPECT_TRUE(fails_saying(r, {"skipping " + bad, "'" + root + "/val' holds unreadable images",
                               "the accuracy above is not that of the folder"}));
  EXPECT_NE(r.output.find("top-1 "), std::string::npos) << r.output;  // the numbers are still shown
  const Result good = sh(kBin + "mo_validate " + checkpoint() + " --data " + folder() + " --workers 1");
  EXPECT_EQ(good.rc, 0) << good.output;
}

TEST_F(ToolErrors, ValidateAndPredictNameTheOption) {
  const std::string v = kBin + "mo_validate " + checkpoint() + " --data " + folder();
  // Was: "config key 'data.interpolation': 'nearest' is not one of ..." / "config key 'data.img_size' ...".
  EXPECT_TRUE(fails_saying(sh(v + " --interpolation nearest"), {"--interpolation must be bicubic or bilinear, got 'nearest'"}));
  EXPECT_TRUE(fails_saying(sh(v + " --img-size 16"), {"--img-size: expected an integer from 32 to 8192, got '16'"}));
  // Was: "cannot tell the checkpoint format from the extension ''".
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_validate " + folder() + " --data " + folder()),
                           {"'" + folder() + "' is a directory, not a checkpoint file"}));
  const std::string img = folder() + "/val/class_0/0.jpg";
  const std::string p = kBin + "mo_predict --weights " + checkpoint() + " " + img;
  ASSERT_EQ(sh(p).rc, 0);
  // Was: predicted on 8x8 pixels without a word.
  EXPECT_TRUE(fails_saying(sh(p + " --img-size 8"), {"--img-size: expected an integer from 32 to 8192, got '8'"}));
  // Was: "'<folder>' holds no class names".
  EXPECT_TRUE(fails_saying(sh(p + " --classes " + folder()),
                           {"class-name file '" + folder() + "' is a directory, not a text file"}));
}

TEST_F(ToolErrors, ConvertToAFolderOrIntoAMissingOne) {
  const std::string out_dir = tmp("tool_errors_convert");
  fs::remove_all(out_dir);
  fs::create_directories(out_dir + "/sub");
  const std::string c = kBin + "mo_convert " + checkpoint() + " ";
  // Was: "cannot tell the checkpoint format from the extension ''"; with --format, a stray sub.tmp was left.
  EXPECT_TRUE(fails_saying(sh(c + out_dir + "/sub"), {"cannot write '" + out_dir + "/sub': it is a directory"}));
  EXPECT_TRUE(fails_saying(sh(c + out_dir + "/sub --format safetensors"), {"it is a directory"}));
  // Was: "cannot write '.../nodir/w.safetensors.tmp': No such file or directory" (the temporary's name).
  EXPECT_TRUE(fails_saying(sh(c + out_dir + "/nodir/w.safetensors"),
                           {"cannot write '" + out_dir + "/nodir/w.safetensors': folder '" + out_dir +
                            "/nodir' does not exist"}));
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_convert " + out_dir + " " + out_dir + "/w.pth"),
                           {"'" + out_dir + "' is a directory, not a checkpoint file"}));
  EXPECT_EQ(listing(out_dir).size(), 1u) << "a failed conversion left a file behind";
}

TEST_F(ToolErrors, FlopsNamesTheWholeImageSize) {
  // Was: "--img expects a positive integer, got ''".
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_flops --arch mambaout_tiny --img 10x"),
                           {"--img expects N or HxW with positive integers, got '10x'"}));
}

TEST_F(ToolErrors, PrepareMessages) {
  const std::string file = write("tool_errors_a_file", "x");
  // Was: "filesystem error: cannot create directories: Not a directory [...]" (needs the Debian data set).
  if (fs::exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")) {
    EXPECT_TRUE(fails_saying(sh(kBin + "mo_prepare fashion-mnist --threads 1 --out " + file + "/x"),
                             {"mo_prepare fashion-mnist: cannot create folder '" + file + "/x/train/t-shirt_top' (--out " +
                              file + "/x): Not a directory"}));
  }
  // Was: "mo_prepare: mo_prepare: unknown option '--bogus'"; --size 4 passed the option check.
  Result r = sh(kBin + "mo_prepare fashion-mnist --out " + file + " --bogus");
  EXPECT_TRUE(fails_saying(r, {"mo_prepare: unknown option '--bogus'"}));
  EXPECT_EQ(r.output.find("mo_prepare: mo_prepare"), std::string::npos) << r.output;
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_prepare fashion-mnist --out " + file + " --size 4"),
                           {"--size: expected an integer from 8 to 1024, got '4'"}));
}

TEST_F(ToolErrors, BenchRejectsAnUnknownMode) {
  // Was: exit 0 having measured nothing.
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_bench --model test_mambaout --img 32 --batch 1 --iters 1 --mode both2"),
                           {"--mode must be train, infer or both"}));
}

TEST_F(ToolErrors, BenchDataWithABadFileOrFolder) {
  // Was: terminate() (an exception escaped a worker thread), exit 134.
  const std::string dir = tmp("tool_errors_bench_data");
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(folder() + "/val/class_0/0.jpg", dir + "/a.jpg");
  write("tool_errors_bench_data/b.jpg", "not a jpeg");
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_bench_data --dir " + dir + " --count 4 --threads 1 --modes decode"),
                           {"mo_bench_data: " + dir + "/b.jpg: not a JPEG file"}));
  // Was: "filesystem error: directory iterator cannot open directory: ...".
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_bench_data --dir " + dir + "/none --count 1"),
                           {"mo_bench_data: --dir '" + dir + "/none': No such file or directory"}));
}
