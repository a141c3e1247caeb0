// test_install.cpp: `cmake --install` of this build into a scratch prefix, then programs that use it from
// outside: the tiny consumer project (tests/install/consumer: find_package(mo), mo::mo) configured
// against the prefix alone, and the same main.cpp compiled with `pkg-config --cflags --libs mo`. Both
// load a checkpoint written here and must print the logits this process computes. Also: the installed
// mo_train finds a bare recipe name in <prefix>/share/mo/recipes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/graph.h"
#include "autograd/rng.h"
#include "nn/mambaout.h"
#include "tests/test_util.h"
#include "tools/engine/checkpoint.h"

namespace fs = std::filesystem;
using mo::test::run_command;
using mo::test::tmp_path;

namespace {

// A child that hangs is stopped (a bounded wait, not a time limit on the work: 20 minutes each).
std::string bounded(const std::string& cmd) { return "timeout -k 10 1200 " + cmd; }

std::string quote(const std::string& s) { return "'" + s + "'"; }

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Installs the build into a fresh prefix (once per test process) and writes a mambaout_femto
// checkpoint (weights from init seed 5) next to it.
struct Installed {
  std::string prefix = tmp_path("mo_install_prefix");
  std::string checkpoint = tmp_path("mo_install_femto.mo");
  std::string error;
  Installed() {
    fs::remove_all(prefix);
    auto r = run_command(bounded(quote(MO_CMAKE) + " --install " + quote(MO_BINARY_DIR) + " --prefix " +
                                 quote(prefix)));
    if (r.rc != 0) error = "cmake --install failed:\n" + r.output;
    mo::nn::MambaOut model(mo::nn::mambaout_config("mambaout_femto"), 5);
    mo::tools::CheckpointState s;
    s.model_name = "mambaout_femto";
    s.model = model.reference_parameters();
    mo::tools::save_checkpoint(checkpoint, s);
  }
};

const Installed& installed() {
  static const Installed i;
  return i;
}

// The logits this build computes for the consumer's input (mo::Generator(7) normals).
std::vector<float> expected_logits() {
  mo::nn::MambaOut model(mo::nn::mambaout_config("mambaout_femto"), 5);
  model.eval();
  mo::Generator gen(7);
  std::vector<float> x(1 * 3 * 64 * 64);
  for (float& v : x) v = gen.normal();
  mo::NoGradGuard no_grad;
  return model.forward(mo::Tensor::from_vector(x, {1, 3, 64, 64})).to_vector<float>();
}

// Runs a consumer binary on the checkpoint and compares its output with expected_logits().
void expect_consumer_output(const std::string& exe) {
  auto r = run_command(bounded(quote(exe) + " " + quote(installed().checkpoint)));
  ASSERT_EQ(r.rc, 0) << r.output;
  std::istringstream in(r.output);
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(first, "logits [1, 1000]") << r.output.substr(0, 2000);
  std::vector<float> got;
  for (float v; in >> v;) got.push_back(v);
  const std::vector<float> want = expected_logits();
  ASSERT_EQ(got.size(), want.size()) << r.output.substr(0, 2000);
  double worst = 0, scale = 1e-6;
  for (size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  EXPECT_LT(worst / scale, 1e-5) << "the consumer's logits differ from this build's";
}

// No path of the source or build tree in `text` (the installed files stand alone).
void expect_no_tree_paths(const std::string& text, const std::string& what) {
  EXPECT_EQ(text.find(MO_SOURCE_DIR), std::string::npos) << what << " names the source tree:\n" << text;
  EXPECT_EQ(text.find(MO_BINARY_DIR), std::string::npos) << what << " names the build tree:\n" << text;
}

class Install : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(installed().error.empty()) << installed().error; }
  const std::string& prefix() const { return installed().prefix; }
};

}  // namespace

TEST_F(Install, LayoutAndStandAlonePackageFiles) {
  for (const char* f : {"bin/mo_train", "bin/mo_validate", "bin/mo_predict", "bin/mo_convert", "lib/libmo_nn.a",
                        "lib/libmo_autograd.a", "lib/libmo_engine.a", "lib/libmo_tools.a", "include/mo/nn/mambaout.h",
                        "include/mo/autograd/tensor.h", "include/mo/tools/engine/checkpoint.pb.h",
                        "share/mo/imagenet_classes.txt", "share/mo/recipes/femto.yaml",
                        "share/mo/recipes/fashion_mnist.yaml", "share/mo/python/mo_checkpoint.py",
                        "lib/cmake/mo/moConfig.cmake", "lib/cmake/mo/moConfigVersion.cmake", "lib/pkgconfig/mo.pc"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(prefix()) / f)) << f;
  for (const auto& e : fs::directory_iterator(fs::path(prefix()) / "lib/cmake/mo"))
    expect_no_tree_paths(read_text(e.path()), e.path().string());
  expect_no_tree_paths(read_text(fs::path(prefix()) / "lib/pkgconfig/mo.pc"), "mo.pc");
  // Every installed header is complete: it includes only what is installed beside it (or the system's).
  for (const auto& e : fs::recursive_directory_iterator(fs::path(prefix()) / "include/mo")) {
    if (e.path().extension() != ".h") continue;
    std::istringstream in(read_text(e.path()));
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("#include \"", 0) != 0) continue;
      const std::string inc = line.substr(10, line.find('"', 10) - 10);
      EXPECT_TRUE(fs::exists(fs::path(prefix()) / "include/mo" / inc)) << e.path() << " includes " << inc;
    }
  }
}

TEST_F(Install, InstalledTrainFindsBareRecipeNames) {
  const std::string train = prefix() + "/bin/mo_train";
  const std::string cwd = tmp_path("mo_install_cwd");  // no recipes/ here: only the installed ones
  fs::create_directories(cwd);
  auto r = run_command("cd " + quote(cwd) + " && " + bounded(quote(train) + " femto --print-config"));
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("  name: mambaout_femto\n"), std::string::npos) << r.output;
  auto r2 = run_command("cd " + quote(cwd) + " && " + bounded(quote(train) + " fashion_mnist.yaml --print-config"));
  ASSERT_EQ(r2.rc, 0) << r2.output;
  EXPECT_NE(r2.output.find("num_classes: 10"), std::string::npos) << r2.output;
  // A file of that name where the program runs comes first.
  std::ofstream(cwd + "/femto.yaml") << "model: {name: mambaout_kobe}\n";
  auto r3 = run_command("cd " + quote(cwd) + " && " + bounded(quote(train) + " femto.yaml --print-config"));
  ASSERT_EQ(r3.rc, 0) << r3.output;
  EXPECT_NE(r3.output.find("  name: mambaout_kobe\n"), std::string::npos) << r3.output;
  // A missing name lists the recipes there are.
  auto r4 = run_command("cd " + quote(cwd) + " && " + bounded(quote(train) + " femtoo"));
  EXPECT_EQ(r4.rc, 1) << r4.output;
  EXPECT_NE(r4.output.find("recipe 'femtoo' not found"), std::string::npos) << r4.output;
  std::vector<std::string> shipped;  // recipes/*.yaml, sorted, as the message lists them
  for (const auto& e : fs::directory_iterator(std::string(MO_SOURCE_DIR) + "/recipes"))
    if (e.path().extension() == ".yaml") shipped.push_back(e.path().stem().string());
  std::sort(shipped.begin(), shipped.end());
  ASSERT_GE(shipped.size(), 6u);
  std::string list = shipped[0];
  for (size_t i = 1; i < shipped.size(); ++i) list += ", " + shipped[i];
  EXPECT_NE(r4.output.find(list + ")"), std::string::npos) << list << "\n" << r4.output;
  auto r5 = run_command("cd " + quote(cwd) + " && " + bounded(quote(train) + " no/such/recipe.yaml"));
  EXPECT_EQ(r5.rc, 1) << r5.output;
  EXPECT_NE(r5.output.find("cannot open config file 'no/such/recipe.yaml': no such file (available in "),
            std::string::npos) << r5.output;
  // The build tree's program finds the source tree's recipes by the same rule (<build>/share/mo/recipes).
  fs::remove(cwd + "/femto.yaml");
  auto r6 = run_command("cd " + quote(cwd) + " && " + bounded(quote(std::string(MO_BINARY_DIR) + "/tools/mo_train") +
                                                             " tiny --print-config"));
  ASSERT_EQ(r6.rc, 0) << r6.output;
  EXPECT_NE(r6.output.find("  name: mambaout_tiny\n"), std::string::npos) << r6.output;
}

TEST_F(Install, CMakeConsumerProject) {
  // The consumer's sources are copied out of the tree: only the prefix can supply mo.
  const fs::path src = tmp_path("mo_consumer_src"), build = tmp_path("mo_consumer_build");
  fs::remove_all(src);
  fs::remove_all(build);
  fs::copy(fs::path(MO_SOURCE_DIR) / "tests/install/consumer", src, fs::copy_options::recursive);
  std::string configure = quote(MO_CMAKE) + " -S " + quote(src) + " -B " + quote(build) + " -G " +
                          quote(MO_CMAKE_GENERATOR) + " -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=" +
                          quote(prefix()) + " -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_EXPORT_COMPILE_COMMANDS=ON" +
                          " -DCMAKE_CXX_COMPILER=" + quote(MO_CXX);
  if (std::string(MO_CXX_LAUNCHER).size()) configure += " -DCMAKE_CXX_COMPILER_LAUNCHER=" + quote(MO_CXX_LAUNCHER);
  auto r = run_command(bounded(configure));
  ASSERT_EQ(r.rc, 0) << r.output;
  auto r2 = run_command(bounded(quote(MO_CMAKE) + " --build " + quote(build)));
  ASSERT_EQ(r2.rc, 0) << r2.output;
  expect_no_tree_paths(read_text(build / "compile_commands.json"), "the consumer's compile commands");
  EXPECT_NE(read_text(build / "compile_commands.json").find(prefix() + "/include/mo"), std::string::npos);
  expect_consumer_output((build / "consumer").string());
}

TEST_F(Install, PkgConfigConsumer) {
  const std::string env = "PKG_CONFIG_PATH=" + quote(prefix() + "/lib/pkgconfig");
  auto flags = run_command(env + " pkg-config --cflags --libs mo");
  ASSERT_EQ(flags.rc, 0) << flags.output;
  expect_no_tree_paths(flags.output, "pkg-config --cflags --libs mo");
  std::string f = flags.output;
  while (!f.empty() && (f.back() == '\n' || f.back() == ' ')) f.pop_back();
  const std::string src = tmp_path("mo_pc_main.cpp"), exe = tmp_path("mo_pc_consumer");
  fs::copy_file(fs::path(MO_SOURCE_DIR) / "tests/install/consumer/main.cpp", src, fs::copy_options::overwrite_existing);
  auto r = run_command(bounded(std::string(MO_CXX_LAUNCHER) + " " + quote(MO_CXX) + " -std=c++20 -O2 " + quote(src) +
                               " -o " + quote(exe) + " " + f));
  ASSERT_EQ(r.rc, 0) << r.output;
  expect_consumer_output(exe);
}
