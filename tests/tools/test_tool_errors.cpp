// test_tool_errors.cpp: bad input to the programs, run as child processes: each case ends with a non-zero
// exit (never a signal or terminate()), a message naming the file, key or option, and nothing already
// saved is lost. One case per mistake found in the bad-input audit of the tools.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/engine/checkpoint.h"
#include "tools/engine/progress.h"  // kSummaryHeader

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

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Overwrites an image of a folder with bytes that are not a JPEG.
void spoil(const std::string& image) { std::ofstream(image, std::ios::binary | std::ios::trunc) << "not a jpeg\n"; }

bool all_finite(const mo::tools::CheckpointState& s) {
  for (const auto* ts : {&s.model, &s.optimizer})
    for (const auto& [name, t] : *ts)
      for (float v : t.to_vector<float>())
        if (!std::isfinite(v)) return false;
  return true;
}

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
      {"ddp.bucket_mb=0", "config key 'ddp.bucket_mb' must be in (0, 4096] MiB, got 0"},
      {"data.img_size=100000", "config key 'data.img_size' must be in [32, 8192], got 100000"},
      {"train.eval_batch_size=1000000000000000", "config key 'train.eval_batch_size' must be at most 1048576 images"},
      {"sched.epochs=1e20", "config keys 'sched.epochs' (1e+20) + 'sched.cooldown_epochs' (0) must be at most 1e6 epochs"},
  };
  for (const auto& [set, says] : cases) EXPECT_TRUE(fails_saying(sh(train(r + " --set " + set)), {says})) << set;
  EXPECT_FALSE(fs::exists(tmp("tool_errors_range"))) << "a rejected config still created the output folder";
}

TEST_F(ToolErrors, TrainOnAFolderWithOneClass) {
  // Was: trained "successfully" at loss 0 and 100% top-1.
  const std::string one = make_image_folder("tool_errors_one_class", 1, 4, 2);
  const Result r = sh(train(recipe(tmp("tool_errors_one")) + " --set data.root=" + one + " --set model.num_classes=1"));
  EXPECT_TRUE(fails_saying(r, {"'" + one + "/train' has one class folder ('class_0')", "at least 2 classes"}));
  // the run's log ends with the error, as the console does
  std::ifstream log(tmp("tool_errors_one") + "/log.txt");
  const std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("error: '" + one + "/train' has one class folder"), std::string::npos) << text;
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
  ASSERT_EQ(before.size(), 3u);  // the two checkpoints and last.mo
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
  ASSERT_EQ(before.size(), 3u);  // the two checkpoints and last.mo
  Result run = sh(train(r + " --set train.resume=auto"));
  EXPECT_TRUE(fails_saying(run, {"warning: checkpoint '" + out + "/checkpoints/ckpt-e0000-s00000002.mo' is truncated",
                                 "train.resume=auto: none of the 2 checkpoints in '" + out + "/checkpoints' can be read"}));
  EXPECT_EQ(listing(out + "/checkpoints"), before);
}

TEST_F(ToolErrors, ResumeFromAFolderOrAPyTorchFile) {
  const std::string r = recipe(tmp("tool_errors_resume"));
  // Was: "checkpoint '<folder>' is truncated (reading the header)".
  EXPECT_TRUE(fails_saying(sh(train(r + " --set train.resume=" + folder())),
                           {"cannot read checkpoint '" + folder() + "': a directory, not a regular file"}));
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
  EXPECT_TRUE(fails_saying(sh(v + " --interpolation nearest"), {"--interpolation: expected bicubic or bilinear, got 'nearest'"}));
  EXPECT_TRUE(fails_saying(sh(v + " --img-size 16"), {"--img-size: expected an integer from 32 to 8192, got '16'"}));
  // Was: "config key 'train.eval_batch_size' must be at most ..." (and before that a negative batch size).
  EXPECT_TRUE(fails_saying(sh(v + " -b 1000000000000000"), {"--batch-size: expected an integer from 1 to 1048576"}));
  // Was: "cannot tell the checkpoint format from the extension ''".
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_validate " + folder() + " --data " + folder()),
                           {"cannot read '" + folder() + "': a directory, not a regular file"}));
  const std::string img = folder() + "/val/class_0/0.jpg";
  const std::string p = kBin + "mo_predict --weights " + checkpoint() + " " + img;
  ASSERT_EQ(sh(p).rc, 0);
  // Was: predicted on 8x8 pixels without a word.
  EXPECT_TRUE(fails_saying(sh(p + " --img-size 8"), {"--img-size: expected an integer from 32 to 8192, got '8'"}));
  // --use-ema on a run without model_ema, and on a file that holds one set of weights
  EXPECT_TRUE(fails_saying(sh(p + " --use-ema"), {"no entry 'state_dict_ema' (the run trained without model_ema)"}));
  EXPECT_TRUE(fails_saying(sh(v + " --use-ema"), {"no entry 'state_dict_ema' (the run trained without model_ema)"}));
  const std::string st = tmp("tool_errors_flat.safetensors");
  ASSERT_EQ(sh(kBin + "mo_convert " + checkpoint() + " " + st).rc, 0);
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_predict -w " + st + " --use-ema " + img),
                           {"'" + st + "' is a safetensors file, which holds one set of weights: it has no entry "
                            "'state_dict_ema'"}));
  // Was: "'<folder>' holds no class names".
  EXPECT_TRUE(fails_saying(sh(p + " --classes " + folder()),
                           {"cannot read class-name file '" + folder() + "': a directory, not a regular file"}));
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
                           {"cannot read '" + out_dir + "': a directory, not a regular file"}));
  EXPECT_EQ(listing(out_dir).size(), 1u) << "a failed conversion left a file behind";
}

TEST_F(ToolErrors, FlopsNamesTheWholeImageSize) {
  // Was: "--img expects a positive integer, got ''".
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_flops --arch mambaout_tiny --img 10x"),
                           {"mo_flops: error: --img: expected N or HxW with positive integers, got '10x'"}));
}

TEST_F(ToolErrors, PrepareMessages) {
  const std::string file = write("tool_errors_a_file", "x");
  // Was: "filesystem error: cannot create directories: Not a directory [...]" (needs the Debian data set).
  if (fs::exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")) {
    EXPECT_TRUE(fails_saying(sh(kBin + "mo_prepare fashion-mnist --threads 1 --out " + file + "/x"),
                             {"mo_prepare: error: fashion-mnist: cannot create folder '" + file +
                              "/x/train/t-shirt_top' (--out " + file + "/x): Not a directory"}));
  }
  // Was: "mo_prepare: mo_prepare: unknown option '--bogus'"; --size 4 passed the option check.
  Result r = sh(kBin + "mo_prepare fashion-mnist --out " + file + " --bogus");
  EXPECT_TRUE(fails_saying(r, {"mo_prepare: error: unknown option '--bogus'"}));
  EXPECT_EQ(r.rc, 2) << r.output;
  EXPECT_EQ(r.output.find("mo_prepare: error: mo_prepare"), std::string::npos) << r.output;
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_prepare fashion-mnist --out " + file + " --size 4"),
                           {"--size: expected an integer from 8 to 1024, got '4'"}));
}

TEST_F(ToolErrors, BenchRejectsAnUnknownMode) {
  // Was: exit 0 having measured nothing.
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_bench --model test_mambaout --img 32 --batch 1 --iters 1 --mode both2"),
                           {"mo_bench: error: --mode: expected train, infer or both, got 'both2'"}));
}

TEST_F(ToolErrors, BenchRefusesWhatItCannotTime) {
  // --graph times CUDA inference only; --attention is a ViT option. Refused before anything runs.
  const auto graph = sh(kBin + "mo_bench --model test_mambaout --img 32 --batch 1 --iters 1 --graph");
#ifdef MO_WITH_CUDA
  EXPECT_TRUE(fails_saying(graph, {"mo_bench: error: --graph times CUDA inference: it needs --device cuda"}));
#else
  EXPECT_TRUE(fails_saying(graph, {"mo_bench: error: --graph: this build of mo has no CUDA support"}));
#endif
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_bench --model test_mambaout --img 32 --batch 1 --iters 1 --attention causal"),
                           {"mo_bench: error: model.attention: 'causal' applies to ViT models only"}));
}

TEST_F(ToolErrors, BenchLoaderTakesRecipeKeysAndNamesAWrongOne) {
  // mo_bench --loader: the step beside a loader with the recipe's keys; a misspelt key is named before anything runs.
  const std::string cmd = kBin + "mo_bench --model test_mambaout --img 32 --batch 2 --warmup 0 --iters 3 --mode train "
                                 "--loader " + folder() + " --loader-workers 2 ";
  const Result ok = sh(cmd + "--loader-set data.prefetch=3 --loader-set data.hflip=0");
  EXPECT_EQ(ok.rc, 0) << ok.output;
  EXPECT_NE(ok.output.find("beside it the loader (cpu, 2 workers) delivered"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("workers busy"), std::string::npos) << ok.output;
  EXPECT_TRUE(fails_saying(sh(cmd + "--loader-set data.prefetchh=3"), {"mo_bench: error:", "data.prefetch"}));
  EXPECT_TRUE(fails_saying(sh(cmd + "--loader-set data.prefetch=1"),
                           {"mo_bench: error: config key 'data.prefetch' must be in [2, 64], got 1"}));
}

TEST_F(ToolErrors, BenchDataWithABadFileOrFolder) {
  // Was: terminate() (an exception escaped a worker thread), exit 134.
  const std::string dir = tmp("tool_errors_bench_data");
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(folder() + "/val/class_0/0.jpg", dir + "/a.jpg");
  write("tool_errors_bench_data/b.jpg", "not a jpeg");
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_bench_data --dir " + dir + " --count 4 --threads 1 --modes decode"),
                           {"mo_bench_data: error: " + dir + "/b.jpg: not a JPEG file"}));
  // Was: "filesystem error: directory iterator cannot open directory: ...".
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_bench_data --dir " + dir + "/none --count 1"),
                           {"mo_bench_data: error: --dir '" + dir + "/none': No such file or directory"}));
}

TEST_F(ToolErrors, PredictAndValidateWithAFifoOrAHugeFile) {
  // Was: a named pipe called *.jpg hung mo_predict and mo_validate forever; a sparse 3 GiB .jpg was read
  // whole (3.4 GB). `timeout` only bounds a regression: a hang ends as exit 137, which fails the case.
  const std::string root = make_image_folder("tool_errors_hostile", 3, 4, 2);
  const std::string fifo = root + "/val/class_1/fifo.jpg", big = root + "/sparse.jpg";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  std::ofstream(big) << "\xFF\xD8\xFF";
  fs::resize_file(big, uintmax_t(1) << 30);
  const std::string bound = "timeout -s KILL 300 ";
  const std::string p = bound + kBin + "mo_predict --weights " + checkpoint() + " ";
  EXPECT_TRUE(fails_saying(sh(p + fifo), {"cannot read '" + fifo + "': a named pipe (FIFO), not a regular file"}));
  // a folder: its images are predicted and the two bad entries reported in their place (exit 1)
  const Result folder_run = sh(p + root);
  EXPECT_TRUE(fails_saying(folder_run, {"error: cannot read '" + fifo + "': a named pipe (FIFO), not a regular file",
                                        "error: cannot read '" + big + "': 1073741824 bytes, over the limit of 64 MiB",
                                        "2 of 20 images could not be read or decoded"}));
  EXPECT_NE(folder_run.output.find(root + "/val/class_2/1.jpg\n  "), std::string::npos) << folder_run.output;
  EXPECT_TRUE(fails_saying(sh(p + big), {"cannot read '" + big + "': 1073741824 bytes, over the limit of 64 MiB"}));
  const std::string v = bound + kBin + "mo_validate " + checkpoint() + " --workers 2 --data " + root;
  const Result skipped = sh(v);
  EXPECT_EQ(skipped.rc, 0) << skipped.output;
  EXPECT_NE(skipped.output.find("skipped 1 entries that are neither regular files nor folders (named pipes, "
                                "sockets, devices, broken links), e.g. " + fifo + " (a named pipe (FIFO))"),
            std::string::npos) << skipped.output;
  EXPECT_NE(skipped.output.find("evaluating 6 images"), std::string::npos) << skipped.output;
  fs::rename(big, root + "/val/class_2/sparse.jpg");
  EXPECT_TRUE(fails_saying(sh(v), {"skipping " + root + "/val/class_2/sparse.jpg: 1073741824 bytes, over the limit",
                                   "holds unreadable images"}));
}

TEST_F(ToolErrors, DivergingRunStopsNamingTheStepAndKeepsWhatWasSaved) {
  // Was: optim.lr=1e6 logged 100% top-1 every epoch, saved the NaN weights as best.mo and exited 0.
  const std::string out = tmp("tool_errors_diverge"), dir = out + "/checkpoints";
  fs::remove_all(out);
  const std::string r = recipe(out, 3) + " --set train.eval_every=1";  // one epoch of 3 steps, evaluated
  ASSERT_EQ(sh(train(r)).rc, 0);
  const std::string best = read_text(dir + "/best.mo");
  ASSERT_FALSE(best.empty());
  const Result bad = sh(train(r + " --set train.max_steps=0 --set optim.lr=1e6 --set train.resume=auto"));
  ASSERT_TRUE(fails_saying(bad, {"training diverged: the ", "(epoch 1) ", " NaN or Inf", "Lower optim.lr (now 1000000)"}));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(bad.output, m, std::regex(R"((loss|gradient norm) of step (\d+) )"))) << bad.output;
  const int64_t step = std::stoll(m[2].str());
  EXPECT_GT(step, 3);
  EXPECT_EQ(read_text(dir + "/best.mo"), best) << "best.mo was replaced";
  // Every checkpoint left is finite and older than the step that diverged; no temporaries are left.
  for (const auto& [name, size] : listing(dir)) {
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << name;
    const mo::tools::CheckpointState s = mo::tools::load_checkpoint(dir + "/" + name);
    EXPECT_LT(s.step, step) << name;
    EXPECT_TRUE(all_finite(s)) << name << " holds NaN or Inf";
  }
}

TEST_F(ToolErrors, DivergenceBetweenLogPointsNamesItsStep) {
  // The step buffer is read only at log points and checkpoints (on the GPU, to spare a sync per step):
  // a NaN in step 2 of 12, with lines every 50 steps and no checkpoint before the epoch's end, is still
  // named as step 2, the same step as when every step is read (a checkpoint after each one).
  const std::string root = make_image_folder("tool_errors_diverge_data", 3, 16, 2);  // 12 steps of 4
  std::string named[2];
  for (int every : {0, 1}) {
    const std::string out = tmp("tool_errors_diverge_" + std::to_string(every));
    fs::remove_all(out);
    const Result r = sh(train(recipe(out, 0) + " --set data.root=" + root + " --set optim.lr=1e6 --set ckpt.every_steps=" +
                              std::to_string(every) + " --set log.every_steps=50"));
    ASSERT_TRUE(fails_saying(r, {"training diverged: the "}));
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.output, m, std::regex(R"((loss|gradient) of step (\d+) )"))) << r.output;
    named[every] = m[0].str();
    EXPECT_LT(std::stoll(m[2].str()), 12) << r.output;  // found before the epoch's end, not named after it
    if (every == 0) EXPECT_TRUE(listing(out + "/checkpoints").empty()) << r.output;
  }
  EXPECT_EQ(named[0], named[1]);
}

TEST_F(ToolErrors, ValidateWeightsThatGiveNaN) {
  // Was: NaN logits compare false with everything, so every label ranked first: 100% top-1.
  mo::tools::CheckpointState s = mo::tools::load_checkpoint(checkpoint());
  s.model.front().second.fill_(std::nan(""));
  const std::string nan = tmp("tool_errors_nan.mo");
  mo::tools::save_checkpoint(nan, s);
  const Result r = sh(kBin + "mo_validate " + nan + " --data " + folder() + " --workers 1");
  EXPECT_TRUE(fails_saying(r, {"top-1 0.000%  top-5 0.000%", "non-finite outputs: 6 of 6 images gave NaN or Inf logits",
                               "'" + nan + "' gives NaN or Inf logits for 6 of the 6 images of '" + folder() +
                                   "/val'"}));
  // Resuming from it is refused, naming the tensor, before any step runs.
  const std::string out = tmp("tool_errors_nan_resume");
  fs::remove_all(out);
  EXPECT_TRUE(fails_saying(sh(train(recipe(out) + " --set train.resume=" + nan)),
                           {"checkpoint '" + nan + "' holds NaN or Inf in '" + s.model.front().first + "'"}));
}

TEST_F(ToolErrors, DuplicateRecipeKeyNamesBothLines) {
  // Was: the second batch_size silently won.
  const std::string path = write("tool_errors_dup.yaml", "model: {name: test_mambaout, num_classes: 3}\ntrain:\n"
                                                         "  batch_size: 4\n  device: cpu\n  batch_size: 8\n");
  EXPECT_TRUE(fails_saying(sh(train(path)),
                           {path + ": duplicate key 'train.batch_size' (first at line 3, again at line 5)"}));
}

TEST_F(ToolErrors, ResumeRefusesACheckpointWithANegativeStep) {
  const std::string out = tmp("tool_errors_negative");
  fs::remove_all(out);
  mo::tools::CheckpointState s = mo::tools::load_checkpoint(checkpoint());
  s.step = -5;
  fs::create_directories(out + "/checkpoints");
  const std::string bad = out + "/checkpoints/ckpt-e0000-s00000001.mo";
  mo::tools::save_checkpoint(bad, s);
  const std::string says = "checkpoint '" + bad + "' is corrupt: field 'step' is -5";
  EXPECT_TRUE(fails_saying(sh(train(recipe(out) + " --set train.resume=" + bad)), {says}));
  EXPECT_TRUE(fails_saying(sh(train(recipe(out) + " --set train.resume=auto")),
                           {"warning: " + says, "none of the 1 checkpoints in '" + out + "/checkpoints' can be read"}));
  EXPECT_TRUE(fs::exists(bad));
  // In range for the file, but not for this run: a position past the end of the epoch.
  s = mo::tools::load_checkpoint(checkpoint());
  ASSERT_EQ(s.step_in_epoch, 1);
  mo::tools::save_checkpoint(bad, s);
  EXPECT_TRUE(fails_saying(sh(train(recipe(out) + " --set train.steps_per_epoch=1 --set train.resume=" + bad)),
                           {"checkpoint '" + bad + "': field 'step_in_epoch' is 1 but an epoch has 1 steps"}));
}

TEST_F(ToolErrors, RunRemovesTheTemporariesOfDeadWritersOnly) {
  // Was: 12 kills during checkpoint writes left 8 temporaries (503 MB) that nothing removed.
  const std::string out = tmp("tool_errors_stale"), dir = out + "/checkpoints";
  fs::remove_all(out);
  ASSERT_EQ(sh(train(recipe(out, 2))).rc, 0);
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  waitpid(gone, nullptr, 0);
  const std::string self = mo::tools::temp_file_name("x");
  const std::string host = self.substr(6, self.rfind('.') - 6), dead = std::to_string(gone);
  const std::vector<std::string> stale = {dir + "/ckpt-e0000-s00000003.mo.tmp." + host + "." + dead,
                                          dir + "/best.mo.tmp." + host + "." + dead,
                                          out + "/summary.csv.tmp." + host + "." + dead};
  const std::vector<std::string> kept = {dir + "/ckpt-e0000-s00000004.mo.tmp." + host + "." + std::to_string(getpid()),
                                         dir + "/ckpt-e0000-s00000005.mo.tmp.otherhost." + dead};
  for (const auto* v : {&stale, &kept})
    for (const auto& f : *v) write(fs::relative(f, fs::temp_directory_path()).string(), "partial");
  const Result r = sh(train(recipe(out, 3) + " --set train.resume=auto"));
  ASSERT_EQ(r.rc, 0) << r.output;
  for (const auto& f : stale) {
    EXPECT_FALSE(fs::exists(f)) << f;
    const std::string says = "removed the temporary file of an interrupted write: " + f + " (7 bytes)";
    EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
  }
  for (const auto& f : kept) EXPECT_TRUE(fs::exists(f)) << f << " (its writer is alive, or on another host)";
}

TEST_F(ToolErrors, TrainingTotalsUnreadableImagesPerEpoch) {
  // Was: after 20 warnings the loader went quiet and no total was ever printed.
  const std::string root = make_image_folder("tool_errors_bad_train", 3, 4, 2);
  spoil(root + "/train/class_0/0.jpg");  // 12 images, 3 steps of 4: drawn once every epoch
  const std::string out = tmp("tool_errors_bad_train_run");
  fs::remove_all(out);
  const Result r = sh(train(recipe(out, 6) + " --set data.root=" + root));
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("skipping " + root + "/train/class_0/0.jpg"), std::string::npos) << r.output;
  for (const std::string e : {"epoch 0: train loss ", "epoch 1: train loss "}) {
    const size_t at = r.output.find(e);
    ASSERT_NE(at, std::string::npos) << r.output;
    EXPECT_NE(r.output.substr(at, 80).find("(1 unreadable training images replaced by stand-ins)"), std::string::npos)
        << r.output;
  }
  const std::string csv = read_text(out + "/summary.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), mo::tools::kSummaryHeader);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;
  // train_bad_images 1, no evaluation, no EMA or clipping columns, then images/s.
  EXPECT_TRUE(std::regex_search(csv, std::regex("\n0,[^\n]*,1,,,,,,,[0-9.e+]+\n1,[^\n]*,1,,,,,,,[0-9.e+]+\n"))) << csv;
}

TEST_F(ToolErrors, TrainingEvaluationWithUnreadableImagesIsRefused) {
  // Was: stand-ins were counted in top-1 and in the choice of best.mo without a word (mo_validate
  // refuses the same folder).
  const std::string root = make_image_folder("tool_errors_bad_eval", 3, 4, 2);
  spoil(root + "/val/class_1/0.jpg");
  const std::string out = tmp("tool_errors_bad_eval_run");
  fs::remove_all(out);
  const Result r = sh(train(recipe(out, 3) + " --set train.eval_every=1 --set data.root=" + root));
  EXPECT_TRUE(fails_saying(r, {"skipping " + root + "/val/class_1/0.jpg",
                               "evaluation after epoch 0: '" + root + "/val' holds unreadable images",
                               "1 stand-ins were drawn", "its accuracy is not that of the folder and is not used",
                               "the epoch's training is saved in " + out + "/checkpoints/ckpt-e0001-s00000003.mo"}));
  EXPECT_FALSE(fs::exists(out + "/checkpoints/best.mo"));
  EXPECT_TRUE(fs::exists(out + "/checkpoints/ckpt-e0001-s00000003.mo"));
  EXPECT_TRUE(std::regex_search(read_text(out + "/summary.csv"), std::regex("\n0,[^,]*,,,,[^,]*,0,1,,,,,,[0-9.e+]+\n")))
      << read_text(out + "/summary.csv");
}

TEST_F(ToolErrors, NamedPipesAndHugeFilesInsteadOfRecipesOrCheckpoints) {
  // Was: mo_train waited for ever for a writer on a named pipe given as the recipe, the checkpoint to
  // resume, or sitting at train.output/config.yaml or summary.csv; a 2 MB file was parsed as a recipe.
  const std::string fifo = tmp("tool_errors_fifo.yaml");
  fs::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  EXPECT_TRUE(fails_saying(sh("timeout 120 " + train(fifo)), {"config file '" + fifo + "' is not a regular file (a named pipe"}));
  const std::string out = tmp("tool_errors_fifo_run");
  fs::remove_all(out);
  EXPECT_TRUE(fails_saying(sh("timeout 120 " + train(recipe(out) + " --set train.resume=" + fifo)),
                           {"cannot read checkpoint '" + fifo + "': a named pipe (FIFO), not a regular file"}));
  // the same pipe as the weights of every tool that reads a checkpoint, as model.init, and as a class list
  const std::string bounded = "timeout -s KILL 120 " + kBin;
  const std::string named = "'" + fifo + "': a named pipe (FIFO), not a regular file";
  EXPECT_TRUE(fails_saying(sh(bounded + "mo_validate " + fifo + " --data " + folder()), {"cannot read " + named}));
  EXPECT_TRUE(fails_saying(sh(bounded + "mo_convert " + fifo + " " + tmp("tool_errors_fifo_out.pth")),
                           {"cannot read " + named}));
  EXPECT_TRUE(fails_saying(sh(bounded + "mo_predict --weights " + fifo + " " + folder() + "/val/class_0/0.jpg"),
                           {"cannot read " + named}));
  EXPECT_TRUE(fails_saying(sh("timeout -s KILL 120 " + train(recipe(tmp("tool_errors_fifo_init")) +
                                                            " --set model.init=" + fifo)),
                           {"cannot read " + named}));
  EXPECT_TRUE(fails_saying(sh(bounded + "mo_predict --weights " + checkpoint() + " --classes " + fifo + " " + folder() +
                              "/val/class_0/0.jpg"),
                           {"cannot read class-name file " + named}));
  const std::string big = write("tool_errors_big.yaml", std::string(2 << 20, '#'));
  EXPECT_TRUE(fails_saying(sh(train(big)), {"config file '" + big + "' is 2097152 bytes: a YAML recipe is a small"}));
  // A pipe at config.yaml is replaced (written through a temporary), one at summary.csv is refused.
  fs::remove_all(out);
  fs::create_directories(out);
  ASSERT_EQ(::mkfifo((out + "/config.yaml").c_str(), 0644), 0);
  ASSERT_EQ(::mkfifo((out + "/summary.csv").c_str(), 0644), 0);
  const Result r = sh("timeout 120 " + train(recipe(out, 3)));  // timeout: a hang fails the test (exit 124)
  EXPECT_TRUE(fails_saying(r, {"'" + out + "/summary.csv' is not a regular file"}));
  EXPECT_EQ(r.output.find("saved "), std::string::npos) << "refused only after training:\n" << r.output;
  EXPECT_TRUE(fs::is_regular_file(out + "/config.yaml"));
}
