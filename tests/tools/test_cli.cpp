// test_cli.cpp: the tools' shared command line (tools/common/cli.h): numbers parsed whole and in range,
// choices, "did you mean" for a mistyped option; and on the real programs: --help on stdout with exit 0,
// --version with the commit and build flags, an unknown option or a bad value exits 2 with
// "<tool>: error:" naming the option, timm's aliases in mo_train.
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "autograd/check.h"
#include "tests/test_util.h"
#include "tools/common/cli.h"

using mo::test::error_of;
using mo::tools::option_float;
using mo::tools::option_int;

namespace {

const std::string kBin = std::string(MO_BINARY_DIR) + "/tools/";

std::string run(const std::string& cmd) { return mo::test::run_command(cmd).output; }
// The exit code and stdout only (stderr dropped), and the exit code and stderr only.
mo::test::RunResult run_stdout(const std::string& cmd) { return mo::test::run_command("(" + cmd + " 2>/dev/null)"); }
mo::test::RunResult run_stderr(const std::string& cmd) { return mo::test::run_command("(" + cmd + " >/dev/null)"); }

// What a validator says about `text` ("" when it accepts it).
std::string check(const CLI::Validator& v, std::string text) { return v(text); }

// Every program, each on tools/common/cli.h (mo_serve only where cpp-httplib is found).
std::vector<std::string> cli_tools() {
  std::vector<std::string> t = {"mo_train", "mo_validate", "mo_predict", "mo_convert", "mo_prepare", "mo_bench",
                                "mo_bench_data", "mo_bench_kernels", "mo_flops", "mo_version"};
  if (::access((kBin + "mo_serve").c_str(), X_OK) == 0) t.push_back("mo_serve");
  return t;
}

}  // namespace

TEST(Cli, IntegersWholeAndInRange) {
  EXPECT_EQ(option_int("--topk", "5", 1), 5);
  EXPECT_EQ(option_int("--n", "-12"), -12);
  EXPECT_EQ(option_int("--port", "65535", 0, 65535), 65535);
  EXPECT_EQ(error_of([] { option_int("--topk", "abc", 1); }), "--topk: expected an integer >= 1, got 'abc'");
  EXPECT_EQ(error_of([] { option_int("--topk", "12abc", 1); }), "--topk: expected an integer >= 1, got '12abc'");
  EXPECT_EQ(error_of([] { option_int("--topk", "", 1); }), "--topk: expected an integer >= 1, got ''");
  EXPECT_EQ(error_of([] { option_int("--port", "70000", 0, 65535); }),
            "--port: expected an integer from 0 to 65535, got '70000'");
  EXPECT_NE(error_of([] { option_int("--n", "99999999999999999999"); }), "");  // overflow
  EXPECT_NE(error_of([] { option_int("--n", "1.5"); }), "");
}

TEST(Cli, FloatsWholeFiniteAndInRange) {
  EXPECT_DOUBLE_EQ(option_float("--crop-pct", "0.875", 1e-3, 1.0), 0.875);
  EXPECT_DOUBLE_EQ(option_float("--x", "1e3"), 1000.0);
  EXPECT_EQ(error_of([] { option_float("--crop-pct", "1.5", 0.5, 1.0); }),
            "--crop-pct: expected a number from 0.5 to 1, got '1.5'");
  EXPECT_NE(error_of([] { option_float("--x", "nan"); }), "");
  EXPECT_NE(error_of([] { option_float("--x", "inf"); }), "");
  EXPECT_NE(error_of([] { option_float("--x", "0.5x"); }), "");
}

TEST(Cli, ValidatorsOnTheOptionSayTheSame) {
  const CLI::Validator ints = mo::tools::int_range(1, 100), nums = mo::tools::number_range(0.1, 3600),
                       words = mo::tools::one_of({"fp32", "bf16"});
  EXPECT_EQ(check(ints, "100"), "");
  EXPECT_EQ(check(ints, "101"), "expected an integer from 1 to 100, got '101'");
  EXPECT_EQ(check(ints, "7x"), "expected an integer from 1 to 100, got '7x'");
  EXPECT_EQ(check(mo::tools::int_range(0), "-1"), "expected an integer >= 0, got '-1'");
  EXPECT_EQ(check(nums, "0.1"), "");
  EXPECT_EQ(check(nums, "0"), "expected a number from 0.1 to 3600, got '0'");
  EXPECT_EQ(check(nums, "nan"), "expected a number from 0.1 to 3600, got 'nan'");
  EXPECT_EQ(check(words, "bf16"), "");
  EXPECT_EQ(check(words, "fp16"), "expected fp32 or bf16, got 'fp16'");
  EXPECT_EQ(check(mo::tools::one_of({"a", "b", "c"}), "d"), "expected a, b or c, got 'd'");
}

TEST(Cli, NearestOptionForATypo) {
  mo::tools::Cli cli("mo_x", "test");
  int batch = 0;
  bool json = false;
  cli.app.add_option("-b,--batch-size", batch, "");
  cli.app.add_flag("--json", json, "");
  cli.app.add_option("--set", batch, "");
  EXPECT_EQ(mo::tools::nearest_option(cli.app, "--batch-sise"), "--batch-size");
  EXPECT_EQ(mo::tools::nearest_option(cli.app, "--bach"), "--batch-size");  // a typo of the start
  EXPECT_EQ(mo::tools::nearest_option(cli.app, "--jsno"), "--json");
  EXPECT_EQ(mo::tools::nearest_option(cli.app, "--sett"), "--set");
  EXPECT_EQ(mo::tools::nearest_option(cli.app, "--model-ema"), "");
  EXPECT_EQ(mo::tools::nearest_option(cli.app, "--zzzzzzzz"), "");
}

TEST(Cli, HelpOnStdoutExitZero) {
  for (const std::string& t : cli_tools()) {
    for (const char* flag : {" --help", " -h"}) {
      const auto out = run_stdout(kBin + t + flag);
      EXPECT_EQ(out.rc, 0) << t << flag << "\n" << out.output;
      EXPECT_NE(out.output.find("Usage: " + t + " "), std::string::npos) << t << flag << "\n" << out.output;
      EXPECT_NE(out.output.find("--version"), std::string::npos) << t << "\n" << out.output;
      EXPECT_EQ(run_stderr(kBin + t + flag).output, "") << t << flag << " wrote on stderr";
    }
  }
}

TEST(Cli, VersionNamesTheCommitAndTheBuild) {
  const std::regex version(R"(^(\S+) \d+\.\d+\.\d+ \(git ([0-9a-f]{7,40}|unknown)\)\nbuild: CUDA (on|off), NCCL (on|off), )"
                           R"(MPI (on|off), cuDNN (on|off))");
  for (const std::string& t : cli_tools()) {
    const auto out = run_stdout(kBin + t + " --version");
    EXPECT_EQ(out.rc, 0) << t << "\n" << out.output;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(out.output, m, version)) << t << "\n" << out.output;
    EXPECT_EQ(m[1].str(), t == "mo_version" ? "mo_version" : t);
#ifdef MO_WITH_CUDA
    EXPECT_EQ(m[3].str(), "on") << out.output;
#else
    EXPECT_EQ(m[3].str(), "off") << out.output;
#endif
  }
  // mo_version without options: the same, plus the GPUs (scripts/train/demo.sh reads them)
  const auto v = run_stdout(kBin + "mo_version");
  EXPECT_EQ(v.rc, 0);
  EXPECT_TRUE(std::regex_search(v.output, version)) << v.output;
  EXPECT_TRUE(std::regex_search(v.output, std::regex("\nGPUs visible: \\d+\n"))) << v.output;
}

TEST(Cli, UnknownOptionExitsTwoWithThePrefix) {
  for (const std::string& t : cli_tools()) {
    const auto out = run_stderr(kBin + t + " --no-such-option 3");
    EXPECT_EQ(out.rc, 2) << t << "\n" << out.output;
    EXPECT_NE(out.output.find(t + ": error: unknown option '--no-such-option'"), std::string::npos) << out.output;
    EXPECT_NE(out.output.find("(" + t + " --help lists the options)"), std::string::npos) << out.output;
    EXPECT_EQ(run_stdout(kBin + t + " --no-such-option 3").output, "") << t << " wrote the error on stdout";
  }
  // a mistyped option gets the nearest one; "--x=1" is named without its value
  std::string out = run(kBin + "mo_bench --iter=3");
  EXPECT_NE(out.find("mo_bench: error: unknown option '--iter'; did you mean '--iters'?"), std::string::npos) << out;
  out = run(kBin + "mo_flops --arch vit-s --cls_token");
  EXPECT_NE(out.find("mo_flops: error: unknown option '--cls_token'; did you mean '--cls-token'?"), std::string::npos)
      << out;
  // the unknown option is named even when a required one is missing too
  out = run(kBin + "mo_bench_data --bogus");
  EXPECT_NE(out.find("unknown option '--bogus'"), std::string::npos) << out;
}

TEST(Cli, ToolsNameTheBadOption) {
  struct Case {
    std::string cmd, says;
  };
  const std::vector<Case> cases = {
      {"mo_prepare fashion-mnist --out x --quality 101", "mo_prepare: error: --quality: expected an integer from 1 to 100, got '101'"},
      {"mo_prepare mnist --out x", "mo_prepare: error: DATASET: expected fashion-mnist, got 'mnist'"},
      {"mo_prepare fashion-mnist", "mo_prepare: error: --out is required"},
      {"mo_bench --batch 0", "mo_bench: error: --batch: expected an integer from 1 to 1048576, got '0'"},
      {"mo_bench --dtype fp16", "mo_bench: error: --dtype: expected fp32 or bf16, got 'fp16'"},
      {"mo_bench --iters", "mo_bench: error: --iters needs a value"},
      {"mo_bench_data --dir x --threads 1,0", "mo_bench_data: error: --threads: expected an integer from 1 to 4096, got '0'"},
      {"mo_bench_data --dir x --modes decode,jpeg", "--modes: expected decode, rrc, train or eval, got 'jpeg'"},
      {"mo_bench_data --dir x --seconds 1 --count 5", "mo_bench_data: error: --seconds excludes --count"},
      {"mo_bench_kernels --warmup -1", "mo_bench_kernels: error: --warmup: expected an integer from 0 to 1048576, got '-1'"},
      {"mo_flops --arch vit-s --patch 0", "mo_flops: error: --patch: expected an integer >= 1, got '0'"},
      {"mo_flops --arch mambaout_tiny --img 224x", "--img: expected N or HxW with positive integers, got '224x'"},
      {"mo_train x.yaml -b 0", "mo_train: error: --batch-size: expected an integer >= 1, got '0'"},
      {"mo_train x.yaml --crop-pct 2", "mo_train: error: --crop-pct: expected a number from 0.001 to 1, got '2'"},
      {"mo_train x.yaml -j x", "mo_train: error: --workers: expected an integer from 0 to 4096, got 'x'"},
      {"mo_train x.yaml --interpolation nearest", "mo_train: error: --interpolation: expected bicubic or bilinear, got 'nearest'"},
      {"mo_train a.yaml b.yaml", "mo_train: error: unexpected argument 'b.yaml'"},
      {"mo_train", "mo_train: error: no recipe given"},
      {"mo_predict --weights none.pth x.jpg --topk abc", "mo_predict: error: --topk: expected an integer >= 1, got 'abc'"},
      {"mo_predict x.jpg", "mo_predict: error: --weights is required"},
      {"mo_predict -w none.pth", "mo_predict: error: INPUT is required"},
      {"mo_predict -w none.pth x.jpg --interpolation nearest",
       "mo_predict: error: --interpolation: expected bicubic or bilinear, got 'nearest'"},
      {"mo_predict -w none.pth x.jpg --amp --precision fp32", "mo_predict: error: --precision excludes --amp"},
      {"mo_validate none.pth --data /nonexistent --batch-size 0",
       "mo_validate: error: --batch-size: expected an integer from 1 to 1048576, got '0'"},
      {"mo_validate none.pth --data x -j -1", "mo_validate: error: --workers: expected an integer from 0 to 4096, got '-1'"},
      {"mo_validate none.pth --data x --precision fp16", "mo_validate: error: --precision: expected fp32 or bf16, got 'fp16'"},
      {"mo_validate none.pth --data x --device gpu", "mo_validate: error: --device: expected auto, cpu or cuda, got 'gpu'"},
      {"mo_validate none.pth", "mo_validate: error: --data is required"},
      {"mo_validate a.pth b.pth --data x", "mo_validate: error: unexpected argument 'b.pth'"},
  };
  for (const Case& c : cases) {
    const auto r = mo::test::run_command(kBin + c.cmd);
    EXPECT_EQ(r.rc, 2) << c.cmd << "\n" << r.output;
    EXPECT_NE(r.output.find(c.says), std::string::npos) << c.cmd << "\n" << r.output;
  }
}

TEST(Cli, RuntimeErrorsExitOneWithThePrefix) {
  const auto r = mo::test::run_command(kBin + "mo_train " + mo::test::tmp_path("no_such_recipe.yaml"));
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_NE(r.output.find("mo_train: error: cannot open config file '" + mo::test::tmp_path("no_such_recipe.yaml") + "'"),
            std::string::npos) << r.output;
  const auto b = mo::test::run_command(kBin + "mo_bench_data --dir " + mo::test::tmp_path("no_such_dir") + " --count 1");
  EXPECT_EQ(b.rc, 1) << b.output;
  EXPECT_NE(b.output.find("mo_bench_data: error: --dir '" + mo::test::tmp_path("no_such_dir") + "': No such file"),
            std::string::npos) << b.output;
  EXPECT_EQ(b.output.find("mo_bench_data: error: mo_bench_data"), std::string::npos) << b.output;
}

TEST(Cli, TrainAliasesAreRecipeKeys) {
  const std::string recipe = std::string(MO_SOURCE_DIR) + "/recipes/fashion_mnist.yaml";
  const auto r = run_stdout(kBin + "mo_train " + recipe +
                            " -b 7 -j 1 -m mambaout_kobe --amp --img-size 64 --crop-pct 0.9 --interpolation bilinear"
                            " --print-config");
  ASSERT_EQ(r.rc, 0) << r.output;
  for (const char* line : {"\n  batch_size: 7\n", "\n  workers: 1\n", "\n  name: mambaout_kobe\n", "\n  precision: bf16\n",
                           "\n  img_size: 64\n", "\n  crop_pct: 0.9\n", "\n  interpolation: bilinear\n"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
  // the long names and --set of other keys beside them
  const auto l = run_stdout(kBin + "mo_train " + recipe + " --batch-size=9 --workers 2 --set optim.lr=0.5 --print-config");
  ASSERT_EQ(l.rc, 0) << l.output;
  EXPECT_NE(l.output.find("\n  batch_size: 9\n"), std::string::npos) << l.output;
  EXPECT_NE(l.output.find("\n  lr: 0.5\n"), std::string::npos) << l.output;
  // an alias and a --set of the same key: which one was meant is not guessed
  const auto c = mo::test::run_command(kBin + "mo_train " + recipe + " -b 4 --set train.batch_size=8 --print-config");
  EXPECT_EQ(c.rc, 2) << c.output;
  EXPECT_NE(c.output.find("mo_train: error: -b,--batch-size and --set train.batch_size=8 both set 'train.batch_size'"),
            std::string::npos) << c.output;
  const auto a = mo::test::run_command(kBin + "mo_train " + recipe + " --amp --set train.precision=fp32 --print-config");
  EXPECT_EQ(a.rc, 2) << a.output;
  EXPECT_NE(a.output.find("--amp and --set train.precision=fp32 both set 'train.precision'"), std::string::npos)
      << a.output;
  // recipe keys keep their "did you mean"
  const auto k = mo::test::run_command(kBin + "mo_train " + recipe + " --set train.batch_sise=8 --print-config");
  EXPECT_EQ(k.rc, 1) << k.output;
  EXPECT_NE(k.output.find("unknown key 'train.batch_sise'; did you mean 'train.batch_size'?"), std::string::npos)
      << k.output;
}

TEST(Cli, ReadmeTimmTableNamesRealRecipeKeys) {
  // Every key in README.md's timm table is one that mo_train --print-config prints (no renamed or
  // planned keys).
  std::ifstream in(std::string(MO_SOURCE_DIR) + "/README.md");
  const std::string readme((std::istreambuf_iterator<char>(in)), {});
  const size_t from = readme.find("### From timm's train.py");
  ASSERT_NE(from, std::string::npos);
  const std::string table = readme.substr(from, readme.find("\n\n!", from) - from);
  const auto cfg = run_stdout(kBin + "mo_train --print-config");
  ASSERT_EQ(cfg.rc, 0) << cfg.output;
  std::set<std::string> keys;
  std::string section;
  std::istringstream lines(cfg.output);
  for (std::string l; std::getline(lines, l);) {
    const std::string name = l.substr(l.find_first_not_of(' '), l.find(':') - l.find_first_not_of(' '));
    if (l.rfind("  ", 0) == 0) keys.insert(section + "." + name);
    else section = name;
  }
  ASSERT_GT(keys.size(), 40u);
  const std::regex key(R"(`((model|data|optim|sched|train|ckpt|log)\.[a-z_]+))");
  int n = 0;
  for (auto it = std::sregex_iterator(table.begin(), table.end(), key); it != std::sregex_iterator(); ++it, ++n)
    EXPECT_TRUE(keys.count((*it)[1].str())) << (*it)[1].str() << " is not a recipe key";
  EXPECT_GT(n, 30);
}
