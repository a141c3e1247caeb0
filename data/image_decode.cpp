// image_decode.cpp: format sniffing, PNG (libpng) and WebP (libwebp) decoding to PIL's RGB. See
// image_decode.h for the conversion rules.
// libpng reports fatal errors through its error callback, which must not return: ours longjmps back to
// the setjmp in read_png(). All state that changes after the setjmp lives in the PngReader (reached
// through a reference), and no local with a destructor is created between the setjmp and the libpng
// calls, so the jump skips no destructor and loses no update.
#include "data/image_decode.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#ifdef MO_WITH_PNG_WEBP
#include <png.h>
#include <webp/decode.h>
#include <webp/demux.h>
#endif

#include "autograd/check.h"

namespace mo::data {
namespace {

constexpr uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

std::string too_many_pixels(const char* format, int64_t w, int64_t h, int64_t max_pixels) {
  return fmt::format("the {} header declares {}x{} pixels, over the limit of {} megapixels (data.max_megapixels)",
                     format, w, h, max_pixels / 1000000);
}

#ifdef MO_WITH_PNG_WEBP
struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  char msg[256] = {0};
  std::vector<uint8_t> rows;  // the decoded rows, after libpng's transforms
  std::vector<png_bytep> row_ptrs;
  ~PngReader() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

void on_png_error(png_structp p, png_const_charp m) {
  auto* r = static_cast<PngReader*>(png_get_error_ptr(p));
  std::snprintf(r->msg, sizeof(r->msg), "%s", m);
  png_longjmp(p, 1);
}

void on_png_warning(png_structp, png_const_charp) {}  // ancillary-chunk trouble: PIL ignores it too

void on_png_read(png_structp p, png_bytep out, size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(p));
  if (r->size - r->pos < n) png_error(p, "truncated file (the data ends inside a chunk)");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

// libpng decodes into r.rows: one byte per sample (palette indices and 1/2/4-bit gray unpacked, values
// kept), 16-bit samples stripped to their high byte except 16-bit gray. Returns the color type, bit depth
// and the size through the pointers; false with r.msg set.
bool read_png(PngReader& r, int64_t max_pixels, png_uint_32* w, png_uint_32* h, int* depth, int* type) {
  if (setjmp(png_jmpbuf(r.png))) return false;
  png_set_read_fn(r.png, &r, on_png_read);
  png_read_info(r.png, r.info);
  int interlace = 0;
  png_get_IHDR(r.png, r.info, w, h, depth, type, &interlace, nullptr, nullptr);
  if (int64_t(*w) * int64_t(*h) > max_pixels) {
    std::snprintf(r.msg, sizeof(r.msg), "%s", too_many_pixels("PNG", *w, *h, max_pixels).c_str());
    return false;
  }
  if (*depth < 8) png_set_packing(r.png);
  if (*depth == 16 && *type != PNG_COLOR_TYPE_GRAY) png_set_strip_16(r.png);
  png_set_interlace_handling(r.png);
  png_read_update_info(r.png, r.info);
  const size_t stride = png_get_rowbytes(r.png, r.info);
  r.rows.resize(stride * *h);
  r.row_ptrs.resize(*h);
  for (png_uint_32 y = 0; y < *h; ++y) r.row_ptrs[y] = r.rows.data() + y * stride;
  png_read_image(r.png, r.row_ptrs.data());
  // No png_read_end: a file cut after its image data (no IEND) still holds every pixel, and PIL reads it.
  return true;
}

const char* webp_status(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt data (bitstream error)";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "an unsupported feature";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "truncated file (not enough data)";
    default: return "decoding failed";
  }
}

#endif  // MO_WITH_PNG_WEBP

}  // namespace

ImageFormat sniff_image_format(const uint8_t* d, size_t n) {
  if (n >= 2 && d[0] == 0xFF && d[1] == 0xD8) return ImageFormat::jpeg;
  if (n >= 8 && std::memcmp(d, kPngSignature, 8) == 0) return ImageFormat::png;
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) return ImageFormat::webp;
  return ImageFormat::unknown;
}

const char* image_format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::jpeg: return "JPEG";
    case ImageFormat::png: return "PNG";
    case ImageFormat::webp: return "WebP";
    default: return "unknown";
  }
}

bool image_frame_size(const uint8_t* d, size_t n, int& width, int& height) {
  switch (sniff_image_format(d, n)) {
    case ImageFormat::jpeg: return jpeg_frame_size(d, n, width, height);
    case ImageFormat::png:  // chunks after the signature: length (4), type (4), data, CRC (4); IHDR data
      // starts with width (4) and height (4). IHDR comes first, but libpng and PIL skip unknown chunks before it.
      for (size_t at = 8; at + 16 <= n; at += 12 + size_t(be32(d + at))) {
        if (std::memcmp(d + at + 4, "IHDR", 4) != 0) {
          if (be32(d + at) > n) return false;
          continue;
        }
        if (be32(d + at + 8) > 0x7fffffff || be32(d + at + 12) > 0x7fffffff) return false;  // libpng refuses these
        width = static_cast<int>(be32(d + at + 8));
        height = static_cast<int>(be32(d + at + 12));
        return true;
      }
      return false;
#ifdef MO_WITH_PNG_WEBP
    case ImageFormat::webp: return WebPGetInfo(d, n, &width, &height) != 0;
#endif
    default: return false;
  }
}

std::string unknown_format_error(const uint8_t* d, size_t n) {
  if (n == 0) return "empty file (0 bytes)";
  std::string head;
  for (size_t i = 0; i < std::min<size_t>(n, 4); ++i) head += fmt::format("{}{:02x}", i ? " " : "", d[i]);
  return fmt::format("not a JPEG, PNG or WebP file (it starts with the bytes {})", head);
}

#ifdef MO_WITH_PNG_WEBP
bool decode_png(const uint8_t* d, size_t n, int64_t max_pixels, Image& out, std::string& err) {
  PngReader r;
  r.data = d;
  r.size = n;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, on_png_error, on_png_warning);
  if (r.png) r.info = png_create_info_struct(r.png);
  MO_CHECK(r.png && r.info, "decode_png: libpng could not start (out of memory)");
  png_uint_32 w = 0, h = 0;
  int depth = 0, type = 0;
  if (!read_png(r, max_pixels, &w, &h, &depth, &type)) {
    err = fmt::format("PNG: {}", r.msg);
    return false;
  }
  // The palette as PIL holds it: a grey ramp, then the PLTE entries over its start.
  uint8_t lut[256][3];
  for (int i = 0; i < 256; ++i) lut[i][0] = lut[i][1] = lut[i][2] = static_cast<uint8_t>(i);
  png_colorp plte = nullptr;
  int nplte = 0;
  if (type == PNG_COLOR_TYPE_PALETTE && png_get_PLTE(r.png, r.info, &plte, &nplte))
    for (int i = 0; i < std::min(nplte, 256); ++i) lut[i][0] = plte[i].red, lut[i][1] = plte[i].green, lut[i][2] = plte[i].blue;
  const int gray_scale = depth < 8 ? 255 / ((1 << depth) - 1) : 1;  // 1/2/4-bit gray: x255, x85, x17
  const size_t stride = r.rows.size() / h;
  out.resize(static_cast<int>(w), static_cast<int>(h));
  for (png_uint_32 y = 0; y < h; ++y) {
    const uint8_t* s = r.rows.data() + y * stride;
    uint8_t* o = out.row(static_cast<int>(y));
    for (png_uint_32 x = 0; x < w; ++x, o += 3) {
      switch (type) {
        case PNG_COLOR_TYPE_PALETTE: std::memcpy(o, lut[s[x]], 3); break;
        case PNG_COLOR_TYPE_GRAY:
          if (depth == 16) o[0] = static_cast<uint8_t>(std::min(255u, unsigned(s[2 * x]) << 8 | s[2 * x + 1]));
          else o[0] = static_cast<uint8_t>(s[x] * gray_scale);
          o[1] = o[2] = o[0];
          break;
        case PNG_COLOR_TYPE_GRAY_ALPHA: o[0] = o[1] = o[2] = s[2 * x]; break;
        case PNG_COLOR_TYPE_RGB: std::memcpy(o, s + 3 * x, 3); break;
        default: std::memcpy(o, s + 4 * x, 3); break;  // RGBA: alpha dropped
      }
    }
  }
  return true;
}

bool decode_webp(const uint8_t* d, size_t n, int64_t max_pixels, Image& out, std::string& err) {
  WebPDecoderConfig cfg;
  MO_CHECK(WebPInitDecoderConfig(&cfg), "decode_webp: libwebp version mismatch");
  VP8StatusCode s = WebPGetFeatures(d, n, &cfg.input);
  if (s != VP8_STATUS_OK) {
    err = fmt::format("WebP: {}", webp_status(s));
    return false;
  }
  const int64_t w = cfg.input.width, h = cfg.input.height;  // the canvas, for an animation
  if (w <= 0 || h <= 0 || w * h > max_pixels) {
    err = too_many_pixels("WebP", w, h, max_pixels);
    return false;
  }
  out.resize(static_cast<int>(w), static_cast<int>(h));
  if (cfg.input.has_animation) {  // the first frame on its canvas, as PIL's WebPAnimDecoder gives it
    WebPAnimDecoderOptions opt;
    MO_CHECK(WebPAnimDecoderOptionsInit(&opt), "decode_webp: libwebpdemux version mismatch");
    opt.color_mode = MODE_RGBA;
    const WebPData wd{d, n};
    std::unique_ptr<WebPAnimDecoder, void (*)(WebPAnimDecoder*)> dec(WebPAnimDecoderNew(&wd, &opt), WebPAnimDecoderDelete);
    uint8_t* rgba = nullptr;
    int timestamp = 0;
    WebPAnimInfo info;
    if (!dec || !WebPAnimDecoderGetInfo(dec.get(), &info) || int64_t(info.canvas_width) != w ||
        int64_t(info.canvas_height) != h || !WebPAnimDecoderGetNext(dec.get(), &rgba, &timestamp)) {
      err = "WebP: corrupt or truncated animation";
      return false;
    }
    for (int64_t i = 0; i < w * h; ++i) std::memcpy(out.data() + 3 * i, rgba + 4 * i, 3);  // alpha dropped
    return true;
  }
  cfg.output.colorspace = MODE_RGB;
  cfg.output.is_external_memory = 1;
  cfg.output.u.RGBA.rgba = out.data();
  cfg.output.u.RGBA.stride = static_cast<int>(w * 3);
  cfg.output.u.RGBA.size = out.bytes();
  s = WebPDecode(d, n, &cfg);
  WebPFreeDecBuffer(&cfg.output);  // external memory: frees nothing of ours
  if (s != VP8_STATUS_OK) {
    err = fmt::format("WebP: {}", webp_status(s));
    return false;
  }
  return true;
}

#else
// Built without libpng/libwebp (cmake/deps.cmake): the files are recognised and refused with the reason.
bool decode_png(const uint8_t*, size_t, int64_t, Image&, std::string& err) {
  err = "PNG: this build of mo reads no PNG files (libpng-dev was not found when it was built)";
  return false;
}
bool decode_webp(const uint8_t*, size_t, int64_t, Image&, std::string& err) {
  err = "WebP: this build of mo reads no WebP files (libwebp-dev was not found when it was built)";
  return false;
}
#endif  // MO_WITH_PNG_WEBP

bool png_webp_supported() {
#ifdef MO_WITH_PNG_WEBP
  return true;
#else
  return false;
#endif
}

bool decode_image(const uint8_t* d, size_t n, JpegDecoder& jpeg, Image& out, std::string& err) {
  switch (sniff_image_format(d, n)) {
    case ImageFormat::jpeg:
      if (jpeg.open(d, n) && jpeg.decode_full(out)) return true;
      err = jpeg.error();
      return false;
    case ImageFormat::png: return decode_png(d, n, jpeg.max_pixels(), out, err);
    case ImageFormat::webp: return decode_webp(d, n, jpeg.max_pixels(), out, err);
    default: err = unknown_format_error(d, n); return false;
  }
}

bool is_image_name(const std::string& name) {
  auto dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "webp";
}

}  // namespace mo::data
