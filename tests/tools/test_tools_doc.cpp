// test_tools_doc.cpp: docs/tools.md is every program's current --help. Regenerates it with
// scripts/docs/tools_md.sh into a scratch file and compares; a difference fails with the diff and the
// command that refreshes the page.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>

#include "tests/test_util.h"

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

}  // namespace

TEST(ToolsDoc, DocsToolsMdIsCurrent) {
  const std::string src = MO_SOURCE_DIR, bin = MO_BINARY_DIR;
  for (const char* t : {"mo_train", "mo_validate", "mo_predict", "mo_serve", "mo_convert", "mo_prepare", "mo_flops",
                        "mo_bench", "mo_bench_data", "mo_bench_kernels", "mo_version"})
    if (::access((bin + "/tools/" + t).c_str(), X_OK) != 0)
      GTEST_SKIP() << bin << "/tools/" << t << " is not built: docs/tools.md needs all 11 programs";
  const std::string fresh = mo::test::tmp_path("tools.md");
  const auto gen = mo::test::run_command("bash " + src + "/scripts/docs/tools_md.sh " + bin + " " + fresh);
  ASSERT_EQ(gen.rc, 0) << gen.output;
  const std::string want = read_text(fresh), have = read_text(src + "/docs/tools.md");
  ASSERT_FALSE(want.empty());
  if (have != want) {
    const auto diff = mo::test::run_command("diff -u " + src + "/docs/tools.md " + fresh);
    FAIL() << "docs/tools.md is not the programs' current --help. Refresh it with\n"
           << "  scripts/docs/tools_md.sh " << bin << "\n(from " << src << ") and commit it. The difference:\n"
           << diff.output;
  }
}
