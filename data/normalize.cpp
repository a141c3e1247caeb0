// normalize.cpp: erase boxes, the device dispatch, and the CPU twin of normalize.cu.
#include "data/normalize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "autograd/check.h"
#include "autograd/cpu_isa.h"
#if MO_X86_SIMD
#include <immintrin.h>
#endif

namespace mo::data {

NormalizeSpec imagenet_normalize(DType dtype, bool channels_last) {
  NormalizeSpec s;
  s.dtype = dtype;
  s.channels_last = channels_last;
  return s;
}

EraseBox draw_erase_box(const EraseConfig& cfg, int height, int width, Rng& rng) {
  EraseBox b;
  if (cfg.prob <= 0 || rng.uniform() > cfg.prob) return b;
  const double area = static_cast<double>(height) * width;
  const double la = std::log(cfg.min_aspect), lb = std::log(cfg.max_aspect);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = rng.uniform(cfg.min_area, cfg.max_area) * area;
    const double aspect = std::exp(rng.uniform(la, lb));
    const int h = static_cast<int>(std::nearbyint(std::sqrt(target * aspect)));
    const int w = static_cast<int>(std::nearbyint(std::sqrt(target / aspect)));
    if (w < width && h < height) {
      b.top = rng.randint(0, height - h);
      b.left = rng.randint(0, width - w);
      b.h = h;
      b.w = w;
      return b;
    }
  }
  return b;
}

namespace {


// One sample's values, (x - mean) / std.
template <typename T>
MO_ALWAYS_INLINE void normalize_values(const uint8_t* in, int64_t plane, const NormalizeSpec& s, T* o) {
  if (s.channels_last) {
    for (int64_t i = 0; i < plane * 3; i += 3)
      for (int c = 0; c < 3; ++c) o[i + c] = T((static_cast<float>(in[i + c]) - s.mean[c]) / s.std[c]);
  } else {
    for (int c = 0; c < 3; ++c) {
      const float mean = s.mean[c], std = s.std[c];
      T* oc = o + c * plane;
      for (int64_t p = 0; p < plane; ++p) oc[p] = T((static_cast<float>(in[p * 3 + c]) - mean) / std);
    }
  }
}

// Values 2 j0 .. 2 j0 + 15 of a noise stream: philox_normal(seed, stream, 2 (j0 + l) + h) in val[h][l].
struct NoiseScalar {
  void operator()(uint64_t seed, uint64_t stream, uint64_t j0, float val[2][8]) const {
    for (int l = 0; l < 8; ++l) {
      const Philox4 b = philox_block(seed, stream, j0 + l);
      val[0][l] = philox_box_muller(b.v[0], b.v[1]), val[1][l] = philox_box_muller(b.v[2], b.v[3]);
    }
  }
};

// The erase box of one sample: philox_normal(seed, stream, c * plane + p) over the normalised values,
// 16 values (8 Philox blocks, each giving two) at a time.
template <typename T, typename Noise>
MO_ALWAYS_INLINE void erase_box(const int64_t* m, int H, int W, uint64_t seed, const NormalizeSpec& s, T* o, Noise noise) {
  if (m[2] <= 0) return;
  const int64_t plane = static_cast<int64_t>(H) * W;
  const uint64_t stream = static_cast<uint64_t>(m[4]);
  alignas(32) float val[2][8];
  for (int c = 0; c < 3; ++c)
    for (int64_t y = m[0]; y < m[0] + m[2]; ++y) {
      uint64_t i = static_cast<uint64_t>(c * plane + y * W + m[1]);
      const uint64_t end = i + static_cast<uint64_t>(m[3]);
      while (i < end) {
        const uint64_t j0 = i >> 1, stop = std::min(end, 2 * j0 + 16);
        noise(seed, stream, j0, val);
        for (; i < stop; ++i) {
          const int64_t p = static_cast<int64_t>(i) - c * plane;
          o[s.channels_last ? p * 3 + c : static_cast<int64_t>(i)] = T(val[i & 1][(i >> 1) - j0]);
        }
      }
    }
}

#if MO_X86_SIMD
// normalize_values for float32 with AVX2, the same sub and div per value (so the same bits): 16 pixels
// a step, split into their channels with byte shuffles (NCHW) or kept interleaved against a period-3
// pattern of means and deviations (NHWC). Samples of 256 KiB of floats or more are written with
// streaming stores: a batch of them is far larger than the cache, and its reader comes later.
MO_TARGET_AVX2_NOFMA inline void put8(float* dst, __m256 v, bool stream) {
  if (stream && (reinterpret_cast<uintptr_t>(dst) & 31) == 0) _mm256_stream_ps(dst, v);
  else _mm256_storeu_ps(dst, v);
}
MO_TARGET_AVX2_NOFMA inline __m256 floats8(__m128i b, int half) {  // bytes 8 half .. 8 half + 7 as floats
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(half ? _mm_srli_si128(b, 8) : b));
}
MO_TARGET_AVX2_NOFMA void normalize_values_avx2(const uint8_t* in, int64_t plane, const NormalizeSpec& s, float* o) {
  const int64_t n16 = plane / 16 * 16;
  const bool stream = plane * 12 >= (int64_t(1) << 18);
  if (!s.channels_last) {
    // sh[c][L]: the shuffle that picks channel c's values out of the L-th 16-byte load of 16 pixels
    alignas(16) int8_t idx[3][3][16];
    for (int c = 0; c < 3; ++c)
      for (int L = 0; L < 3; ++L)
        for (int k = 0; k < 16; ++k) idx[c][L][k] = static_cast<int8_t>(3 * k + c - 16 * L >= 0 && 3 * k + c - 16 * L < 16 ? 3 * k + c - 16 * L : -1);
    __m128i sh[3][3];
    for (int c = 0; c < 3; ++c)
      for (int L = 0; L < 3; ++L) sh[c][L] = _mm_load_si128(reinterpret_cast<const __m128i*>(idx[c][L]));
    for (int64_t p = 0; p < n16; p += 16) {
      const uint8_t* q = in + p * 3;
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
      const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 32));
      for (int c = 0; c < 3; ++c) {
        const __m128i v = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(a, sh[c][0]), _mm_shuffle_epi8(b, sh[c][1])),
                                       _mm_shuffle_epi8(d, sh[c][2]));
        const __m256 mean = _mm256_set1_ps(s.mean[c]), sd = _mm256_set1_ps(s.std[c]);
        float* oc = o + c * plane + p;
        put8(oc, _mm256_div_ps(_mm256_sub_ps(floats8(v, 0), mean), sd), stream);
        put8(oc + 8, _mm256_div_ps(_mm256_sub_ps(floats8(v, 1), mean), sd), stream);
      }
    }
    for (int c = 0; c < 3; ++c)
      for (int64_t p = n16; p < plane; ++p) o[c * plane + p] = (static_cast<float>(in[p * 3 + c]) - s.mean[c]) / s.std[c];
  } else {
    __m256 mean[3], sd[3];  // values 8k .. 8k + 7 of a 24-value period
    for (int k = 0; k < 3; ++k) {
      alignas(32) float m[8], d[8];
      for (int j = 0; j < 8; ++j) m[j] = s.mean[(8 * k + j) % 3], d[j] = s.std[(8 * k + j) % 3];
      mean[k] = _mm256_load_ps(m), sd[k] = _mm256_load_ps(d);
    }
    for (int64_t p = 0; p < n16; p += 16) {
      const uint8_t* q = in + p * 3;
      float* op = o + p * 3;
      for (int j = 0; j < 3; ++j) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * j));
        put8(op + 16 * j, _mm256_div_ps(_mm256_sub_ps(floats8(v, 0), mean[(2 * j) % 3]), sd[(2 * j) % 3]), stream);
        put8(op + 16 * j + 8, _mm256_div_ps(_mm256_sub_ps(floats8(v, 1), mean[(2 * j + 1) % 3]), sd[(2 * j + 1) % 3]), stream);
      }
    }
    for (int64_t i = n16 * 3; i < plane * 3; ++i) o[i] = (static_cast<float>(in[i]) - s.mean[i % 3]) / s.std[i % 3];
  }
  if (stream) _mm_sfence();
}
#endif

#if MO_X86_SIMD
// philox_block for the 8 consecutive indices j0 .. j0 + 7 (no carry into the high word), word w of
// block j0 + l in lane l of out[w]: the same integer steps, a 32 x 32 -> 64-bit product per lane.
MO_TARGET_AVX2_NOFMA inline void mulhilo8(uint32_t mul, __m256i a, __m256i& hi, __m256i& lo) {
  const __m256i m = _mm256_set1_epi32(static_cast<int>(mul));
  const __m256i ev = _mm256_mul_epu32(a, m), od = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  lo = _mm256_blend_epi32(ev, _mm256_slli_epi64(od, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(ev, 32), od, 0xAA);
}
MO_TARGET_AVX2_NOFMA inline void philox8(uint64_t seed, uint64_t stream, uint64_t j0, __m256i out[4]) {
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(j0))), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i c1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(j0 >> 32)));
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    __m256i hi0, lo0, hi1, lo1;
    mulhilo8(0xD2511F53u, c0, hi0, lo0);
    mulhilo8(0xCD9E8D57u, c2, hi1, lo1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    c1 = lo1;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}
MO_TARGET_AVX2_NOFMA inline __m256 mad8(__m256 p, __m256 x, float c) {  // p x + c, two roundings
  return _mm256_add_ps(_mm256_mul_ps(p, x), _mm256_set1_ps(c));
}
// philox_box_muller (autograd/rng.h) on 8 lanes: the same operations in the same order.
MO_TARGET_AVX2_NOFMA inline __m256 box_muller8(__m256i a, __m256i b) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i nb = _mm256_castps_si256(_mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_srli_epi32(a, 8), one)));
  __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(nb, 23), _mm256_set1_epi32(127 + 24));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(nb, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F800000)));
  const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
  e = _mm256_sub_epi32(e, _mm256_castps_si256(big));
  const __m256 x = _mm256_add_ps(m, _mm256_set1_ps(-1.0f)), z = _mm256_mul_ps(x, x), fe = _mm256_cvtepi32_ps(e);
  __m256 p = _mm256_set1_ps(7.0376836292e-2f);
  for (float c : {-1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f, 1.4249322787e-1f, -1.6668057665e-1f,
                  2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f})
    p = mad8(p, x, c);
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, x), z);
  y = _mm256_add_ps(y, _mm256_mul_ps(fe, _mm256_set1_ps(-2.12194440e-4f)));
  y = _mm256_add_ps(y, _mm256_mul_ps(z, _mm256_set1_ps(-0.5f)));
  const __m256 ln = _mm256_add_ps(_mm256_add_ps(x, y), _mm256_mul_ps(fe, _mm256_set1_ps(0.693359375f)));
  const __m256i k = _mm256_srli_epi32(b, 8), j = _mm256_srli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(1 << 21)), 22);
  const __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(k, _mm256_slli_epi32(j, 22))),
                                 _mm256_set1_ps(6.28318530717958647692f / 16777216.0f));
  const __m256 t2 = _mm256_mul_ps(t, t);
  __m256 sn = mad8(mad8(_mm256_set1_ps(-1.9515295891e-4f), t2, 8.3321608736e-3f), t2, -1.6666654611e-1f);
  sn = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(sn, t2), t), t);
  __m256 cs = mad8(mad8(_mm256_set1_ps(2.443315711809948e-5f), t2, -1.388731625493765e-3f), t2, 4.166664568298827e-2f);
  cs = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(cs, t2), t2), _mm256_mul_ps(t2, _mm256_set1_ps(-0.5f))),
                     _mm256_set1_ps(1.0f));
  const __m256 odd = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(j, one), one));
  const __m256 neg = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(j, _mm256_set1_epi32(2)), 30));  // sign bit
  // j odd: -sin (j = 1) or sin (3); even: cos (0, 4) or -cos (2); the sign of sin is flipped where j & 2 is 0
  const __m256 flip = _mm256_xor_ps(neg, _mm256_and_ps(odd, _mm256_set1_ps(-0.0f)));
  const __m256 c = _mm256_xor_ps(_mm256_blendv_ps(cs, sn, odd), flip);
  return _mm256_mul_ps(_mm256_sqrt_ps(_mm256_mul_ps(ln, _mm256_set1_ps(-2.0f))), c);
}

// NoiseScalar with AVX2: the 8 blocks in the lanes (the scalar code where the counter's low word carries).
struct NoiseAvx2 {
  MO_TARGET_AVX2_NOFMA void operator()(uint64_t seed, uint64_t stream, uint64_t j0, float val[2][8]) const {
    if (static_cast<uint32_t>(j0) > 0xFFFFFFF8u) return NoiseScalar()(seed, stream, j0, val);
    __m256i w[4];
    philox8(seed, stream, j0, w);
    _mm256_store_ps(val[0], box_muller8(w[0], w[1]));
    _mm256_store_ps(val[1], box_muller8(w[2], w[3]));
  }
};
#endif

// One sample: normalise every value, then overwrite the erase box with its noise.
template <typename T>
MO_ALWAYS_INLINE void normalize_sample(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed, const NormalizeSpec& s, T* o) {
  normalize_values(in, static_cast<int64_t>(H) * W, s, o);
  erase_box(m, H, W, seed, s, o, NoiseScalar());
}

// the same body compiled for AVX2 (no FMA: the values stay bit-identical) and for baseline x86-64
template <typename T>
MO_TARGET_AVX2_NOFMA void normalize_avx2(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed,
                                         const NormalizeSpec& s, T* o) {
#if MO_X86_SIMD
  if constexpr (std::is_same_v<T, float>) normalize_values_avx2(in, static_cast<int64_t>(H) * W, s, o);
  else normalize_values(in, static_cast<int64_t>(H) * W, s, o);
  erase_box(m, H, W, seed, s, o, NoiseAvx2());
#else
  normalize_sample(in, m, H, W, seed, s, o);
#endif
}
template <typename T>
void normalize_any(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed, const NormalizeSpec& s, T* o) {
  if (cpu_isa() >= CpuIsa::avx2) return normalize_avx2(in, m, H, W, seed, s, o);
  normalize_sample(in, m, H, W, seed, s, o);
}
void normalize_f32(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed, const NormalizeSpec& s, float* o) {
  normalize_any(in, m, H, W, seed, s, o);
}
void normalize_bf16(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed, const NormalizeSpec& s, bf16_t* o) {
  normalize_any(in, m, H, W, seed, s, o);
}

}  // namespace

void normalize_erase_cpu(const Tensor& images, const Tensor& meta, uint64_t seed, const NormalizeSpec& spec, Tensor& out) {
  const int B = static_cast<int>(images.size(0)), H = static_cast<int>(images.size(1)), W = static_cast<int>(images.size(2));
  const uint8_t* img = images.data<uint8_t>();
  const int64_t* m = meta.data<int64_t>();
  const int64_t n = static_cast<int64_t>(H) * W * 3;
  for (int b = 0; b < B; ++b) {
    if (spec.dtype == DType::f32) normalize_f32(img + b * n, m + b * kMetaCols, H, W, seed, spec, out.data<float>() + b * n);
    else normalize_bf16(img + b * n, m + b * kMetaCols, H, W, seed, spec, out.data<bf16_t>() + b * n);
  }
}

Tensor normalize_erase(const Tensor& images, const Tensor& meta, uint64_t seed, const NormalizeSpec& spec) {
  MO_CHECK(images.dtype() == DType::u8 && images.dim() == 4 && images.size(3) == 3 && images.is_contiguous(),
           "normalize_erase: images must be contiguous uint8 (B, H, W, 3), got {}", images.str());
  MO_CHECK(meta.dtype() == DType::i64 && meta.dim() == 2 && meta.size(0) == images.size(0) &&
               meta.size(1) == kMetaCols && meta.is_contiguous(),
           "normalize_erase: meta must be int64 ({}, {}), got {}", images.size(0), kMetaCols, meta.str());
  MO_CHECK(images.device() == meta.device(), "normalize_erase: images on {}, meta on {}", images.device().str(),
           meta.device().str());
  MO_CHECK(spec.dtype == DType::f32 || spec.dtype == DType::bf16, "normalize_erase: output dtype {} (want float32 or bfloat16)",
           dtype_name(spec.dtype));
  const int64_t B = images.size(0), H = images.size(1), W = images.size(2);
  Shape shape = spec.channels_last ? Shape{B, H, W, 3} : Shape{B, 3, H, W};
  Tensor out = Tensor::empty(shape, spec.dtype, images.device());
  if (images.is_cuda()) {
#ifdef MO_WITH_CUDA
    normalize_erase_cuda(images, meta, seed, spec, out);
#else
    MO_FAIL("normalize_erase: CUDA tensor in a build without CUDA");
#endif
  } else {
    normalize_erase_cpu(images, meta, seed, spec, out);
  }
  return out;
}

}  // namespace mo::data
