// test_data_image_decode.cpp: PNG and WebP decoding (data/image_decode.h) against PIL's
// Image.open(f).convert('RGB') on images tests/reference/png_webp_ref.py writes: exactly for every PNG
// kind (8- and 16-bit, RGB, RGBA, gray, gray + alpha, 1/2/4-bit gray, palettes with transparency or
// shorter than their indices, interlaced) and lossless WebP (an animation: its first frame), within a
// small tolerance for lossy WebP. Then the transforms on PNG/WebP bytes equal PIL's pixels resampled as
// torchvision does, bad files (truncated, corrupt, absurd or hostile headers, unknown formats) give clear
// errors, and an ImageFolder mixing JPEG, PNG and WebP lists and decodes every file.
#include <zlib.h>

#include <fstream>
#include <sstream>

#include "data/image_decode.h"
#include "data/image_folder.h"
#include "data/transforms.h"
#include "tests/data/data_test_util.h"

using namespace mo::data;
using namespace mo::data::testing;

namespace {

// The reference images, written once per test process.
const std::string& ref_dir() {
  static TempDir dir("png_webp_ref");
  static bool made = false;
  if (!made) {
    made = true;
    const std::string cmd = std::string(MO_SOURCE_DIR) + "/tests/reference/png_webp_ref.py " + dir.str();
    EXPECT_EQ(run_python(cmd), 0) << cmd;
  }
  return dir.path.native();
}

struct Ref {
  std::vector<uint8_t> file, rgb;
  int w = 0, h = 0;
  std::string mode;
};

Ref ref(const std::string& name) {
  const std::string stem = ref_dir() + "/" + name.substr(0, name.rfind('.'));
  Ref r;
  r.file = slurp(ref_dir() + "/" + name);
  r.rgb = slurp(stem + ".rgb");
  std::ifstream(stem + ".size") >> r.w >> r.h >> r.mode;
  return r;
}

std::vector<uint8_t> file_from(const std::vector<uint8_t>& b, size_t from, size_t to) {
  return std::vector<uint8_t>(b.begin() + static_cast<int64_t>(from), b.begin() + static_cast<int64_t>(to));
}

class ImageDecode : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_python_peers()) GTEST_SKIP() << "Debian's python3 with PIL is not available";
  }
};

TEST_F(ImageDecode, PngEqualsPilExactly) {
  for (const char* name : {"rgb8.png", "rgba8.png", "gray8.png", "graya8.png", "palette8.png", "palette_trns.png",
                           "gray1.png", "gray2.png", "gray4.png", "gray16.png", "rgb16.png", "rgba16.png",
                           "graya16.png", "palette4.png", "palette_short.png", "rgba8_interlaced.png"}) {
    Ref r = ref(name);
    ASSERT_EQ(sniff_image_format(r.file.data(), r.file.size()), ImageFormat::png) << name;
    int w = 0, h = 0;
    ASSERT_TRUE(image_frame_size(r.file.data(), r.file.size(), w, h)) << name;
    EXPECT_EQ(w, r.w);
    EXPECT_EQ(h, r.h);
    Image im;
    std::string err;
    ASSERT_TRUE(decode_png(r.file.data(), r.file.size(), kDefaultMaxPixels, im, err)) << name << ": " << err;
    ASSERT_EQ(im.w(), r.w) << name;
    ASSERT_EQ(im.h(), r.h) << name;
    ASSERT_EQ(r.rgb.size(), im.bytes()) << name;
    Diff d = diff(im.data(), r.rgb.data(), im.bytes());
    EXPECT_EQ(d.max, 0) << name << " (PIL mode " << r.mode << "): mean difference " << d.mean;
  }
  // the cases that only a faithful copy of PIL gets right really differ from a plain conversion
  Ref g = ref("gray16.png");
  EXPECT_EQ(g.rgb[0], 0);
  EXPECT_EQ(g.rgb[3 * 36], 255);  // 16-bit values over 255 clip to white
}

TEST_F(ImageDecode, WebpEqualsPil) {
  for (const char* name : {"lossless.webp", "lossless_rgba.webp", "lossy.webp", "lossy_rgba.webp", "animated.webp"}) {
    Ref r = ref(name);
    ASSERT_EQ(sniff_image_format(r.file.data(), r.file.size()), ImageFormat::webp) << name;
    Image im;
    std::string err;
    ASSERT_TRUE(decode_webp(r.file.data(), r.file.size(), kDefaultMaxPixels, im, err)) << name << ": " << err;
    ASSERT_EQ(im.w(), r.w);
    ASSERT_EQ(im.h(), r.h);
    Diff d = diff(im.data(), r.rgb.data(), im.bytes());
    const bool lossless = std::string(name).find("lossy") != 0;  // the animation's frames are lossless
    EXPECT_LE(d.max, lossless ? 0 : 2) << name << ": mean difference " << d.mean;
  }
}

TEST_F(ImageDecode, TransformsTakePngAndWebp) {
  // The eval and train transforms on a PNG give what they give on its pixels resampled directly.
  Ref r = ref("rgba8.png");
  Workspace ws;
  EvalTransform eval({16, 0.875, Interp::bicubic, false});
  Image out(16, 16), want(16, 16);
  std::string err;
  ASSERT_TRUE(eval(r.file.data(), r.file.size(), ws, out.view(), err)) << err;
  Image pil(r.w, r.h);
  std::memcpy(pil.data(), r.rgb.data(), r.rgb.size());
  int rw = 0, rh = 0;
  resize_shorter_side(r.w, r.h, static_cast<int>(16 / 0.875), rw, rh);
  ResampleWindow win{rw, rh, static_cast<int>(std::nearbyint((rw - 16) / 2.0)),
                     static_cast<int>(std::nearbyint((rh - 16) / 2.0))};
  const float box[4] = {0, 0, float(r.w), float(r.h)};
  resample(pil.view(), box, Interp::bicubic, want.view(), false, &win);
  EXPECT_EQ(diff(out.data(), want.data(), out.bytes()).max, 0);

  TrainTransform train({});
  Image t(224, 224);
  Rng rng(1, 0);
  for (const char* name : {"palette8.png", "lossy.webp", "gray16.png"}) {
    Ref q = ref(name);
    EXPECT_TRUE(train(q.file.data(), q.file.size(), rng, ws, t.view(), err)) << name << ": " << err;
    CropWindow c{3, 2, 20, 15};
    ASSERT_TRUE(train.apply_fixed(q.file.data(), q.file.size(), &c, Interp::bilinear, false, nullptr, ws, t.view(), err));
    Image p(q.w, q.h);
    std::memcpy(p.data(), q.rgb.data(), q.rgb.size());
    // torchvision's resized_crop: crop, then resize (no pixels outside the crop are read)
    const ImageView crop{p.data() + (2 * q.w + 3) * 3, 20, 15, int64_t(q.w) * 3};
    const float b[4] = {0, 0, 20, 15};
    Image direct(224, 224);
    resample(crop, b, Interp::bilinear, direct.view());
    if (std::string(name) != "lossy.webp") EXPECT_EQ(diff(t.data(), direct.data(), t.bytes()).max, 0) << name;
  }
}

TEST_F(ImageDecode, BadFilesAreClearErrors) {
  Ref png = ref("rgb8.png"), webp = ref("lossy.webp"), ll = ref("lossless.webp");
  Image im;
  JpegDecoder jpeg;
  auto fails = [&](const std::vector<uint8_t>& b, const std::string& want, const std::string& what) {
    std::string err;
    EXPECT_FALSE(decode_image(b.data(), b.size(), jpeg, im, err)) << what;
    EXPECT_NE(err.find(want), std::string::npos) << what << ": " << err;
  };
  for (size_t cut : {size_t(8), size_t(30), png.file.size() / 2, png.file.size() - 13})
    fails(file_from(png.file, 0, cut), "PNG: ", fmt::format("PNG cut at {} bytes", cut));
  fails(file_from(png.file, 0, png.file.size() / 2), "truncated", "PNG cut in half");
  std::vector<uint8_t> bad = png.file;
  bad[bad.size() / 2] ^= 0x55;  // inside IDAT: a CRC or zlib error
  fails(bad, "PNG: ", "corrupt PNG");
  for (const auto* w : {&webp, &ll}) {
    fails(file_from(w->file, 0, w->file.size() / 2), "WebP: ", "WebP cut in half");
    fails(file_from(w->file, 0, 20), "WebP: ", "WebP cut at 20 bytes");
    // lossy VP8 data has no checksum (flipped bits decode to other pixels, in PIL too): break the frame's
    // signature (VP8: 9d 01 2a at 23; VP8L: 2f at 20)
    std::vector<uint8_t> c = w->file;
    c[w == &ll ? 20 : 24] ^= 0xA5;
    fails(c, "WebP: corrupt data", "corrupt WebP");
  }
  fails({}, "empty file", "empty");
  const std::string text = "GIF89a, or any other format";
  fails(std::vector<uint8_t>(text.begin(), text.end()), "not a JPEG, PNG or WebP file (it starts with the bytes 47 49 46 38)",
        "GIF");

  // An absurd IHDR with a valid CRC: refused before allocating, by the decoder and by read_image_file.
  std::vector<uint8_t> huge = png.file;
  for (int i = 0; i < 2; ++i) {
    huge[16 + 4 * i] = 0, huge[17 + 4 * i] = 1, huge[18 + 4 * i] = 0x86, huge[19 + 4 * i] = 0xA0;  // 100000
  }
  const uint32_t crc = static_cast<uint32_t>(crc32(0, huge.data() + 12, 17));
  for (int i = 0; i < 4; ++i) huge[29 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
  fails(huge, "the PNG header declares 100000x100000 pixels, over the limit of 64 megapixels", "huge PNG");
  TempDir tmp("bad_png");
  write_file(tmp.str() + "/huge.png", huge);
  std::vector<uint8_t> bytes;
  std::string err;
  EXPECT_FALSE(read_image_file(tmp.str() + "/huge.png", bytes, err));
  EXPECT_NE(err.find("the PNG header declares 100000x100000 pixels"), std::string::npos) << err;
  // libpng and PIL skip an unknown chunk before IHDR: so does the header check
  const uint8_t extra[] = {0, 0, 0, 2, 'm', 'o', 'p', 'n', 1, 2, 0, 0, 0, 0};
  std::vector<uint8_t> late = huge;
  late.insert(late.begin() + 8, extra, extra + sizeof extra);
  write_file(tmp.str() + "/late.png", late);
  EXPECT_FALSE(read_image_file(tmp.str() + "/late.png", bytes, err));
  EXPECT_NE(err.find("the PNG header declares 100000x100000 pixels"), std::string::npos) << err;
  // a WebP whose header declares 16383 x 16383 (VP8L: 14-bit width - 1 and height - 1 after the signature)
  std::vector<uint8_t> big = ll.file;
  ASSERT_EQ(std::string(big.begin() + 12, big.begin() + 16), "VP8L");
  big[21] = 0xFF, big[22] = 0xFF, big[23] = 0xFF, big[24] = (big[24] & 0xF0) | 0x0F;
  jpeg.set_max_pixels(500);
  fails(ll.file, "the WebP header declares 37x23 pixels, over the limit", "WebP over a small limit");
  jpeg.set_max_pixels(kDefaultMaxPixels);
  fails(big, "WebP", "WebP with a huge header");
  write_file(tmp.str() + "/big.webp", big);
  EXPECT_FALSE(read_image_file(tmp.str() + "/big.webp", bytes, err));
  EXPECT_NE(err.find("the WebP header declares 16384x16384 pixels"), std::string::npos) << err;
  // the transforms say the same, and do not treat a PNG as a JPEG
  Workspace ws;
  Image out(224, 224);
  EXPECT_FALSE(EvalTransform({})(bad.data(), bad.size(), ws, out.view(), err));
  EXPECT_NE(err.find("PNG: "), std::string::npos) << err;
}

TEST_F(ImageDecode, ImageFolderMixesFormats) {
  TempDir root("mixed_folder");
  fs::create_directories(root.path / "val/a/sub");
  fs::create_directories(root.path / "val/b");
  fs::copy_file(test_photos()[0], root.path / "val/a/x.jpg");
  fs::copy_file(ref_dir() + "/rgba8.png", root.path / "val/a/sub/y.PNG");
  fs::copy_file(ref_dir() + "/lossy.webp", root.path / "val/b/z.webp");
  fs::copy_file(ref_dir() + "/palette4.png", root.path / "val/b/w.png");
  std::ofstream(root.path / "val/b/notes.txt") << "not an image\n";
  ImageFolder f(root.str(), "val", /*use_cache=*/false);
  ASSERT_EQ(f.size(), 4);
  EXPECT_EQ(f.num_classes(), 2);
  EvalTransform eval({32, 1.0, Interp::bicubic, false});
  Workspace ws;
  Image out(32, 32);
  for (int64_t i = 0; i < f.size(); ++i) {
    std::vector<uint8_t> b;
    std::string err;
    ASSERT_TRUE(read_image_file(f.path(i), b, err)) << err;
    EXPECT_TRUE(eval(b.data(), b.size(), ws, out.view(), err)) << f.path(i) << ": " << err;
  }
  EXPECT_EQ(f.label(0), 0);
  EXPECT_EQ(f.label(3), 1);
}

}  // namespace
