// test_data_gpu_jpeg.cpp: the nvJPEG decode path (data/gpu_jpeg.h, data.decoder: gpu) against the CPU
// reference, on a GPU (built only with nvJPEG; every test is "Cuda" and skips without a GPU):
//  - full decodes within JPEG-decoder tolerance of libjpeg-turbo's (the test photographs and q90 JPEGs of
//    odd sizes): mean |diff| <= 1.5, at most 0.5% of values off by more than 16, max <= 64. The bound: the
//    chroma upsampling. libjpeg-turbo's own box upsampling (do_fancy_upsampling off) differs from its
//    default ("fancy", what PIL and our CPU path use) by up to 41 levels (mean 0.8) on these photographs;
//    an IDCT of other rounding adds a level or two.
//  - crops: the same draws (TrainTransform::draw) decoded and resized on the GPU against the CPU path with
//    the same window, filter and flip (mean |diff| <= 2.5), also a 10x antialiased downscale;
//  - bad files in a batch are reported, not thrown, and the rest of the batch still decodes;
//  - the Loader with decoder gpu: close to decoder cpu for the same seed (same labels, targets, bad-file
//    count), identical across thread counts, progressive/CMYK/corrupt files taken by the CPU and counted.
#include <gtest/gtest.h>

#include <cstdlib>

#include <algorithm>

#include "autograd/cuda_allocator.h"
#include "data/gpu_jpeg.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "tests/data/data_test_util.h"

using namespace mo;
using namespace mo::data;
using namespace mo::data::testing;

namespace {

#define SKIP_WITHOUT_GPU() \
  if (!gpu_jpeg_available()) GTEST_SKIP() << "no GPU"

// q90 JPEGs of odd sizes cut from the photographs (natural content; 4:2:0 as libjpeg's defaults).
std::vector<std::vector<uint8_t>> odd_size_jpegs() {
  std::vector<std::vector<uint8_t>> v;
  const int sizes[][2] = {{33, 47}, {127, 65}, {333, 199}, {641, 481}, {1001, 763}};
  int k = 0;
  for (const auto& p : test_photos()) {
    auto b = slurp(p);
    JpegDecoder d;
    Image full;
    EXPECT_TRUE(d.open(b.data(), b.size()) && d.decode_full(full));
    for (int i = 0; i < 2; ++i, ++k) {
      const int w = sizes[k % 5][0], h = sizes[k % 5][1];
      const float box[4] = {float(i * 7), float(i * 5), float(full.w() - i * 3), float(full.h() - i * 2)};
      Image out(w, h);
      resample(full.view(), box, Interp::bicubic, out.view());
      v.push_back(encode_jpeg(out.data(), w, h, 3, 90));
    }
  }
  return v;
}

// The tolerance of one decoder against another (see the top of the file).
void expect_decoder_close(const uint8_t* a, const uint8_t* b, size_t n, const std::string& what) {
  const Diff d = diff(a, b, n);
  size_t over = 0;
  for (size_t i = 0; i < n; ++i) over += std::abs(int(a[i]) - int(b[i])) > 16;
  EXPECT_LE(d.mean, 1.5) << what;
  EXPECT_LE(d.max, 64) << what;
  EXPECT_LE(double(over) / double(n), 0.005) << what;
}

}  // namespace

TEST(DataGpuJpeg, CudaFullDecodeMatchesLibjpeg) {
  SKIP_WITHOUT_GPU();
  GpuJpegDecoder gpu(0, 224);
  std::printf("nvJPEG backend: %s\n", gpu.hardware() ? "hardware" : "GPU-hybrid");
  std::vector<std::pair<std::string, std::vector<uint8_t>>> files;
  for (const auto& p : test_photos()) files.push_back({p, slurp(p)});
  int k = 0;
  for (auto& b : odd_size_jpegs()) files.push_back({"generated q90 #" + std::to_string(k++), b});
  int decoded = 0;
  for (const auto& [name, bytes] : files) {
    JpegDecoder cpu;
    Image want, got;
    ASSERT_TRUE(cpu.open(bytes.data(), bytes.size()) && cpu.decode_full(want)) << name;
    std::string err;
    if (!gpu.decode_full(bytes.data(), bytes.size(), got, err)) {
      // the hardware engine takes baseline files only (and perhaps not the smallest frames): a refusal
      // names itself; a baseline photograph-sized file must decode
      std::printf("  %-60s refused: %s\n", name.c_str(), err.c_str());
      EXPECT_TRUE(!cpu.gpu_decodable() || std::min(want.w(), want.h()) < 64) << name << ": " << err;
      EXPECT_FALSE(err.empty()) << name;
      continue;
    }
    ++decoded;
    ASSERT_EQ(got.w(), want.w()) << name;
    ASSERT_EQ(got.h(), want.h()) << name;
    expect_decoder_close(got.data(), want.data(), want.bytes(), name);
    const Diff d = diff(got.data(), want.data(), want.bytes());
    std::printf("  %-60s %4dx%-4d mean %.3f max %d\n", name.c_str(), want.w(), want.h(), d.mean, d.max);
  }
  EXPECT_GE(decoded, int(files.size()) - 3);  // all but (perhaps) the progressive rocket.jpg and 33x47 frames
}

TEST(DataGpuJpeg, CudaCropsMatchTheCpuPathForTheSameDraws) {
  SKIP_WITHOUT_GPU();
  TrainTransformConfig tc;
  tc.auto_augment = "";
  tc.dct_scaling = false;  // the CPU crop from the full-scale decode, as the GPU's
  TrainTransform t(tc);
  GpuJpegDecoder gpu(0, tc.size);
  std::vector<std::vector<uint8_t>> files;
  for (const auto& p : test_photos())
    if (p.find("rocket") == std::string::npos) files.push_back(slurp(p));  // rocket.jpg is progressive
  {
    // a large photograph: crops of 2000 pixels and more, downscaled ~10x (the antialiased filter)
    auto b = slurp(test_photos()[2]);
    JpegDecoder d;
    Image full, big(2600, 1900);
    ASSERT_TRUE(d.open(b.data(), b.size()) && d.decode_full(full));
    const float box[4] = {0, 0, float(full.w()), float(full.h())};
    resample(full.view(), box, Interp::bicubic, big.view());
    files.push_back(encode_jpeg(big.data(), big.w(), big.h(), 3, 90));
  }
  std::vector<GpuJob> jobs;
  std::vector<TrainDraw> draws;
  Workspace ws;
  std::string err;
  for (uint64_t k = 0; k < 48; ++k) {
    const auto& f = files[k % files.size()];
    Rng rng(3, k);
    TrainDraw d;
    ASSERT_TRUE(t.draw(f.data(), f.size(), rng, ws, d, err)) << err;
    ASSERT_TRUE(d.gpu);
    if (k == 0) d.win = {0, 0, d.width, d.height}, d.flip = true;  // the whole image, flipped
    jobs.push_back({f.data(), f.size(), d.win.x, d.win.y, d.win.w, d.win.h, d.interp, d.flip});
    draws.push_back(d);
  }
  const size_t px = size_t(tc.size) * tc.size * 3;
  std::vector<uint8_t> out(jobs.size() * px);
  std::vector<char> ok;
  std::vector<std::string> errors;
  const GpuDecodeTimes before = gpu.times();
  gpu.run(jobs.data(), int(jobs.size()), out.data(), ok, errors);
  const GpuDecodeTimes after = gpu.times();  // one batch of them all, its parts timed
  EXPECT_EQ(after.batches - before.batches, 1);
  EXPECT_EQ(after.images - before.images, int64_t(jobs.size()));
  EXPECT_GT(after.decode_s - before.decode_s, 0.0);
  EXPECT_GT(after.host_s - before.host_s, 0.0);
  for (double t : {after.queued_s, after.wait_s, after.resize_s, after.copy_s}) EXPECT_GE(t, 0.0);
  EXPECT_NE(describe(before, after).find("1 GPU batches of " + std::to_string(jobs.size())), std::string::npos)
      << describe(before, after);
  EXPECT_EQ(describe(after, after), "");
  Image want(tc.size, tc.size), mirror(tc.size, tc.size);
  int asymmetric = 0;
  for (size_t k = 0; k < jobs.size(); ++k) {
    ASSERT_TRUE(ok[k]) << k << ": " << errors[k];
    const TrainDraw& d = draws[k];
    const auto& f = files[k % files.size()];
    ASSERT_TRUE(t.apply_fixed(f.data(), f.size(), &d.win, d.interp, d.flip, nullptr, ws, want.view(), err)) << err;
    ASSERT_TRUE(t.apply_fixed(f.data(), f.size(), &d.win, d.interp, !d.flip, nullptr, ws, mirror.view(), err));
    const Diff a = diff(out.data() + k * px, want.data(), px), m = diff(out.data() + k * px, mirror.data(), px);
    EXPECT_LE(a.mean, 2.5) << "crop " << k << " (" << d.win.x << ", " << d.win.y << ", " << d.win.w << "x" << d.win.h
                           << ", " << (d.interp == Interp::bicubic ? "bicubic" : "bilinear") << ", flip " << d.flip << ")";
    if (m.mean > 4) {  // content that its mirror image does not match: the flip must be the CPU's
      EXPECT_LT(a.mean, m.mean) << "crop " << k << ": the flip";
      ++asymmetric;
    }
  }
  EXPECT_GE(asymmetric, int(jobs.size()) / 2);
}

TEST(DataGpuJpeg, CudaBadFilesInABatchAreReportedNotThrown) {
  SKIP_WITHOUT_GPU();
  GpuJpegDecoder gpu(0, 64);
  const auto good = slurp(test_photos()[0]);
  std::vector<uint8_t> garbage(good.begin(), good.begin() + 300), noise(5000);
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  noise[0] = 0xFF, noise[1] = 0xD8;  // SOI, then noise
  std::vector<uint8_t> scrambled = good;  // the entropy-coded data overwritten
  for (size_t i = scrambled.size() / 2; i + 2 < scrambled.size(); ++i) scrambled[i] = static_cast<uint8_t>(i * 31);
  std::vector<uint8_t> cmyk_px(80 * 60 * 4, 70);
  const auto cmyk = encode_jpeg(cmyk_px.data(), 80, 60, 4);
  JpegDecoder d;
  ASSERT_TRUE(d.open(good.data(), good.size()));
  const int W = d.width(), H = d.height();
  std::vector<GpuJob> jobs = {
      {good.data(), good.size(), 0, 0, W, H, Interp::bilinear, false},
      {garbage.data(), garbage.size(), 0, 0, 10, 10, Interp::bilinear, false},  // cut inside the header
      {noise.data(), noise.size(), 0, 0, 10, 10, Interp::bicubic, false},
      {nullptr, 0, 0, 0, 10, 10, Interp::bilinear, false},
      {good.data(), good.size(), W - 5, 0, 10, 10, Interp::bilinear, false},  // the window leaves the image
      {scrambled.data(), scrambled.size(), 0, 0, W, H, Interp::bilinear, false},
      {cmyk.data(), cmyk.size(), 0, 0, 80, 60, Interp::bilinear, false},
      {good.data(), good.size(), 10, 20, 100, 90, Interp::bicubic, true},
  };
  std::vector<uint8_t> out(jobs.size() * 64 * 64 * 3);
  std::vector<char> ok;
  std::vector<std::string> errors;
  ASSERT_NO_THROW(gpu.run(jobs.data(), int(jobs.size()), out.data(), ok, errors));
  ASSERT_EQ(ok.size(), jobs.size());
  {  // streams at the default priority (data.gpu_priority: normal): the same pixels and verdicts
    GpuJpegDecoder normal(0, 64, 1, true, false);
    std::vector<uint8_t> out2(out.size());
    std::vector<char> ok2;
    std::vector<std::string> errors2;
    normal.run(jobs.data(), int(jobs.size()), out2.data(), ok2, errors2);
    EXPECT_EQ(ok2, ok);
    for (size_t i = 0; i < jobs.size(); ++i)
      if (ok[i]) EXPECT_TRUE(std::equal(out.begin() + i * 64 * 64 * 3, out.begin() + (i + 1) * 64 * 64 * 3, out2.begin() + i * 64 * 64 * 3)) << i;
  }
  for (size_t i = 0; i < jobs.size(); ++i) EXPECT_EQ(!ok[i], !errors[i].empty()) << i << ": " << errors[i];
  for (int i : {1, 2, 3, 4}) EXPECT_FALSE(ok[i]) << i;
  EXPECT_NE(errors[4].find("outside the"), std::string::npos) << errors[4];
  TrainTransformConfig tc;
  tc.size = 64, tc.auto_augment = "", tc.dct_scaling = false;
  TrainTransform t(tc);
  Workspace ws;
  Image want(64, 64);
  std::string err;
  for (int i : {0, 7}) {  // the good files decoded whatever their neighbours did
    ASSERT_TRUE(ok[i]) << errors[i];
    const CropWindow win{jobs[i].x, jobs[i].y, jobs[i].w, jobs[i].h};
    ASSERT_TRUE(t.apply_fixed(good.data(), good.size(), &win, jobs[i].interp, jobs[i].flip, nullptr, ws, want.view(), err));
    EXPECT_LE(diff(out.data() + i * want.bytes(), want.data(), want.bytes()).mean, 2.5) << i;
  }
  std::string e2;
  Image img;
  EXPECT_FALSE(gpu.decode_full(noise.data(), noise.size(), img, e2));
  EXPECT_FALSE(e2.empty());
}

namespace {

struct DataGpuLoader : ::testing::Test {
  static inline TempDir* dir = nullptr;
  static void SetUpTestSuite() {
    dir = new TempDir("gpu_loader");
    make_dataset(dir->str(), "train", 3, 9, 160, 120);  // 27 baseline JPEGs
    // and three the GPU does not take: progressive, CMYK, corrupt (the CPU path replaces it)
    const fs::path c0 = fs::path(dir->str()) / "train" / "class_0";
    fs::copy_file(test_photos()[3], c0 / "progressive.jpg");
    std::vector<uint8_t> cmyk(120 * 90 * 4);
    for (size_t i = 0; i < cmyk.size(); ++i) cmyk[i] = static_cast<uint8_t>(i * 13 % 251);
    write_file((c0 / "cmyk.jpg").string(), encode_jpeg(cmyk.data(), 120, 90, 4));
    auto cut = slurp((c0 / "img_0.jpg").string());
    cut.resize(cut.size() / 2);
    write_file((c0 / "truncated.jpg").string(), cut);
  }
  static void TearDownTestSuite() { delete dir; }
  static LoaderConfig config(DecodeOn decoder, int threads, bool rand_augment) {
    LoaderConfig c;
    c.root = dir->str();
    c.batch_size = 6;
    c.num_threads = threads;
    c.prefetch_batches = 3;
    c.train.size = 96;
    c.train.auto_augment = rand_augment ? c.train.auto_augment : "";
    c.train.dct_scaling = false;
    c.mixup.mixup_alpha = c.mixup.cutmix_alpha = 0;  // each image on its own
    c.erase.prob = 0;
    c.seed = 11;
    c.decoder = decoder;
    c.max_warnings = 0;
    return c;
  }
  static std::vector<Batch> epoch(Loader& l, int64_t e) {
    l.start_epoch(e);
    std::vector<Batch> v;
    Batch b;
    while (l.next(b)) v.push_back(b);
    return v;
  }
};

// Per image: the mean |difference| of two batches' normalised pixels, in 8-bit levels (std ~ 0.225 * 255).
std::vector<double> image_diffs(const Batch& a, const Batch& b) {
  auto x = a.images.to_vector<float>(), y = b.images.to_vector<float>();
  const size_t n = static_cast<size_t>(a.images.shape()[0]), per = x.size() / n;
  std::vector<double> v(n, 0.0);
  for (size_t i = 0; i < x.size(); ++i) v[i / per] += std::abs(x[i] - y[i]) * 0.225 * 255.0 / double(per);
  return v;
}

}  // namespace

TEST_F(DataGpuLoader, CudaGpuDecoderMatchesCpuDecoder) {
  SKIP_WITHOUT_GPU();
  Loader gpu(config(DecodeOn::gpu, 3, false)), cpu(config(DecodeOn::cpu, 3, false));
  EXPECT_EQ(std::string(gpu.decoder()).rfind("gpu", 0), 0u) << gpu.decoder();
  for (int64_t e : {0, 1}) {
    auto a = epoch(gpu, e), b = epoch(cpu, e);
    ASSERT_EQ(a.size(), b.size());
    int exact = 0, images = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].labels.to_vector<int64_t>(), b[i].labels.to_vector<int64_t>()) << "batch " << i;
      EXPECT_EQ(a[i].targets.to_vector<float>(), b[i].targets.to_vector<float>()) << "batch " << i;
      for (double d : image_diffs(a[i], b[i])) {
        EXPECT_LE(d, 2.5) << "epoch " << e << " batch " << i;  // a wrong crop or flip is tens of levels
        exact += d == 0.0, ++images;
      }
    }
    EXPECT_GE(exact, 2) << "the progressive and CMYK files (and the stand-in) are the CPU path's bytes";
  }
  const LoaderStats st = gpu.stats();
  EXPECT_EQ(st.gpu_decoded + st.gpu_fallbacks, st.samples);
  EXPECT_GE(st.gpu_fallbacks, 2 * 3);  // progressive + CMYK + truncated, each epoch (those in the kept batches)
  EXPECT_GE(st.gpu_decoded, 2 * 20);
  EXPECT_EQ(gpu.bad_samples(), cpu.bad_samples());
}

TEST_F(DataGpuLoader, CudaGpuDecoderIsDeterministicWithRandAugment) {
  SKIP_WITHOUT_GPU();
  Loader a(config(DecodeOn::gpu, 1, true)), b(config(DecodeOn::automatic, 4, true)),
      cpu(config(DecodeOn::cpu, 2, true));
  EXPECT_STREQ(a.decoder(), b.decoder());
  auto x = epoch(a, 3), y = epoch(b, 3), z = epoch(cpu, 3);
  ASSERT_EQ(x.size(), y.size());
  std::vector<double> d;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(x[i].images.to_vector<float>(), y[i].images.to_vector<float>()) << "batch " << i;
    for (double v : image_diffs(x[i], z[i])) d.push_back(v);
  }
  // the same RandAugment ops and magnitudes as the CPU path: colour ops (solarize thresholds, posterize,
  // equalize) magnify the decoders' level or two; other ops or magnitudes would be tens of levels apart
  std::sort(d.begin(), d.end());
  EXPECT_LE(d[d.size() / 2], 6.0);
}

// The library (built with nvJPEG, as this file is) asks CUDA for hardware queues enough for the decoder's
// streams beside the training stream (gpu_jpeg.cu), unless the variable was set before.
TEST(DataGpuJpeg, CudaDecoderAsksForHardwareQueuesOfItsOwn) {
  const char* v = std::getenv("CUDA_DEVICE_MAX_CONNECTIONS");
  ASSERT_NE(v, nullptr);
  EXPECT_STREQ(v, "32");
}
