// test_train_checkpoint.cpp: checkpoint files round-trip bit-exactly; truncated or corrupt files are
// refused naming the file; the manager keeps the last K plus the best and falls back to the previous
// checkpoint when the newest is damaged; CRC32C matches its published check values; counters out of
// range are refused naming the field; temporaries of dead writers are removed, others kept.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "tests/test_util.h"
#include "tools/engine/checkpoint.h"
#include "tools/engine/checkpoint.pb.h"
#include "tools/engine/crc32c.h"

using namespace mo;
using mo::test::error_of;
using namespace mo::tools;
namespace fs = std::filesystem;

namespace {
std::string fresh_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}
CheckpointState sample_state(int64_t step) {
  CheckpointState s;
  s.config_yaml = "optim:\n  lr: 0.004\n";
  s.model_name = "mambaout_femto";
  s.epoch = step / 10;
  s.step = step;
  s.step_in_epoch = step % 10;
  std::vector<float> w(300);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i) + static_cast<float>(step);
  s.model.emplace_back("stages.0.0.fc1.weight", Tensor::from_vector(w, {10, 30}));
  s.model.emplace_back("norm.bias", Tensor::from_vector(std::vector<float>{1.5f, -2.f}, {2}));
  s.optimizer.emplace_back("stages.0.0.fc1.weight.exp_avg", Tensor::from_vector(w, {300}));
  s.optimizer.emplace_back("ids", Tensor::from_vector(std::vector<int64_t>{1, 2, 3}, {3}));
  s.optimizer_step = step;
  s.rng.push_back({"drop_path", 42, 7, 1234});
  s.sampler_epoch = s.epoch;
  s.sampler_batches_done = 4 * s.step_in_epoch;
  s.sampler_seed = 42;
  return s;
}
}  // namespace

TEST(TrainCheckpoint, Crc32cCheckValues) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);  // RFC 3720 B.4
  std::string ones(32, '\xff');
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  // Incremental == one shot.
  std::string s = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(crc32c(s.data() + 10, s.size() - 10, crc32c(s.data(), 10)), crc32c(s.data(), s.size()));
}

TEST(TrainCheckpoint, RoundTripIsExact) {
  std::string dir = fresh_dir("mo_ckpt_rt");
  CheckpointState s = sample_state(25);
  s.metric = 71.25;
  s.best_metric = 71.25;
  s.best_epoch = 2;
  save_checkpoint(dir + "/a.mo", s);
  EXPECT_TRUE(is_mo_checkpoint(dir + "/a.mo"));
  EXPECT_FALSE(fs::exists(dir + "/a.mo.tmp"));
  CheckpointState r = load_checkpoint(dir + "/a.mo");
  EXPECT_EQ(r.config_yaml, s.config_yaml);
  EXPECT_EQ(r.model_name, "mambaout_femto");
  EXPECT_EQ(r.epoch, 2);
  EXPECT_EQ(r.step, 25);
  EXPECT_EQ(r.step_in_epoch, 5);
  EXPECT_EQ(r.optimizer_step, 25);
  ASSERT_EQ(r.model.size(), 2u);
  EXPECT_EQ(r.model[0].first, "stages.0.0.fc1.weight");
  EXPECT_EQ(r.model[0].second.shape(), (Shape{10, 30}));
  EXPECT_EQ(r.model[0].second.to_vector<float>(), s.model[0].second.to_vector<float>());
  EXPECT_EQ(r.optimizer[1].second.dtype(), DType::i64);
  EXPECT_EQ(r.optimizer[1].second.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 3}));
  ASSERT_EQ(r.rng.size(), 1u);
  EXPECT_EQ(r.rng[0].counter, 1234u);
  EXPECT_EQ(r.sampler_batches_done, 20);
  ASSERT_TRUE(r.metric.has_value());
  EXPECT_EQ(*r.metric, 71.25);
  EXPECT_EQ(r.best_epoch, 2);
  EXPECT_TRUE(r.ema.empty());
  // The model EMA and the epoch's running sums travel too; weights-only reading can skip the EMA.
  s.ema.emplace_back("norm.bias", Tensor::from_vector(std::vector<float>{0.25f, -1.f}, {2}));
  s.epoch_loss_sum = 12.125;
  s.epoch_loss_count = 9;
  s.epoch_grad_norm_sum = 3.5;
  s.epoch_grad_norm_count = 4;
  save_checkpoint(dir + "/b.mo", s);
  r = load_checkpoint(dir + "/b.mo");
  ASSERT_EQ(r.ema.size(), 1u);
  EXPECT_EQ(r.ema[0].second.to_vector<float>(), (std::vector<float>{0.25f, -1.f}));
  EXPECT_EQ(checkpoint_entry(r, "state_dict_ema", "b.mo")[0].first, "norm.bias");
  EXPECT_EQ(checkpoint_entry(r, "", "b.mo").size(), 2u);
  EXPECT_EQ(r.epoch_loss_sum, 12.125);
  EXPECT_EQ(r.epoch_loss_count, 9);
  EXPECT_EQ(r.epoch_grad_norm_sum, 3.5);
  EXPECT_EQ(r.epoch_grad_norm_count, 4);
  EXPECT_TRUE(load_checkpoint(dir + "/b.mo", false, false).ema.empty());
  EXPECT_NE(error_of([&] { checkpoint_entry(load_checkpoint(dir + "/a.mo"), "state_dict_ema", "a.mo"); })
                .find("a.mo: no entry 'state_dict_ema' (the run trained without model_ema)"),
            std::string::npos);
}

TEST(TrainCheckpoint, TruncatedAndCorruptFilesAreRefusedNamingTheFile) {
  std::string dir = fresh_dir("mo_ckpt_bad");
  std::string p = dir + "/a.mo";
  save_checkpoint(p, sample_state(3));
  auto size = fs::file_size(p);
  // Truncated by one byte.
  fs::copy_file(p, dir + "/t.mo");
  fs::resize_file(dir + "/t.mo", size - 1);
  std::string msg = error_of([&] { load_checkpoint(dir + "/t.mo"); });
  EXPECT_NE(msg.find(dir + "/t.mo"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  // Truncated inside the manifest.
  fs::copy_file(p, dir + "/h.mo");
  fs::resize_file(dir + "/h.mo", 20);
  msg = error_of([&] { load_checkpoint(dir + "/h.mo"); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  // One flipped byte in the last payload.
  fs::copy_file(p, dir + "/c.mo");
  {
    std::fstream f(dir + "/c.mo", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size - 3));
    f.put('\x7f');
  }
  msg = error_of([&] { load_checkpoint(dir + "/c.mo"); });
  EXPECT_NE(msg.find(dir + "/c.mo"), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum mismatch in 'ids'"), std::string::npos) << msg;
  // Not a checkpoint at all.
  std::ofstream(dir + "/n.mo") << "hello world, not a checkpoint";
  msg = error_of([&] { load_checkpoint(dir + "/n.mo"); });
  EXPECT_NE(msg.find("is not a mo checkpoint"), std::string::npos) << msg;
  msg = error_of([&] { load_checkpoint(dir + "/missing.mo"); });
  EXPECT_NE(msg.find("cannot open checkpoint"), std::string::npos) << msg;
}

TEST(TrainCheckpoint, CountersOutOfRangeAreRefusedNamingTheField) {
  // Was: a negative step was accepted and the run "resumed" at step -5.
  std::string dir = fresh_dir("mo_ckpt_counters");
  const std::vector<std::pair<std::function<void(CheckpointState&)>, std::string>> cases = {
      {[](CheckpointState& s) { s.step = -5; }, "field 'step' is -5 (must be from 0 to 2^40)"},
      {[](CheckpointState& s) { s.epoch = -1; }, "field 'epoch' is -1"},
      {[](CheckpointState& s) { s.step_in_epoch = -2; }, "field 'step_in_epoch' is -2"},
      {[](CheckpointState& s) { s.optimizer_step = -1; }, "field 'optimizer_step' is -1"},
      {[](CheckpointState& s) { s.step = int64_t(1) << 62; }, "field 'step' is 4611686018427387904"},
      {[](CheckpointState& s) { s.sampler_epoch = -3; }, "field 'sampler.epoch' is -3"},
      {[](CheckpointState& s) { s.sampler_batches_done = -4; }, "field 'sampler.batches_done' is -4"},
      {[](CheckpointState& s) { s.world_size = 0; }, "field 'sampler.world_size' is 0 (must be from 1"},
      {[](CheckpointState& s) { s.best_epoch = -7; }, "field 'best_epoch' is -7"},
      {[](CheckpointState& s) { s.step_in_epoch = 40; },
       "fields 'epoch' (3) and 'step_in_epoch' (40) cannot exceed 'step' (33)"},
      {[](CheckpointState& s) { s.metric = std::nan(""); }, "field 'metric' is nan"},
      {[](CheckpointState& s) { s.best_metric = 250; }, "field 'best_metric' is 250"},
      {[](CheckpointState& s) { s.epoch_loss_count = -3; }, "field 'epoch_loss_count' is -3"},
      {[](CheckpointState& s) { s.epoch_grad_norm_count = -1; }, "field 'epoch_grad_norm_count' is -1"},
      {[](CheckpointState& s) { s.epoch_loss_sum = std::nan(""); }, "fields 'epoch_loss_sum' (nan)"},
      {[](CheckpointState& s) { s.epoch_grad_norm_sum = -2; }, "fields 'epoch_loss_sum' (0) and 'epoch_grad_norm_sum' (-2) must be finite"},
  };
  for (const auto& [change, says] : cases) {
    CheckpointState s = sample_state(33);
    change(s);
    const std::string p = dir + "/x.mo";
    save_checkpoint(p, s);
    const std::vector<std::function<void()>> loads = {[&] { load_checkpoint(p); }, [&] { read_checkpoint_header(p); }};
    for (const auto& load : loads) {
      std::string msg = error_of(load);
      EXPECT_NE(msg.find("checkpoint '" + p + "' is corrupt: " + says), std::string::npos) << msg;
    }
  }
  EXPECT_EQ(error_of([&] { save_checkpoint(dir + "/ok.mo", sample_state(33)); load_checkpoint(dir + "/ok.mo"); }), "");
  CheckpointState twice = sample_state(33);
  twice.model.push_back(twice.model.front());  // the same name again: which one would count?
  save_checkpoint(dir + "/twice.mo", twice);
  const std::string msg = error_of([&] { load_checkpoint(dir + "/twice.mo"); });
  EXPECT_NE(msg.find("is corrupt: tensor 'stages.0.0.fc1.weight' appears twice"), std::string::npos) << msg;
}

TEST(TrainCheckpoint, TensorShapesThatOverflowAreRefused) {
  // A manifest with a valid checksum whose shape product wraps past 2^64 (or lies about its bytes).
  std::string dir = fresh_dir("mo_ckpt_shapes");
  const std::vector<std::pair<std::vector<int64_t>, uint64_t>> cases = {
      {{int64_t(1) << 32, int64_t(1) << 32, 4}, 0},  // 2^66 x 4 bytes wraps to 0
      {{int64_t(1) << 62, 4}, 0},                   // x 4 bytes wraps to 0
      {{-1, -4}, 16},                               // negative dimensions
      {{4}, 32},                                    // 16 bytes, 32 claimed
      {{8}, 32},                                    // 32 bytes, beyond the 16-byte payload
  };
  for (const auto& [shape, nbytes] : cases) {
    ckpt::Manifest m;
    m.set_format_version(1);
    m.set_model_name("mambaout_femto");
    ckpt::TensorEntry* e = m.add_model();
    e->set_name("w");
    e->set_dtype("float32");
    for (int64_t d : shape) e->add_shape(d);
    e->set_nbytes(nbytes);
    m.set_payload_bytes(16);
    m.mutable_sampler()->set_world_size(1);
    const std::string text = m.SerializeAsString();
    const uint64_t size = text.size();
    const uint32_t crc = crc32c(text.data(), text.size());
    const std::string p = dir + "/s.mo";
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write("MOCKPT01", 8).write(reinterpret_cast<const char*>(&size), 8).write(text.data(), text.size());
    f.write(reinterpret_cast<const char*>(&crc), 4).write(std::string(16, '\0').data(), 16);
    f.close();
    std::string msg = error_of([&] { load_checkpoint(p); });
    EXPECT_NE(msg.find("checkpoint '" + p + "' is corrupt: tensor 'w' float32"), std::string::npos) << msg;
    EXPECT_NE(msg.find("of a 16-byte payload"), std::string::npos) << msg;
  }
}

TEST(TrainCheckpoint, StaleTemporariesAreRemovedOthersKept) {
  std::string dir = fresh_dir("mo_ckpt_stale");
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  waitpid(gone, nullptr, 0);  // a pid whose process has ended
  const std::string self = temp_file_name("x");  // x.tmp.<host>.<pid>
  const std::string host = self.substr(6, self.rfind('.') - 6);
  const std::string dead = std::to_string(gone), live = std::to_string(getpid());
  const std::vector<std::string> stale = {"ckpt-e0001-s00000009.mo.tmp." + host + "." + dead,
                                          "best.mo.tmp." + host + "." + dead, "summary.csv.tmp." + host + "." + dead,
                                          "ckpt-e0001-s00000008.mo.tmp." + dead, "best.mo.tmp"};
  const std::vector<std::string> kept = {"ckpt-e0001-s00000007.mo.tmp." + host + "." + live,   // alive
                                         "ckpt-e0001-s00000006.mo.tmp.elsewhere." + dead,      // another host
                                         "notes.txt.tmp." + host + "." + dead, "ckpt-e0001-s00000005.mo"};
  for (const auto& n : stale) std::ofstream(dir + "/" + n) << "partial";
  for (const auto& n : kept) std::ofstream(dir + "/" + n) << "partial";
  std::vector<std::string> removed = remove_stale_temp_files(dir);
  std::sort(removed.begin(), removed.end());
  std::vector<std::string> want;
  for (const auto& n : stale) want.push_back(dir + "/" + n + " (7 bytes)");
  std::sort(want.begin(), want.end());
  EXPECT_EQ(removed, want);
  for (const auto& n : stale) EXPECT_FALSE(fs::exists(dir + "/" + n)) << n;
  // last.mo's temporary is a link, dangling once its checkpoint was pruned: removed too.
  const std::string link = dir + "/last.mo.tmp." + host + "." + dead;
  fs::create_symlink("ckpt-e0009-s00000099.mo", link);
  EXPECT_EQ(remove_stale_temp_files(dir), std::vector<std::string>{link + " (0 bytes)"});
  EXPECT_FALSE(fs::is_symlink(link));
  for (const auto& n : kept) EXPECT_TRUE(fs::exists(dir + "/" + n)) << n;
  // What this process writes carries its host and pid.
  EXPECT_EQ(self, "x.tmp." + host + "." + live);
  EXPECT_TRUE(remove_stale_temp_files(dir + "/missing").empty());
}

TEST(TrainCheckpoint, ManagerKeepsLastKAndBest) {
  std::string dir = fresh_dir("mo_ckpt_mgr");
  CheckpointManager m(dir, 3, true);
  for (int64_t step = 10; step <= 60; step += 10) {
    CheckpointState s = sample_state(step);
    s.metric = step == 20 ? 90.0 : 50.0;
    m.save(s, step <= 20);  // best at step 20
  }
  std::vector<std::string> all = m.list();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_NE(all[0].find("s00000040"), std::string::npos);
  EXPECT_NE(all[2].find("s00000060"), std::string::npos);
  CheckpointState best = load_checkpoint(m.best_path());
  EXPECT_EQ(best.step, 20);
  EXPECT_EQ(*best.metric, 90.0);
  // last.mo: a relative link to the newest, replaced at every save.
  EXPECT_EQ(fs::read_symlink(m.last_path()).string(), fs::path(all[2]).filename().string());
  EXPECT_EQ(load_checkpoint(m.last_path()).step, 60);
}

TEST(TrainCheckpoint, ResumeFallsBackToThePreviousCheckpoint) {
  std::string dir = fresh_dir("mo_ckpt_fb");
  CheckpointManager m(dir, 5, false);
  m.save(sample_state(10), false);
  std::string newest = m.save(sample_state(20), false);
  fs::resize_file(newest, fs::file_size(newest) / 2);  // a crash mid-copy, say
  std::vector<std::string> warnings;
  std::string used;
  auto s = m.load_latest(warnings, &used);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->step, 10);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find(newest), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("truncated"), std::string::npos) << warnings[0];
  // With every file damaged there is nothing to resume from.
  fs::resize_file(used, 10);
  warnings.clear();
  EXPECT_FALSE(m.load_latest(warnings).has_value());
  EXPECT_EQ(warnings.size(), 2u);
}
