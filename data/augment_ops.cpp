// augment_ops.cpp: PIL-exact RandAugment pixel ops (see augment_ops.h). Each function names the PIL
// routine it follows; float/double types and evaluation order are PIL's so results match bit for bit.
#include "data/augment_ops.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <cstring>
#include <vector>

#include "autograd/cpu_isa.h"
#if MO_X86_SIMD
#include <immintrin.h>
#endif


namespace mo::data {
namespace {

using Lut = std::array<std::array<uint8_t, 256>, 3>;

void apply_lut(Image& img, const Lut& lut) {
  uint8_t* p = img.data();
  const size_t n = static_cast<size_t>(img.w()) * img.h();
  for (size_t i = 0; i < n; ++i, p += 3) {
    p[0] = lut[0][p[0]];
    p[1] = lut[1][p[1]];
    p[2] = lut[2][p[2]];
  }
}

void apply_same_lut(Image& img, const std::array<uint8_t, 256>& t) { apply_lut(img, Lut{t, t, t}); }

using Hist = std::array<std::array<int64_t, 256>, 3>;
Hist histogram(const Image& img) {
  Hist h{};
  const uint8_t* p = img.data();
  const size_t n = static_cast<size_t>(img.w()) * img.h();
  for (size_t i = 0; i < n; ++i, p += 3) {
    h[0][p[0]]++;
    h[1][p[1]]++;
    h[2][p[2]]++;
  }
  return h;
}

// Convert.c rgb2l: ITU-R 601-2 luma, rounded.
inline uint8_t luma(const uint8_t* p) { return static_cast<uint8_t>((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16); }

// Blend.c ImagingBlend(degenerate, img, alpha) with alpha a C float, on n bytes in place:
// p[i] = clip8(trunc(a + alpha * (p[i] - a))), a = deg[i] (deg == nullptr: the constant c). With alpha
// in [0, 1] the value is never outside [0, 255], so PIL's two loops are one formula.
void blend_scalar(uint8_t* p, const uint8_t* deg, int c, size_t n, float alpha, size_t from = 0) {
  for (size_t i = from; i < n; ++i) {
    const int a = deg ? deg[i] : c;
    const float t = static_cast<float>(a) + alpha * static_cast<float>(p[i] - a);
    p[i] = t <= 0.0f ? 0 : t >= 255.0f ? 255 : static_cast<uint8_t>(static_cast<int>(t));
  }
}
#if MO_X86_SIMD
// 8 bytes a step, the same float operations (no FMA), truncation after clamping to [0, 255].
MO_TARGET_AVX2_NOFMA void blend_avx2(uint8_t* p, const uint8_t* deg, int c, size_t n, float alpha) {
  const __m256 va = _mm256_set1_ps(alpha), hi = _mm256_set1_ps(255.0f), lo = _mm256_setzero_ps();
  const __m256i vc = _mm256_set1_epi32(c);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + i)));
    const __m256i a = deg ? _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(deg + i))) : vc;
    __m256 t = _mm256_add_ps(_mm256_cvtepi32_ps(a), _mm256_mul_ps(va, _mm256_cvtepi32_ps(_mm256_sub_epi32(x, a))));
    t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
    const __m256i r = _mm256_cvttps_epi32(t);
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p + i), _mm_packus_epi16(w, w));
  }
  blend_scalar(p, deg, c, n, alpha, i);
}
#endif

void blend(Image& img, double factor, const uint8_t* deg, int c = 0) {
  const float alpha = static_cast<float>(factor);
  if (alpha == 1.0f) return;
#if MO_X86_SIMD
  if (cpu_isa() >= CpuIsa::avx2) return blend_avx2(img.data(), deg, c, img.bytes(), alpha);
#endif
  blend_scalar(img.data(), deg, c, img.bytes(), alpha);
}

// Filter.c's 3x3 SMOOTH kernel (1 1 1 / 1 5 1 / 1 1 1, / 13) on the inner pixels of img into out (the
// border is copied before), float sums in PIL's order.
MO_ALWAYS_INLINE void smooth_body(const Image& img, Image& out) {
  const int W = img.w(), H = img.h();
  const float k1 = 1.0f / 13.0f, k5 = 5.0f / 13.0f;
  for (int y = 1; y < H - 1; ++y) {
    const uint8_t *up = img.row(y - 1), *mid = img.row(y), *dn = img.row(y + 1);
    uint8_t* o = out.row(y);
    for (int x = 3; x < (W - 1) * 3; ++x) {
      float ss = 0.5f;
      ss += static_cast<float>(dn[x - 3]) * k1 + static_cast<float>(dn[x]) * k1 + static_cast<float>(dn[x + 3]) * k1;
      ss += static_cast<float>(mid[x - 3]) * k1 + static_cast<float>(mid[x]) * k5 + static_cast<float>(mid[x + 3]) * k1;
      ss += static_cast<float>(up[x - 3]) * k1 + static_cast<float>(up[x]) * k1 + static_cast<float>(up[x + 3]) * k1;
      o[x] = ss <= 0.0f ? 0 : ss >= 255.0f ? 255 : static_cast<uint8_t>(static_cast<int>(ss));
    }
  }
}
MO_TARGET_AVX2_NOFMA void smooth_avx2(const Image& img, Image& out) { smooth_body(img, out); }
void smooth(const Image& img, Image& out) {
  if (cpu_isa() >= CpuIsa::avx2) return smooth_avx2(img, out);
  smooth_body(img, out);
}

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// Geometry.c bilinear_filter32RGB at (xin, yin), already known to be inside the image.
inline void bilinear_px(const Image& im, double xin, double yin, uint8_t* out) {
  xin -= 0.5;
  yin -= 0.5;
  int x = static_cast<int>(std::floor(xin)), y = static_cast<int>(std::floor(yin));
  double dx = xin - x, dy = yin - y;
  const int W = im.w(), H = im.h();
  const int x0 = clampi(x, 0, W - 1) * 3, x1 = clampi(x + 1, 0, W - 1) * 3;
  const uint8_t* r0 = im.row(clampi(y, 0, H - 1));
  const bool has1 = y + 1 >= 0 && y + 1 < H;
  const uint8_t* r1 = has1 ? im.row(y + 1) : r0;
  for (int b = 0; b < 3; ++b) {
    double v1 = r0[x0 + b] + (r0[x1 + b] - r0[x0 + b]) * dx;
    double v2 = has1 ? r1[x0 + b] + (r1[x1 + b] - r1[x0 + b]) * dx : v1;
    v1 = v1 + (v2 - v1) * dy;
    out[b] = static_cast<uint8_t>(static_cast<int>(v1));
  }
}

// Geometry.c's BICUBIC(v, v1..v4, d) = p1 + d (p2 + d (p3 + d p4)) is the a = -1 cubic convolution.
// Written here as v2 + w0 (v1 - v2) + w2 (v3 - v2) + w3 (v4 - v2), with weights computed once per pixel
// and shared by the bands: like PIL's form it returns v2 exactly for d = 0 or a flat neighbourhood,
// and otherwise agrees with it to ~1e-13 (a truncation can flip on exact ties only).
inline void cubic_weights(double d, double w[3]) {
  const double d2 = d * d, d3 = d2 * d;
  w[0] = -d + 2 * d2 - d3;
  w[1] = d + d2 - d3;
  w[2] = -d2 + d3;
}
inline double cubic_apply(const double w[3], double v1, double v2, double v3, double v4) {
  return v2 + w[0] * (v1 - v2) + w[1] * (v3 - v2) + w[2] * (v4 - v2);
}

// Geometry.c bicubic_filter32RGB (rows and columns past the edge repeat the edge, as PIL's do).
inline void bicubic_px(const Image& im, double xin, double yin, uint8_t* out) {
  xin -= 0.5;
  yin -= 0.5;
  int x = static_cast<int>(std::floor(xin)), y = static_cast<int>(std::floor(yin));
  const double dx = xin - x, dy = yin - y;
  double wx[3], wy[3];
  cubic_weights(dx, wx);
  cubic_weights(dy, wy);
  x--, y--;
  const int W = im.w(), H = im.h();
  int xs[4];
  const uint8_t* rs[4];
  for (int i = 0; i < 4; ++i) {
    xs[i] = clampi(x + i, 0, W - 1) * 3;
    rs[i] = im.row(clampi(y + i, 0, H - 1));
  }
  for (int b = 0; b < 3; ++b) {
    double v[4];
    for (int r = (dy == 0.0 ? 1 : 0); r < (dy == 0.0 ? 2 : 4); ++r) {
      const uint8_t* q = rs[r] + b;
      v[r] = dx == 0.0 ? q[xs[1]] : cubic_apply(wx, q[xs[0]], q[xs[1]], q[xs[2]], q[xs[3]]);
    }
    const double s = dy == 0.0 ? v[1] : cubic_apply(wy, v[0], v[1], v[2], v[3]);
    out[b] = s <= 0.0 ? 0 : s >= 255.0 ? 255 : static_cast<uint8_t>(static_cast<int>(s));
  }
}

double py_round15(double v) {  // Python's round(v, 15): correctly rounded through decimal
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.15f", v);
  return std::strtod(buf, nullptr);
}

}  // namespace

void op_autocontrast(Image& img) {  // ImageOps.autocontrast(cutoff=0), per band
  Hist h = histogram(img);
  Lut lut;
  for (int b = 0; b < 3; ++b) {
    int lo = 0, hi = 255;
    while (lo < 256 && h[b][lo] == 0) ++lo;
    while (hi >= 0 && h[b][hi] == 0) --hi;
    if (lo > 255) lo = 255;  // empty histogram: Python's loops end on 255 / 0
    if (hi < 0) hi = 0;
    for (int i = 0; i < 256; ++i) {
      if (hi <= lo) {
        lut[b][i] = static_cast<uint8_t>(i);
        continue;
      }
      double scale = 255.0 / (hi - lo), offset = -lo * scale;
      int v = static_cast<int>(i * scale + offset);
      lut[b][i] = static_cast<uint8_t>(clampi(v, 0, 255));
    }
  }
  apply_lut(img, lut);
}

void op_equalize(Image& img) {  // ImageOps.equalize
  Hist h = histogram(img);
  Lut lut;
  for (int b = 0; b < 3; ++b) {
    int64_t total = 0, last = 0, nonzero = 0;
    for (int i = 0; i < 256; ++i)
      if (h[b][i]) total += h[b][i], last = h[b][i], ++nonzero;
    int64_t step = nonzero <= 1 ? 0 : (total - last) / 255;
    for (int i = 0; i < 256; ++i) lut[b][i] = static_cast<uint8_t>(i);
    if (step == 0) continue;
    int64_t n = step / 2;
    for (int i = 0; i < 256; ++i) {
      int64_t v = n / step;
      lut[b][i] = static_cast<uint8_t>(v > 255 ? 255 : v);
      n += h[b][i];
    }
  }
  apply_lut(img, lut);
}

void op_invert(Image& img) {
  std::array<uint8_t, 256> t;
  for (int i = 0; i < 256; ++i) t[i] = static_cast<uint8_t>(255 - i);
  apply_same_lut(img, t);
}

void op_posterize(Image& img, int bits) {
  if (bits >= 8) return;
  const int mask = ~((1 << (8 - bits)) - 1);
  std::array<uint8_t, 256> t;
  for (int i = 0; i < 256; ++i) t[i] = static_cast<uint8_t>(i & mask);
  apply_same_lut(img, t);
}

void op_solarize(Image& img, int threshold) {
  std::array<uint8_t, 256> t;
  for (int i = 0; i < 256; ++i) t[i] = static_cast<uint8_t>(i < threshold ? i : 255 - i);
  apply_same_lut(img, t);
}

void op_solarize_add(Image& img, int add, int threshold) {
  std::array<uint8_t, 256> t;
  for (int i = 0; i < 256; ++i) t[i] = static_cast<uint8_t>(i < threshold ? std::min(255, i + add) : i);
  apply_same_lut(img, t);
}

void op_color(Image& img, double factor) {  // blend(convert("L").convert("RGB"), img)
  thread_local std::vector<uint8_t> grey;
  const size_t n = static_cast<size_t>(img.w()) * img.h();
  grey.resize(n * 3);  // the grey image as RGB
  for (size_t i = 0; i < n; ++i) grey[3 * i] = grey[3 * i + 1] = grey[3 * i + 2] = luma(img.data() + 3 * i);
  blend(img, factor, grey.data());
}

void op_contrast(Image& img, double factor) {  // blend(grey image at round(mean(L)), img)
  const uint8_t* p = img.data();
  const size_t n = static_cast<size_t>(img.w()) * img.h();
  std::array<int64_t, 256> h{};
  for (size_t i = 0; i < n; ++i) h[luma(p + 3 * i)]++;
  double sum = 0.0;
  for (int j = 0; j < 256; ++j) sum += static_cast<double>(j * h[j]);
  const int mean = static_cast<int>(sum / static_cast<double>(n) + 0.5);
  blend(img, factor, nullptr, mean);
}

void op_brightness(Image& img, double factor) {
  blend(img, factor, nullptr, 0);
}

void op_sharpness(Image& img, double factor, Image& scratch) {  // blend(filter(SMOOTH), img)
  scratch = img;  // borders stay as they are (Filter.c copies them)
  smooth(img, scratch);
  blend(img, factor, scratch.data());
}

#if MO_X86_SIMD
// op_affine with AVX2, four output pixels a step: the same double operations in the same order as
// bilinear_px / bicubic_px (lane by lane), so the same bytes. Each source tap is one 32-bit gather of
// R, G, B (and a byte more: Image keeps slack) for the four pixels; the bands are then split out.
// A fraction dx or dy of exactly 0 makes that direction's blend return its centre value exactly (PIL's
// bicubic shortcut; for bilinear a + (b - a) * 0 == a), so four pixels that all have it skip that blend.

MO_TARGET_AVX2_NOFMA inline __m256d band(__m128i px, int b) {  // byte b of each 32-bit lane, as double
  return _mm256_cvtepi32_pd(_mm_and_si128(_mm_srli_epi32(px, 8 * b), _mm_set1_epi32(0xFF)));
}
MO_TARGET_AVX2_NOFMA inline __m256d cubic4(__m256d w0, __m256d w1, __m256d w2, __m256d v1, __m256d v2, __m256d v3,
                                           __m256d v4) {  // cubic_apply, lane-wise
  __m256d r = _mm256_add_pd(v2, _mm256_mul_pd(w0, _mm256_sub_pd(v1, v2)));
  r = _mm256_add_pd(r, _mm256_mul_pd(w1, _mm256_sub_pd(v3, v2)));
  return _mm256_add_pd(r, _mm256_mul_pd(w2, _mm256_sub_pd(v4, v2)));
}
MO_TARGET_AVX2_NOFMA inline void cubic_weights4(__m256d d, __m256d& w0, __m256d& w1, __m256d& w2) {
  const __m256d d2 = _mm256_mul_pd(d, d), d3 = _mm256_mul_pd(d2, d);
  const __m256d neg = _mm256_sub_pd(_mm256_setzero_pd(), d);  // -d (exact)
  w0 = _mm256_sub_pd(_mm256_add_pd(neg, _mm256_mul_pd(_mm256_set1_pd(2.0), d2)), d3);
  w1 = _mm256_sub_pd(_mm256_add_pd(d, d2), d3);
  w2 = _mm256_add_pd(_mm256_sub_pd(_mm256_setzero_pd(), d2), d3);
}
MO_TARGET_AVX2_NOFMA inline __m128i clamp4(__m128i v, __m128i hi) {
  return _mm_min_epi32(_mm_max_epi32(v, _mm_setzero_si128()), hi);
}

MO_TARGET_AVX2_NOFMA void affine_avx2(const Image& img, const double a[6], Interp interp, Rgb fill, Image& dst) {
  const int W = img.w(), H = img.h();
  const int* base = reinterpret_cast<const int*>(img.data());
  const __m128i wmax = _mm_set1_epi32(W - 1), hmax = _mm_set1_epi32(H - 1), stride = _mm_set1_epi32(W * 3);
  const __m128i three = _mm_set1_epi32(3);
  const __m256d half = _mm256_set1_pd(0.5), Wd = _mm256_set1_pd(W), Hd = _mm256_set1_pd(H), zero = _mm256_setzero_pd();
  const __m256d a0 = _mm256_set1_pd(a[0]), a3 = _mm256_set1_pd(a[3]), a2 = _mm256_set1_pd(a[2]), a5 = _mm256_set1_pd(a[5]);
  const __m128i fillpx = _mm_set1_epi32(fill[0] | fill[1] << 8 | fill[2] << 16);
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m128i pack3 = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
  const bool cubic = interp == Interp::bicubic;
  const int W4 = W / 4 * 4;
  for (int y = 0; y < H; ++y) {
    uint8_t* out = dst.row(y);
    const double yc = y + 0.5;
    const __m256d byc = _mm256_set1_pd(a[1] * yc), eyc = _mm256_set1_pd(a[4] * yc);
    for (int x = 0; x < W4; x += 4) {
      const __m256d xc = _mm256_add_pd(_mm256_setr_pd(x, x + 1, x + 2, x + 3), half);
      const __m256d xin = _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(a0, xc), byc), a2);
      const __m256d yin = _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(a3, xc), eyc), a5);
      const __m256d inside = _mm256_and_pd(_mm256_and_pd(_mm256_cmp_pd(xin, zero, _CMP_GE_OQ), _mm256_cmp_pd(xin, Wd, _CMP_LT_OQ)),
                                           _mm256_and_pd(_mm256_cmp_pd(yin, zero, _CMP_GE_OQ), _mm256_cmp_pd(yin, Hd, _CMP_LT_OQ)));
      const int in_mask = _mm256_movemask_pd(inside);
      if (in_mask == 0) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x * 3), _mm_shuffle_epi8(fillpx, pack3));
        continue;
      }
      // outside lanes are clamped like the rest (their values are replaced by the fill colour)
      const __m256d xs = _mm256_sub_pd(_mm256_min_pd(_mm256_max_pd(xin, zero), Wd), half);
      const __m256d ys = _mm256_sub_pd(_mm256_min_pd(_mm256_max_pd(yin, zero), Hd), half);
      const __m256d xf = _mm256_floor_pd(xs), yf = _mm256_floor_pd(ys);
      const __m256d dx = _mm256_sub_pd(xs, xf), dy = _mm256_sub_pd(ys, yf);
      const __m128i xi = _mm256_cvttpd_epi32(xf), yi = _mm256_cvttpd_epi32(yf);
      __m256d res[3];
      // dx (dy) 0 in every lane, as in the shears and translations: the blend along x (y) returns its
      // first value exactly, so its other taps are not loaded
      const bool dx0 = _mm256_movemask_pd(_mm256_cmp_pd(dx, zero, _CMP_EQ_OQ)) == 0xF;
      const bool dy0 = _mm256_movemask_pd(_mm256_cmp_pd(dy, zero, _CMP_EQ_OQ)) == 0xF;
      if (!cubic) {
        const __m128i c0 = _mm_mullo_epi32(clamp4(xi, wmax), three);
        const __m128i c1 = _mm_mullo_epi32(clamp4(_mm_add_epi32(xi, _mm_set1_epi32(1)), wmax), three);
        const __m128i r0 = _mm_mullo_epi32(clamp4(yi, hmax), stride);
        const __m128i r1 = _mm_mullo_epi32(clamp4(_mm_add_epi32(yi, _mm_set1_epi32(1)), hmax), stride);
        const __m128i p00 = _mm_i32gather_epi32(base, _mm_add_epi32(r0, c0), 1);
        const __m128i p01 = dx0 ? p00 : _mm_i32gather_epi32(base, _mm_add_epi32(r0, c1), 1);
        const __m128i p10 = dy0 ? p00 : _mm_i32gather_epi32(base, _mm_add_epi32(r1, c0), 1);
        const __m128i p11 = dx0 || dy0 ? p00 : _mm_i32gather_epi32(base, _mm_add_epi32(r1, c1), 1);
        for (int b = 0; b < 3; ++b) {
          const __m256d q00 = band(p00, b);
          const __m256d v1 = dx0 ? q00 : _mm256_add_pd(q00, _mm256_mul_pd(_mm256_sub_pd(band(p01, b), q00), dx));
          if (dy0) {
            res[b] = v1;
            continue;
          }
          const __m256d q10 = band(p10, b);
          const __m256d v2 = dx0 ? q10 : _mm256_add_pd(q10, _mm256_mul_pd(_mm256_sub_pd(band(p11, b), q10), dx));
          res[b] = _mm256_add_pd(v1, _mm256_mul_pd(_mm256_sub_pd(v2, v1), dy));
        }
      } else {
        __m256d wx0, wx1, wx2, wy0, wy1, wy2;
        cubic_weights4(dx, wx0, wx1, wx2);
        cubic_weights4(dy, wy0, wy1, wy2);
        __m128i cols[4], rows[4];
        for (int i = 0; i < 4; ++i) {
          cols[i] = _mm_mullo_epi32(clamp4(_mm_add_epi32(xi, _mm_set1_epi32(i - 1)), wmax), three);
          rows[i] = _mm_mullo_epi32(clamp4(_mm_add_epi32(yi, _mm_set1_epi32(i - 1)), hmax), stride);
        }
        __m128i px[4][4];
        const int r_lo = dy0 ? 1 : 0, r_hi = dy0 ? 2 : 4, c_lo = dx0 ? 1 : 0, c_hi = dx0 ? 2 : 4;
        for (int r = r_lo; r < r_hi; ++r)
          for (int c = c_lo; c < c_hi; ++c) px[r][c] = _mm_i32gather_epi32(base, _mm_add_epi32(rows[r], cols[c]), 1);
        for (int b = 0; b < 3; ++b) {
          __m256d v[4];
          for (int r = r_lo; r < r_hi; ++r)
            v[r] = dx0 ? band(px[r][1], b)
                       : cubic4(wx0, wx1, wx2, band(px[r][0], b), band(px[r][1], b), band(px[r][2], b), band(px[r][3], b));
          const __m256d sv = dy0 ? v[1] : cubic4(wy0, wy1, wy2, v[0], v[1], v[2], v[3]);
          res[b] = _mm256_min_pd(_mm256_max_pd(sv, zero), _mm256_set1_pd(255.0));
        }
      }
      __m128i pix = _mm_or_si128(_mm256_cvttpd_epi32(res[0]), _mm_slli_epi32(_mm256_cvttpd_epi32(res[1]), 8));
      pix = _mm_or_si128(pix, _mm_slli_epi32(_mm256_cvttpd_epi32(res[2]), 16));
      if (in_mask != 0xF) {
        const __m128i m = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_castpd_si256(inside), even));
        pix = _mm_blendv_epi8(fillpx, pix, m);
      }
      // 12 bytes of output; the 4 after them are rewritten by the next step (or lie in the slack)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x * 3), _mm_shuffle_epi8(pix, pack3));
    }
    for (int x = W4; x < W; ++x) {
      uint8_t* o = out + x * 3;
      const double xc = x + 0.5;
      const double xin = a[0] * xc + a[1] * yc + a[2], yin = a[3] * xc + a[4] * yc + a[5];
      if (xin < 0.0 || xin >= W || yin < 0.0 || yin >= H) o[0] = fill[0], o[1] = fill[1], o[2] = fill[2];
      else if (cubic) bicubic_px(img, xin, yin, o);
      else bilinear_px(img, xin, yin, o);
    }
  }
}
#endif

void op_affine(Image& img, const double a[6], Interp interp, Rgb fill, Image& scratch) {
  const int W = img.w(), H = img.h();
  scratch.resize(W, H);
#if MO_X86_SIMD
  if (cpu_isa() >= CpuIsa::avx2) {
    affine_avx2(img, a, interp, fill, scratch);
    img.swap(scratch);
    return;
  }
#endif
  for (int y = 0; y < H; ++y) {
    uint8_t* out = scratch.row(y);
    const double yc = y + 0.5;
    for (int x = 0; x < W; ++x, out += 3) {
      const double xc = x + 0.5;
      double xin = a[0] * xc + a[1] * yc + a[2];
      double yin = a[3] * xc + a[4] * yc + a[5];
      if (xin < 0.0 || xin >= W || yin < 0.0 || yin >= H) {
        out[0] = fill[0], out[1] = fill[1], out[2] = fill[2];
      } else if (interp == Interp::bicubic) {
        bicubic_px(img, xin, yin, out);
      } else {
        bilinear_px(img, xin, yin, out);
      }
    }
  }
  img.swap(scratch);
}

void op_rotate(Image& img, double degrees, Interp interp, Rgb fill, Image& scratch) {  // Image.rotate
  double angle = std::fmod(degrees, 360.0);  // Python's %: the sign of the divisor
  if (angle < 0) angle += 360.0;
  const int W = img.w(), H = img.h();
  if (angle == 0.0) return;
  if (angle == 180.0) {  // transpose fast path
    scratch.resize(W, H);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        for (int b = 0; b < 3; ++b) scratch.row(H - 1 - y)[(W - 1 - x) * 3 + b] = img.row(y)[x * 3 + b];
    img.swap(scratch);
    return;
  }
  const double cx = W / 2.0, cy = H / 2.0;
  const double rad = -(angle * (M_PI / 180.0));
  double m[6] = {py_round15(std::cos(rad)), py_round15(std::sin(rad)), 0.0,
                 py_round15(-std::sin(rad)), py_round15(std::cos(rad)), 0.0};
  m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
  m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
  op_affine(img, m, interp, fill, scratch);
}

}  // namespace mo::data
