// jpeg.h: JPEG decoding and encoding through libjpeg-turbo's libjpeg API (jpeglib.h).
// JpegDecoder is a per-thread handle: open() reads only the header; decode() then decodes just a window
// of the image (jpeg_crop_scanline / jpeg_skip_scanlines) at the largest DCT reduction (1/2, 1/4, 1/8)
// that keeps the window at least the size the caller needs. Grayscale and CMYK/YCCK files come out RGB
// (CMYK converted as PIL does, Adobe files inverted). libjpeg errors never exit(): they longjmp back and
// the call returns false with a message; a file that ends early ("Premature end of JPEG file") is an
// error too, not a grey-filled image.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/image.h"

namespace mo::data {

// The decoded window: `view` points into the decoder's buffer (valid until the next decode); box is the
// requested window in view's pixel coordinates (x0, y0, x1, y1), fractional when the DCT scale cut it.
struct DecodedWindow {
  ImageView view;
  float box[4] = {0, 0, 0, 0};
  int scale_denom = 1;  // 1, 2, 4 or 8
};

class JpegDecoder {
 public:
  JpegDecoder();
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // Images with more pixels than this are refused (absurd or hostile headers).
  void set_max_pixels(int64_t n) { max_pixels_ = n; }
  // Reads the header of a whole JPEG file held in memory (not copied: keep it alive until decode()).
  bool open(const uint8_t* data, size_t size);
  int width() const { return width_; }
  int height() const { return height_; }
  // Decodes the window [x, x+w) x [y, y+h) of the full-size image. min_w/min_h: the size the window is
  // resampled to next; the DCT reduction is the largest that keeps the window at least that big
  // (0 = full scale). False on a corrupt or truncated file (see error()).
  bool decode(int x, int y, int w, int h, int min_w, int min_h, DecodedWindow& out);
  // The whole image at full scale, into an owned RGB image.
  bool decode_full(Image& out);
  const std::string& error() const { return error_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t max_pixels_ = int64_t(1) << 26;
  int width_ = 0, height_ = 0;
  std::string error_;
};

// Encodes packed pixels (channels 1 = grayscale, 3 = RGB, 4 = CMYK) as a baseline JPEG. Throws mo::Error.
std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int w, int h, int channels, int quality = 90);

// Whole-file read into `out` (reused). False with `err` set when the file cannot be read.
bool read_file(const std::string& path, std::vector<uint8_t>& out, std::string& err);
// Writes bytes to `path` (through a temporary file and rename, so a reader never sees half a file).
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace mo::data
