// mixup.h: timm's FastCollateMixup in 'batch' mode (timm/data/mixup.py), on uint8 images before
// normalisation, and the soft targets. One draw per batch: with probability `prob` either mixup
// (lambda ~ Beta(mixup_alpha)) or, with probability switch_prob, cutmix (lambda ~ Beta(cutmix_alpha),
// a box of area (1 - lambda), lambda then recomputed from the clipped box: correct_lam). Sample i mixes
// with sample B-1-i; mixup pixels are computed in float32 and rounded to the nearest integer. Targets:
// one-hot with label smoothing (off = s / C, on = 1 - s + off), y_i * lam + y_{B-1-i} * (1 - lam).
#pragma once
#include <cstdint>

#include "data/random.h"

namespace mo::data {

struct MixupConfig {
  double mixup_alpha = 0.8, cutmix_alpha = 1.0;
  double prob = 1.0, switch_prob = 0.5;
  double label_smoothing = 0.1;
  bool correct_lam = true;
  bool enabled() const { return prob > 0 && (mixup_alpha > 0 || cutmix_alpha > 0); }
};

struct MixParams {
  double lam = 1.0;
  bool cutmix = false;
  int yl = 0, yh = 0, xl = 0, xh = 0;  // cutmix box rows [yl, yh), columns [xl, xh)
};

// One batch's parameters for H x W images (timm _params_per_batch + cutmix_bbox_and_lam).
MixParams draw_mix_params(const MixupConfig& cfg, int height, int width, Rng& rng);

// Mixes a batch in place: images (B, H, W, 3) uint8, packed.
void mix_batch(uint8_t* images, int batch, int height, int width, const MixParams& p);

// Soft targets (B, num_classes) float32 for integer labels.
void mix_targets(const int64_t* labels, int batch, int num_classes, double lam, double smoothing, float* out);

}  // namespace mo::data
