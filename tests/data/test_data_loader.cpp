// test_data_loader.cpp: the Loader end to end on a small ImageFolder: determinism across thread counts,
// epochs that differ, mid-epoch resume, DistributedSampler sharding/padding, eval batches (the last
// one partial) equal to the eval transform + normalisation, output dtypes/layouts, worker_nice, synthetic input; the normalize +
// random-erasing CPU twin; the cumulative stats() (counts, time by stage and by side); and the CUDA kernel
// against the CPU twin ("Cuda" test, skipped without a GPU).
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "autograd/cpu_isa.h"
#include "autograd/cuda_allocator.h"
#include "data/gpu_jpeg.h"
#include "data/loader.h"
#include "data/sampler.h"
#include "tests/data/data_test_util.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::data;
using namespace mo::data::testing;

namespace {

struct DataLoader : ::testing::Test {
  static inline TempDir* dir = nullptr;
  static void SetUpTestSuite() {
    dir = new TempDir("loader");
    make_dataset(dir->str(), "train", 3, 7);  // 21 images
    make_dataset(dir->str(), "val", 3, 5);    // 15 images
  }
  static void TearDownTestSuite() { delete dir; }
  LoaderConfig config(bool training, int threads) {
    LoaderConfig c;
    c.root = dir->str();
    c.training = training;
    c.batch_size = 4;
    c.num_threads = threads;
    c.prefetch_batches = 3;
    c.use_cuda = false;
    c.train.size = 64;
    c.eval.size = 64;
    c.seed = 7;
    return c;
  }
  static std::vector<Batch> epoch(Loader& l, int64_t e, int64_t first = 0) {
    l.start_epoch(e, first);
    std::vector<Batch> v;
    Batch b;
    while (l.next(b)) v.push_back(b);
    return v;
  }
};

void expect_same(const Batch& a, const Batch& b) {
  ASSERT_EQ(a.images.shape(), b.images.shape());
  EXPECT_EQ(a.images.to_vector<float>(), b.images.to_vector<float>()) << "batch " << a.index;
  EXPECT_EQ(a.targets.to_vector<float>(), b.targets.to_vector<float>());
  EXPECT_EQ(a.labels.to_vector<int64_t>(), b.labels.to_vector<int64_t>());
  EXPECT_EQ(a.lam, b.lam);
}

}  // namespace

TEST_F(DataLoader, OneAndTwoThreadsGiveIdenticalBatches) {
  Loader one(config(true, 1)), two(config(true, 2));
  EXPECT_EQ(one.batches_per_epoch(), 5);  // 21 samples, batch 4, drop_last
  for (int64_t e = 0; e < 2; ++e) {
    auto a = epoch(one, e), b = epoch(two, e);
    ASSERT_EQ(a.size(), 5u);
    ASSERT_EQ(b.size(), 5u);
    for (size_t i = 0; i < a.size(); ++i) expect_same(a[i], b[i]);
  }
  auto e0 = epoch(one, 0), e1 = epoch(one, 1);
  EXPECT_NE(e0[0].images.to_vector<float>(), e1[0].images.to_vector<float>()) << "epochs must differ";
  const auto& im = e0[0].images;
  EXPECT_EQ(im.shape(), (Shape{4, 3, 64, 64}));
  EXPECT_EQ(e0[0].targets.shape(), (Shape{4, 3}));
  // soft targets: rows sum to 1, smoothing keeps every entry >= 0.1 / 3 * min(lam, 1 - lam)
  for (const Batch& b : e0) {
    auto t = b.targets.to_vector<float>();
    for (int r = 0; r < 4; ++r) EXPECT_NEAR(t[r * 3] + t[r * 3 + 1] + t[r * 3 + 2], 1.0f, 1e-5f);
  }
}

// The nice values of this process's threads other than the calling one (/proc/self/task/<tid>/stat's 19th
// field, counted after the ")" that ends the thread's name).
std::vector<int> other_threads_nice() {
  std::vector<int> v;
  const std::string self = std::to_string(static_cast<long>(syscall(SYS_gettid)));
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    if (e.path().filename() == self) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string field;
    for (int k = 3; k <= 19 && rest >> field; ++k)
      if (k == 19) v.push_back(std::stoi(field));
  }
  return v;
}

TEST_F(DataLoader, WorkerNiceRaisesTheWorkersOnlyAndChangesNoBatch) {
  errno = 0;
  const int base = getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
  ASSERT_EQ(errno, 0);
  LoaderConfig c = config(true, 3);
  c.worker_nice = 7;
  std::vector<Batch> niced;
  {
    Loader l(c);
    niced = epoch(l, 0);
    // a worker raises its own value as it starts, before its first sample; one that the epoch did not need
    // may not have run yet on a loaded machine: wait for it (bounded)
    std::vector<int> nice = other_threads_nice();
    for (int i = 0; i < 1000 && std::count(nice.begin(), nice.end(), std::min(19, base + 7)) < 3; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      nice = other_threads_nice();
    }
    EXPECT_EQ(std::count(nice.begin(), nice.end(), std::min(19, base + 7)), 3) << "the 3 workers";
    EXPECT_EQ(getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid))), base) << "the caller's is unchanged";
  }
  Loader plain(config(true, 3));
  auto ref = epoch(plain, 0);
  ASSERT_EQ(niced.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) expect_same(niced[i], ref[i]);
  c.worker_nice = 20;
  EXPECT_NE(mo::test::error_of([&] { Loader bad(c); }).find("worker_nice 20 is not in [0, 19]"), std::string::npos);
}

TEST_F(DataLoader, ResumeMidEpochIsExact) {
  Loader l(config(true, 2));
  auto full = epoch(l, 3);
  l.start_epoch(3, 0);
  Batch b;
  ASSERT_TRUE(l.next(b));
  ASSERT_TRUE(l.next(b));
  LoaderState st = l.state();
  EXPECT_EQ(st.epoch, 3);
  EXPECT_EQ(st.next_batch, 2);
  Loader fresh(config(true, 1));
  auto rest = epoch(fresh, st.epoch, st.next_batch);
  ASSERT_EQ(rest.size(), full.size() - 2);
  for (size_t i = 0; i < rest.size(); ++i) {
    EXPECT_EQ(rest[i].index, full[i + 2].index);
    expect_same(rest[i], full[i + 2]);
  }
}

// data.synthetic: no file is read (an unreadable one is no bad sample), the labels are the folder's in the
// sampler's order, the pixels are noise that differs between samples and epochs but not between thread counts.
TEST_F(DataLoader, SyntheticReadsNoFileAndKeepsLabelsAndDeterminism) {
  TempDir d("loader_synth");
  make_dataset(d.str(), "train", 3, 4);
  LoaderConfig c = config(true, 1);
  c.root = d.str();
  c.use_index_cache = false;
  Loader real(c);
  const auto r = epoch(real, 0);  // before a file is spoiled
  for (const auto& e : std::filesystem::recursive_directory_iterator(d.str() + "/train"))
    if (e.is_regular_file()) {
      std::ofstream(e.path(), std::ios::binary | std::ios::trunc) << "not a JPEG";
      break;
    }
  Loader spoiled(c);
  epoch(spoiled, 0);
  EXPECT_GT(spoiled.bad_samples(), 0) << "the spoiled file is read without synthetic";
  c.synthetic = true;
  c.decoder = DecodeOn::gpu;  // no decoder is made: synthetic takes no file
  Loader one(c);
  c.num_threads = 3;
  Loader three(c);
  EXPECT_STREQ(one.decoder(), "synthetic");
  auto a = epoch(one, 0), b = epoch(three, 0), a1 = epoch(one, 1);
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(r.size(), 3u);
  for (size_t i = 0; i < a.size(); ++i) {
    expect_same(a[i], b[i]);
    EXPECT_EQ(a[i].labels.to_vector<int64_t>(), r[i].labels.to_vector<int64_t>()) << "batch " << i;
    EXPECT_NE(a[i].images.to_vector<float>(), r[i].images.to_vector<float>());
  }
  EXPECT_NE(a[0].images.to_vector<float>(), a1[0].images.to_vector<float>()) << "epochs must differ";
  const auto px = a[0].images.to_vector<float>();
  const size_t per = px.size() / 4;
  EXPECT_NE(std::vector<float>(px.begin(), px.begin() + per), std::vector<float>(px.begin() + per, px.begin() + 2 * per));
  EXPECT_EQ(one.bad_samples(), 0);
  EXPECT_EQ(one.stats().stage(Stage::read), 0.0);
  EXPECT_EQ(one.stats().stage(Stage::decode), 0.0);
  EXPECT_EQ(one.stats().samples, 2 * 12);
}

TEST_F(DataLoader, StatsCountBatchesAndSplitTheTimeByStage) {
  for (bool training : {true, false}) {
    Loader l(config(training, 2));
    const LoaderStats zero = l.stats();
    EXPECT_EQ(zero.batches, 0);
    EXPECT_EQ(zero.busy_s, 0.0);
    const auto t0 = std::chrono::steady_clock::now();
    const size_t n0 = epoch(l, 0).size(), n1 = epoch(l, 1).size();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const LoaderStats st = l.stats();
    SCOPED_TRACE(training ? "train" : "eval");
    EXPECT_EQ(st.batches, int64_t(n0 + n1));
    EXPECT_EQ(st.samples, training ? 2 * 20 : 2 * 15);  // train: 5 full batches of 4 (drop_last); eval: all 15
    // the workers' stages: every one this transform runs took time; together at most their busy time
    // (mixup: the batch's last step, soft targets and erase boxes too, so eval batches have it)
    for (Stage s : {Stage::read, Stage::decode, Stage::resize, Stage::mixup}) EXPECT_GT(st.stage(s), 0.0) << stage_name(s);
    EXPECT_EQ(st.stage(Stage::augment) > 0, training);
    double worker = 0;
    for (Stage s : {Stage::read, Stage::header, Stage::decode, Stage::resize, Stage::augment, Stage::mixup})
      worker += st.stage(s);
    EXPECT_LE(worker, st.busy_s * (1 + 1e-9));
    // the consumer's side: normalisation is part of delivering; waiting + delivering fit in the epochs' time
    EXPECT_GT(st.stage(Stage::normalize), 0.0);
    EXPECT_LE(st.stage(Stage::normalize), st.deliver_s);
    EXPECT_GE(st.wait_s, 0.0);
    EXPECT_LE(st.wait_s + st.deliver_s, wall);
  }
  // RandAugment off: no augment time
  auto cfg = config(true, 1);
  cfg.train.auto_augment = "";
  Loader plain(cfg);
  epoch(plain, 0);
  EXPECT_EQ(plain.stats().stage(Stage::augment), 0.0);
  EXPECT_GT(plain.stats().stage(Stage::resize), 0.0);
}

TEST_F(DataLoader, SamplerShardsLikeDistributedSampler) {
  for (bool shuffle : {false, true}) {
    DistributedSampler r0(10, 0, 4, shuffle, 1), r1(10, 1, 4, shuffle, 1), r2(10, 2, 4, shuffle, 1), r3(10, 3, 4, shuffle, 1);
    EXPECT_EQ(r0.num_samples(), 3);  // ceil(10 / 4), padded to 12
    std::multiset<int64_t> idx;
    std::set<int64_t> pos;
    for (auto* r : {&r0, &r1, &r2, &r3})
      for (auto s : r->epoch(5)) idx.insert(s.index), pos.insert(s.position);
    EXPECT_EQ(pos.size(), 12u);
    for (int64_t i = 0; i < 10; ++i) EXPECT_GE(idx.count(i), 1u);
    auto a = r0.epoch(5);
    if (!shuffle) {
      EXPECT_EQ(a[0].index, 0);
      EXPECT_EQ(a[1].index, 4);
      EXPECT_EQ(a[2].index, 8);
      EXPECT_EQ(r2.epoch(0)[2].index, 0);  // position 10 repeats the start
    } else {
      auto b = r0.epoch(6);
      bool differs = false;
      for (size_t i = 0; i < a.size(); ++i) differs |= a[i].index != b[i].index;
      EXPECT_TRUE(differs) << "shuffle must depend on the epoch";
    }
  }
}

TEST_F(DataLoader, EvalBatchesMatchTheTransform) {
  auto cfg = config(false, 2);
  Loader l(cfg);
  auto batches = epoch(l, 0);
  ASSERT_EQ(batches.size(), 4u);  // 15 samples: 4 + 4 + 4 + 3
  EXPECT_EQ(batches.back().images.size(0), 3);
  EvalTransform tf(cfg.eval);
  Workspace ws;
  const NormalizeSpec spec;
  for (int64_t k = 0; k < 15; ++k) {
    const Batch& b = batches[k / 4];
    const int r = static_cast<int>(k % 4);
    EXPECT_EQ(b.labels.to_vector<int64_t>()[r], l.dataset().label(k));
    auto bytes = slurp(l.dataset().path(k));
    Image im(64, 64);
    std::string err;
    ASSERT_TRUE(tf(bytes.data(), bytes.size(), ws, im.view(), err)) << err;
    auto got = b.images.to_vector<float>();
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 64 * 64; p += 97) {
        float want = (float(im.data()[p * 3 + c]) - spec.mean[c]) / spec.std[c];
        ASSERT_EQ(got[(r * 3 + c) * 64 * 64 + p], want) << "sample " << k;
      }
    auto t = b.targets.to_vector<float>();
    EXPECT_EQ(t[r * 3 + l.dataset().label(k)], 1.0f);
  }
}

TEST_F(DataLoader, Bf16ChannelsLastOutput) {
  auto cfg = config(false, 1);
  cfg.dtype = DType::bf16;
  cfg.channels_last = true;
  Loader l(cfg);
  auto f32cfg = config(false, 1);
  Loader ref(f32cfg);
  Batch a, b;
  ASSERT_TRUE(l.next(a));
  ASSERT_TRUE(ref.next(b));
  EXPECT_EQ(a.images.dtype(), DType::bf16);
  EXPECT_EQ(a.images.shape(), (Shape{4, 64, 64, 3}));
  auto x = a.images.to_vector<float>(), y = b.images.to_vector<float>();
  for (int n = 0; n < 4; ++n)
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 64 * 64; p += 31)
        EXPECT_EQ(x[(n * 64 * 64 + p) * 3 + c], float(bf16_t(y[(n * 3 + c) * 64 * 64 + p])));
}

namespace {
// Random images and erase boxes for the normalize tests.
void random_batch(int B, int H, int W, uint64_t seed, Tensor& images, Tensor& meta) {
  images = Tensor::empty({B, H, W, 3}, DType::u8);
  meta = Tensor::empty({B, kMetaCols}, DType::i64);
  Rng rng(seed, 99);
  uint8_t* p = images.data<uint8_t>();
  for (int64_t i = 0; i < images.numel(); ++i) p[i] = static_cast<uint8_t>(rng.randint(0, 255));
  EraseConfig ec;
  ec.prob = 0.7;
  for (int b = 0; b < B; ++b) {
    EraseBox box = draw_erase_box(ec, H, W, rng);
    int64_t* m = meta.data<int64_t>() + b * kMetaCols;
    m[0] = box.top, m[1] = box.left, m[2] = box.h, m[3] = box.w, m[4] = static_cast<int64_t>(make_stream(Purpose::erase_pixels, 1, b));
  }
}
}  // namespace

TEST(DataNormalize, CpuTwinNormalizesAndErases) {
  // (a small batch, one with wide boxes whose rows hold many Philox blocks, and samples large enough
  // for the streaming stores), on the portable code and on the AVX2 code where the CPU has it
  const CpuIsa prev = cpu_isa();
  for (CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2})
  for (auto [B, H, W] : {std::tuple{6, 20, 24}, std::tuple{3, 50, 97}, std::tuple{2, 160, 163}}) {
    if (set_cpu_isa(isa) != isa) continue;
    Tensor images, meta;
    random_batch(B, H, W, 3, images, meta);
    for (bool cl : {false, true}) {
      const NormalizeSpec spec = imagenet_normalize(DType::f32, cl);
      Tensor out = normalize_erase(images, meta, 11, spec);
      auto o = out.to_vector<float>();
      const uint8_t* in = images.data<uint8_t>();
      int erased = 0, kept = 0;
      double sum = 0, sum2 = 0;
      for (int b = 0; b < B; ++b) {
        const int64_t* m = meta.data<int64_t>() + b * kMetaCols;
        for (int c = 0; c < 3; ++c)
          for (int y = 0; y < H; ++y)
            for (int x = 0; x < W; ++x) {
              const float v = cl ? o[((b * H + y) * W + x) * 3 + c] : o[((b * 3 + c) * H + y) * W + x];
              const bool inside = m[2] > 0 && y >= m[0] && y < m[0] + m[2] && x >= m[1] && x < m[1] + m[3];
              if (inside) {
                ++erased, sum += v, sum2 += double(v) * v;
                ASSERT_EQ(v, philox_normal(11, uint64_t(m[4]), uint64_t((c * H + y) * W + x))) << b << " " << c << " " << y << " " << x;
              } else {
                ++kept;
                ASSERT_EQ(v, (float(in[((b * H + y) * W + x) * 3 + c]) - spec.mean[c]) / spec.std[c]);
              }
            }
      }
      ASSERT_GT(erased, 200);
      EXPECT_NEAR(sum / erased, 0.0, 0.15);
      EXPECT_NEAR(sum2 / erased, 1.0, 0.2);
      EXPECT_GT(kept, 0);
    }
  }
  set_cpu_isa(prev);
}

TEST(DataNormalize, CudaMatchesCpuTwin) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  for (DType dt : {DType::f32, DType::bf16}) {
    for (bool cl : {false, true}) {
      Tensor images, meta;
      random_batch(5, 33, 17, 100 + int(cl), images, meta);
      NormalizeSpec spec = imagenet_normalize(dt, cl);
      Tensor cpu = normalize_erase(images, meta, 5, spec);
      Tensor gpu = normalize_erase(images.to(Device::cuda(0)), meta.to(Device::cuda(0)), 5, spec);
      ASSERT_TRUE(gpu.is_cuda());
      auto a = cpu.to_vector<float>(), b = gpu.to_vector<float>();
      ASSERT_EQ(a.size(), b.size());
      // both sides compute the same functions (IEEE division; philox_normal without libm calls or FMA
      // contraction), so they should agree to the bit; the bound allows one bf16 step (relative 2^-7)
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_NEAR(a[i], b[i], dt == DType::bf16 ? 1e-5 + std::abs(a[i]) / 128 : 1e-5) << i;
    }
  }
}

TEST_F(DataLoader, CudaLoaderMatchesCpuLoader) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  auto gcfg = config(true, 2);
  gcfg.use_cuda = true;
  Loader gpu(gcfg), cpu(config(true, 2));
  EXPECT_TRUE(gpu.device().is_cuda());
  auto a = epoch(gpu, 1), b = epoch(cpu, 1);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    auto x = a[i].images.to_vector<float>(), y = b[i].images.to_vector<float>();
    for (size_t k = 0; k < x.size(); ++k) ASSERT_NEAR(x[k], y[k], 1e-5) << "batch " << i;
    EXPECT_EQ(a[i].targets.to_vector<float>(), b[i].targets.to_vector<float>());
    EXPECT_EQ(a[i].labels.to_vector<int64_t>(), b[i].labels.to_vector<int64_t>());
  }
}

// data.decoder without nvJPEG or a GPU: gpu is an error saying what is missing; auto is the CPU path
// (the same bytes as cpu). Where the GPU path exists, tests/data/test_data_gpu_jpeg.cpp tests it.
TEST_F(DataLoader, DecoderGpuNeedsNvjpegAndAGpu) {
  auto c = config(true, 2);
  c.decoder = DecodeOn::gpu;
  if (!gpu_jpeg_built() || !cuda_available()) {
    const std::string msg = mo::test::error_of([&] { Loader l(c); });
    EXPECT_NE(msg.find("data.decoder: gpu"), std::string::npos) << msg;
    EXPECT_NE(msg.find(gpu_jpeg_built() ? "no GPU is present" : "this build of mo has no nvJPEG"), std::string::npos)
        << msg;
  }
  c.use_cuda = false;  // the loader on the CPU: gpu refused even where nvJPEG is built
  const std::string msg = mo::test::error_of([&] { Loader l(c); });
  EXPECT_NE(msg.find("data.decoder: gpu"), std::string::npos) << msg;
  c.decoder = DecodeOn::automatic;
  Loader a(c), cpu(config(true, 2));
  EXPECT_STREQ(a.decoder(), "cpu");
  auto x = epoch(a, 0), y = epoch(cpu, 0);
  ASSERT_EQ(x.size(), y.size());
  for (size_t i = 0; i < x.size(); ++i) expect_same(x[i], y[i]);
  EXPECT_EQ(a.stats().gpu_decoded + a.stats().gpu_fallbacks, 0);
  auto e = config(false, 1);
  e.decoder = DecodeOn::gpu;
  EXPECT_NE(mo::test::error_of([&] { Loader l(e); }).find("data.decoder"), std::string::npos);
}
