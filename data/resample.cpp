// resample.cpp: PIL-exact separable resampling (see resample.h). Coefficients follow Resample.c's
// precompute_coeffs / normalize_coeffs_8bpc; the passes keep PIL's order and rounding. Loops are plain
// integer multiply-adds over contiguous memory; the AVX2 passes give the same bytes.
#include "data/resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/cpu_isa.h"
#if MO_X86_SIMD
#include <immintrin.h>
#endif

#include "autograd/check.h"

namespace mo::data {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

double bicubic_filter(double x) {  // Keys cubic, a = -0.5
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // (xmin, count) per output pixel
  std::vector<int32_t> k;   // ksize weights per output pixel, fixed point
};

void precompute(int in_size, float in0, float in1, int out_size, Interp interp, Coeffs& c) {
  const double support0 = interp == Interp::bicubic ? 2.0 : 1.0;
  double scale = static_cast<double>(in1 - in0) / out_size;  // (in1 - in0) in float, as in PIL
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = support0 * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.assign(static_cast<size_t>(out_size) * 2, 0);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0, ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; ++x) {
      double f = x + xmin - center + 0.5;
      w[x] = interp == Interp::bicubic ? bicubic_filter(f * ss) : bilinear_filter(f * ss);
      ww += w[x];
    }
    int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? w[x] / ww : w[x];
      k[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                   : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = std::max(xmax, 0);
  }
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;  // arithmetic shift: floor
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// rows [y0, y1) of src -> tmp (y1 - y0, out_w, 3): the portable version.
void horizontal_scalar(const ImageView& src, int y0, int y1, const Coeffs& c, int out_w, bool flip, uint8_t* tmp,
                       int64_t tmp_stride) {
  const int ks = c.ksize;
  for (int y = y0; y < y1; ++y) {
    const uint8_t* in = src.row(y);
    uint8_t* out = tmp + (y - y0) * tmp_stride;
    for (int xx = 0; xx < out_w; ++xx) {
      const int xmin = c.bounds[xx * 2], n = c.bounds[xx * 2 + 1];
      const int32_t* k = &c.k[static_cast<size_t>(xx) * ks];
      const uint8_t* p = in + xmin * 3;
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int x = 0; x < n; ++x) {
        s0 += p[3 * x] * k[x];
        s1 += p[3 * x + 1] * k[x];
        s2 += p[3 * x + 2] * k[x];
      }
      uint8_t* o = out + (flip ? out_w - 1 - xx : xx) * 3;
      o[0] = clip8(s0), o[1] = clip8(s1), o[2] = clip8(s2);
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same with AVX2 and 16-bit multiply-adds, exact by the weight split of vertical_avx2 below
// (k = kh 2^15 + kl). Four taps of a row are one 16-byte load (pixels x .. x + 3 and four bytes more),
// shuffled into the 16-bit pairs (R, R'), (G, G'), (B, B'), 0 of taps x, x + 1 and of x + 2, x + 3;
// two rows share a 256-bit vector and four rows are done together, so one broadcast weight pair
// serves 4 rows x 3 bands. Output pixels are visited in output order (a flip reads the mirrored
// column's weights) and each row's result is one 4-byte store whose fourth byte the next pixel
// overwrites (tmp rows keep one byte of slack). A column whose last load would pass the end of its
// row is done as horizontal_scalar does it.
struct Tap4 {
  int off, groups;  // the first tap's byte offset in the row; four-tap groups (0: the scalar path)
  int w;            // index of its first group's weights (wl01, wl23, wh01, wh23 per group)
};
MO_TARGET_AVX2_NOFMA void horizontal_avx2(const ImageView& src, int y0, int y1, const Coeffs& c, int out_w,
                                          bool flip, uint8_t* tmp, int64_t tmp_stride) {
  thread_local std::vector<Tap4> taps;
  thread_local std::vector<int32_t> wts;
  taps.resize(static_cast<size_t>(out_w));
  wts.clear();
  for (int xo = 0; xo < out_w; ++xo) {
    const int xx = flip ? out_w - 1 - xo : xo, xmin = c.bounds[xx * 2], n = c.bounds[xx * 2 + 1];
    const int groups = (n + 3) / 4;
    const bool inside = groups > 0 && 3 * (xmin + 4 * (groups - 1)) + 16 <= 3 * src.w;
    taps[xo] = {xmin * 3, inside ? groups : 0, static_cast<int>(wts.size())};
    if (!inside) continue;
    const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
    for (int g = 0; g < groups; ++g) {
      uint32_t lo[2], hi[2];
      for (int h = 0; h < 2; ++h) {
        const int t0 = 4 * g + 2 * h, t1 = t0 + 1;
        const uint32_t k0 = t0 < n ? static_cast<uint32_t>(k[t0]) : 0, k1 = t1 < n ? static_cast<uint32_t>(k[t1]) : 0;
        lo[h] = (k0 & 0x7FFF) | (k1 & 0x7FFF) << 16;
        hi[h] = (static_cast<uint32_t>(static_cast<int32_t>(k0) >> 15) & 0xFFFF) |
                (static_cast<uint32_t>(static_cast<int32_t>(k1) >> 15) & 0xFFFF) << 16;
      }
      wts.insert(wts.end(), {static_cast<int32_t>(lo[0]), static_cast<int32_t>(lo[1]), static_cast<int32_t>(hi[0]),
                             static_cast<int32_t>(hi[1])});
    }
  }
  const __m256i init = _mm256_set1_epi32(1 << (kPrecisionBits - 1));
  const __m256i pair01 = _mm256_broadcastsi128_si256(_mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1));
  const __m256i pair23 = _mm256_broadcastsi128_si256(_mm_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1));
  for (int y = y0; y < y1; y += 4) {
    const int rows = std::min(4, y1 - y);
    const uint8_t* in[4];
    uint8_t* out[4];
    for (int r = 0; r < 4; ++r) {
      in[r] = src.row(y + std::min(r, rows - 1));
      out[r] = tmp + (y - y0 + std::min(r, rows - 1)) * tmp_stride;
    }
    for (int xo = 0; xo < out_w; ++xo) {
      const Tap4 t = taps[xo];
      if (t.groups == 0) {
        const int xx = flip ? out_w - 1 - xo : xo, n = c.bounds[xx * 2 + 1];
        const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
        for (int r = 0; r < rows; ++r) {
          const uint8_t* p = in[r] + t.off;
          int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
          for (int x = 0; x < n; ++x) s0 += p[3 * x] * k[x], s1 += p[3 * x + 1] * k[x], s2 += p[3 * x + 2] * k[x];
          out[r][xo * 3] = clip8(s0), out[r][xo * 3 + 1] = clip8(s1), out[r][xo * 3 + 2] = clip8(s2);
        }
        continue;
      }
      __m256i l01 = _mm256_setzero_si256(), h01 = l01, l23 = l01, h23 = l01;
      const int32_t* w = &wts[static_cast<size_t>(t.w)];
      for (int g = 0, off = t.off; g < t.groups; ++g, off += 12, w += 4) {
        const __m256i v01 = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(in[1] + off),
                                                reinterpret_cast<const __m128i*>(in[0] + off));
        const __m256i v23 = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(in[3] + off),
                                                reinterpret_cast<const __m128i*>(in[2] + off));
        const __m256i wl01 = _mm256_set1_epi32(w[0]), wl23 = _mm256_set1_epi32(w[1]);
        const __m256i wh01 = _mm256_set1_epi32(w[2]), wh23 = _mm256_set1_epi32(w[3]);
        const __m256i a0 = _mm256_shuffle_epi8(v01, pair01), a1 = _mm256_shuffle_epi8(v01, pair23);
        const __m256i b0 = _mm256_shuffle_epi8(v23, pair01), b1 = _mm256_shuffle_epi8(v23, pair23);
        l01 = _mm256_add_epi32(l01, _mm256_add_epi32(_mm256_madd_epi16(a0, wl01), _mm256_madd_epi16(a1, wl23)));
        h01 = _mm256_add_epi32(h01, _mm256_add_epi32(_mm256_madd_epi16(a0, wh01), _mm256_madd_epi16(a1, wh23)));
        l23 = _mm256_add_epi32(l23, _mm256_add_epi32(_mm256_madd_epi16(b0, wl01), _mm256_madd_epi16(b1, wl23)));
        h23 = _mm256_add_epi32(h23, _mm256_add_epi32(_mm256_madd_epi16(b0, wh01), _mm256_madd_epi16(b1, wh23)));
      }
      // (R, G, B, 0) per row: init + l + (h << 15), >> 22, saturated to int16 and to uint8 (clip8)
      const __m256i s01 = _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(init, l01), _mm256_slli_epi32(h01, 15)), kPrecisionBits);
      const __m256i s23 = _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(init, l23), _mm256_slli_epi32(h23, 15)), kPrecisionBits);
      const __m256i b8 = _mm256_packus_epi16(_mm256_packs_epi32(s01, s23), _mm256_setzero_si256());  // rows 0, 2 | 1, 3
      const __m128i lo = _mm256_castsi256_si128(b8), hi = _mm256_extracti128_si256(b8, 1);
      const uint32_t px[4] = {static_cast<uint32_t>(_mm_cvtsi128_si32(lo)), static_cast<uint32_t>(_mm_cvtsi128_si32(hi)),
                              static_cast<uint32_t>(_mm_extract_epi32(lo, 1)), static_cast<uint32_t>(_mm_extract_epi32(hi, 1))};
      for (int r = 0; r < 4; ++r) std::memcpy(out[r] + xo * 3, &px[r], 4);
    }
  }
}
#endif

// rows [y0, y1) of src -> tmp rows tmp_stride (>= out_w * 3 + 1) bytes apart
void horizontal(const ImageView& src, int y0, int y1, const Coeffs& c, int out_w, bool flip, uint8_t* tmp, int64_t tmp_stride) {
#if MO_X86_SIMD
  if (cpu_isa() >= CpuIsa::avx2) return horizontal_avx2(src, y0, y1, c, out_w, flip, tmp, tmp_stride);
#endif
  horizontal_scalar(src, y0, y1, c, out_w, flip, tmp, tmp_stride);
}

// tmp rows (already offset so that bounds index them directly) -> dst
void vertical_body(const uint8_t* tmp, int64_t tmp_stride, const Coeffs& c, const ImageView& dst) {
  const int n_el = dst.w * 3, ks = c.ksize;
  std::vector<int32_t> acc(n_el);
  for (int yy = 0; yy < dst.h; ++yy) {
    const int ymin = c.bounds[yy * 2], n = c.bounds[yy * 2 + 1];
    const int32_t* k = &c.k[static_cast<size_t>(yy) * ks];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < n; ++y) {
      const uint8_t* in = tmp + (ymin + y) * tmp_stride;
      const int32_t ky = k[y];
      int32_t* a = acc.data();
      for (int i = 0; i < n_el; ++i) a[i] += in[i] * ky;
    }
    uint8_t* out = dst.row(yy);
    for (int i = 0; i < n_el; ++i) out[i] = clip8(acc[i]);
  }
}

#if MO_X86_SIMD
// vertical_body with AVX2 and 16-bit multiply-adds, exact: each weight is split as k = kh * 2^15 + kl
// (kl in [0, 2^15), |kh| <= 2^8: 16-bit operands), and sum(p kh) * 2^15 + sum(p kl) == sum(p k) in
// int32 (the adds wrap, the true sum fits). Two rows at a time: their bytes are interleaved as 16-bit
// pairs and multiplied by the pair of their weights; 16 values of an output row per step, in registers.
MO_TARGET_AVX2_NOFMA void vertical_avx2(const uint8_t* tmp, int64_t tmp_stride, const Coeffs& c, const ImageView& dst) {
  const int n_el = dst.w * 3, ks = c.ksize, n16 = n_el / 16 * 16;
  const __m256i init = _mm256_set1_epi32(1 << (kPrecisionBits - 1));
  std::vector<int32_t> wl(static_cast<size_t>(ks + 1) / 2), wh(wl.size());  // weight pairs, lo and hi parts
  std::vector<const uint8_t*> rows(wl.size() * 2);
  for (int yy = 0; yy < dst.h; ++yy) {
    const int ymin = c.bounds[yy * 2], n = c.bounds[yy * 2 + 1], np = (n + 1) / 2;
    const int32_t* k = &c.k[static_cast<size_t>(yy) * ks];
    for (int j = 0; j < np; ++j) {  // an odd count pairs its last row with itself at weight 0
      const int t0 = 2 * j, t1 = std::min(2 * j + 1, n - 1);
      const uint32_t k0 = static_cast<uint32_t>(k[t0]), k1 = t1 > t0 ? static_cast<uint32_t>(k[t1]) : 0;
      const uint32_t h0 = static_cast<uint32_t>(static_cast<int32_t>(k0) >> 15) & 0xFFFF;
      const uint32_t h1 = static_cast<uint32_t>(static_cast<int32_t>(k1) >> 15) & 0xFFFF;
      wl[j] = static_cast<int32_t>((k0 & 0x7FFF) | (k1 & 0x7FFF) << 16);
      wh[j] = static_cast<int32_t>(h0 | h1 << 16);
      rows[2 * j] = tmp + (ymin + t0) * tmp_stride;
      rows[2 * j + 1] = tmp + (ymin + t1) * tmp_stride;
    }
    uint8_t* out = dst.row(yy);
    for (int i = 0; i < n16; i += 16) {
      __m256i l0 = _mm256_setzero_si256(), l1 = l0, h0 = l0, h1 = l0;
      for (int j = 0; j < np; ++j) {
        const __m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[2 * j] + i)));
        const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[2 * j + 1] + i)));
        const __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);  // values 0-3, 8-11 | 4-7, 12-15
        const __m256i kl = _mm256_set1_epi32(wl[j]), kh = _mm256_set1_epi32(wh[j]);
        l0 = _mm256_add_epi32(l0, _mm256_madd_epi16(lo, kl));
        l1 = _mm256_add_epi32(l1, _mm256_madd_epi16(hi, kl));
        h0 = _mm256_add_epi32(h0, _mm256_madd_epi16(lo, kh));
        h1 = _mm256_add_epi32(h1, _mm256_madd_epi16(hi, kh));
      }
      const __m256i s0 = _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(init, l0), _mm256_slli_epi32(h0, 15)), kPrecisionBits);
      const __m256i s1 = _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(init, l1), _mm256_slli_epi32(h1, 15)), kPrecisionBits);
      const __m256i w16 = _mm256_packs_epi32(s0, s1);  // values 0-7 | 8-15 (the unpack order undone)
      const __m256i b8 = _mm256_permute4x64_epi64(_mm256_packus_epi16(w16, w16), 0x08);  // clip8
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_castsi256_si128(b8));
    }
    for (int i = n16; i < n_el; ++i) {  // the last values, as vertical_body
      int32_t a = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < n; ++y) a += tmp[(ymin + y) * tmp_stride + i] * k[y];
      out[i] = clip8(a);
    }
  }
}
#endif
void vertical(const uint8_t* tmp, int64_t tmp_stride, const Coeffs& c, const ImageView& dst) {
#if MO_X86_SIMD
  if (cpu_isa() >= CpuIsa::avx2) return vertical_avx2(tmp, tmp_stride, c, dst);
#endif
  vertical_body(tmp, tmp_stride, c, dst);
}

}  // namespace

void resample(const ImageView& src, const float box[4], Interp interp, const ImageView& dst, bool flip_x,
              const ResampleWindow* window) {
  MO_CHECK(src.w > 0 && src.h > 0 && dst.w > 0 && dst.h > 0, "resample: empty image ({}x{} -> {}x{})", src.w, src.h,
           dst.w, dst.h);
  MO_CHECK(box[0] >= 0 && box[1] >= 0 && box[2] <= src.w && box[3] <= src.h && box[0] < box[2] && box[1] < box[3],
           "resample: box ({}, {}, {}, {}) outside the {}x{} source", box[0], box[1], box[2], box[3], src.w, src.h);
  const ResampleWindow full{dst.w, dst.h, 0, 0};
  const ResampleWindow& win = window ? *window : full;
  MO_CHECK(win.x0 >= 0 && win.y0 >= 0 && win.x0 + dst.w <= win.full_w && win.y0 + dst.h <= win.full_h,
           "resample: window {}x{} at ({}, {}) outside the {}x{} result", dst.w, dst.h, win.x0, win.y0, win.full_w,
           win.full_h);
  thread_local Coeffs ch, cv;
  thread_local std::vector<uint8_t> tmp;
  // PIL's tests for skipping a pass, on the full result size.
  const bool need_h = win.full_w != src.w || box[0] != 0 || box[2] != win.full_w || flip_x;
  const bool need_v = win.full_h != src.h || box[1] != 0 || box[3] != win.full_h;
  if (!need_h && !need_v) {
    for (int y = 0; y < dst.h; ++y) std::copy_n(src.row(win.y0 + y) + win.x0 * 3, dst.w * 3, dst.row(y));
    return;
  }
  precompute(src.h, box[1], box[3], win.full_h, interp, cv);
  precompute(src.w, box[0], box[2], win.full_w, interp, ch);
  // Keep the rows / columns of the window only.
  auto slice = [](Coeffs& c, int off, int n) {
    c.bounds.erase(c.bounds.begin(), c.bounds.begin() + off * 2);
    c.bounds.resize(static_cast<size_t>(n) * 2);
    c.k.erase(c.k.begin(), c.k.begin() + static_cast<size_t>(off) * c.ksize);
    c.k.resize(static_cast<size_t>(n) * c.ksize);
  };
  slice(cv, win.y0, dst.h);
  slice(ch, win.x0, dst.w);
  const int y_first = cv.bounds[0];
  const int y_last = cv.bounds[(dst.h - 1) * 2] + cv.bounds[(dst.h - 1) * 2 + 1];
  const int64_t tmp_stride = static_cast<int64_t>(dst.w) * 3 + 1;
  tmp.resize(static_cast<size_t>((y_last - y_first) * tmp_stride));
  horizontal(src, y_first, y_last, ch, dst.w, flip_x, tmp.data(), tmp_stride);
  for (int i = 0; i < dst.h; ++i) cv.bounds[i * 2] -= y_first;
  vertical(tmp.data(), tmp_stride, cv, dst);
}

}  // namespace mo::data
