// mixup.cpp: batch mixup / cutmix and soft targets (see mixup.h).
#include "data/mixup.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/check.h"
#include "autograd/cpu_isa.h"

namespace mo::data {
namespace {

// a <- rint(a * la + b * lb), b <- rint(b * la + a * lb) over n bytes (a == b, the middle sample: both
// are the same value). float32 products and sum, no FMA, rounding half to even; the compiler vectorises.
MO_ALWAYS_INLINE void mix_pair_body(uint8_t* a, uint8_t* b, size_t n, float la, float lb) {
  for (size_t k = 0; k < n; ++k) {
    const float fa = a[k], fb = b[k];
    a[k] = static_cast<uint8_t>(std::rint(fa * la + fb * lb));
    b[k] = static_cast<uint8_t>(std::rint(fb * la + fa * lb));
  }
}
MO_TARGET_AVX2_NOFMA void mix_pair_avx2(uint8_t* a, uint8_t* b, size_t n, float la, float lb) {
  mix_pair_body(a, b, n, la, lb);
}
void mix_pair(uint8_t* a, uint8_t* b, size_t n, float la, float lb) {
  if (cpu_isa() >= CpuIsa::avx2) return mix_pair_avx2(a, b, n, la, lb);
  mix_pair_body(a, b, n, la, lb);
}

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
    mix_pair(a, b, sample, la, lb);
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
