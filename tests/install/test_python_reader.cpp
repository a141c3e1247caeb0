// test_python_reader.cpp: python/mo_checkpoint.py against what the C++ tools write. mo_train writes a
// .mo (with optimizer state, a model EMA, RNG and sampler state, an evaluation), mo_convert exports its
// weights and its EMA to .pth files; tests/install/check_mo_checkpoint.py (Debian's python3 with torch) reads both and compares,
// and judges a corpus of damaged files, which the C++ reader must judge the same way.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "nn/io/json_lite.h"
#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/engine/checkpoint.h"

namespace fs = std::filesystem;
namespace nn = mo::nn;
using mo::test::run_command;
using mo::test::tmp_path;

namespace {

const std::string kBin = std::string(MO_BINARY_DIR) + "/tools/";

// The C++ reader's view of the checkpoint's metadata, as check_mo_checkpoint.py names it.
std::string metadata_json(const mo::tools::CheckpointState& s) {
  std::vector<std::string> rng, classes, opt;
  for (auto& r : s.rng)
    rng.push_back(fmt::format("{{\"name\": {}, \"seed\": {}, \"stream\": {}, \"counter\": {}}}", nn::io::json_quote(r.name),
                              r.seed, r.stream, r.counter));
  for (auto& c : s.class_names) classes.push_back(nn::io::json_quote(c));
  for (auto& [n, t] : s.optimizer) opt.push_back(nn::io::json_quote(n));
  return fmt::format(
      "{{\"model_name\": {}, \"epoch\": {}, \"step\": {}, \"step_in_epoch\": {}, \"optimizer_step\": {}, "
      "\"best_metric\": {:.17g}, \"best_epoch\": {}, \"metric\": {}, \"config_yaml\": {}, \"class_names\": [{}], "
      "\"rng\": [{}], \"sampler\": {{\"epoch\": {}, \"batches_done\": {}, \"seed\": {}, \"world_size\": {}}}, "
      "\"epoch_loss_sum\": {:.17g}, \"epoch_loss_count\": {}, \"epoch_grad_norm_sum\": {:.17g}, "
      "\"epoch_grad_norm_count\": {}, \"optimizer\": [{}]}}\n",
      nn::io::json_quote(s.model_name), s.epoch, s.step, s.step_in_epoch, s.optimizer_step, s.best_metric, s.best_epoch,
      s.metric ? fmt::format("{:.17g}", *s.metric) : "null", nn::io::json_quote(s.config_yaml), fmt::join(classes, ", "),
      fmt::join(rng, ", "), s.sampler_epoch, s.sampler_batches_done, s.sampler_seed, s.world_size, s.epoch_loss_sum,
      s.epoch_loss_count, s.epoch_grad_norm_sum, s.epoch_grad_norm_count, fmt::join(opt, ", "));
}

}  // namespace

TEST(PythonReader, ReadsWhatTheToolsWriteAndRejectsDamagedFiles) {
  if (!mo::test::python_has_torch()) GTEST_SKIP() << MO_PYTHON << " has no torch (Debian: python3-torch)";
  ASSERT_TRUE(fs::exists(kBin + "mo_train")) << "build the programs first: no " << kBin << "mo_train";
  const std::string data = mo::tools::testing::make_image_folder("mo_pyreader_data", 3, 6, 2);
  const std::string out = tmp_path("mo_pyreader_run"), recipe = tmp_path("mo_pyreader.yaml");
  std::ofstream(recipe) << "model: {name: test_mambaout, num_classes: 3}\nmodel_ema: true\nmodel_ema_decay: 0.5\n"
                        << "optim: {clip_grad: 1.0}\n"
                        << "data: {root: " << data << ", img_size: 32, workers: 1}\n"
                        << "sched: {epochs: 2, warmup_epochs: 1, per_step: true}\n"
                        << "train: {batch_size: 4, global_batch: 8, device: cpu, precision: fp32, eval_every: 1,\n"
                        << "        output: " << out << ", max_steps: 3}\n"
                        << "log: {progress: lines}\n";
  auto r = run_command(kBin + "mo_train " + recipe);
  ASSERT_EQ(r.rc, 0) << r.output;
  mo::tools::CheckpointManager runs(out + "/checkpoints", 10, true);
  ASSERT_FALSE(runs.list().empty()) << r.output;
  const std::string ckpt = runs.list().back(), pth = tmp_path("mo_pyreader.pth");
  auto c = run_command(kBin + "mo_convert " + ckpt + " " + pth);
  ASSERT_EQ(c.rc, 0) << c.output;
  const std::string ema_pth = tmp_path("mo_pyreader_ema.pth");
  auto c2 = run_command(kBin + "mo_convert " + ckpt + " " + ema_pth + " --entry state_dict_ema");
  ASSERT_EQ(c2.rc, 0) << c2.output;

  const mo::tools::CheckpointState s = mo::tools::load_checkpoint(ckpt);
  ASSERT_FALSE(s.optimizer.empty());
  ASSERT_FALSE(s.rng.empty());
  ASSERT_FALSE(s.ema.empty());
  const std::string expected = tmp_path("mo_pyreader.json"), opt_dir = tmp_path("mo_pyreader_opt"),
                    scratch = tmp_path("mo_pyreader_scratch");
  std::ofstream(expected) << metadata_json(s);
  fs::create_directories(opt_dir);
  fs::create_directories(scratch);
  for (size_t i = 0; i < s.optimizer.size(); ++i)
    mo::test::save_npy(opt_dir + "/" + std::to_string(i) + ".npy", s.optimizer[i].second);
  const int rc = mo::test::run_python(std::string(MO_SOURCE_DIR) + "/tests/install/check_mo_checkpoint.py",
                                      std::string(MO_SOURCE_DIR) + "/python " + ckpt + " " + pth + " " + ema_pth +
                                          " " + expected +
                                          " " + opt_dir + " " + scratch);
  ASSERT_EQ(rc, 0) << "check_mo_checkpoint.py failed (its output is above)";

  // The C++ reader reaches the same verdict on every file of the corpus.
  std::ifstream verdicts(scratch + "/verdicts.txt");
  int judged = 0;
  for (std::string name, verdict; verdicts >> name >> verdict; ++judged) {
    const std::string path = scratch + "/corpus/" + name;
    const std::string err = mo::test::error_of([&] { mo::tools::load_checkpoint(path); });
    EXPECT_EQ(verdict == "ok", err.empty()) << name << ": Python says " << verdict << ", C++ says '" << err << "'";
  }
  EXPECT_GT(judged, 300);
}
