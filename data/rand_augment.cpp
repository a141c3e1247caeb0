// rand_augment.cpp: timm RandAugment policy parsing, magnitude -> argument mapping and application.
#include "data/rand_augment.h"

#include "autograd/parse.h"

#include <cctype>
#include <cmath>
#include <limits>

#include "autograd/check.h"

namespace mo::data {
namespace {

constexpr const char* kNames[] = {
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "PosterizeIncreasing", "PosterizeOriginal",
    "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing", "Contrast", "ContrastIncreasing",
    "Brightness", "BrightnessIncreasing", "Sharpness", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateX",
    "TranslateY", "TranslateXRel", "TranslateYRel"};

// timm _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS
const std::vector<AugOp> kRandOps = {AugOp::AutoContrast, AugOp::Equalize, AugOp::Invert, AugOp::Rotate,
                                     AugOp::Posterize, AugOp::Solarize, AugOp::SolarizeAdd, AugOp::Color,
                                     AugOp::Contrast, AugOp::Brightness, AugOp::Sharpness, AugOp::ShearX,
                                     AugOp::ShearY, AugOp::TranslateXRel, AugOp::TranslateYRel};
const std::vector<AugOp> kRandIncreasingOps = {
    AugOp::AutoContrast, AugOp::Equalize, AugOp::Invert, AugOp::Rotate, AugOp::PosterizeIncreasing,
    AugOp::SolarizeIncreasing, AugOp::SolarizeAdd, AugOp::ColorIncreasing, AugOp::ContrastIncreasing,
    AugOp::BrightnessIncreasing, AugOp::SharpnessIncreasing, AugOp::ShearX, AugOp::ShearY, AugOp::TranslateXRel,
    AugOp::TranslateYRel};

bool is_geometric(AugOp op) {
  return op == AugOp::Rotate || op == AugOp::ShearX || op == AugOp::ShearY || op == AugOp::TranslateX ||
         op == AugOp::TranslateY || op == AugOp::TranslateXRel || op == AugOp::TranslateYRel;
}

bool is_signed(AugOp op) {  // ops whose level goes through _randomly_negate
  return is_geometric(op) || op == AugOp::ColorIncreasing || op == AugOp::ContrastIncreasing ||
         op == AugOp::BrightnessIncreasing || op == AugOp::SharpnessIncreasing;
}

double parse_number(const std::string& policy, const std::string& key, const std::string& val) {
  const std::optional<double> v = parse_float(val);
  MO_CHECK(v.has_value(), "RandAugment policy '{}': bad number '{}' for key '{}'", policy, val, key);
  return *v;
}

}  // namespace

const char* aug_op_name(AugOp op) { return kNames[static_cast<int>(op)]; }

AugOp aug_op_from_name(const std::string& name) {
  for (int i = 0; i < static_cast<int>(std::size(kNames)); ++i)
    if (name == kNames[i]) return static_cast<AugOp>(i);
  MO_FAIL("unknown RandAugment op '{}'", name);
}

RandAugmentConfig RandAugmentConfig::parse(const std::string& policy) {
  RandAugmentConfig c;
  c.policy = policy;
  c.ops = kRandOps;
  size_t start = 0;
  bool first = true;
  while (start <= policy.size()) {
    size_t end = policy.find('-', start);
    if (end == std::string::npos) end = policy.size();
    std::string sec = policy.substr(start, end - start);
    start = end + 1;
    if (first) {
      MO_CHECK(sec == "rand", "RandAugment policy '{}' must start with 'rand-'", policy);
      first = false;
      continue;
    }
    size_t d = 0;
    while (d < sec.size() && !std::isdigit(static_cast<unsigned char>(sec[d]))) ++d;
    MO_CHECK(d > 0 && d < sec.size(), "RandAugment policy '{}': section '{}' is not <key><number>", policy, sec);
    std::string key = sec.substr(0, d), val = sec.substr(d);
    double v = parse_number(policy, key, val);
    if (key == "m") {
      c.magnitude = v;
    } else if (key == "n") {
      c.num_layers = static_cast<int>(v);
    } else if (key == "mstd") {
      c.magnitude_std = v > 100 ? std::numeric_limits<double>::infinity() : v;
    } else if (key == "mmax") {
      c.magnitude_max = v;
    } else if (key == "p") {
      c.prob = v;
    } else if (key == "inc") {
      c.ops = v != 0 ? kRandIncreasingOps : kRandOps;
    } else {
      MO_FAIL("RandAugment policy '{}': unknown key '{}' (known: m, n, mstd, mmax, p, inc)", policy, key);
    }
  }
  MO_CHECK(!first, "RandAugment policy is empty");
  MO_CHECK(c.num_layers >= 0 && c.prob >= 0 && c.prob <= 1 && c.magnitude_max > 0,
           "RandAugment policy '{}': n {} / p {} / mmax {} out of range", policy, c.num_layers, c.prob, c.magnitude_max);
  return c;
}

OpArgs level_to_args(AugOp op, double m, bool negate, const RandAugmentConfig& cfg) {
  const double level = m / 10.0;  // _LEVEL_DENOM
  auto sgn = [negate](double v) { return negate ? -v : v; };
  OpArgs a;
  switch (op) {
    case AugOp::Rotate: a.value = sgn(level * 30.0); break;
    case AugOp::Posterize: a.ivalue = static_cast<int>(level * 4); break;
    case AugOp::PosterizeIncreasing: a.ivalue = 4 - static_cast<int>(level * 4); break;
    case AugOp::PosterizeOriginal: a.ivalue = static_cast<int>(level * 4) + 4; break;
    case AugOp::Solarize: a.ivalue = static_cast<int>(level * 256); break;
    case AugOp::SolarizeIncreasing: a.ivalue = 256 - static_cast<int>(level * 256); break;
    case AugOp::SolarizeAdd: a.ivalue = static_cast<int>(level * 110); break;
    case AugOp::Color: case AugOp::Contrast: case AugOp::Brightness: case AugOp::Sharpness:
      a.value = level * 1.8 + 0.1;
      break;
    case AugOp::ColorIncreasing: case AugOp::ContrastIncreasing: case AugOp::BrightnessIncreasing:
    case AugOp::SharpnessIncreasing:
      a.value = std::max(0.1, 1.0 + sgn(level * 0.9));
      break;
    case AugOp::ShearX: case AugOp::ShearY: a.value = sgn(level * 0.3); break;
    case AugOp::TranslateX: case AugOp::TranslateY: a.value = sgn(level * cfg.translate_const); break;
    case AugOp::TranslateXRel: case AugOp::TranslateYRel: a.value = sgn(level * cfg.translate_pct); break;
    default: break;  // AutoContrast, Equalize, Invert take no argument
  }
  return a;
}

void apply_aug_op(AugOp op, const OpArgs& a, Interp interp, const RandAugmentConfig& cfg, Image& img, Image& scratch) {
  switch (op) {
    case AugOp::AutoContrast: op_autocontrast(img); break;
    case AugOp::Equalize: op_equalize(img); break;
    case AugOp::Invert: op_invert(img); break;
    case AugOp::Rotate: op_rotate(img, a.value, interp, cfg.fill, scratch); break;
    case AugOp::Posterize: case AugOp::PosterizeIncreasing: case AugOp::PosterizeOriginal:
      op_posterize(img, a.ivalue);
      break;
    case AugOp::Solarize: case AugOp::SolarizeIncreasing: op_solarize(img, a.ivalue); break;
    case AugOp::SolarizeAdd: op_solarize_add(img, a.ivalue, 128); break;
    case AugOp::Color: case AugOp::ColorIncreasing: op_color(img, a.value); break;
    case AugOp::Contrast: case AugOp::ContrastIncreasing: op_contrast(img, a.value); break;
    case AugOp::Brightness: case AugOp::BrightnessIncreasing: op_brightness(img, a.value); break;
    case AugOp::Sharpness: case AugOp::SharpnessIncreasing: op_sharpness(img, a.value, scratch); break;
    case AugOp::ShearX: {
      const double m[6] = {1, a.value, 0, 0, 1, 0};
      op_affine(img, m, interp, cfg.fill, scratch);
      break;
    }
    case AugOp::ShearY: {
      const double m[6] = {1, 0, 0, a.value, 1, 0};
      op_affine(img, m, interp, cfg.fill, scratch);
      break;
    }
    case AugOp::TranslateX: case AugOp::TranslateXRel: {
      const double px = op == AugOp::TranslateX ? a.value : a.value * img.w();
      const double m[6] = {1, 0, px, 0, 1, 0};
      op_affine(img, m, interp, cfg.fill, scratch);
      break;
    }
    case AugOp::TranslateY: case AugOp::TranslateYRel: {
      const double px = op == AugOp::TranslateY ? a.value : a.value * img.h();
      const double m[6] = {1, 0, 0, 0, 1, px};
      op_affine(img, m, interp, cfg.fill, scratch);
      break;
    }
  }
}

void rand_augment(Image& img, const RandAugmentConfig& cfg, Rng& rng, Image& scratch) {
  if (cfg.ops.empty()) return;
  for (int layer = 0; layer < cfg.num_layers; ++layer) {
    const AugOp op = cfg.ops[static_cast<size_t>(rng.randint(0, static_cast<int64_t>(cfg.ops.size()) - 1))];
    if (cfg.prob < 1.0 && rng.uniform() > cfg.prob) continue;
    double m = cfg.magnitude;
    if (std::isinf(cfg.magnitude_std)) m = rng.uniform(0.0, m);
    else if (cfg.magnitude_std > 0) m = rng.normal(m, cfg.magnitude_std);
    m = std::max(0.0, std::min(m, cfg.magnitude_max));
    const bool negate = is_signed(op) && rng.uniform() > 0.5;
    Interp interp = Interp::bilinear;
    if (is_geometric(op)) interp = cfg.interpolation ? *cfg.interpolation : (rng.uniform() < 0.5 ? Interp::bilinear : Interp::bicubic);
    apply_aug_op(op, level_to_args(op, m, negate, cfg), interp, cfg, img, scratch);
  }
}

}  // namespace mo::data
