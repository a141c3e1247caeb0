// byte_reader.h: a bounds-checked little-endian cursor over an immutable byte span. Every read checks
// the remaining length first and throws mo::Error naming the source file and the offset, so the zip,
// pickle and safetensors parsers never touch memory outside the input.
// checked_add / checked_mul are the one place where sizes, counts, offsets and strides read from a file
// are combined: every such sum or product in nn/io goes through them, so a value that would wrap past
// 2^64 (or 2^63 for signed ones) is an error naming the file and key instead of a small, wrong size.
#pragma once
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "autograd/check.h"

namespace mo::nn::io {

using Bytes = std::span<const uint8_t>;

// a + b and a * b, or an error "<what>: <quantity> overflows" when the exact result does not fit.
template <typename T>
T checked_add(T a, T b, std::string_view what, std::string_view quantity = "size") {
  T r;
  MO_CHECK(!__builtin_add_overflow(a, b, &r), "{}: {} overflows ({} + {})", what, quantity, a, b);
  return r;
}
template <typename T>
T checked_mul(T a, T b, std::string_view what, std::string_view quantity = "size") {
  T r;
  MO_CHECK(!__builtin_mul_overflow(a, b, &r), "{}: {} overflows ({} * {})", what, quantity, a, b);
  return r;
}

class ByteReader {
 public:
  ByteReader(Bytes data, std::string_view what) : data_(data), what_(what) {}

  size_t pos() const { return pos_; }
  size_t size() const { return data_.size(); }
  size_t remaining() const { return data_.size() - pos_; }
  bool done() const { return pos_ >= data_.size(); }
  void seek(uint64_t p) {
    MO_CHECK(p <= data_.size(), "{}: offset {} is past the end ({} bytes)", what_, p, data_.size());
    pos_ = static_cast<size_t>(p);
  }
  void need(uint64_t n) const {
    MO_CHECK(n <= remaining(), "{}: truncated: need {} bytes at offset {}, only {} left", what_, n, pos_, remaining());
  }
  Bytes take(uint64_t n) {
    need(n);
    Bytes out = data_.subspan(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return out;
  }
  std::string_view take_str(uint64_t n) {
    Bytes b = take(n);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
  // Bytes up to (not including) the next '\n', which is consumed.
  std::string_view line() {
    size_t start = pos_;
    while (pos_ < data_.size() && data_[pos_] != '\n') ++pos_;
    MO_CHECK(pos_ < data_.size(), "{}: truncated: no newline after offset {}", what_, start);
    ++pos_;
    return {reinterpret_cast<const char*>(data_.data() + start), pos_ - 1 - start};
  }
  uint8_t u8() { return take(1)[0]; }
  uint16_t u16() { return static_cast<uint16_t>(le(2)); }
  uint32_t u32() { return static_cast<uint32_t>(le(4)); }
  uint64_t u64() { return le(8); }
  int32_t i32() { return static_cast<int32_t>(u32()); }
  double f64_be() {  // pickle BINFLOAT is big-endian
    Bytes b = take(8);
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u = (u << 8) | b[i];
    double d;
    std::memcpy(&d, &u, 8);
    return d;
  }
  const std::string& what() const { return what_; }

 private:
  uint64_t le(int n) {
    Bytes b = take(n);
    uint64_t u = 0;
    for (int i = n - 1; i >= 0; --i) u = (u << 8) | b[i];
    return u;
  }
  Bytes data_;
  size_t pos_ = 0;
  std::string what_;
};

}  // namespace mo::nn::io
