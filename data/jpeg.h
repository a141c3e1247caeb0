// jpeg.h: JPEG decoding and encoding through libjpeg-turbo's libjpeg API (jpeglib.h).
// JpegDecoder is a per-thread handle: open() reads only the header; decode() then decodes just a window
// of the image (jpeg_crop_scanline / jpeg_skip_scanlines) at the largest DCT reduction (1/2, 1/4, 1/8)
// that keeps the window at least the size the caller needs. Grayscale and CMYK/YCCK files come out RGB
// (CMYK converted as PIL does, Adobe files inverted). libjpeg errors never exit(): they longjmp back and
// the call returns false with a message; a file that ends early ("Premature end of JPEG file") is an
// error too, not a grey-filled image; so is a progressive file of more than 500 scans (each is a pass
// over the whole image: a small file could cost minutes).
// Reading files is bounded too (hostile or careless input): read_file() takes regular files only (a named
// pipe, socket, device or folder is refused without blocking) up to a byte limit; read_image_file() also
// reads the JPEG header first and refuses a declared frame over a pixel limit before reading the rest.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/file_kind.h"
#include "data/image.h"

namespace mo::data {

// Defaults of the limits on one input image (recipe keys data.max_file_mb and data.max_megapixels). A
// decode at the pixel limit holds about 3 bytes a pixel (the window) per worker thread.
constexpr int64_t kDefaultMaxFileBytes = int64_t(64) << 20;  // 64 MiB
constexpr int64_t kDefaultMaxPixels = 64'000'000;             // e.g. 8000 x 8000

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
  int64_t max_pixels() const { return max_pixels_; }
  // Reads the header of a whole JPEG file held in memory (not copied: keep it alive until decode()).
  bool open(const uint8_t* data, size_t size);
  int width() const { return width_; }
  int height() const { return height_; }
  // The open file is one the GPU decoder (gpu_jpeg.h) may take: sequential Huffman (not progressive,
  // not arithmetic), 8-bit, 3-component YCbCr, with an EOI near the end (else the CPU finds out whether
  // it is truncated). Grayscale, CMYK/YCCK, RGB-coded and the rest are decoded on the CPU.
  bool gpu_decodable() const { return gpu_decodable_; }
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
  int64_t max_pixels_ = kDefaultMaxPixels;
  int width_ = 0, height_ = 0;
  bool gpu_decodable_ = false;
  std::string error_;
};

// Encodes packed pixels (channels 1 = grayscale, 3 = RGB, 4 = CMYK) as a baseline JPEG. Throws mo::Error.
std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int w, int h, int channels, int quality = 90);

// The libjpeg-turbo this was built against, "2.1.5" (benchmarks name it: its decode is half the CPU path).
std::string libjpeg_turbo_version();

// Whole-file read into `out` (reused). False with `err` set when the file cannot be opened or read, is not
// a regular file (say which kind it is), or holds more than max_bytes (refused before reading).
bool read_file(const std::string& path, std::vector<uint8_t>& out, std::string& err,
               int64_t max_bytes = kDefaultMaxFileBytes);

// What a stat() mode is, in words: mo::file_kind (autograd/file_kind.h), shared with nn/io.
using mo::file_kind;

struct ImageLimits {
  int64_t max_bytes = kDefaultMaxFileBytes;
  int64_t max_pixels = kDefaultMaxPixels;
};
// read_file for an image: the header at the start of the file (JPEG, PNG or WebP: image_decode.h) is
// read first, and a frame that declares more than max_pixels is refused before the rest is read (the
// decoders check again).
bool read_image_file(const std::string& path, std::vector<uint8_t>& out, std::string& err,
                     const ImageLimits& limits = {});
// The frame size declared by the SOF marker of the JPEG data d[0, n), found by walking the marker
// segments; false when d is not JPEG or the SOF lies beyond n.
bool jpeg_frame_size(const uint8_t* d, size_t n, int& width, int& height);
// Writes bytes to `path` (through a temporary file and rename, so a reader never sees half a file).
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace mo::data
