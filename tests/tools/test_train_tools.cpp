// test_train_tools.cpp: the programs, run as child processes on a tiny image folder.
//  - mo_train killed with SIGKILL mid-run, then rerun with train.resume=auto, ends with the same bits
//    as a run never killed; SIGTERM makes it save, exit 130 and resume the same way; a step that does not
//    finish within train.stop_timeout_s of SIGTERM, or a second SIGTERM, ends it with 143 all the same;
//  - a misspelt recipe key is an error naming the file, line and the nearest key; --print-config;
//  - mo_validate and mo_predict on the checkpoint it wrote; mo_validate on the same weights as a PyTorch
//    .pth (via mo_convert, which carries the architecture and settings) gives the same accuracy, a bare
//    .pth asks for --model; a 1000-class model gets the shipped ImageNet names.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <regex>
#include <thread>

#include "nn/io/checkpoint_io.h"
#include "nn/mambaout.h"
#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/engine/checkpoint.h"

using namespace mo;
using namespace mo::tools;
using namespace mo::tools::testing;

namespace {

const std::string kBin = std::string(MO_BINARY_DIR) + "/tools/";

const std::string& folder() {
  static const std::string root = make_image_folder("mo_train_tools_data", 3, 12, 4);
  return root;
}

std::string recipe(const std::string& name, const std::string& output, int64_t max_steps) {
  std::string path = (fs::temp_directory_path() / (name + ".yaml")).string();
  std::ofstream(path) << "model: {name: test_mambaout, num_classes: 3, drop_path_rate: 0.1}\n"
                      << "data: {root: " << folder() << ", img_size: 32, workers: 2}\n"
                      << "optim: {lr: 1.0e-3}\n"
                      << "sched: {epochs: 20, warmup_epochs: 1, cooldown_epochs: 1, per_step: true}\n"
                      << "train: {batch_size: 4, global_batch: 8, device: cpu, precision: fp32, eval_every: 2,\n"
                      << "        output: " << output << ", max_steps: " << max_steps << "}\n"
                      << "ckpt: {every_steps: 1, keep_last: 3}\n"
                      << "log: {progress: lines}\n";
  fs::remove_all(output);
  return path;
}

// Runs a command, returning (exit status, stdout+stderr).
std::pair<int, std::string> sh(const std::string& cmd) {
  auto r = mo::test::run_command(cmd);
  return {r.rc, r.output};
}

// Starts args[0] with the arguments that follow; its output goes to `log` (default: nowhere).
pid_t spawn(const std::vector<std::string>& args, const std::string& log = "/dev/null") {
  if (log != "/dev/null") fs::remove(log);  // no text of an earlier run for wait_for_text() to find
  pid_t pid = fork();
  if (pid == 0) {
    int null = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(null, 1);
    dup2(null, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Waits until `dir` holds a checkpoint of step >= `step` (true) or the child ended (false).
bool wait_for_checkpoint(const std::string& dir, int64_t step, pid_t pid) {
  static const std::regex re(R"(ckpt-e\d+-s(\d+)\.mo)");
  for (int i = 0; i < 60000; ++i) {
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir, ec)) {
      std::smatch m;
      std::string n = e.path().filename().string();
      if (std::regex_match(n, m, re) && std::stoll(m[1].str()) >= step) return true;
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Waits until file `log` contains `text` (true) or the child ended (false).
bool wait_for_text(const std::string& log, const std::string& text, pid_t pid) {
  for (int i = 0; i < 60000; ++i) {
    if (read_text(log).find(text) != std::string::npos) return true;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// The child's wait status once it ends, or -1 (and it is killed) if it is still running after `max_s`.
int wait_at_most(pid_t pid, double max_s) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(max_s);
  int status = 0;
  while (std::chrono::steady_clock::now() < end) {
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

void expect_same_weights(const std::string& a, const std::string& b) {
  CheckpointState x = load_checkpoint(a), y = load_checkpoint(b);
  EXPECT_EQ(x.step, y.step);
  ASSERT_EQ(x.model.size(), y.model.size());
  ASSERT_EQ(x.optimizer.size(), y.optimizer.size());
  for (size_t i = 0; i < x.model.size(); ++i)
    EXPECT_EQ(std::memcmp(x.model[i].second.raw_data(), y.model[i].second.raw_data(), x.model[i].second.nbytes()), 0)
        << x.model[i].first;
  for (size_t i = 0; i < x.optimizer.size(); ++i)
    EXPECT_EQ(std::memcmp(x.optimizer[i].second.raw_data(), y.optimizer[i].second.raw_data(),
                          x.optimizer[i].second.nbytes()),
              0)
        << x.optimizer[i].first;
}

class TrainTools : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kBin + "mo_train")) GTEST_SKIP() << "build the programs first (ninja): no " << kBin << "mo_train";
  }
};

}  // namespace

TEST_F(TrainTools, KilledRunResumesBitIdentical) {
  const int64_t N = 40;
  auto [rc, out] = sh(kBin + "mo_train " + recipe("mo_kill_a", mo::test::tmp_path("mo_kill_a"), N));
  ASSERT_EQ(rc, 0) << out;
  const std::string straight = fmt::format("{}/checkpoints/ckpt-e0010-s{:08d}.mo", mo::test::tmp_path("mo_kill_a"), N);
  ASSERT_TRUE(fs::exists(straight)) << out;

  std::string r = recipe("mo_kill_b", mo::test::tmp_path("mo_kill_b"), N);
  pid_t pid = spawn({kBin + "mo_train", r});
  ASSERT_TRUE(wait_for_checkpoint((mo::test::tmp_path("mo_kill_b") + "/checkpoints"), 3, pid)) << "mo_train ended before step 3";
  ::kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "mo_train finished before it could be killed";
  auto [rc2, out2] = sh(kBin + "mo_train " + r + " --set train.resume=auto");
  ASSERT_EQ(rc2, 0) << out2;
  EXPECT_NE(out2.find("resumed from " + mo::test::tmp_path("mo_kill_b") + "/checkpoints/ckpt-"), std::string::npos) << out2;
  expect_same_weights(straight, fmt::format("{}/checkpoints/ckpt-e0010-s{:08d}.mo", mo::test::tmp_path("mo_kill_b"), N));
}

TEST_F(TrainTools, SigtermSavesAndResumes) {
  const int64_t N = 40;
  auto [rc, out] = sh(kBin + "mo_train " + recipe("mo_term_a", mo::test::tmp_path("mo_term_a"), N) + " --set ckpt.every_steps=0");
  ASSERT_EQ(rc, 0) << out;
  std::string r = recipe("mo_term_b", mo::test::tmp_path("mo_term_b"), N);
  pid_t pid = spawn({kBin + "mo_train", r, "--set", "ckpt.every_steps=0"});
  ASSERT_TRUE(wait_for_checkpoint((mo::test::tmp_path("mo_term_b") + "/checkpoints"), 4, pid));  // the end of epoch 0
  ::kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  auto [rc2, out2] = sh(kBin + "mo_train " + r + " --set ckpt.every_steps=0 --set train.resume=auto");
  ASSERT_EQ(rc2, 0) << out2;
  expect_same_weights(fmt::format("{}/checkpoints/ckpt-e0010-s{:08d}.mo", mo::test::tmp_path("mo_term_a"), N),
                      fmt::format("{}/checkpoints/ckpt-e0010-s{:08d}.mo", mo::test::tmp_path("mo_term_b"), N));
}

// A run whose every step takes long (1024 px on the CPU: seconds here, far above the timeouts below),
// signalled as its first step starts; its output goes to `log`.
pid_t start_slow_run(const std::string& name, const std::string& timeout, const std::string& log) {
  const std::string out = mo::test::tmp_path(name);
  pid_t pid = spawn({kBin + "mo_train", recipe(name, out, 40), "--set", "data.img_size=1024", "--set",
                     "train.stop_timeout_s=" + timeout}, log);
  EXPECT_TRUE(wait_for_text(log, "steps/epoch", pid)) << read_text(log);  // fit() has begun: handlers are in place
  return pid;
}

// No checkpoint, and no temporary of one, in the run's folder.
void expect_nothing_saved(const std::string& name) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(mo::test::tmp_path(name) + "/checkpoints", ec))
    ADD_FAILURE() << "left behind: " << e.path();
}

TEST_F(TrainTools, SigtermEndsAStepThatDoesNotFinish) {
  // Was: SIGTERM only set a flag checked between steps; a step (or a read) that never finished kept the
  // program running for ever. Now the watchdog ends it after train.stop_timeout_s with 128 + SIGTERM.
  const std::string log = mo::test::tmp_path("mo_stuck.log");
  pid_t pid = start_slow_run("mo_stuck", "0.01", log);
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(pid, SIGTERM);
  const int status = wait_at_most(pid, 60);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_NE(status, -1) << "mo_train still ran 60 s after SIGTERM:\n" << read_text(log);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status << ":\n" << read_text(log);
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM) << read_text(log);
  EXPECT_LT(took, 30.0);
  EXPECT_NE(read_text(log).find("the run did not stop within 0.01 s of SIGTERM (config key 'train.stop_timeout_s')"),
            std::string::npos) << read_text(log);
  expect_nothing_saved("mo_stuck");
}

TEST_F(TrainTools, SecondSigtermExitsAtOnce) {
  const std::string log = mo::test::tmp_path("mo_twice.log");
  pid_t pid = start_slow_run("mo_twice", "3600", log);
  ::kill(pid, SIGTERM);
  ASSERT_TRUE(wait_for_text(log, "a second signal exits at once", pid)) << read_text(log);
  ::kill(pid, SIGTERM);
  const int status = wait_at_most(pid, 60);
  ASSERT_NE(status, -1) << "mo_train still ran 60 s after a second SIGTERM:\n" << read_text(log);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM) << read_text(log);
  EXPECT_NE(read_text(log).find("SIGTERM again: exiting now without saving"), std::string::npos) << read_text(log);
  expect_nothing_saved("mo_twice");
}

TEST_F(TrainTools, SigtermDuringEvaluationSavesTheEpoch) {
  // The stop request is polled between evaluation batches too: the epoch's checkpoint is written
  // (without a metric, and not as best.mo) instead of waiting for, or being cut off in, a long evaluation.
  const std::string root = make_image_folder("mo_term_eval_data", 3, 4, 8);  // 24 validation images
  const std::string out = mo::test::tmp_path("mo_term_eval"), log = mo::test::tmp_path("mo_term_eval.log");
  pid_t pid = spawn({kBin + "mo_train", recipe("mo_term_eval", out, 40), "--set", "data.root=" + root, "--set",
                     "data.img_size=512", "--set", "train.steps_per_epoch=1", "--set", "train.eval_every=1", "--set",
                     "train.eval_batch_size=1", "--set", "ckpt.every_steps=0"},
                    log);
  ASSERT_TRUE(wait_for_text(log, "step 1/1", pid)) << read_text(log);  // the epoch's step is done: evaluation next
  ::kill(pid, SIGTERM);
  const int status = wait_at_most(pid, 120);
  ASSERT_NE(status, -1) << read_text(log);
  ASSERT_TRUE(WIFEXITED(status)) << read_text(log);
  EXPECT_EQ(WEXITSTATUS(status), 130) << read_text(log);
  EXPECT_NE(read_text(log).find("(evaluation interrupted by the stop request: not counted)"), std::string::npos)
      << read_text(log);
  const std::string ckpt = out + "/checkpoints/ckpt-e0001-s00000001.mo";
  ASSERT_TRUE(fs::exists(ckpt)) << read_text(log);
  EXPECT_FALSE(read_checkpoint_header(ckpt).metric.has_value());
  EXPECT_FALSE(fs::exists(out + "/checkpoints/best.mo"));
}

TEST_F(TrainTools, RecipeErrorsAndPrintConfig) {
  std::string bad = (fs::temp_directory_path() / "mo_bad_recipe.yaml").string();
  std::ofstream(bad) << "model:\n  name: mambaout_femto\ntrain:\n  batch_size: 64\n  globel_batch: 512\n";
  auto [rc, out] = sh(kBin + "mo_train " + bad);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find(bad + ":5: unknown key 'train.globel_batch'; did you mean 'train.global_batch'?"),
            std::string::npos)
      << out;
  auto [rc2, out2] = sh(kBin + "mo_train " + std::string(MO_SOURCE_DIR) + "/recipes/tiny.yaml --set optim.lr=0.001 "
                        "--print-config");
  EXPECT_EQ(rc2, 0) << out2;
  EXPECT_NE(out2.find("optim:\n  name: adamw\n  lr: 0.001\n"), std::string::npos) << out2;
  EXPECT_NE(out2.find("  drop_path_rate: 0.2\n"), std::string::npos) << out2;
  auto [rc3, out3] = sh(kBin + "mo_train " + std::string(MO_SOURCE_DIR) + "/recipes/tiny.yaml --set train.seeed=1");
  EXPECT_EQ(rc3, 1);
  EXPECT_NE(out3.find("did you mean 'train.seed'"), std::string::npos) << out3;
}

TEST_F(TrainTools, ValidateAndPredictOurCheckpoint) {
  auto [rc, out] = sh(kBin + "mo_train " + recipe("mo_vp", mo::test::tmp_path("mo_vp"), 8));
  ASSERT_EQ(rc, 0) << out;
  const std::string ckpt = (mo::test::tmp_path("mo_vp") + "/checkpoints/ckpt-e0002-s00000008.mo");
  auto [rc2, out2] = sh(kBin + "mo_validate " + ckpt + " --data " + folder() + " --workers 1");
  ASSERT_EQ(rc2, 0) << out2;
  EXPECT_NE(out2.find("test_mambaout (3 classes)"), std::string::npos) << out2;
  EXPECT_TRUE(std::regex_search(out2, std::regex(R"(top-1 \d+\.\d+%  top-5 100\.000%  loss \d\.\d+  \(12 images)")))
      << out2;
  // The stored evaluation of epoch 1 saw the same images with the same weights.
  CheckpointState s = read_checkpoint_header(ckpt);
  ASSERT_TRUE(s.metric.has_value());
  EXPECT_NE(out2.find(fmt::format("top-1 {:.3f}%", *s.metric)), std::string::npos) << out2;

  const std::string img = folder() + "/val/class_1/0.jpg";
  auto [rc3, out3] = sh(kBin + "mo_predict -w " + ckpt + " " + img + " --topk 2");
  ASSERT_EQ(rc3, 0) << out3;
  EXPECT_TRUE(std::regex_search(out3, std::regex(img + R"(\n +\d+\.\d\d%  class_\d \(\d\)\n +\d+\.\d\d%  class_\d)")))
      << out3;
  auto [rc4, out4] = sh(kBin + "mo_predict -w " + ckpt + " /nonexistent.jpg");
  EXPECT_EQ(rc4, 1);
  EXPECT_NE(out4.find("cannot read '/nonexistent.jpg'"), std::string::npos) << out4;
}

TEST_F(TrainTools, ValidatePyTorchWeightsAndImageNetNames) {
  // Our checkpoint -> a PyTorch .pth (official names) -> mo_validate gives the same accuracy.
  auto [rc, out] = sh(kBin + "mo_train " + recipe("mo_pth", mo::test::tmp_path("mo_pth"), 4));
  ASSERT_EQ(rc, 0) << out;
  const std::string ckpt = (mo::test::tmp_path("mo_pth") + "/checkpoints/ckpt-e0001-s00000004.mo");
  auto [rc1, out1] = sh(kBin + "mo_convert " + ckpt + " " + mo::test::tmp_path("mo_pth") + "/w.pth");
  ASSERT_EQ(rc1, 0) << out1;
  auto [rc2, out2] = sh(kBin + "mo_validate " + ckpt + " --data " + folder() + " --workers 1");
  auto [rc3, out3] = sh(kBin + "mo_validate " + mo::test::tmp_path("mo_pth") + "/w.pth --model test_mambaout --img-size 32 --data " + folder() +
                        " --workers 1");
  ASSERT_EQ(rc2, 0) << out2;
  ASSERT_EQ(rc3, 0) << out3;
  std::smatch a, b;
  const std::regex top(R"(top-1 (\S+)%  top-5 (\S+)%)");
  ASSERT_TRUE(std::regex_search(out2, a, top)) << out2;
  ASSERT_TRUE(std::regex_search(out3, b, top)) << out3;
  EXPECT_EQ(a.str(), b.str());
  // The .pth mo_convert wrote says which model it holds and its settings; a bare one does not.
  auto [rc4, out4] = sh(kBin + "mo_validate " + mo::test::tmp_path("mo_pth") + "/w.pth --data " + folder() +
                        " --workers 1");
  ASSERT_EQ(rc4, 0) << out4;
  EXPECT_NE(out4.find("32 px (file metadata)"), std::string::npos) << out4;
  ASSERT_TRUE(std::regex_search(out4, b, top)) << out4;
  EXPECT_EQ(a.str(), b.str());
  {
    nn::MambaOutConfig bare_cfg = nn::mambaout_config("test_mambaout");
    bare_cfg.num_classes = 3;
    nn::io::save_model(nn::MambaOut(bare_cfg, 1), mo::test::tmp_path("mo_pth") + "/bare.pth");
  }
  auto [rc6, out6] = sh(kBin + "mo_validate " + mo::test::tmp_path("mo_pth") + "/bare.pth --data " + folder());
  EXPECT_EQ(rc6, 1);
  EXPECT_NE(out6.find("name it with --model"), std::string::npos) << out6;

  // A 1000-class model gets the ImageNet names shipped next to the programs.
  nn::MambaOutConfig mc = nn::mambaout_config("test_mambaout");
  nn::MambaOut model(mc, 7);
  CheckpointState s;
  s.model_name = "test_mambaout";
  s.model = model.named_parameters();
  save_checkpoint((mo::test::tmp_path("mo_pth") + "/imagenet.mo"), s);
  auto [rc5, out5] = sh(kBin + "mo_predict -w " + mo::test::tmp_path("mo_pth") + "/imagenet.mo --img-size 32 " + folder() +
                        "/val/class_0/1.jpg");
  ASSERT_EQ(rc5, 0) << out5;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out5, m, std::regex(R"(\n +\d+\.\d\d%  (.+) \((\d+)\)\n)"))) << out5;
  std::ifstream names(std::string(MO_SOURCE_DIR) + "/tools/common/imagenet_classes.txt");
  std::string line;
  for (int i = 0; i <= std::stoi(m[2].str()); ++i) std::getline(names, line);
  EXPECT_EQ(m[1].str(), line) << out5;
  EXPECT_EQ(std::count(out5.begin(), out5.end(), '%'), 5) << out5;  // top-5 by default
  // The same 1000-output model on the 3-class folder: its class i is output i (was: the loss refused
  // logits [B, 1000] against targets [B, 3] with a message about shapes).
  auto [rc7, out7] = sh(kBin + "mo_validate " + mo::test::tmp_path("mo_pth") + "/imagenet.mo --img-size 32 --data " +
                        folder() + " --workers 1");
  ASSERT_EQ(rc7, 0) << out7;
  EXPECT_TRUE(std::regex_search(out7, top)) << out7;
}
