// rand_augment.h: timm's RandAugment (timm/data/auto_augment.py, rand_augment_transform) configured by a
// timm policy string such as "rand-m9-mstd0.5-inc1". Keys: m (magnitude), n (ops per image), mstd
// (magnitude noise std; > 100 means uniform in [0, m]), mmax (magnitude upper bound, default 10),
// p (probability of each chosen op, default 0.5), inc (1: the "increasing" op set). Each image draws n ops
// uniformly with replacement; each is applied with probability p at magnitude N(m, mstd) clipped to
// [0, mmax]; geometric ops pick bilinear or bicubic at random and fill with `fill`.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "data/augment_ops.h"
#include "data/random.h"

namespace mo::data {

enum class AugOp : uint8_t {
  AutoContrast, Equalize, Invert, Rotate, Posterize, PosterizeIncreasing, PosterizeOriginal, Solarize,
  SolarizeIncreasing, SolarizeAdd, Color, ColorIncreasing, Contrast, ContrastIncreasing, Brightness,
  BrightnessIncreasing, Sharpness, SharpnessIncreasing, ShearX, ShearY, TranslateX, TranslateY,
  TranslateXRel, TranslateYRel
};
const char* aug_op_name(AugOp op);
AugOp aug_op_from_name(const std::string& name);  // throws mo::Error naming the op

struct RandAugmentConfig {
  std::string policy;        // the string it was parsed from
  int num_layers = 2;
  double magnitude = 10.0;
  double magnitude_std = 0.0;  // +inf: uniform in [0, magnitude]
  double magnitude_max = 10.0;
  double prob = 0.5;
  std::vector<AugOp> ops;      // the op set drawn from
  Rgb fill = {124, 116, 104};  // timm: round(255 * ImageNet mean)
  double translate_pct = 0.45;  // TranslateXRel / TranslateYRel range
  double translate_const = 100;  // TranslateX / TranslateY range in pixels (timm: 0.45 * img size)
  std::optional<Interp> interpolation;  // unset: bilinear or bicubic at random per op (timm 'random')

  // Parses "rand-m9-mstd0.5-inc1" (also n, p, mmax). Throws mo::Error naming the bad section.
  static RandAugmentConfig parse(const std::string& policy);
};

// The arguments an op gets at a magnitude (timm's LEVEL_TO_ARG); `negate` is the coin of
// _randomly_negate for the signed ones.
struct OpArgs {
  double value = 0;  // degrees, factor, shear, pixels or fraction
  int ivalue = 0;    // bits or threshold / addend
};
OpArgs level_to_args(AugOp op, double magnitude, bool negate, const RandAugmentConfig& cfg);

// Applies one op with its arguments (deterministic; the parity tests call this).
void apply_aug_op(AugOp op, const OpArgs& args, Interp interp, const RandAugmentConfig& cfg, Image& img,
                  Image& scratch);

// The whole RandAugment on one image, drawing from rng.
void rand_augment(Image& img, const RandAugmentConfig& cfg, Rng& rng, Image& scratch);

}  // namespace mo::data
