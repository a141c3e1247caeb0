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
#include "data/resample.h"

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

// Writes a small ImageFolder split: root/split/class_<c>/img_<i>.jpg, num_classes x per_class JPEGs of
// w x h cut from the test photographs (different crops, so that every file differs).
inline void make_dataset(const std::string& root, const std::string& split, int num_classes, int per_class, int w = 96,
                         int h = 72) {
  static std::vector<Image> photos = [] {
    std::vector<Image> v;
    for (const auto& p : test_photos()) {
      auto b = slurp(p);
      JpegDecoder d;
      Image im;
      EXPECT_TRUE(d.open(b.data(), b.size()) && d.decode_full(im));
      v.push_back(im);
    }
    return v;
  }();
  int k = 0;
  for (int c = 0; c < num_classes; ++c) {
    fs::path dir = fs::path(root) / split / ("class_" + std::to_string(c));
    fs::create_directories(dir);
    for (int i = 0; i < per_class; ++i, ++k) {
      const Image& src = photos[k % photos.size()];
      const float f = 0.5f + 0.05f * float(k % 10);
      const float bw = src.w() * f, bh = src.h() * f;
      const float x0 = (src.w() - bw) * float(k % 7) / 6.0f, y0 = (src.h() - bh) * float(k % 5) / 4.0f;
      const float box[4] = {x0, y0, x0 + bw, y0 + bh};
      Image out(w, h);
      resample(src.view(), box, Interp::bilinear, out.view());
      write_file((dir / ("img_" + std::to_string(i) + ".jpg")).string(), encode_jpeg(out.data(), w, h, 3, 85));
    }
  }
}

}  // namespace mo::data::testing
