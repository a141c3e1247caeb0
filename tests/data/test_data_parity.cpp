// test_data_parity.cpp: the JPEG pipeline against PIL 9.4 / torchvision 0.14 (scripts/data/parity_ref.py)
// on real photographs (tests/data/images, plus grayscale and CMYK re-encodings): full decode, the eval
// transform, RandomResizedCrop at fixed windows, and every RandAugment op at magnitude 9.
// Bar: max |difference| <= 2 and mean <= 0.5 per case (most cases are bit-exact).
#include <gtest/gtest.h>

#include <functional>
#include <map>

#include "data/transforms.h"
#include "tests/data/data_test_util.h"

using namespace mo::data;
using namespace mo::data::testing;

namespace {

struct Case {
  std::string name, line;          // the parity_ref.py case line (without the name)
  std::function<Image()> ours;
  int max_tol = 2;
  double mean_tol = 0.5;
};

// Re-encodes a photo as grayscale and as CMYK (libjpeg writes an Adobe marker: PIL reads it inverted).
void make_color_variants(const std::string& photo, const std::string& dir, std::vector<std::string>& out) {
  auto bytes = slurp(photo);
  JpegDecoder dec;
  Image rgb;
  ASSERT_TRUE(dec.open(bytes.data(), bytes.size()) && dec.decode_full(rgb)) << dec.error();
  std::vector<uint8_t> gray(size_t(rgb.w()) * rgb.h()), cmyk(size_t(rgb.w()) * rgb.h() * 4);
  for (size_t i = 0; i < gray.size(); ++i) {
    const uint8_t* p = rgb.data() + 3 * i;
    gray[i] = uint8_t((p[0] * 299 + p[1] * 587 + p[2] * 114) / 1000);
    uint8_t k = uint8_t(255 - std::max({p[0], p[1], p[2]}) / 2);
    for (int c = 0; c < 3; ++c) cmyk[4 * i + c] = uint8_t(255 - p[c] / 2);  // arbitrary but colourful
    cmyk[4 * i + 3] = k;
  }
  // A large re-encoding (2x, PIL-style bicubic) so that the DCT-scaled decode path is exercised.
  Image big(rgb.w() * 2, rgb.h() * 2);
  const float box[4] = {0, 0, float(rgb.w()), float(rgb.h())};
  resample(rgb.view(), box, Interp::bicubic, big.view());
  out.push_back(dir + "/big.jpg");
  write_file(out.back(), encode_jpeg(big.data(), big.w(), big.h(), 3, 90));
  out.push_back(dir + "/gray.jpg");
  write_file(out.back(), encode_jpeg(gray.data(), rgb.w(), rgb.h(), 1, 90));
  out.push_back(dir + "/cmyk.jpg");
  write_file(out.back(), encode_jpeg(cmyk.data(), rgb.w(), rgb.h(), 4, 90));
}

const char* interp_name(Interp i) { return i == Interp::bicubic ? "bicubic" : "bilinear"; }

}  // namespace

TEST(DataParity, AgainstPilAndTorchvision) {
  if (!have_python_peers()) GTEST_SKIP() << "Debian /usr/bin/python3 with PIL + torchvision not found";
  TempDir tmp("parity");
  std::vector<std::string> photos = test_photos();
  make_color_variants(photos[0], tmp.str(), photos);

  std::vector<Case> cases;
  int id = 0;
  for (const std::string& path : photos) {
    auto bytes = std::make_shared<std::vector<uint8_t>>(slurp(path));
    JpegDecoder probe;
    ASSERT_TRUE(probe.open(bytes->data(), bytes->size())) << path << ": " << probe.error();
    const int W = probe.width(), H = probe.height();
    const std::string stem = fs::path(path).stem().string();
    auto name = [&](const std::string& what) { return stem + "_" + what + "_" + std::to_string(id++); };

    cases.push_back({name("decode"), "decode " + path, [bytes] {
                       JpegDecoder d;
                       Image im;
                       EXPECT_TRUE(d.open(bytes->data(), bytes->size()) && d.decode_full(im));
                       return im;
                     }, 0, 0.0});
    for (auto [size, pct, interp] : {std::tuple{224, 1.0, Interp::bicubic}, std::tuple{160, 0.875, Interp::bilinear},
                                     std::tuple{224, 0.95, Interp::bicubic}}) {
      cases.push_back({name("eval"), fmt::format("eval {} {} {} {}", path, size, pct, interp_name(interp)),
                       [bytes, size = size, pct = pct, interp = interp] {
                         EvalTransform t({size, pct, interp, false});
                         Workspace ws;
                         Image out(size, size);
                         std::string err;
                         EXPECT_TRUE(t(bytes->data(), bytes->size(), ws, out.view(), err)) << err;
                         return out;
                       }, 0, 0.0});
    }
    const int s = std::min(W, H);
    const CropWindow windows[] = {{W / 5, H / 7, W / 2, H / 2}, {0, 0, W, H}, {W / 3, H / 4, s / 3, s * 4 / 9},
                                  {W - s * 3 / 4, H - s / 2, s * 3 / 4, s / 2}};
    for (int wi = 0; wi < 4; ++wi) {
      for (bool dct : {false, true}) {
        const CropWindow win = windows[wi];
        const Interp interp = wi % 2 ? Interp::bicubic : Interp::bilinear;
        const bool flip = wi >= 2;
        Case c{name(dct ? "rrc_dct" : "rrc"),
               fmt::format("rrc {} {} {} {} {} 224 {} {}", path, win.x, win.y, win.w, win.h, interp_name(interp), int(flip)),
               [bytes, win, interp, flip, dct] {
                 TrainTransformConfig cfg;
                 cfg.auto_augment = "";
                 cfg.dct_scaling = dct;
                 TrainTransform t(cfg);
                 Workspace ws;
                 Image out(224, 224);
                 std::string err;
                 EXPECT_TRUE(t.apply_fixed(bytes->data(), bytes->size(), &win, interp, flip, nullptr, ws, out.view(), err))
                     << err;
                 return out;
               }};
        // Decoding at a DCT scale of 1/2..1/8 is not PIL's full decode + antialiased resize: it differs
        // by up to the JPEG's own quantisation error, so the scaled path gets a looser bound.
        if (dct) c.max_tol = 16, c.mean_tol = 1.0;
        else c.max_tol = 0, c.mean_tol = 0.0;
        cases.push_back(c);
      }
    }
    if (stem == "gray" || stem == "cmyk" || stem == "astronaut" || stem == "big") continue;  // ops on three photos
    RandAugmentConfig ra = RandAugmentConfig::parse("rand-m9-mstd0.5-inc1");
    for (const char* opname : {"AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "PosterizeIncreasing",
                               "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing", "Contrast",
                               "ContrastIncreasing", "Brightness", "BrightnessIncreasing", "Sharpness",
                               "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}) {
      AugOp op = aug_op_from_name(opname);
      const std::string on(opname);
      const bool geometric = on == "Rotate" || on.rfind("Shear", 0) == 0 || on.rfind("Translate", 0) == 0;
      const bool is_signed = geometric || on.find("Increasing") != std::string::npos;
      for (int negate = 0; negate < (is_signed ? 2 : 1); ++negate) {
        for (Interp interp : {Interp::bilinear, Interp::bicubic}) {
          if (!geometric && interp == Interp::bicubic) continue;
          cases.push_back({name(opname), fmt::format("op {} {} 9 {} {}", path, opname, negate, interp_name(interp)),
                           [bytes, op, negate, interp, ra] {
                             JpegDecoder d;
                             Image im, scratch;
                             EXPECT_TRUE(d.open(bytes->data(), bytes->size()) && d.decode_full(im));
                             apply_aug_op(op, level_to_args(op, 9.0, negate, ra), interp, ra, im, scratch);
                             return im;
                           }});
        }
      }
    }
  }

  std::ofstream f(tmp.path / "cases.txt");
  for (const Case& c : cases) f << c.name << " " << c.line << "\n";
  f.close();
  ASSERT_EQ(run_python(fmt::format("{}/scripts/data/parity_ref.py {}/cases.txt {}", MO_SOURCE_DIR, tmp.str(), tmp.str())), 0);

  std::map<std::string, std::pair<int, int>> dims;
  std::ifstream idx(tmp.path / "index.txt");
  std::string n;
  int w, h;
  while (idx >> n >> w >> h) dims[n] = {w, h};
  int exact = 0;
  double worst_mean = 0;
  for (const Case& c : cases) {
    ASSERT_TRUE(dims.count(c.name)) << c.name;
    Image ours = c.ours();
    auto [rw, rh] = dims[c.name];
    ASSERT_EQ(ours.w(), rw) << c.name << ": " << c.line;
    ASSERT_EQ(ours.h(), rh) << c.name << ": " << c.line;
    auto ref = slurp((tmp.path / (c.name + ".raw")).string());
    ASSERT_EQ(ref.size(), ours.bytes());
    Diff d = diff(ours.data(), ref.data(), ref.size());
    exact += d.max == 0;
    worst_mean = std::max(worst_mean, d.mean);
    EXPECT_LE(d.max, c.max_tol) << c.name << ": " << c.line << " (mean " << d.mean << ")";
    EXPECT_LE(d.mean, c.mean_tol) << c.name << ": " << c.line << " (max " << d.max << ")";
    if (d.max > 0) std::printf("  %-36s max %3d mean %.4f\n", c.name.c_str(), d.max, d.mean);
  }
  std::printf("parity: %zu cases, %d bit-exact\n", cases.size(), exact);
}
