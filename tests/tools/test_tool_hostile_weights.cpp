// test_tool_hostile_weights.cpp: crafted weight files given to the programs (mo_convert --info and
// conversion, mo_validate, mo_predict, mo_train's model.init), run as child processes. A size that
// wraps past 2^64 in a .pth view, an absurd safetensors shape, a .mo manifest whose shapes, extents
// or manifest size do not fit the file: each ends with exit 1 and a message naming the file and the
// tensor key (never a signal, a huge allocation or a file written). Weights holding NaN/Inf load with
// one warning per tensor, by name and count, in each of those programs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "nn/io/checkpoint_io.h"
#include "tests/nn/io/crafted_files.h"
#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/engine/checkpoint.pb.h"
#include "tools/engine/crc32c.h"
#include "tools/engine/weights.h"

namespace fs = std::filesystem;
using mo::test::tmp_path;
using mo::tools::testing::make_image_folder;

namespace {

const std::string kBin = std::string(MO_BINARY_DIR) + "/tools/";
using Result = mo::test::RunResult;
const auto sh = mo::test::run_command;

::testing::AssertionResult fails_saying(const Result& r, const std::vector<std::string>& says) {
  if (r.rc != 1) return ::testing::AssertionFailure() << "exit " << r.rc << ", output:\n" << r.output;
  for (const auto& s : says)
    if (r.output.find(s) == std::string::npos)
      return ::testing::AssertionFailure() << "the output does not say \"" << s << "\":\n" << r.output;
  return ::testing::AssertionSuccess();
}

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void spit(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

const std::string& folder() {
  static const std::string root = make_image_folder("hostile_weights_data", 3, 4, 2);
  return root;
}

// A trained test_mambaout checkpoint (3 classes), made once per test process.
const std::string& checkpoint() {
  static const std::string path = [] {
    const std::string out = tmp_path("hostile_weights_run");
    const std::string recipe = tmp_path("hostile_weights.yaml");
    std::ofstream(recipe) << "model: {name: test_mambaout, num_classes: 3}\n"
                             "data: {root: " + folder() + ", img_size: 32, workers: 1, crop_pct: 1.0}\n"
                             "sched: {epochs: 1, warmup_epochs: 0, cooldown_epochs: 0}\n"
                             "train: {batch_size: 4, global_batch: 4, device: cpu, precision: fp32, eval_every: 0,\n"
                             "        output: " + out + ", max_steps: 1}\n"
                             "ckpt: {every_steps: 1, keep_last: 1}\n"
                             "log: {progress: lines, tensorboard: false}\n";
    Result r = sh(kBin + "mo_train " + recipe);
    EXPECT_EQ(r.rc, 0) << r.output;
    return out + "/checkpoints/ckpt-e0000-s00000001.mo";
  }();
  return path;
}

// The .mo file at `path` with its manifest edited by `edit` (checksum recomputed, payload kept).
std::string edited_mo(const std::string& path, const std::string& out,
                      const std::function<void(mo::ckpt::Manifest&)>& edit) {
  std::vector<uint8_t> b = slurp(path);
  uint64_t size;
  std::memcpy(&size, b.data() + 8, 8);
  mo::ckpt::Manifest m;
  EXPECT_TRUE(m.ParseFromArray(b.data() + 16, static_cast<int>(size)));
  edit(m);
  const std::string s = m.SerializeAsString();
  const uint64_t n = s.size();
  const uint32_t crc = mo::tools::crc32c(s.data(), s.size());
  std::vector<uint8_t> o(b.begin(), b.begin() + 8);
  o.insert(o.end(), reinterpret_cast<const uint8_t*>(&n), reinterpret_cast<const uint8_t*>(&n) + 8);
  o.insert(o.end(), s.begin(), s.end());
  o.insert(o.end(), reinterpret_cast<const uint8_t*>(&crc), reinterpret_cast<const uint8_t*>(&crc) + 4);
  o.insert(o.end(), b.begin() + 16 + static_cast<std::ptrdiff_t>(size) + 4, b.end());
  spit(out, o);
  return out;
}

class ToolHostileWeights : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kBin + "mo_train")) GTEST_SKIP() << "build the programs first (ninja): no " << kBin << "mo_train";
  }
};

// Every program that reads weights, on `file`: each fails naming what `says`, writes nothing.
void every_program_refuses(const std::string& file, const std::vector<std::string>& says) {
  const std::string out = tmp_path("hostile_out.mo");
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_convert " + file + " --info"), says)) << "mo_convert --info";
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_convert " + file + " " + out), says)) << "mo_convert";
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_validate " + file + " --data " + folder() + " --workers 1"), says))
      << "mo_validate";
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_predict --weights " + file + " " + folder() + "/val/class_0/0.jpg"), says))
      << "mo_predict";
}

}  // namespace

TEST_F(ToolHostileWeights, PthViewsWhoseSizesWrapAreRefused) {
  using mo::io_test::View;
  // 2^61 float64 over stride 0: 2^61 * 8 bytes wraps to 0 (was: SIGSEGV in every program).
  const std::string wrap = tmp_path("wrap.pth");
  View v{.name = "head.fc2.weight", .storage = "DoubleStorage", .storage_numel = 1, .size = {int64_t{1} << 61},
         .stride = {0}};
  mo::io_test::write_bytes(wrap, mo::io_test::crafted_pth({v}, {{"0", std::vector<uint8_t>(8)}}));
  every_program_refuses(wrap, {wrap, "tensor 'head.fc2.weight'", "overflows"});
  // offset + extent past 2^63.
  const std::string stride = tmp_path("stride.pth");
  v = {.name = "stem.conv.weight", .size = {3}, .stride = {int64_t{1} << 62}};
  mo::io_test::write_bytes(stride, mo::io_test::crafted_pth({v}, {{"0", mo::io_test::floats(4)}}));
  every_program_refuses(stride, {stride, "tensor 'stem.conv.weight'", "view extent overflows"});
  // model.init takes the same path.
  const std::string recipe = tmp_path("hostile_init.yaml");
  std::ofstream(recipe) << "model: {name: test_mambaout, num_classes: 3, init: " + wrap + "}\n"
                           "data: {root: " + folder() + ", img_size: 32, workers: 1, crop_pct: 1.0}\n"
                           "sched: {epochs: 1, warmup_epochs: 0, cooldown_epochs: 0}\n"
                           "train: {batch_size: 4, global_batch: 4, device: cpu, precision: fp32, eval_every: 0,\n"
                           "        output: " + tmp_path("hostile_init_run") + ", max_steps: 1}\n"
                           "log: {progress: lines, tensorboard: false}\n";
  EXPECT_TRUE(fails_saying(sh(kBin + "mo_train " + recipe), {wrap, "tensor 'head.fc2.weight'", "overflows"}));
}

TEST_F(ToolHostileWeights, SafetensorsAbsurdShapeIsRefused) {
  // [2^31, 2^31] float32 is 2^64 bytes: with a wrapped size it matched data_offsets [0, 0] and passed
  // --info, then crashed the conversion to .mo.
  const std::string f = tmp_path("absurd.safetensors");
  mo::io_test::write_bytes(
      f, mo::io_test::safetensors_file(R"({"head.fc2.weight":{"dtype":"F32","shape":[2147483648,2147483648],)"
                                       R"("data_offsets":[0,0]}})", 0));
  every_program_refuses(f, {f, "tensor 'head.fc2.weight'", "byte size overflows"});
}

TEST_F(ToolHostileWeights, MoManifestsThatDoNotFitTheFileAreRefused) {
  const std::string key = [] {
    mo::ckpt::Manifest m;
    std::vector<uint8_t> b = slurp(checkpoint());
    uint64_t size;
    std::memcpy(&size, b.data() + 8, 8);
    EXPECT_TRUE(m.ParseFromArray(b.data() + 16, static_cast<int>(size)));
    return m.model(0).name();
  }();
  using M = mo::ckpt::Manifest;
  // A shape whose byte size wraps (entry bytes unchanged).
  std::string f = edited_mo(checkpoint(), tmp_path("shape.mo"), [](M& m) {
    m.mutable_model(0)->clear_shape();
    m.mutable_model(0)->add_shape(int64_t{1} << 31);
    m.mutable_model(0)->add_shape(int64_t{1} << 31);
  });
  every_program_refuses(f, {f, "tensor '" + key + "' float32 [2147483648, 2147483648] claims"});
  // A negative dimension.
  f = edited_mo(checkpoint(), tmp_path("neg.mo"), [](M& m) { m.mutable_model(0)->set_shape(0, -3); });
  every_program_refuses(f, {f, "tensor '" + key + "' float32 [-3, "});
  // An extent far outside the payload, and one that wraps.
  f = edited_mo(checkpoint(), tmp_path("extent.mo"), [](M& m) { m.mutable_model(0)->set_offset(uint64_t{1} << 62); });
  every_program_refuses(f, {f, "tensor '" + key + "' float32 [", "bytes at offset 4611686018427387904"});
  f = edited_mo(checkpoint(), tmp_path("wrap.mo"), [](M& m) { m.mutable_model(0)->set_offset(~uint64_t{0}); });
  every_program_refuses(f, {f, "tensor '" + key + "' float32 [", "at offset 18446744073709551615"});
  // Many entries over the same bytes (allocation without bound from a small manifest).
  f = edited_mo(checkpoint(), tmp_path("alias.mo"), [](M& m) {
    for (int i = 0; i < 64; ++i) {
      *m.add_model() = m.model(0);
      m.mutable_model(m.model_size() - 1)->set_name("alias." + std::to_string(i));
    }
  });
  every_program_refuses(f, {f, "that the tensors before it already fill (entries overlap)"});
  // A payload size that disagrees with the file.
  f = edited_mo(checkpoint(), tmp_path("payload.mo"), [](M& m) { m.set_payload_bytes(m.payload_bytes() - 1); });
  every_program_refuses(f, {f, "truncated or corrupt"});
  // A manifest size of 2 GiB in a file of a few KB: refused before allocating it.
  std::vector<uint8_t> b = slurp(checkpoint());
  const uint64_t big = (uint64_t{1} << 31) - 1;
  std::memcpy(b.data() + 8, &big, 8);
  f = tmp_path("manifest.mo");
  spit(f, b);
  every_program_refuses(f, {f, "a manifest of 2147483647 bytes does not fit"});
}

TEST_F(ToolHostileWeights, NonFiniteWeightsWarnByName) {
  // The checkpoint's weights with NaN and Inf in two tensors, as safetensors (keeps the arch).
  mo::tools::register_mo_format();
  mo::nn::io::RawStateDict sd = mo::nn::io::read_checkpoint(checkpoint());
  ASSERT_GE(sd.tensors.size(), 2u);
  std::vector<std::string> bad;
  for (size_t k : {size_t{0}, sd.tensors.size() - 1}) {
    auto& [name, t] = sd.tensors[k];
    ASSERT_EQ(t.dtype, mo::nn::io::WireDType::f32);
    std::vector<uint8_t> b(t.bytes().begin(), t.bytes().end());
    const float v[2] = {std::nanf(""), INFINITY};
    std::memcpy(b.data(), v, std::min<size_t>(8, b.size()));
    t.set_bytes(std::move(b));
    bad.push_back(fmt::format("tensor '{}' has {} non-finite value(s)", name, std::min<int64_t>(2, t.numel())));
  }
  const std::string f = tmp_path("nan.safetensors");
  mo::nn::io::write_checkpoint(sd, f);
  auto warns = [&](const Result& r, const char* program) {
    for (const auto& w : bad)
      EXPECT_NE(r.output.find("warning: " + f + ": " + w), std::string::npos) << program << ":\n" << r.output;
    EXPECT_GE(r.rc, 0) << program << " died of a signal:\n" << r.output;
  };
  warns(sh(kBin + "mo_convert " + f + " " + tmp_path("nan.pth")), "mo_convert");
  warns(sh(kBin + "mo_validate " + f + " --data " + folder() + " --workers 1"), "mo_validate");
  warns(sh(kBin + "mo_predict --weights " + f + " " + folder() + "/val/class_0/0.jpg"), "mo_predict");
  const std::string recipe = tmp_path("hostile_nan_init.yaml");
  std::ofstream(recipe) << "model: {name: test_mambaout, num_classes: 3, init: " + f + "}\n"
                           "data: {root: " + folder() + ", img_size: 32, workers: 1, crop_pct: 1.0}\n"
                           "sched: {epochs: 1, warmup_epochs: 0, cooldown_epochs: 0}\n"
                           "train: {batch_size: 4, global_batch: 4, device: cpu, precision: fp32, eval_every: 0,\n"
                           "        output: " + tmp_path("hostile_nan_run") + ", max_steps: 1}\n"
                           "log: {progress: lines, tensorboard: false}\n";
  warns(sh(kBin + "mo_train " + recipe), "mo_train model.init");
}
