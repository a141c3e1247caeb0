// data_test_util.h: helpers shared by the data/ test suites: the committed photographs, temporary
// folders, running the Python reference (Debian's /usr/bin/python3 with PIL + torchvision), and pixel
// difference statistics.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "data/image.h"
#include "data/jpeg.h"

namespace mo::data::testing {

namespace fs = std::filesystem;

inline std::vector<std::string> test_photos() {
  std::vector<std::string> v;
  for (const char* n : {"chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg"})
    v.push_back(std::string(MO_SOURCE_DIR) + "/tests/data/images/" + n);
  return v;
}

inline std::vector<uint8_t> slurp(const std::string& path) {
  std::vector<uint8_t> b;
  std::string err;
  if (!read_file(path, b, err)) ADD_FAILURE() << path << ": " << err;
  return b;
}

// A fresh, empty temporary folder removed when the object goes away.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("mo_test_" + tag + "_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(reinterpret_cast<uintptr_t>(this) & 0xffff));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

// True when Debian's Python with PIL and torchvision is usable (else the parity tests skip, saying so).
inline bool have_python_peers() {
  std::string py = MO_PYTHON;
  if (py.empty()) return false;
  std::string cmd = py + " -c 'import PIL, torchvision, numpy' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

inline int run_python(const std::string& args) {
  std::string cmd = std::string(MO_PYTHON) + " " + args;
  return std::system(cmd.c_str());
}

struct Diff {
  int max = 0;
  double mean = 0;
  bool same_size = true;
};
inline Diff diff(const uint8_t* a, const uint8_t* b, size_t n) {
  Diff d;
  int64_t sum = 0;
  for (size_t i = 0; i < n; ++i) {
    int e = std::abs(int(a[i]) - int(b[i]));
    d.max = std::max(d.max, e);
    sum += e;
  }
  d.mean = n ? double(sum) / double(n) : 0.0;
  return d;
}

// Packed copy of a view.
inline Image to_image(const ImageView& v) {
  Image im(v.w, v.h);
  for (int y = 0; y < v.h; ++y) std::memcpy(im.row(y), v.row(y), size_t(v.w) * 3);
  return im;
}

}  // namespace mo::data::testing
