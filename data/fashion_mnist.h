// fashion_mnist.h: turns the IDX files of Debian's dataset-fashion-mnist package
// (/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz) into the JPEG ImageFolder layout the loader reads:
// out/train/<class>/NNNNN.jpg (60,000) and out/val/<class>/NNNNN.jpg (10,000), ten classes with readable
// names, each 28x28 image upscaled (PIL-style bicubic) to `size` and written as an RGB or grayscale
// JPEG. Multithreaded; idempotent: a marker file records a completed run with its options, and a run
// with the same options returns at once (files are written through a rename, so none is ever partial).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mo::data {

extern const char* const kFashionMnistClasses[10];

struct IdxArray {
  std::vector<int> dims;
  std::vector<uint8_t> data;
};
// Reads an IDX file of unsigned bytes, gzip-compressed or not. Throws mo::Error naming the file.
IdxArray read_idx(const std::string& path);

struct PrepareOptions {
  std::string src = "/usr/share/datasets/fashion-mnist";
  std::string out;
  int size = 32;
  bool gray = false;
  int quality = 90;
  int threads = 0;  // 0: all cores
};

struct PrepareResult {
  int64_t train = 0, val = 0, written = 0;
  bool already_complete = false;
};

PrepareResult prepare_fashion_mnist(const PrepareOptions& opt);

}  // namespace mo::data
