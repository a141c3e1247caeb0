// test_cli.cpp: option values on the tools' command lines: numbers parsed whole, in range, and a bad one
// named with its option (tools/common/cli.h), also through a real tool.
#include <cstdio>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "autograd/check.h"
#include "tests/test_util.h"
#include "tools/common/cli.h"

using mo::tools::option_float;
using mo::test::error_of;
using mo::tools::option_int;

namespace {

std::string run(const std::string& cmd) { return mo::test::run_command(cmd).output; }

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

TEST(Cli, ToolsNameTheBadOption) {
  const std::string bin = std::string(MO_BINARY_DIR) + "/tools/";
  std::string out = run(bin + "mo_predict --weights none.pth x.jpg --topk abc");
  EXPECT_NE(out.find("--topk: expected an integer >= 1, got 'abc'"), std::string::npos) << out;
  out = run(bin + "mo_validate none.pth --data /nonexistent --batch-size 0");
  EXPECT_NE(out.find("--batch-size: expected an integer >= 1, got '0'"), std::string::npos) << out;
  out = run(bin + "mo_prepare fashion-mnist --out /tmp/x --quality 101");
  EXPECT_NE(out.find("--quality: expected an integer from 1 to 100, got '101'"), std::string::npos) << out;
}
