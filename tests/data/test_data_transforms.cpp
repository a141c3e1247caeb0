// test_data_transforms.cpp: pieces of the transforms that need no peer: windowed / DCT-scaled decoding
// equals the full decode, RandomResizedCrop window statistics and fallback, RandAugment policy strings
// and determinism, the draw()/augment() halves the GPU decoder uses, mixup / cutmix and the soft targets;
// the AVX2 paths give the bytes of the portable ones.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "autograd/check.h"
#include "autograd/cpu_isa.h"
#include "data/mixup.h"
#include "data/transforms.h"
#include "tests/data/data_test_util.h"

using namespace mo;
using namespace mo::data;
using namespace mo::data::testing;

TEST(DataTransforms, WindowDecodeEqualsFullDecodeAtEveryScale) {
  for (const auto& p : test_photos()) {
    auto b = slurp(p);
    JpegDecoder d;
    ASSERT_TRUE(d.open(b.data(), b.size()));
    const int W = d.width(), H = d.height();
    for (int denom : {1, 2, 4, 8}) {
      // the whole image at this scale (min sizes chosen so that exactly `denom` is picked)
      DecodedWindow whole;
      ASSERT_TRUE(d.open(b.data(), b.size()) && d.decode(0, 0, W, H, W / denom, H / denom, whole));
      ASSERT_EQ(whole.scale_denom, denom);
      Image full = to_image(whole.view);
      for (int x = 0; x + 24 <= W; x += 37)
        for (int y = 0; y + 24 <= H; y += 41) {
          const int w = std::min(W - x, 24 + (x % 5) * 40), h = std::min(H - y, 24 + (y % 3) * 50);
          const int mw = w / denom, mh = h / denom;
          if (mw < 1 || mh < 1) continue;
          DecodedWindow win;
          ASSERT_TRUE(d.open(b.data(), b.size()) && d.decode(x, y, w, h, mw, mh, win)) << d.error();
          ASSERT_EQ(win.scale_denom, denom);
          const int px0 = x / denom, py0 = y / denom;
          EXPECT_FLOAT_EQ(win.box[0], float(double(x) / denom - px0));
          for (int r = 0; r < win.view.h; ++r)
            ASSERT_EQ(0, std::memcmp(win.view.row(r), full.row(py0 + r) + px0 * 3, size_t(win.view.w) * 3))
                << p << " denom " << denom << " window " << x << "," << y << " " << w << "x" << h << " row " << r;
        }
    }
  }
}

TEST(DataTransforms, LibjpegTurboVersionIsNamed) {  // what mo_bench_data prints beside its numbers
  const std::string v = libjpeg_turbo_version();
  int major = 0, minor = 0, patch = 0;
  ASSERT_EQ(std::sscanf(v.c_str(), "%d.%d.%d", &major, &minor, &patch), 3) << v;
  EXPECT_GE(major, 1) << v;
}

TEST(DataTransforms, RandomResizedCropWindows) {
  TrainTransformConfig cfg;
  double area = 0, logr = 0;
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    Rng rng(3, uint64_t(i));
    CropWindow w = random_resized_crop_window(500, 375, cfg, rng);
    ASSERT_GT(w.w, 0);
    ASSERT_GT(w.h, 0);
    ASSERT_LE(w.x + w.w, 500);
    ASSERT_LE(w.y + w.h, 375);
    area += double(w.w) * w.h / (500.0 * 375);
    logr += std::log(double(w.w) / w.h);
  }
  EXPECT_NEAR(area / n, 0.435, 0.02);  // torchvision get_params on 500x375 gives 0.435 (large tries get rejected)
  EXPECT_NEAR(logr / n, 0.0, 0.03);
  // a thin strip never fits 3/4..4/3 at scale >= 0.08 with the ratio kept: centre fallback
  Rng rng(1, 1);
  CropWindow f = random_resized_crop_window(1000, 20, cfg, rng);
  EXPECT_EQ(f.h, 20);
  EXPECT_EQ(f.w, 27);  // round(20 * 4/3)
  EXPECT_EQ(f.x, (1000 - 27) / 2);
}

TEST(DataTransforms, RandAugmentPolicyStrings) {
  auto c = RandAugmentConfig::parse("rand-m9-mstd0.5-inc1");
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.magnitude, 9);
  EXPECT_EQ(c.magnitude_std, 0.5);
  EXPECT_EQ(c.prob, 0.5);
  ASSERT_EQ(c.ops.size(), 15u);
  EXPECT_EQ(c.ops[4], AugOp::PosterizeIncreasing);
  auto d = RandAugmentConfig::parse("rand-n3-m7-p0.8-mmax12-mstd101");
  EXPECT_EQ(d.num_layers, 3);
  EXPECT_EQ(d.prob, 0.8);
  EXPECT_EQ(d.magnitude_max, 12);
  EXPECT_TRUE(std::isinf(d.magnitude_std));
  EXPECT_EQ(d.ops[4], AugOp::Posterize);
  for (const char* bad : {"augmix-m9", "rand-q9", "rand-m", "rand-mx", ""}) EXPECT_THROW(RandAugmentConfig::parse(bad), Error) << bad;
  try {
    RandAugmentConfig::parse("rand-m9-zz3");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'zz'"), std::string::npos) << e.what();
  }
  // level -> argument, timm's tables at magnitude 9
  EXPECT_DOUBLE_EQ(level_to_args(AugOp::Rotate, 9, true, c).value, -27.0);
  EXPECT_EQ(level_to_args(AugOp::PosterizeIncreasing, 9, false, c).ivalue, 1);
  EXPECT_EQ(level_to_args(AugOp::SolarizeIncreasing, 9, false, c).ivalue, 26);
  EXPECT_EQ(level_to_args(AugOp::SolarizeAdd, 9, false, c).ivalue, 99);
  EXPECT_NEAR(level_to_args(AugOp::ContrastIncreasing, 9, true, c).value, 0.19, 1e-12);
  EXPECT_NEAR(level_to_args(AugOp::TranslateXRel, 9, false, c).value, 0.405, 1e-12);
}

TEST(DataTransforms, TrainTransformIsDeterministicPerKey) {
  auto bytes = slurp(test_photos()[2]);
  TrainTransform t({});
  Workspace ws1, ws2;
  Image a(224, 224), b(224, 224), c(224, 224);
  std::string err;
  int differ = 0;
  for (uint64_t k = 0; k < 20; ++k) {
    Rng r1(5, k), r2(5, k), r3(5, k + 1000);
    ASSERT_TRUE(t(bytes.data(), bytes.size(), r1, ws1, a.view(), err)) << err;
    ASSERT_TRUE(t(bytes.data(), bytes.size(), r2, ws2, b.view(), err)) << err;
    ASSERT_TRUE(t(bytes.data(), bytes.size(), r3, ws1, c.view(), err)) << err;
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.bytes()));
    differ += std::memcmp(a.data(), c.data(), a.bytes()) != 0;
  }
  EXPECT_EQ(differ, 20);
}

// The GPU decoder's half (gpu_jpeg.h): draw() makes operator()'s draws, so apply_fixed on them gives its
// bytes; and RandAugment by augment() on the plain crop, with the rng where draw() left it, too.
TEST(DataTransforms, DrawThenApplyIsTheTransform) {
  TrainTransform t({});
  Workspace ws1, ws2;
  Image a(224, 224), b(224, 224), c(224, 224);
  std::string err;
  int flips = 0, bicubic = 0;
  for (const auto& p : test_photos()) {
    auto bytes = slurp(p);
    for (uint64_t k = 0; k < 12; ++k) {
      Rng r1(9, k), r2(9, k), r3(9, k);
      ASSERT_TRUE(t(bytes.data(), bytes.size(), r1, ws1, a.view(), err)) << err;
      TrainDraw d, e;
      ASSERT_TRUE(t.draw(bytes.data(), bytes.size(), r2, ws2, d, err)) << err;
      EXPECT_EQ(d.gpu, p.find("rocket") == std::string::npos) << p;  // rocket.jpg is progressive, the rest baseline
      ASSERT_TRUE(t.apply_fixed(bytes.data(), bytes.size(), &d.win, d.interp, d.flip, &r2, ws2, b.view(), err)) << err;
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.bytes())) << p << " key " << k;
      ASSERT_TRUE(t.draw(bytes.data(), bytes.size(), r3, ws2, e, err)) << err;
      ASSERT_TRUE(t.apply_fixed(bytes.data(), bytes.size(), &e.win, e.interp, e.flip, nullptr, ws2, c.view(), err));
      t.augment(c.view(), r3, ws2);
      ASSERT_EQ(0, std::memcmp(a.data(), c.data(), a.bytes())) << p << " key " << k;
      flips += d.flip, bicubic += d.interp == Interp::bicubic;
    }
  }
  EXPECT_GT(flips, 8);  // 48 draws of p = 0.5
  EXPECT_LT(flips, 40);
  EXPECT_GT(bicubic, 8);
  EXPECT_LT(bicubic, 40);
}

// Which files the GPU decoder is given: baseline YCbCr with an EOI; grayscale, CMYK and a truncated file
// (no EOI) stay on the CPU.
TEST(DataTransforms, GpuDecodableFiles) {
  Image img(40, 30);
  for (size_t i = 0; i < img.bytes(); ++i) img.data()[i] = static_cast<uint8_t>(i * 7);
  std::vector<uint8_t> cmyk(40 * 30 * 4, 90);
  const auto rgb = encode_jpeg(img.data(), 40, 30, 3), gray = encode_jpeg(img.data(), 40, 30, 1),
             cm = encode_jpeg(cmyk.data(), 40, 30, 4);
  const std::vector<uint8_t> cut(rgb.begin(), rgb.begin() + static_cast<long>(rgb.size() * 2 / 3));
  JpegDecoder d;
  for (const auto& [bytes, want] : std::vector<std::pair<std::vector<uint8_t>, bool>>{
           {rgb, true}, {gray, false}, {cm, false}, {cut, false}}) {
    ASSERT_TRUE(d.open(bytes.data(), bytes.size())) << d.error();
    EXPECT_EQ(d.gpu_decodable(), want) << bytes.size();
  }
  ASSERT_FALSE(d.open(rgb.data(), 3));
  EXPECT_FALSE(d.gpu_decodable());
}

TEST(DataTransforms, MixupCutmixAndTargets) {
  const int B = 4, H = 6, W = 8;
  std::vector<uint8_t> img(size_t(B) * H * W * 3);
  for (int b = 0; b < B; ++b) std::fill_n(img.begin() + b * H * W * 3, H * W * 3, uint8_t(10 + 60 * b));
  // mixup: rint(a * lam + b * (1 - lam)) in float32, sample i with B-1-i
  MixParams p;
  p.lam = 0.3;
  auto m = img;
  mix_batch(m.data(), B, H, W, p);
  EXPECT_EQ(m[0], uint8_t(std::rint(10 * 0.3f + 190 * 0.7f)));
  EXPECT_EQ(m[size_t(3) * H * W * 3], uint8_t(std::rint(190 * 0.3f + 10 * 0.7f)));
  // cutmix: the box comes from the partner, the rest is untouched
  p.cutmix = true;
  p.yl = 1, p.yh = 4, p.xl = 2, p.xh = 7;
  auto c = img;
  mix_batch(c.data(), B, H, W, p);
  EXPECT_EQ(c[(1 * W + 2) * 3], 190);
  EXPECT_EQ(c[0], 10);
  EXPECT_EQ(c[size_t(1) * H * W * 3 + (3 * W + 6) * 3], 130);  // sample 1 <- sample 2
  // corrected lambda and the box
  MixupConfig cfg;
  cfg.switch_prob = 1.0;  // always cutmix
  Rng rng(9, 9);
  MixParams q = draw_mix_params(cfg, 224, 224, rng);
  EXPECT_TRUE(q.cutmix);
  EXPECT_NEAR(q.lam, 1.0 - double((q.yh - q.yl) * (q.xh - q.xl)) / (224.0 * 224.0), 1e-12);
  // targets: smoothing 0.1 over 5 classes, lam 0.25
  const int64_t labels[4] = {0, 1, 2, 3};
  std::vector<float> t(4 * 5);
  mix_targets(labels, 4, 5, 0.25, 0.1, t.data());
  const float off = 0.1f / 5, on = 1.0f - 0.1f + off;
  EXPECT_FLOAT_EQ(t[0], on * 0.25f + off * 0.75f);
  EXPECT_FLOAT_EQ(t[3], off * 0.25f + on * 0.75f);  // partner of sample 0 is sample 3
  EXPECT_FLOAT_EQ(t[4], off);
  float s = 0;
  for (int k = 0; k < 5; ++k) s += t[k];
  EXPECT_NEAR(s, 1.0f, 1e-6f);
  // Beta draws: mean alpha / (alpha + beta) = 0.5
  double mean = 0;
  for (int i = 0; i < 2000; ++i) mean += Rng(1, uint64_t(i)).beta(0.8, 0.8);
  EXPECT_NEAR(mean / 2000, 0.5, 0.03);
}

namespace {

// The portable and the AVX2 run of f (each on a fresh copy of `in`), which must agree byte for byte.
template <typename F>
void expect_simd_matches_scalar(const Image& in, F f, const std::string& what) {
  if (cpu_isa_detected() < CpuIsa::avx2) GTEST_SKIP() << "no AVX2 on this CPU";
  Image a = in, b = in, s1, s2;
  const CpuIsa prev = set_cpu_isa(CpuIsa::scalar);
  f(a, s1);
  set_cpu_isa(CpuIsa::avx2);
  f(b, s2);
  set_cpu_isa(prev);
  ASSERT_EQ(a.w(), b.w());
  ASSERT_EQ(a.h(), b.h());
  const Diff d = diff(a.data(), b.data(), a.bytes());
  EXPECT_EQ(d.max, 0) << what << " (mean " << d.mean << ")";
}

Image photo_crop(int w, int h) {
  auto bytes = slurp(test_photos()[1]);
  TrainTransformConfig cfg;
  cfg.auto_augment = "";
  Workspace ws;
  Image out(w, h);
  std::string err;
  const CropWindow win{40, 30, 300, 250};
  // a resize to w x h (not square: both output sizes of the transform's resample)
  JpegDecoder d;
  DecodedWindow dec;
  EXPECT_TRUE(d.open(bytes.data(), bytes.size()) && d.decode(win.x, win.y, win.w, win.h, 0, 0, dec)) << d.error();
  resample(dec.view, dec.box, Interp::bilinear, out.view());
  return out;
}

}  // namespace

TEST(DataTransforms, SimdGeometricOpsMatchScalar) {
  const RandAugmentConfig ra = RandAugmentConfig::parse("rand-m9-mstd0.5-inc1");
  for (auto [w, h] : {std::pair{224, 224}, std::pair{223, 131}, std::pair{5, 3}}) {
    const Image img = photo_crop(w, h);
    for (AugOp op : {AugOp::Rotate, AugOp::ShearX, AugOp::ShearY, AugOp::TranslateXRel, AugOp::TranslateYRel,
                     AugOp::TranslateX, AugOp::TranslateY})
      for (double m : {0.0, 3.0, 9.0, 10.0})
        for (bool neg : {false, true})
          for (Interp interp : {Interp::bilinear, Interp::bicubic})
            expect_simd_matches_scalar(
                img, [&](Image& im, Image& sc) { apply_aug_op(op, level_to_args(op, m, neg, ra), interp, ra, im, sc); },
                fmt::format("{} m {} neg {} {} on {}x{}", aug_op_name(op), m, neg, int(interp), w, h));
    for (double deg : {0.5, 45.0, 90.0, 137.0, 180.0, -270.0})
      for (Interp interp : {Interp::bilinear, Interp::bicubic})
        expect_simd_matches_scalar(img, [&](Image& im, Image& sc) { op_rotate(im, deg, interp, ra.fill, sc); },
                                   fmt::format("rotate {} {} on {}x{}", deg, int(interp), w, h));
  }
}

TEST(DataTransforms, SimdColourOpsAndMixupMatchScalar) {
  const RandAugmentConfig ra = RandAugmentConfig::parse("rand-m9-mstd0.5-inc1");
  for (auto [w, h] : {std::pair{224, 224}, std::pair{223, 131}, std::pair{5, 3}}) {
    const Image img = photo_crop(w, h);
    for (AugOp op : ra.ops)
      for (double m : {0.0, 4.0, 9.0})
        for (bool neg : {false, true})
          expect_simd_matches_scalar(
              img, [&](Image& im, Image& sc) { apply_aug_op(op, level_to_args(op, m, neg, ra), Interp::bilinear, ra, im, sc); },
              fmt::format("{} m {} neg {} on {}x{}", aug_op_name(op), m, neg, w, h));
    // mixup of a batch of 3 copies (the middle sample mixes with itself) at several lambdas
    for (double lam : {0.0, 0.13, 0.5, 0.77, 1.0 - 1e-9}) {
      Image batch(w, h * 3);
      for (int k = 0; k < 3; ++k) {
        Image shifted = img;
        for (size_t i = 0; i < shifted.bytes(); ++i) shifted.data()[i] = uint8_t(shifted.data()[i] * (k + 1) + 17 * k);
        std::memcpy(batch.data() + k * img.bytes(), shifted.data(), img.bytes());
      }
      MixParams p;
      p.lam = lam;
      expect_simd_matches_scalar(batch, [&](Image& im, Image&) { mix_batch(im.data(), 3, h, w, p); },
                                 fmt::format("mixup lam {} on {}x{}", lam, w, h));
    }
  }
}

TEST(DataTransforms, SimdResampleMatchesScalar) {
  auto bytes = slurp(test_photos()[0]);
  JpegDecoder d;
  Image full;
  ASSERT_TRUE(d.open(bytes.data(), bytes.size()) && d.decode_full(full)) << d.error();
  const int W = full.w(), H = full.h();
  // boxes that downscale a lot or a little, upscale, are fractional or thin; outputs square or not
  const float boxes[][4] = {{0, 0, float(W), float(H)}, {10.5f, 3.25f, 300.75f, 250.5f}, {100, 80, 150, 120},
                            {0, 0, 7, 5}, {float(W) - 33, float(H) - 2, float(W), float(H)}, {1, 1, 2.5f, 3}};
  const std::pair<int, int> sizes[] = {{224, 224}, {37, 61}, {1, 1}, {640, 3}};
  for (const auto& box : boxes)
    for (auto [w, h] : sizes)
      for (Interp interp : {Interp::bilinear, Interp::bicubic})
        for (bool flip : {false, true}) {
          Image out(w, h);
          expect_simd_matches_scalar(out, [&](Image& o, Image&) { resample(full.view(), box, interp, o.view(), flip); },
                                     fmt::format("box ({}, {}, {}, {}) -> {}x{} interp {} flip {}", box[0], box[1],
                                                 box[2], box[3], w, h, int(interp), flip));
        }
}
