// crafted_files.h: checkpoint files made byte by byte for the hostile-input tests (tests/nn/io and the
// program tests in tests/tools): torch.save archives whose tensor views (offset, size, stride, storage
// size) are whatever the test says, raw float records, and safetensors files with a given header.
#pragma once
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "nn/io/zip_writer.h"

namespace mo::io_test {

using mo::nn::io::ZipWriter;

inline constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// One tensor of a crafted torch.save file: a view (offset, size, stride) over storage record `key`.
struct View {
  std::string name, key = "0", storage = "FloatStorage";
  int64_t storage_numel = 4, offset = 0;
  std::vector<int64_t> size = {4}, stride = {1};
};

// Protocol-2 pickle of an OrderedDict of _rebuild_tensor_v2 calls, as torch.save writes it.
struct Pickler {
  std::vector<uint8_t> b = {0x80, 2};
  void op(char c) { b.push_back(static_cast<uint8_t>(c)); }
  void global(const std::string& m, const std::string& n) {
    op('c');
    for (char c : m + "\n" + n + "\n") op(c);
  }
  void str(const std::string& s) {
    op('X');
    for (int k = 0; k < 4; ++k) b.push_back(static_cast<uint8_t>(s.size() >> (8 * k)));
    for (char c : s) op(c);
  }
  void integer(int64_t v) {  // LONG1, 8 bytes two's complement
    b.push_back(0x8a);
    b.push_back(8);
    for (int k = 0; k < 8; ++k) b.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * k)));
  }
  void tuple(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    op('t');
  }
};

inline std::vector<uint8_t> state_dict_pickle(const std::vector<View>& views) {
  Pickler p;
  p.global("collections", "OrderedDict");
  p.op(')');
  p.op('R');
  p.op('(');
  for (const View& v : views) {
    p.str(v.name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.op('(');
    p.op('(');
    p.str("storage");
    p.global("torch", v.storage);
    p.str(v.key);
    p.str("cpu");
    p.integer(v.storage_numel);
    p.op('t');
    p.op('Q');
    p.integer(v.offset);
    p.tuple(v.size);
    p.tuple(v.stride);
    p.b.push_back(0x89);
    p.global("collections", "OrderedDict");
    p.op(')');
    p.op('R');
    p.op('t');
    p.op('R');
  }
  p.op('u');
  p.op('.');
  return p.b;
}

inline std::vector<uint8_t> zip_of(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& files) {
  std::ostringstream os;
  ZipWriter z(os, "crafted.pth");
  for (const auto& [n, d] : files) z.add(n, d);
  z.finish();
  const std::string s = os.str();
  return {s.begin(), s.end()};
}

// A torch.save file of `views` over records `records` (key -> bytes).
inline std::vector<uint8_t> crafted_pth(const std::vector<View>& views,
                                 const std::vector<std::pair<std::string, std::vector<uint8_t>>>& records) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> files = {{"archive/data.pkl", state_dict_pickle(views)}};
  for (const auto& [k, d] : records) files.emplace_back("archive/data/" + k, d);
  return zip_of(files);
}

inline std::vector<uint8_t> floats(size_t n, float start = 0) {
  std::vector<uint8_t> b(n * 4);
  for (size_t i = 0; i < n; ++i) {
    float f = start + static_cast<float>(i);
    std::memcpy(b.data() + 4 * i, &f, 4);
  }
  return b;
}

inline std::vector<uint8_t> safetensors_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> b(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  std::copy(header.begin(), header.end(), b.begin() + 8);
  return b;
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

}  // namespace mo::io_test
