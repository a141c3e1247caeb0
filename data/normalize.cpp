// normalize.cpp: erase boxes, the device dispatch, and the CPU twin of normalize.cu (its Philox noise
// eight blocks at a time with AVX2: the same words, so the same values).
#include "data/normalize.h"

#include <cmath>

#include "autograd/check.h"
#include "autograd/cpu_isa.h"
#if MO_X86_SIMD
#include <immintrin.h>
#endif
#include <type_traits>
#include <vector>

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

// Philox blocks j0 .. j0 + n - 1 of (seed, stream), four words each, into w (philox_block's words).
void philox_blocks_scalar(uint64_t seed, uint64_t stream, uint64_t j0, int64_t n, uint32_t* w, int64_t from = 0) {
  for (int64_t b = from; b < n; ++b) {
    const Philox4 p = philox_block(seed, stream, j0 + static_cast<uint64_t>(b));
    for (int k = 0; k < 4; ++k) w[4 * b + k] = p.v[k];
  }
}

#if MO_X86_SIMD
// lo and hi words of the 32 x 32 -> 64-bit products m * c, per 32-bit lane
MO_TARGET_AVX2_NOFMA inline void mulhilo8(__m256i m, __m256i c, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(c, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}
// The same, eight blocks at a time in the lanes of four vectors (philox4x32_10's rounds, lane-wise).
MO_TARGET_AVX2_NOFMA void philox_blocks_avx2(uint64_t seed, uint64_t stream, uint64_t j0, int64_t n, uint32_t* w) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u)), m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  int64_t b = 0;
  for (; b + 8 <= n; b += 8) {
    alignas(32) uint32_t lo[8], hi[8];
    for (int l = 0; l < 8; ++l) {
      const uint64_t idx = j0 + static_cast<uint64_t>(b + l);
      lo[l] = static_cast<uint32_t>(idx), hi[l] = static_cast<uint32_t>(idx >> 32);
    }
    __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
    __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
    __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
    __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
    __m256i k0 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(seed)));
    __m256i k1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(seed >> 32)));
    for (int r = 0; r < 10; ++r) {
      __m256i hi0, lo0, hi1, lo1;
      mulhilo8(m0, c0, hi0, lo0);
      mulhilo8(m1, c2, hi1, lo1);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), k0);
      c1 = lo1;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), k1);
      c3 = lo0;
      k0 = _mm256_add_epi32(k0, _mm256_set1_epi32(static_cast<int>(0x9E3779B9u)));
      k1 = _mm256_add_epi32(k1, _mm256_set1_epi32(static_cast<int>(0xBB67AE85u)));
    }
    // (c0, c1, c2, c3) of lane l -> w[4 (b + l) ..]: a 4 x 8 transpose
    const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpacklo_epi32(c2, c3);
    const __m256i t2 = _mm256_unpackhi_epi32(c0, c1), t3 = _mm256_unpackhi_epi32(c2, c3);
    const __m256i r0 = _mm256_unpacklo_epi64(t0, t1), r1 = _mm256_unpackhi_epi64(t0, t1);  // blocks 0 | 4, 1 | 5
    const __m256i r2 = _mm256_unpacklo_epi64(t2, t3), r3 = _mm256_unpackhi_epi64(t2, t3);  // blocks 2 | 6, 3 | 7
    __m256i* o = reinterpret_cast<__m256i*>(w + 4 * b);
    _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(r0, r1, 0x20));
    _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(r2, r3, 0x20));
    _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(r0, r1, 0x31));
    _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(r2, r3, 0x31));
  }
  philox_blocks_scalar(seed, stream, j0, n, w, b);
}
#endif

#if MO_X86_SIMD
// The float32 NCHW normalisation of one sample, eight pixels a step: 24 bytes split into the three
// channels by byte shuffles, then (x - mean) / std as in normalize_sample, written with streaming stores
// (a batch is far larger than the caches, and the stores then need not read the lines first).
// Needs o 32-byte aligned and plane % 8 == 0.
MO_TARGET_AVX2_NOFMA void normalize_chw_f32_avx2(const uint8_t* in, int64_t plane, const NormalizeSpec& s, float* o) {
  __m128i lo_mask[3], hi_mask[3];
  for (int c = 0; c < 3; ++c) {
    alignas(16) int8_t lm[16], hm[16];
    for (int k = 0; k < 16; ++k) lm[k] = hm[k] = -1;
    for (int k = 0; k < 8; ++k) {
      const int byte = 3 * k + c;
      if (byte < 16) lm[k] = static_cast<int8_t>(byte);
      else hm[k] = static_cast<int8_t>(byte - 16);
    }
    lo_mask[c] = _mm_load_si128(reinterpret_cast<const __m128i*>(lm));
    hi_mask[c] = _mm_load_si128(reinterpret_cast<const __m128i*>(hm));
  }
  const __m256 mean[3] = {_mm256_set1_ps(s.mean[0]), _mm256_set1_ps(s.mean[1]), _mm256_set1_ps(s.mean[2])};
  const __m256 stdv[3] = {_mm256_set1_ps(s.std[0]), _mm256_set1_ps(s.std[1]), _mm256_set1_ps(s.std[2])};
  for (int64_t p = 0; p < plane; p += 8) {
    const uint8_t* q = in + p * 3;
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    const __m128i hi = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 16));
    for (int c = 0; c < 3; ++c) {
      const __m128i b = _mm_or_si128(_mm_shuffle_epi8(lo, lo_mask[c]), _mm_shuffle_epi8(hi, hi_mask[c]));
      const __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
      _mm256_stream_ps(o + c * plane + p, _mm256_div_ps(_mm256_sub_ps(x, mean[c]), stdv[c]));
    }
  }
  _mm_sfence();
}
#endif

void philox_blocks(uint64_t seed, uint64_t stream, uint64_t j0, int64_t n, uint32_t* w) {
#if MO_X86_SIMD
  if (cpu_isa() >= CpuIsa::avx2) return philox_blocks_avx2(seed, stream, j0, n, w);
#endif
  philox_blocks_scalar(seed, stream, j0, n, w);
}

// One sample's values, (x - mean) / std.
template <typename T>
MO_ALWAYS_INLINE void normalize_values(const uint8_t* in, int64_t plane, const NormalizeSpec& s, T* o) {
#if MO_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if (!s.channels_last && plane % 8 == 0 && reinterpret_cast<uintptr_t>(o) % 32 == 0 && cpu_isa() >= CpuIsa::avx2)
      return normalize_chw_f32_avx2(in, plane, s, o);
  }
#endif
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

// One sample: normalise every value, then overwrite the erase box with its noise.
template <typename T>
MO_ALWAYS_INLINE void normalize_sample(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed, const NormalizeSpec& s, T* o) {
  const int64_t plane = static_cast<int64_t>(H) * W;
  normalize_values(in, plane, s, o);
  if (m[2] <= 0) return;
  // philox_normal(seed, stream, c * plane + p) for each value of the box: values 2j and 2j + 1 are
  // Box-Muller on the two halves of Philox block j; a row's blocks are made together (philox_blocks).
  const uint64_t stream = static_cast<uint64_t>(m[4]);
  thread_local std::vector<uint32_t> words;
  for (int c = 0; c < 3; ++c)
    for (int64_t y = m[0]; y < m[0] + m[2]; ++y) {
      const uint64_t i0 = static_cast<uint64_t>(c * plane + y * W + m[1]), end = i0 + static_cast<uint64_t>(m[3]);
      const uint64_t j0 = i0 >> 1;
      const int64_t blocks = static_cast<int64_t>(((end - 1) >> 1) - j0 + 1);
      words.resize(static_cast<size_t>(blocks) * 4);
      philox_blocks(seed, stream, j0, blocks, words.data());
      for (uint64_t i = i0; i < end; ++i) {
        const uint32_t* b = &words[((i >> 1) - j0) * 4 + (i & 1) * 2];
        const float u1 = ((b[0] >> 8) + 1) * (1.0f / 16777217.0f);  // as philox_normal
        const float u2 = philox_u32_to_unit(b[1]);
        const float v = sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
        const int64_t p = static_cast<int64_t>(i) - c * plane;
        o[s.channels_last ? p * 3 + c : static_cast<int64_t>(i)] = T(v);
      }
    }
}

// the same body compiled for AVX2 (no FMA: the values stay bit-identical) and for baseline x86-64
template <typename T>
MO_TARGET_AVX2_NOFMA void normalize_avx2(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed,
                                         const NormalizeSpec& s, T* o) {
  normalize_sample(in, m, H, W, seed, s, o);
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
