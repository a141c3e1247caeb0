// mixup.cpp: batch mixup / cutmix and soft targets (see mixup.h).
#include "data/mixup.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/check.h"
#include "autograd/cpu_isa.h"
#if MO_X86_SIMD
#include <immintrin.h>
#endif

namespace mo::data {
namespace {

// a <- rint(a * la + b * lb), b <- rint(b * la + a * lb) over n bytes (a == b: the middle sample, once).
// float32 products and sum, no FMA, rounding half to even: the same bytes on every path.
void mix_pair_scalar(uint8_t* a, uint8_t* b, size_t n, float la, float lb, size_t from = 0) {
  for (size_t k = from; k < n; ++k) {
    const float fa = a[k], fb = b[k];
    const float ma = std::rint(fa * la + fb * lb), mb = std::rint(fb * la + fa * lb);
    a[k] = static_cast<uint8_t>(ma);
    if (a != b) b[k] = static_cast<uint8_t>(mb);
  }
}

#if MO_X86_SIMD
// 8 floats in [0, 255] -> 8 bytes; cvtps rounds to nearest even (the default MXCSR mode), as rint does.
MO_TARGET_AVX2_NOFMA inline long long to_u8(__m256 v) {
  const __m256i i = _mm256_cvtps_epi32(v);
  const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  return _mm_cvtsi128_si64(_mm_packus_epi16(w, w));
}

// 8 bytes a step.
MO_TARGET_AVX2_NOFMA void mix_pair_avx2(uint8_t* a, uint8_t* b, size_t n, float la, float lb) {
  const __m256 vla = _mm256_set1_ps(la), vlb = _mm256_set1_ps(lb);
  size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 fa = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a + k))));
    const __m256 fb = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + k))));
    const long long ma = to_u8(_mm256_add_ps(_mm256_mul_ps(fa, vla), _mm256_mul_ps(fb, vlb)));
    const long long mb = to_u8(_mm256_add_ps(_mm256_mul_ps(fb, vla), _mm256_mul_ps(fa, vlb)));
    std::memcpy(a + k, &ma, 8);
    if (a != b) std::memcpy(b + k, &mb, 8);
  }
  mix_pair_scalar(a, b, n, la, lb, k);
}
#endif

}  // namespace

MixParams draw_mix_params(const MixupConfig& cfg, int height, int width, Rng& rng) {
  MixParams p;
  if (!cfg.enabled() || !(rng.uniform() < cfg.prob)) return p;
  if (cfg.mixup_alpha > 0 && cfg.cutmix_alpha > 0) {
    p.cutmix = rng.uniform() < cfg.switch_prob;
    p.lam = p.cutmix ? rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha) : rng.beta(cfg.mixup_alpha, cfg.mixup_alpha);
  } else if (cfg.mixup_alpha > 0) {
    p.lam = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha);
  } else {
    p.cutmix = true;
    p.lam = rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha);
  }
  if (p.cutmix) {  // rand_bbox: a (cut_h, cut_w) box centred anywhere, clipped to the image
    const double ratio = std::sqrt(1.0 - p.lam);
    const int cut_h = static_cast<int>(height * ratio), cut_w = static_cast<int>(width * ratio);
    const int cy = static_cast<int>(rng.randint(0, height - 1)), cx = static_cast<int>(rng.randint(0, width - 1));
    p.yl = std::clamp(cy - cut_h / 2, 0, height);
    p.yh = std::clamp(cy + cut_h / 2, 0, height);
    p.xl = std::clamp(cx - cut_w / 2, 0, width);
    p.xh = std::clamp(cx + cut_w / 2, 0, width);
    if (cfg.correct_lam) p.lam = 1.0 - static_cast<double>((p.yh - p.yl) * (p.xh - p.xl)) / (double(height) * width);
  }
  return p;
}

void mix_batch(uint8_t* images, int batch, int height, int width, const MixParams& p) {
  if (p.lam == 1.0) return;
  const size_t row = static_cast<size_t>(width) * 3, sample = row * height;
  if (p.cutmix) {  // sample i takes the box from sample B-1-i: swap the boxes of each pair
    const size_t len = static_cast<size_t>(p.xh - p.xl) * 3;
    for (int i = 0; i < batch / 2; ++i) {
      uint8_t *a = images + i * sample, *b = images + (batch - 1 - i) * sample;
      for (int y = p.yl; y < p.yh; ++y) std::swap_ranges(a + y * row + p.xl * 3, a + y * row + p.xl * 3 + len, b + y * row + p.xl * 3);
    }
    return;
  }
  const float la = static_cast<float>(p.lam), lb = static_cast<float>(1.0 - p.lam);  // numpy float32 math
  for (int i = 0; i <= (batch - 1) / 2; ++i) {
    uint8_t *a = images + i * sample, *b = images + (batch - 1 - i) * sample;
#if MO_X86_SIMD
    if (cpu_isa() >= CpuIsa::avx2) {
      mix_pair_avx2(a, b, sample, la, lb);
      continue;
    }
#endif
    mix_pair_scalar(a, b, sample, la, lb);
  }
}

void mix_targets(const int64_t* labels, int batch, int num_classes, double lam, double smoothing, float* out) {
  const float off = static_cast<float>(smoothing / num_classes), on = static_cast<float>(1.0 - smoothing + smoothing / num_classes);
  const float la = static_cast<float>(lam), lb = static_cast<float>(1.0 - lam);
  for (int i = 0; i < batch; ++i) {
    const int64_t y1 = labels[i], y2 = labels[batch - 1 - i];
    MO_CHECK(y1 >= 0 && y1 < num_classes, "mix_targets: label {} outside [0, {})", y1, num_classes);
    float* t = out + static_cast<size_t>(i) * num_classes;
    for (int c = 0; c < num_classes; ++c) {
      const float v1 = c == y1 ? on : off, v2 = c == y2 ? on : off;
      t[c] = v1 * la + v2 * lb;
    }
  }
}

}  // namespace mo::data
