// io_test_util.h: helpers for the checkpoint I/O tests: a scratch directory removed at the end, a
// runner for scripts/io/torch_io.py through MO_PYTHON (Debian's python3 with torch) that captures its
// output, and raw float32 file reading.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace mo::io_test {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    path = std::filesystem::temp_directory_path() / ("mo_io_" + tag + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

using mo::test::RunResult;
using mo::test::run_command;

// python3 scripts/io/torch_io.py <args>
inline RunResult torch_io(const std::string& args) {
  return run_command(std::string(MO_PYTHON) + " " + MO_SOURCE_DIR + "/scripts/io/torch_io.py " + args);
}

// Fixture files made once by `torch_io.py fixtures` and shared by all test processes (ctest runs each
// test in its own process): MO_BINARY_DIR/io_fixtures-<script timestamps>. Made in a private directory
// and renamed into place, so concurrent tests never see a half-written set.
inline std::string shared_fixtures() {
  namespace fs = std::filesystem;
  const std::string src = std::string(MO_SOURCE_DIR) + "/";
  auto stamp = [&](const char* f) { return fs::last_write_time(src + f).time_since_epoch().count(); };
  const fs::path dir = fs::path(MO_BINARY_DIR) /
                       ("io_fixtures-" + std::to_string(stamp("scripts/io/torch_io.py") ^ stamp("scripts/io/timm_names.py") ^
                                                        stamp("tests/reference/mambaout_ref.py")));
  if (fs::exists(dir / "DONE")) return dir.string();
  const fs::path tmp = dir.string() + ".tmp" + std::to_string(::getpid());
  fs::remove_all(tmp);
  ::setenv("MO_EVIL_MARKER", (dir / "evil_ran").c_str(), 1);  // where the malicious pickle would write
  RunResult r = torch_io("fixtures " + tmp.string());
  EXPECT_EQ(r.rc, 0) << r.output;
  std::ofstream((tmp / "DONE").string()) << "ok\n";
  std::error_code ec;
  fs::rename(tmp, dir, ec);  // fails harmlessly when another process got there first
  if (ec) fs::remove_all(tmp, ec);
  return dir.string();
}

inline std::vector<float> read_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  EXPECT_TRUE(f.is_open()) << path;
  std::vector<float> v(static_cast<size_t>(f.tellg()) / sizeof(float));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  return v;
}

inline void write_f32(const std::string& path, const std::vector<float>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
}

// Largest |a - b| divided by the largest |b|.
inline double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num = std::max(num, static_cast<double>(std::abs(a[i] - b[i])));
    den = std::max(den, static_cast<double>(std::abs(b[i])));
  }
  return den > 0 ? num / den : num;
}

}  // namespace mo::io_test
