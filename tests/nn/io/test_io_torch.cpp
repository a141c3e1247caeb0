// test_io_torch.cpp: interoperability with real PyTorch files. scripts/io/torch_io.py (run through
// MO_PYTHON, torch 1.13) writes torch.save files covering the reader's cases; we read each, write it back
// as .pth and .safetensors, and Python checks with torch.load / the safetensors package that every
// tensor is bit-identical to what torch itself holds. Also: the malicious pickle, legacy and deflated
// files, truncation, and the mo_convert command line.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "nn/io/checkpoint_io.h"
#include "tests/nn/io/io_test_util.h"

using namespace mo;
using namespace mo::nn::io;
using mo::io_test::torch_io;

namespace {

class IoTorch : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixtures_ = new std::string(io_test::shared_fixtures());
    out_ = new io_test::TempDir("torch");
  }
  static void TearDownTestSuite() {
    delete out_;
    delete fixtures_;
  }
  static std::string path(const std::string& name) { return *fixtures_ + "/" + name; }  // inputs
  static std::string out(const std::string& name) { return *out_ / name; }            // outputs
  static std::string error_reading(const std::string& file) {
    try {
      read_checkpoint(file);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }
  // Reads CASE.pth, writes it as .pth and .safetensors; returns "expected out1 expected out2" for compare.
  static std::string convert(const std::string& c, const std::string& entry = "", const std::string& exp = "") {
    RawStateDict sd = read_checkpoint(path(c + ".pth"), ReadOptions{entry});
    const std::string expected = path((exp.empty() ? c : exp) + ".expected.pth");
    std::string pairs;
    for (const char* ext : {".pth", ".safetensors"}) {
      const std::string o = out("out_" + c + entry + ext);
      write_checkpoint(sd, o);
      pairs += " " + expected + " " + o;
    }
    return pairs;
  }
  static void compare(const std::string& pairs) {
    auto r = torch_io("compare" + pairs);
    EXPECT_EQ(r.rc, 0) << r.output;
  }
  static std::string* fixtures_;
  static io_test::TempDir* out_;
};
std::string* IoTorch::fixtures_ = nullptr;
io_test::TempDir* IoTorch::out_ = nullptr;


}  // namespace

TEST_F(IoTorch, ReadsFlatStateDictsInEveryDtype) {
  std::string pairs;
  for (const char* c : {"plain", "fp16", "bf16", "mixed", "parameters", "timm_names"}) pairs += convert(c);
  compare(pairs);
  RawStateDict mixed = read_checkpoint(path("mixed.pth"));
  EXPECT_EQ(mixed.find("f16")->dtype, WireDType::f16);  // dtypes survive as stored
  EXPECT_EQ(mixed.find("scalar")->shape.size(), 0u);
  EXPECT_EQ(mixed.find("empty")->bytes().size(), 0u);
}

TEST_F(IoTorch, ReadsSharedStoragesAndNonContiguousViews) { compare(convert("views")); }

TEST_F(IoTorch, UnwrapsCheckpointsAndStripsModulePrefix) {
  // timm_train: optimizer, argparse args, numpy values, amp_scaler, torch.device are parsed inertly and skipped.
  compare(convert("module_prefix") + convert("wrapped_model") + convert("timm_train") +
          convert("timm_train", "state_dict_ema", "timm_train_ema"));
  RawStateDict sd = read_checkpoint(path("timm_train.pth"));
  EXPECT_EQ(sd.metadata, (std::vector<std::pair<std::string, std::string>>{{"arch", "mambaout_femto"}, {"epoch", "7"}}));
  std::string e;
  try {
    read_checkpoint(path("timm_train.pth"), ReadOptions{"optimizer_x"});
  } catch (const Error& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("no entry 'optimizer_x'"), std::string::npos) << e;
  EXPECT_NE(e.find("'state_dict_ema'"), std::string::npos) << e;  // lists the keys there are
}

TEST_F(IoTorch, ReadsFilesFromTheSafetensorsPackage) {
  if (!std::filesystem::exists(path("pkg.safetensors"))) GTEST_SKIP() << "python package safetensors not installed";
  RawStateDict sd = read_checkpoint(path("pkg.safetensors"));
  EXPECT_EQ(sd.tensors.size(), 13u);
  const std::string o = out("pkg_back.pth");
  write_checkpoint(sd, o);
  auto r = torch_io("compare " + path("pkg.expected.pth") + " " + o);
  EXPECT_EQ(r.rc, 0) << r.output;
}

TEST_F(IoTorch, SafetensorsPackageReadsOurFiles) {
  const std::string o = out("ours.safetensors");
  RawStateDict sd = read_checkpoint(path("mixed.pth"));
  sd.metadata = {{"format", "pt"}};
  write_checkpoint(sd, o);
  auto r = torch_io("safetensors-pkg " + o);
  if (r.rc == 3) GTEST_SKIP() << "python package safetensors not installed (pip install safetensors)";
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("read 13 tensors"), std::string::npos) << r.output;
}

TEST_F(IoTorch, RoundTripsAreBitExact) {
  // pth -> safetensors -> mo-less pth and pth -> pth: identical bytes, names, dtypes and order.
  RawStateDict a = read_checkpoint(path("mixed.pth"));
  write_checkpoint(a, out("rt.safetensors"));
  RawStateDict b = read_checkpoint(out("rt.safetensors"));
  write_checkpoint(b, out("rt.pth"));
  RawStateDict c = read_checkpoint(out("rt.pth"));
  ASSERT_EQ(a.tensors.size(), c.tensors.size());
  for (const auto& [n, t] : a.tensors) {
    const RawTensor* u = c.find(n);
    ASSERT_NE(u, nullptr) << n;
    EXPECT_EQ(t.dtype, u->dtype) << n;
    EXPECT_EQ(t.shape, u->shape) << n;
    EXPECT_TRUE(std::ranges::equal(t.bytes(), u->bytes())) << n;
  }
  // Same-dtype dicts keep their order through safetensors.
  RawStateDict p = read_checkpoint(path("plain.pth"));
  write_checkpoint(p, out("order.safetensors"));
  write_checkpoint(read_checkpoint(out("order.safetensors")), out("order.pth"));
  RawStateDict q = read_checkpoint(out("order.pth"));
  ASSERT_EQ(q.tensors.size(), p.tensors.size());
  for (size_t i = 0; i < p.tensors.size(); ++i) EXPECT_EQ(q.tensors[i].first, p.tensors[i].first);
  auto r = torch_io("compare " + path("mixed.expected.pth") + " " + out("rt.pth") + " " +
                    path("plain.expected.pth") + " " + out("order.pth"));
  EXPECT_EQ(r.rc, 0) << r.output;
}

TEST_F(IoTorch, RefusesMaliciousPickleWithoutRunningIt) {
  std::string e = error_reading(path("malicious.pth"));
  EXPECT_NE(e.find("refusing to load"), std::string::npos) << e;
  EXPECT_NE(e.find("system'"), std::string::npos) << e;  // posix.system / os.system, named
  EXPECT_NE(e.find("malicious.pth"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(path("evil_ran")));
}

TEST_F(IoTorch, LegacyAndCompressedFilesAreClearErrors) {
  EXPECT_NE(error_reading(path("legacy.pth")).find("legacy (pre-1.6) torch.save format"), std::string::npos);
  std::string e = error_reading(path("deflated.pth"));
  EXPECT_NE(e.find("is compressed"), std::string::npos) << e;
}

TEST_F(IoTorch, TruncatedFilesAreClearErrors) {
  std::ifstream f(path("plain.pth"), std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (size_t n : {size_t{10}, all.size() / 4, all.size() / 2, all.size() - 100, all.size() - 1}) {
    std::ofstream(out("cut.pth"), std::ios::binary).write(all.data(), static_cast<std::streamsize>(n));
    std::string e = error_reading(out("cut.pth"));
    EXPECT_NE(e.find("truncated"), std::string::npos) << n << ": " << e;
    EXPECT_NE(e.find("cut.pth"), std::string::npos) << e;
  }
  RawStateDict sd = read_checkpoint(path("plain.pth"));
  write_checkpoint(sd, out("whole.safetensors"));
  std::ifstream g(out("whole.safetensors"), std::ios::binary);
  std::string st((std::istreambuf_iterator<char>(g)), std::istreambuf_iterator<char>());
  std::ofstream(out("cut.safetensors"), std::ios::binary).write(st.data(), static_cast<std::streamsize>(st.size() - 4));
  EXPECT_NE(error_reading(out("cut.safetensors")).find("truncated"), std::string::npos);
}

TEST_F(IoTorch, MoConvertCommandLine) {
  const std::string exe = std::string(MO_BINARY_DIR) + "/tools/mo_convert";
  // timm names -> official .safetensors -> back to .pth: equal to the official original.
  auto r = io_test::run_command(exe + " " + path("timm_names.pth") + " " + out("cli.safetensors"));
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("timm names"), std::string::npos) << r.output;
  r = io_test::run_command(exe + " " + out("cli.safetensors") + " " + out("cli.pth") + " --names official");
  ASSERT_EQ(r.rc, 0) << r.output;
  // official -> timm through mo's native format.
  r = io_test::run_command(exe + " " + path("plain.pth") + " " + out("cli.mo"));
  ASSERT_EQ(r.rc, 0) << r.output;
  r = io_test::run_command(exe + " " + out("cli.mo") + " " + out("cli_timm.pth") + " --names timm");
  ASSERT_EQ(r.rc, 0) << r.output;
  r = torch_io("compare " + path("plain.expected.pth") + " " + out("cli.pth") + " " + path("timm_names.expected.pth") +
               " " + out("cli_timm.pth"));
  EXPECT_EQ(r.rc, 0) << r.output;
  // Errors: exit 1 with the message; usage mistakes exit 2.
  r = io_test::run_command(exe + " " + path("malicious.pth") + " " + out("x.pth"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.output.find("refusing"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out("x.pth")));
  r = io_test::run_command(exe + " " + path("plain.pth") + " " + out("x.weird"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.output.find("cannot tell the checkpoint format"), std::string::npos) << r.output;
  EXPECT_EQ(io_test::run_command(exe + " " + path("plain.pth")).rc, 2);
  r = io_test::run_command(exe + " " + path("timm_train.pth") + " --info");
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.output.find("arch = mambaout_femto"), std::string::npos) << r.output;
}
