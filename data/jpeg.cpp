// jpeg.cpp: libjpeg-turbo decoding of a window at a DCT scale, and encoding. See jpeg.h.
// libjpeg reports fatal errors through error_exit, which must not return: ours longjmps back to the
// setjmp in the calling method. Only trivially destructible locals live between a setjmp and the
// libjpeg calls it guards, so the jump skips no destructor.
#include "data/jpeg.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <thread>

// clang-format off
#include <jpeglib.h>
#include <jerror.h>
// clang-format on

#include "autograd/check.h"
#include "data/image_decode.h"

namespace mo::data {
namespace {

struct ErrorMgr {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char msg[JMSG_LENGTH_MAX];
  int scans = 0;  // SOS markers read since open()
};

// Each scan of a progressive JPEG is a pass over the whole image: a small file with thousands of scans
// costs minutes of CPU. Real encoders write at most a few dozen; libjpeg-turbo suggests 500 as a limit.
constexpr int kMaxScans = 500;

void on_error_exit(j_common_ptr c) {
  auto* e = reinterpret_cast<ErrorMgr*>(c->err);
  (*c->err->format_message)(c, e->msg);
  std::longjmp(e->jump, 1);
}

// Warnings (level -1) are counted and ignored, except a premature end of file: that image is truncated.
// Trace messages (level >= 0) count the scans.
void on_emit_message(j_common_ptr c, int level) {
  auto* e = reinterpret_cast<ErrorMgr*>(c->err);
  if (level >= 0) {
    if (c->err->msg_code == JTRC_SOS && ++e->scans > kMaxScans) {
      std::snprintf(e->msg, sizeof(e->msg), "more than %d scans (a progressive JPEG that would cost minutes)", kMaxScans);
      std::longjmp(e->jump, 1);
    }
    return;
  }
  c->err->num_warnings++;
  if (c->err->msg_code == JWRN_JPEG_EOF) {
    std::snprintf(e->msg, sizeof(e->msg), "truncated file (premature end of JPEG data)");
    std::longjmp(e->jump, 1);
  }
}

void on_output_message(j_common_ptr) {}

void install(ErrorMgr& e, jpeg_error_mgr*& slot) {
  slot = jpeg_std_error(&e.pub);
  e.pub.error_exit = on_error_exit;
  e.pub.emit_message = on_emit_message;
  e.pub.output_message = on_output_message;
  e.msg[0] = 0;
}

// PIL's CMYK -> RGB (Convert.c cmyk2rgb): r = (255 - k) - c * (255 - k) / 255 with its rounding.
inline uint8_t cmyk_channel(int c, int nk) {
  int t = c * nk + 128;
  int v = nk - (((t >> 8) + t) >> 8);
  return static_cast<uint8_t>(v < 0 ? 0 : v);
}

// A complete JPEG ends with EOI (FF D9), possibly followed by some padding; without one the file is
// probably cut short, and the decoder reads it to the end to find out.
bool has_eoi_near_end(const uint8_t* d, size_t n) {
  size_t lo = n > 4096 ? n - 4096 : 0;
  for (size_t i = n - 1; i > lo; --i)
    if (d[i] == 0xD9 && d[i - 1] == 0xFF) return true;
  return false;
}

}  // namespace

struct JpegDecoder::Impl {
  jpeg_decompress_struct cinfo;
  ErrorMgr err;
  bool has_eoi = true;
  bool cmyk = false, inverted = false;
  std::vector<uint8_t> rows;    // the decoded window, (rows, cw, 3)
  std::vector<uint8_t> cmyk_row;

  Impl() {
    install(err, cinfo.err);
    if (setjmp(err.jump)) MO_FAIL("JpegDecoder: libjpeg could not start: {}", err.msg);
    jpeg_create_decompress(&cinfo);
  }
  ~Impl() { jpeg_destroy_decompress(&cinfo); }
  // A new libjpeg object for each file (microseconds): the object keeps the Huffman and quantisation
  // tables of the images it has read (JPEG's abbreviated datastreams), so a file lacking some would
  // decode with another file's, accepted or not, and with pixels that depend on what the worker read
  // before it. Fresh, such a file gets libjpeg's defaults (Motion-JPEG's Huffman tables) or its error.
  void renew() {
    jpeg_destroy_decompress(&cinfo);
    install(err, cinfo.err);
    jpeg_create_decompress(&cinfo);
  }
};

JpegDecoder::JpegDecoder() : impl_(std::make_unique<Impl>()) {}
JpegDecoder::~JpegDecoder() = default;

bool JpegDecoder::open(const uint8_t* data, size_t size) {
  error_.clear();
  width_ = height_ = 0;
  gpu_decodable_ = false;
  Impl& m = *impl_;
  jpeg_abort_decompress(&m.cinfo);
  m.err.scans = 0;
  if (size == 0) {
    error_ = "empty file (0 bytes)";
    return false;
  }
  if (size < 4 || data[0] != 0xFF || data[1] != 0xD8) {
    error_ = "not a JPEG file (no SOI marker)";
    return false;
  }
  if (setjmp(m.err.jump)) {
    error_ = m.err.msg;
    jpeg_abort_decompress(&m.cinfo);
    return false;
  }
  m.renew();
  jpeg_mem_src(&m.cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&m.cinfo, TRUE);
  int64_t w = m.cinfo.image_width, h = m.cinfo.image_height;
  if (w <= 0 || h <= 0 || w * h > max_pixels_ || m.cinfo.num_components > 4) {
    error_ = fmt::format("absurd image header: {}x{} pixels, {} components (limit {} pixels)", w, h,
                         m.cinfo.num_components, max_pixels_);
    jpeg_abort_decompress(&m.cinfo);
    return false;
  }
  m.cmyk = m.cinfo.jpeg_color_space == JCS_CMYK || m.cinfo.jpeg_color_space == JCS_YCCK;
  m.inverted = m.cmyk && m.cinfo.saw_Adobe_marker;
  m.has_eoi = has_eoi_near_end(data, size);
  const jpeg_decompress_struct& c = m.cinfo;
  // and its first scan holds every component and the file defines the tables they use (the object is
  // fresh: any table it has is this file's), so that the GPU decoder cannot fill them in another way
  // than libjpeg does. The table numbers come from the file and are not yet checked: 0-15, arrays of 4.
  bool tables = c.comps_in_scan == c.num_components;
  for (int k = 0; tables && k < c.comps_in_scan; ++k) {
    const jpeg_component_info& ci = *c.cur_comp_info[k];
    const int q = ci.quant_tbl_no, dc = ci.dc_tbl_no, ac = ci.ac_tbl_no;
    tables = q >= 0 && q < NUM_QUANT_TBLS && c.quant_tbl_ptrs[q] && dc >= 0 && dc < NUM_HUFF_TBLS &&
             c.dc_huff_tbl_ptrs[dc] && ac >= 0 && ac < NUM_HUFF_TBLS && c.ac_huff_tbl_ptrs[ac];
  }
  gpu_decodable_ = !c.progressive_mode && !c.arith_code && c.data_precision == 8 && c.num_components == 3 &&
                   c.jpeg_color_space == JCS_YCbCr && m.has_eoi && tables;
  width_ = static_cast<int>(w);
  height_ = static_cast<int>(h);
  return true;
}

bool JpegDecoder::decode(int x, int y, int w, int h, int min_w, int min_h, DecodedWindow& out) {
  MO_CHECK(width_ > 0, "JpegDecoder::decode: no image is open");
  MO_CHECK(x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= width_ && y + h <= height_,
           "JpegDecoder::decode: window ({}, {}, {}x{}) outside the {}x{} image", x, y, w, h, width_, height_);
  Impl& m = *impl_;
  jpeg_decompress_struct& c = m.cinfo;
  int d = 1;
  if (min_w > 0 && min_h > 0)
    for (int cand : {8, 4, 2})
      if (w >= min_w * cand && h >= min_h * cand) {
        d = cand;
        break;
      }
  if (setjmp(m.err.jump)) {
    error_ = m.err.msg;
    jpeg_abort_decompress(&c);
    return false;
  }
  c.scale_num = 1;
  c.scale_denom = static_cast<unsigned>(d);
  c.dct_method = JDCT_ISLOW;  // what PIL uses: full-scale decodes are bit-identical to PIL's
  c.do_fancy_upsampling = TRUE;
  c.out_color_space = m.cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&c);
  const int ow = static_cast<int>(c.output_width), oh = static_cast<int>(c.output_height);
  // The window in scaled pixels, and the whole pixels that cover it.
  const double fx0 = double(x) / d, fy0 = double(y) / d, fx1 = double(x + w) / d, fy1 = double(y + h) / d;
  const int px0 = static_cast<int>(std::floor(fx0)), py0 = static_cast<int>(std::floor(fy0));
  const int px1 = std::min(ow, static_cast<int>(std::ceil(fx1))), py1 = std::min(oh, static_cast<int>(std::ceil(fy1)));
  // One column of margin each side: chroma upsampling at a crop edge that falls on an iMCU boundary
  // would otherwise lack its neighbour and differ from a full decode.
  const int mx0 = std::max(0, px0 - 1), mx1 = std::min(ow, px1 + 1);
  JDIMENSION cx = static_cast<JDIMENSION>(mx0), cw = static_cast<JDIMENSION>(mx1 - mx0);
  if (cx > 0 || static_cast<int>(cw) < ow) jpeg_crop_scanline(&c, &cx, &cw);  // cx aligned down, cw widened
  else cw = static_cast<JDIMENSION>(ow);
  if (py0 > 0) jpeg_skip_scanlines(&c, static_cast<JDIMENSION>(py0));
  const size_t stride = static_cast<size_t>(cw) * 3;
  m.rows.resize(stride * static_cast<size_t>(py1 - py0) + 16);  // + slack for vector loads (resample.cpp)
  if (m.cmyk) m.cmyk_row.resize(static_cast<size_t>(cw) * 4);
  while (static_cast<int>(c.output_scanline) < py1) {
    uint8_t* dst = m.rows.data() + (c.output_scanline - py0) * stride;
    if (!m.cmyk) {
      JSAMPROW r[4];
      int n = std::min(4, py1 - static_cast<int>(c.output_scanline));
      for (int i = 0; i < n; ++i) r[i] = dst + i * stride;
      jpeg_read_scanlines(&c, r, static_cast<JDIMENSION>(n));
      continue;
    }
    JSAMPROW r = m.cmyk_row.data();
    jpeg_read_scanlines(&c, &r, 1);
    const uint8_t* s = m.cmyk_row.data();
    for (JDIMENSION i = 0; i < cw; ++i, s += 4, dst += 3) {
      int cc = s[0], mm = s[1], yy = s[2], kk = s[3];
      if (m.inverted) cc = 255 - cc, mm = 255 - mm, yy = 255 - yy, kk = 255 - kk;
      int nk = 255 - kk;
      dst[0] = cmyk_channel(cc, nk), dst[1] = cmyk_channel(mm, nk), dst[2] = cmyk_channel(yy, nk);
    }
  }
  // No EOI near the end: read on to the end of the data so that a truncated file is caught.
  if (!m.has_eoi && c.output_scanline < c.output_height) jpeg_skip_scanlines(&c, c.output_height - c.output_scanline);
  jpeg_abort_decompress(&c);

  out.view = {m.rows.data() + static_cast<size_t>(px0 - static_cast<int>(cx)) * 3, px1 - px0, py1 - py0,
              static_cast<int64_t>(stride)};
  out.box[0] = static_cast<float>(fx0 - px0);
  out.box[1] = static_cast<float>(fy0 - py0);
  out.box[2] = static_cast<float>(fx1 - px0);
  out.box[3] = static_cast<float>(fy1 - py0);
  out.scale_denom = d;
  return true;
}

bool JpegDecoder::decode_full(Image& out) {
  DecodedWindow win;
  if (!decode(0, 0, width_, height_, 0, 0, win)) return false;
  out.resize(win.view.w, win.view.h);
  for (int r = 0; r < win.view.h; ++r) std::memcpy(out.row(r), win.view.row(r), static_cast<size_t>(win.view.w) * 3);
  return true;
}

std::string libjpeg_turbo_version() {
  const int v = LIBJPEG_TURBO_VERSION_NUMBER;  // libjpeg-turbo's jconfig.h, e.g. 2001005
  return fmt::format("{}.{}.{}", v / 1000000, v / 1000 % 1000, v % 1000);
}

std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int w, int h, int channels, int quality) {
  MO_CHECK(channels == 1 || channels == 3 || channels == 4, "encode_jpeg: {} channels (want 1, 3 or 4)", channels);
  MO_CHECK(w > 0 && h > 0, "encode_jpeg: empty image {}x{}", w, h);
  jpeg_compress_struct c;
  ErrorMgr err;
  unsigned char* mem = nullptr;
  unsigned long mem_size = 0;
  install(err, c.err);
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&c);
    std::free(mem);
    MO_FAIL("encode_jpeg: libjpeg failed: {}", err.msg);
  }
  jpeg_create_compress(&c);
  jpeg_mem_dest(&c, &mem, &mem_size);
  c.image_width = static_cast<JDIMENSION>(w);
  c.image_height = static_cast<JDIMENSION>(h);
  c.input_components = channels;
  c.in_color_space = channels == 1 ? JCS_GRAYSCALE : channels == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  const size_t stride = static_cast<size_t>(w) * channels;
  while (c.next_scanline < c.image_height) {
    JSAMPROW r = const_cast<uint8_t*>(pixels) + c.next_scanline * stride;
    jpeg_write_scanlines(&c, &r, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::vector<uint8_t> bytes(mem, mem + mem_size);
  std::free(mem);
  return bytes;
}

namespace {

// Opens `path` for reading if it is a regular file of at most max_bytes; else -1 with `err` set. O_NONBLOCK
// makes the open of a FIFO (or a device) return at once instead of waiting for a writer; the type is then
// checked on the opened descriptor itself, so the file cannot be swapped between the check and the read.
int open_regular(const std::string& path, int64_t max_bytes, size_t& size, std::string& err) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  struct stat st;
  if (fd < 0) {  // a socket, for one, cannot be opened at all: say what it is
    const int e = errno;
    err = ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)
              ? fmt::format("{}, not a regular file", file_kind(st.st_mode))
              : fmt::format("cannot open: {}", std::strerror(e));
    return -1;
  }
  if (::fstat(fd, &st) != 0) {
    err = fmt::format("cannot stat: {}", std::strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    err = fmt::format("{}, not a regular file", file_kind(st.st_mode));
  } else if (max_bytes > 0 && st.st_size > max_bytes) {
    err = fmt::format("{} bytes, over the limit of {} for one file (data.max_file_mb)", st.st_size,
                      max_bytes % (1 << 20) ? fmt::format("{} bytes", max_bytes) : fmt::format("{} MiB", max_bytes >> 20));
  } else if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
    err = fmt::format("fcntl failed: {}", std::strerror(errno));
  } else {
    size = static_cast<size_t>(st.st_size);
    return fd;
  }
  ::close(fd);
  return -1;
}

bool read_exact(int fd, uint8_t* dst, size_t n, std::string& err) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, dst + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      err = r < 0 ? fmt::format("read failed: {}", std::strerror(errno)) : "file shrank while reading";
      return false;
    }
    got += static_cast<size_t>(r);
  }
  return true;
}

}  // namespace

bool read_file(const std::string& path, std::vector<uint8_t>& out, std::string& err, int64_t max_bytes) {
  size_t size = 0;
  const int fd = open_regular(path, max_bytes, size, err);
  if (fd < 0) return false;
  out.resize(size);
  const bool ok = read_exact(fd, out.data(), size, err);
  ::close(fd);
  return ok;
}

bool jpeg_frame_size(const uint8_t* d, size_t n, int& width, int& height) {
  if (n < 4 || d[0] != 0xFF || d[1] != 0xD8) return false;
  size_t i = 2;
  while (i + 4 <= n) {
    if (d[i] != 0xFF) return false;  // not at a marker: libjpeg will say what is wrong
    const uint8_t m = d[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {  // TEM, RSTn, SOI: no length
      i += 2;
      continue;
    }
    if (m == 0xD9 || m == 0xDA) return false;  // EOI or SOS before any frame header
    const size_t len = size_t(d[i + 2]) << 8 | d[i + 3];
    if (len < 2) return false;
    if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {  // SOFn (not DHT, JPG, DAC)
      if (i + 9 > n) return false;
      height = int(d[i + 5]) << 8 | d[i + 6];
      width = int(d[i + 7]) << 8 | d[i + 8];
      return true;
    }
    i += 2 + len;
  }
  return false;
}

bool read_image_file(const std::string& path, std::vector<uint8_t>& out, std::string& err, const ImageLimits& limits) {
  constexpr size_t kHead = 64 << 10;  // holds the frame header of nearly every JPEG (PNG, WebP: the first bytes)
  size_t size = 0;
  const int fd = open_regular(path, limits.max_bytes, size, err);
  if (fd < 0) return false;
  const size_t head = std::min(size, kHead);
  out.resize(head);
  bool ok = read_exact(fd, out.data(), head, err);
  int w = 0, h = 0;
  if (ok && limits.max_pixels > 0 && image_frame_size(out.data(), head, w, h) && int64_t(w) * h > limits.max_pixels) {
    err = fmt::format("the {} header declares {}x{} pixels, over the limit of {} megapixels (data.max_megapixels)",
                      image_format_name(sniff_image_format(out.data(), head)), w, h, limits.max_pixels / 1000000);
    ok = false;
  }
  if (ok && size > head) {
    out.resize(size);
    ok = read_exact(fd, out.data() + head, size - head, err);
  }
  ::close(fd);
  return ok;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::string tmp = fmt::format("{}.tmp{}.{}", path, ::getpid(), std::hash<std::thread::id>{}(std::this_thread::get_id()));
  FILE* f = std::fopen(tmp.c_str(), "wb");
  MO_CHECK(f != nullptr, "cannot write {}: {}", tmp, std::strerror(errno));
  size_t n = bytes.empty() ? 0 : std::fwrite(bytes.data(), 1, bytes.size(), f);
  bool ok = n == bytes.size() && std::fclose(f) == 0;
  MO_CHECK(ok, "cannot write {}: {}", tmp, std::strerror(errno));
  MO_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename {} to {}: {}", tmp, path, std::strerror(errno));
}

}  // namespace mo::data
