// image.h: the 8-bit RGB image that flows through the JPEG pipeline (decode -> resize -> RandAugment ->
// batch slot), plus a non-owning view for writing straight into a batch buffer. Pixels are interleaved
// RGB, rows packed (stride = 3 * w). Buffers grow but never shrink, so a per-thread Image is reused
// without reallocating.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>

namespace mo::data {

struct ImageView {  // (h, w, 3) uint8, rows `stride` bytes apart
  uint8_t* data = nullptr;
  int w = 0, h = 0;
  int64_t stride = 0;
  uint8_t* row(int y) const { return data + y * stride; }
};

class Image {
 public:
  Image() = default;
  Image(int w, int h) { resize(w, h); }
  Image(const Image& o) { *this = o; }
  Image& operator=(const Image& o) {
    if (this != &o) {
      resize(o.w_, o.h_);
      if (bytes()) std::memcpy(buf_.get(), o.buf_.get(), bytes());
    }
    return *this;
  }
  Image(Image&&) noexcept = default;
  Image& operator=(Image&&) noexcept = default;

  // Sets the size; keeps the allocation when it is big enough. Contents are unspecified.
  void resize(int w, int h) {
    size_t need = static_cast<size_t>(w) * h * 3;
    if (need > cap_) {
      buf_.reset(new uint8_t[need + kSlack]());
      cap_ = need;
    }
    w_ = w;
    h_ = h;
  }
  int w() const { return w_; }
  int h() const { return h_; }
  size_t bytes() const { return static_cast<size_t>(w_) * h_ * 3; }
  uint8_t* data() { return buf_.get(); }
  const uint8_t* data() const { return buf_.get(); }
  uint8_t* row(int y) { return buf_.get() + static_cast<size_t>(y) * w_ * 3; }
  const uint8_t* row(int y) const { return buf_.get() + static_cast<size_t>(y) * w_ * 3; }
  ImageView view() const { return {buf_.get(), w_, h_, static_cast<int64_t>(w_) * 3}; }  // read-only use when const
  void swap(Image& o) noexcept {
    std::swap(buf_, o.buf_);
    std::swap(cap_, o.cap_);
    std::swap(w_, o.w_);
    std::swap(h_, o.h_);
  }

 private:
  static constexpr size_t kSlack = 16;  // readable bytes past the last pixel (vector loads in resample)
  std::unique_ptr<uint8_t[]> buf_;
  size_t cap_ = 0;
  int w_ = 0, h_ = 0;
};

}  // namespace mo::data
