// fuzz_image_decode.cpp: libFuzzer target for the image decoders (data/image_decode.h, data/jpeg.h): the
// format sniffing, libpng's error longjmp, libwebp's status codes and the pixel limit checked from the
// header. A rejection must come with a message; an accepted PNG or WebP must have the size its header
// declares. The pixel limit is small so that each input decodes in milliseconds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "data/image_decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mo::data;
  static JpegDecoder jpeg;
  jpeg.set_max_pixels(1 << 20);
  Image im;
  std::string err;
  const bool ok = decode_image(data, size, jpeg, im, err);
  if (!ok && err.empty()) std::abort();
  if (ok && static_cast<int64_t>(im.w()) * im.h() > (1 << 20)) std::abort();
  int w = 0, h = 0;
  const ImageFormat f = sniff_image_format(data, size);
  if (ok && f != ImageFormat::jpeg && (!image_frame_size(data, size, w, h) || w != im.w() || h != im.h())) std::abort();
  return 0;
}
